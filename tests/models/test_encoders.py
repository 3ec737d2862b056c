"""Encoders by name, grayscale handling and ImageNet weights from a user file (oracle: torchvision)."""

import pytest
import torch
import torch.nn.functional as F
import torchvision

from alan.errors import AlanError, DataError
from alan.models.encoders import IMAGENET_MEAN, IMAGENET_STD, create_encoder, encoder_from_artifact, fits


@pytest.fixture(scope="module")
def tv_files(tmp_path_factory):
    """torchvision-format ImageNet-shaped checkpoints with random weights (nothing downloaded)."""
    d = tmp_path_factory.mktemp("w")
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).eval()
    dense = torchvision.models.densenet121(weights=None).eval()
    for m in dense.modules():  # non-trivial BN statistics so the comparison means something
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(vgg.state_dict(), d / "vgg16.pth")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in dense.state_dict().items()}, str(d / "densenet121.safetensors"))
    return {"vgg16": (vgg, d / "vgg16.pth"), "densenet121": (dense, d / "densenet121.safetensors")}


def _imagenet_input(x):
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - mean) / std


def test_vgg16_imagenet_file_matches_torchvision_features(tv_files):
    tv, path = tv_files["vgg16"]
    enc = create_encoder("vgg16", img_size=64, imagenet_weights=path).eval()
    assert enc.config.in_chans == 3 and enc.config.grayscale == "replicate"
    assert enc.config.init.startswith("imagenet:") and enc.num_features == 512
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        want = tv.features(_imagenet_input(x)).mean(dim=(2, 3))
        got = enc(x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_densenet121_imagenet_file_matches_torchvision_features(tv_files):
    tv, path = tv_files["densenet121"]
    enc = create_encoder("densenet121", img_size=64, imagenet_weights=path).eval()
    assert enc.num_features == 1024
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        want = F.relu(tv.features(_imagenet_input(x))).mean(dim=(2, 3))
        got = enc(x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_single_channel_imagenet_sums_rgb_kernels(tv_files):
    tv, path = tv_files["vgg16"]
    enc = create_encoder("vgg16", img_size=32, imagenet_weights=path, grayscale="single")
    assert enc.config.in_chans == 1
    w = enc.model.features[0].weight
    torch.testing.assert_close(w, tv.features[0].weight.sum(dim=1, keepdim=True))


def test_weights_that_do_not_fit_are_one_line_data_errors(tv_files, tmp_path):
    _, dense_path = tv_files["densenet121"]
    with pytest.raises(DataError, match="densenet121.safetensors: does not fit VGG"):
        create_encoder("vgg16", imagenet_weights=dense_path)
    assert fits("densenet121", dense_path) and not fits("vgg16", dense_path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="junk.pth: refusing to unpickle"):
        create_encoder("vgg16", imagenet_weights=junk)
    with pytest.raises(DataError, match="no such weights file"):
        create_encoder("vgg16", imagenet_weights=tmp_path / "missing.pth")


@pytest.mark.parametrize("arch", ["vgg_tiny", "densenet_tiny", "resnet10t"])
def test_small_and_timm_encoders_give_pooled_features(arch):
    enc = create_encoder(arch, img_size=32, seed=0)
    assert enc.config.in_chans == 1 and enc.config.init == "random"
    y = enc(torch.rand(3, 1, 40, 40))  # resized to img_size inside
    assert y.shape == (3, enc.num_features) and torch.isfinite(y).all()


def test_seeded_init_is_reproducible_and_artifact_roundtrip():
    a, b = create_encoder("vgg_tiny", img_size=32, seed=3), create_encoder("vgg_tiny", img_size=32, seed=3)
    c = create_encoder("vgg_tiny", img_size=32, seed=4)
    sa, sb, sc = a.state(), b.state(), c.state()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    r = encoder_from_artifact(sa, {"encoder": a.config.to_dict(), "hash": "x"}).eval()
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(r(x), a.eval()(x))


def test_unknown_arch_and_bad_input():
    with pytest.raises(AlanError, match="unknown encoder architecture"):
        create_encoder("no_such_net")
    enc = create_encoder("vgg_tiny", img_size=32)
    with pytest.raises(ValueError, match="grayscale"):
        enc(torch.rand(1, 3, 32, 32))


class _NotATensor:
    """A class a weights file must never make alan import or run."""


def test_weights_files_are_read_by_the_one_safe_checkpoint_reader(tmp_path):
    """Encoders read ImageNet files through models.weights.read_checkpoint (weights_only=True):
    a pickle that needs a foreign class is refused with one line, a checkpoint that wraps the
    state dict (``{"state_dict": ...}``) is unwrapped, and the init records the file's sha256."""
    import hashlib

    from alan.models.encoders import _build_trunk, read_state_dict

    evil = tmp_path / "evil.pth"
    torch.save({"x": _NotATensor()}, evil)
    with pytest.raises(DataError, match="evil.pth: refusing to unpickle: the file needs .*_NotATensor"):
        read_state_dict(evil)
    wrapped = tmp_path / "wrapped.pth"
    trunk = _build_trunk("vgg_tiny", 3)
    torch.save({"state_dict": trunk.state_dict(), "epoch": 3}, wrapped)
    sd = read_state_dict(wrapped)
    assert set(sd) == set(trunk.state_dict())
    enc = create_encoder("vgg_tiny", img_size=32, imagenet_weights=wrapped)
    assert enc.config.init == "imagenet:" + hashlib.sha256(wrapped.read_bytes()).hexdigest()[:16]
    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    with pytest.raises(DataError, match="not a state dict of tensors"):
        read_state_dict(empty)
