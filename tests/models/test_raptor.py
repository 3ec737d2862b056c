import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alan.errors import AlanError, ArtifactError
from alan.models.raptor import RaptorHead, load_head, save_head


def _plain(head: RaptorHead, x: torch.Tensor) -> torch.Tensor:
    """The architecture re-stated from METHODS A2 with functional ops (eval mode: no dropout)."""
    def ln(block, v):
        return F.layer_norm(v, (v.shape[-1],), block.norm.weight, block.norm.bias, block.norm.eps)

    b1, b2, b3 = head.block1, head.block2, head.block3
    x = x + F.gelu(ln(b1, x) @ b1.linear.weight.T + b1.linear.bias)
    x = x + F.relu(ln(b2, x) @ b2.linear.weight.T + b2.linear.bias)
    return ln(b3, x) @ b3.linear.weight.T + b3.linear.bias


def test_architecture_matches_the_paper():
    torch.manual_seed(0)
    head = RaptorHead(16, 5).eval()
    x = torch.randn(3, 9, 16)
    torch.testing.assert_close(head(x), _plain(head, x))
    assert head.block1.dropout.p == head.block2.dropout.p == head.block3.dropout.p == 0.2
    assert sum(p.numel() for p in head.parameters()) == 3 * 2 * 16 + 2 * (16 * 16 + 16) + 16 * 5 + 5


def test_dropout_only_in_training():
    torch.manual_seed(0)
    head = RaptorHead(16, 5)
    x = torch.randn(2, 4, 16)
    assert not torch.allclose(head.train()(x), head(x))
    head.eval()
    torch.testing.assert_close(head(x), head(x))


def test_parcels_argmax_of_bilinearly_upsampled_logits():
    torch.manual_seed(1)
    head = RaptorHead(8, 6).eval()
    g, size = 4, (20, 28)
    tokens = torch.randn(2, g * g, 8)
    with torch.no_grad():
        logits = head(tokens).numpy()
        got = head.parcels(tokens, size).numpy()
        got_from_logits = head.parcels(torch.from_numpy(logits), size).numpy()
    for n in range(2):
        grid = logits[n].reshape(g, g, 6)  # tokens are row-major on the grid
        up = cv2.resize(grid, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)  # half-pixel, like align_corners=False
        np.testing.assert_array_equal(got[n], up.argmax(-1))
    np.testing.assert_array_equal(got, got_from_logits)
    probs = head.probabilities(tokens, size)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, *size))


def test_k_equal_d_needs_to_be_told():
    head = RaptorHead(4, 4).eval()
    with pytest.raises(ValueError, match="K == D"):
        head.parcels(torch.randn(1, 4, 4), 8)
    assert head.parcels(torch.randn(1, 4, 4), 8, is_logits=True).shape == (1, 8, 8)


class _FakeBackbone:
    def __init__(self, h, d=8):
        self.hash, self.embed_dim = h, d


def test_artifact_round_trip_and_backbone_hash_check(tmp_path):
    torch.manual_seed(2)
    head = RaptorHead(8, 5)
    head.token_mean.fill_(0.5)
    h = save_head(head, tmp_path / "head", backbone_hash="abc123", loss={"preset": "reference"}, training={"lr": 5e-3})
    assert h == head.hash
    loaded = load_head(tmp_path / "head", _FakeBackbone("abc123"))
    assert loaded.hash == h and loaded.config["loss"]["preset"] == "reference" and not loaded.training
    x = torch.randn(1, 4, 8)
    torch.testing.assert_close(loaded(x), head.eval()(x))
    assert load_head(tmp_path).hash == h  # a run folder holding head/
    with pytest.raises(ArtifactError, match="trained on backbone abc123, but the given backbone is zzz") as e:
        load_head(tmp_path / "head", _FakeBackbone("zzz"))
    assert "\n" not in str(e.value)
    with pytest.raises(ArtifactError, match="8-channel"):
        load_head(tmp_path / "head", _FakeBackbone("abc123", d=16))


# --- training ---------------------------------------------------------------------------------

def _records(n=3, frames=40, size=32, seed=0):
    from alan.records import Record

    rng = np.random.default_rng(seed)
    vids = [rng.integers(0, 256, (frames, size, size), dtype=np.uint8) for _ in range(n)]
    return [Record(f"r{i}", load_frames=(lambda v=v: v), n_frames=frames, split="train") for i, v in enumerate(vids)]


def test_token_cache_serves_the_backbone_tokens_and_skips_the_backbone_once_filled(tmp_path):
    from alan.data.clips import ClipDataset, collate_clips
    from alan.models.backbones import create_backbone
    from alan.models.raptor_module import RaptorModule, TokenCache
    from alan.models.straptor import StraptorLoss

    torch.manual_seed(0)
    bb = create_backbone("vit_tiny_p8_112")
    recs = _records()
    ds = ClipDataset(recs, length=4, size=112)
    for path in (None, tmp_path / "cache.f16"):
        cache = TokenCache(ds.n_frames, bb.grid ** 2, bb.embed_dim, path)
        ds.skip_frames = cache.has
        module = RaptorModule(bb, RaptorHead(bb.embed_dim, 4), StraptorLoss(), cache=cache)
        calls = []
        hook = module.backbone.register_forward_hook(lambda *a: calls.append(1))
        batch = collate_clips([ds[0], ds[2]])
        first = module.tokens(batch)
        assert len(calls) == 1
        assert int(cache.filled.sum()) == len(set(batch["frame_idx"][0].tolist())) + len(set(batch["frame_idx"][1].tolist()))
        cached = {"index": batch["index"], "frame_idx": batch["frame_idx"], "frames": [None, None]}
        torch.testing.assert_close(module.tokens(cached), first)
        assert len(calls) == 1  # served from the cache
        assert cache.has(0, batch["frame_idx"][0].numpy()) and not cache.has(1, np.arange(4))
        assert ds[0]["frames"] is None or not torch.equal(ds[0]["frame_idx"], batch["frame_idx"][0])
        hook.remove()
        with torch.no_grad():
            _, direct = bb(batch["frames"].flatten(0, 1))
        torch.testing.assert_close(first, direct.reshape(first.shape).half().float())
        cache.close()


def test_train_raptor_trains_only_the_head_and_records_the_backbone(tmp_path):
    from alan.models.backbones import create_backbone
    from alan.models.raptor_module import train_raptor
    from alan.training import RunOptions

    torch.manual_seed(0)
    bb = create_backbone("vit_tiny_p8_112")
    bb.hash = "feedbeef"
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    opts = RunOptions(max_epochs=2, batch_size=2, progress=False)
    head = train_raptor(bb, _records(), tmp_path / "run", n_parcels=6, opts=opts, standardize_tokens=True)
    assert all(torch.equal(v, bb.state_dict()[k]) for k, v in before.items())
    loaded = load_head(tmp_path / "run", bb)
    assert loaded.hash == head.hash and loaded.config["training"]["cache"] == "memory"
    assert loaded.config["training"]["standardize_tokens"] and float(loaded.token_std.min()) > 0
    init = RaptorHead(bb.embed_dim, 6)
    assert not torch.equal(init.block3.linear.bias, loaded.block3.linear.bias)  # zeros at init
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert not any(k.startswith("backbone.") for k in ckpt["state_dict"])
    # resume continues from the checkpoint (no backbone in it) for one more epoch
    opts3 = RunOptions(max_epochs=3, batch_size=2, progress=False, resume=True)
    head3 = train_raptor(bb, _records(), tmp_path / "run", n_parcels=6, opts=opts3, cache="off")
    assert head3.hash != head.hash
    torch.testing.assert_close(head3.token_mean, loaded.token_mean)  # standardisation restored, not recomputed


def test_train_raptor_is_a_function_of_its_seed_not_of_the_process_rng(tmp_path):
    from alan.models.backbones import create_backbone
    from alan.models.raptor_module import train_raptor
    from alan.training import RunOptions

    torch.manual_seed(0)
    bb = create_backbone("vit_micro_p8_64")
    opts = RunOptions(max_epochs=1, batch_size=2, progress=False, seed=3)
    heads = []
    for run, burn in (("a", 0), ("b", 1000)):
        torch.rand(burn)  # whatever ran before in the process must not change the result
        heads.append(train_raptor(bb, _records(), tmp_path / run, n_parcels=6, opts=opts))
    for p, q in zip(heads[0].parameters(), heads[1].parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    other = train_raptor(bb, _records(), tmp_path / "c", n_parcels=6, opts=RunOptions(max_epochs=1, batch_size=2,
                                                                                      progress=False, seed=4))
    assert not all(torch.equal(p, q) for p, q in zip(heads[0].parameters(), other.parameters()))


def test_input_size_is_used_in_training_kept_by_the_head_and_used_at_inference(tmp_path):
    from alan.models.backbones import create_backbone
    from alan.models.parcellator import compute_parcels, compute_tokens_and_logits
    from alan.models.raptor_module import train_raptor
    from alan.training import RunOptions

    torch.manual_seed(0)
    bb = create_backbone("vit_micro_p8_64").eval()
    opts = RunOptions(max_epochs=1, batch_size=2, progress=False)
    head = train_raptor(bb, _records(), tmp_path / "run", n_parcels=6, position=1.0, input_size=96, opts=opts)
    loaded = load_head(tmp_path / "run", bb)
    assert loaded.input_size == 96 and loaded.grid == 12 and loaded.hash == head.hash
    assert loaded.config["meta"]["grid"] == 12
    frames = np.random.default_rng(0).random((3, 50, 60)).astype(np.float32)
    cls, logits = compute_tokens_and_logits(bb, loaded, frames)
    assert logits.shape == (3, 6, 12, 12)
    with torch.no_grad():
        _, tokens = bb(torch.from_numpy(frames), 96)
    torch.testing.assert_close(logits, loaded(tokens).transpose(1, 2).reshape(3, 6, 12, 12))
    assert compute_parcels(bb, loaded, frames).shape == (3, 50, 60)
    # the view features stay the backbone's own: CLS of frames at its training size
    torch.testing.assert_close(cls, bb(torch.from_numpy(frames))[0])
    from alan.models.backbones import view_features

    grid, _ = compute_tokens_and_logits(bb, loaded, frames, features="grid")
    torch.testing.assert_close(grid, view_features(*bb(torch.from_numpy(frames)), "grid"))
    assert compute_tokens_and_logits(bb, loaded, frames, features=None)[0] is None
    with pytest.raises(AlanError, match="multiple of the patch size"):
        train_raptor(bb, _records(), tmp_path / "bad", n_parcels=6, input_size=90, opts=opts)
    assert not (tmp_path / "bad").exists()


def test_position_features_and_the_loss_target_blend():
    import math

    from alan.models.raptor import POSITION_DIM, position_features

    pos = position_features(4)
    assert pos.shape == (16, POSITION_DIM) and torch.allclose(pos.norm(dim=-1), torch.ones(16))
    # the dot product falls with distance along a row: token 0 vs tokens 1, 2, 3 of the first row
    sims = pos[0] @ pos[:4].T
    assert sims[0] == pytest.approx(1.0) and bool((sims[1:] < sims[:-1]).all())
    head = RaptorHead(6, 3, position=0.7, grid=4).eval()
    x = torch.randn(2, 16, 6)
    f = head.loss_features(x)
    assert f.shape == (2, 16, 6 + POSITION_DIM)
    cos = torch.nn.functional.cosine_similarity
    a, b = f[0, 3], f[1, 9]
    want = (cos(x[0, 3], x[1, 9], dim=0) + 0.7**2 * (pos[3] @ pos[9])) / (1 + 0.7**2)
    assert cos(a, b, dim=0).item() == pytest.approx(want.item(), abs=1e-5)
    assert head(x).shape == (2, 16, 3)
    # another token grid (frames fed at another size) gets that grid's own position features
    y = torch.randn(2, 9, 6)
    assert torch.equal(head.loss_features(y)[..., 6:], (0.7 * position_features(3)).expand(2, 9, POSITION_DIM))
    with pytest.raises(ValueError, match="square grid"):
        head(torch.randn(2, 10, 6))
    # without position the head is the paper's: loss features are the tokens themselves
    plain = RaptorHead(6, 3)
    assert torch.equal(plain.loss_features(x), x) and plain.block1.linear.in_features == 6
    assert not math.isnan(float(head(x).sum()))


def test_position_head_round_trips_through_its_artifact(tmp_path):
    from alan.models.raptor import load_head, save_head

    head = RaptorHead(6, 3, position=0.5, grid=4).eval()
    save_head(head, tmp_path / "h", backbone_hash="b")
    back = load_head(tmp_path / "h")
    x = torch.randn(1, 16, 6)
    assert back.position == 0.5 and back.grid == 4 and torch.allclose(back(x), head(x))


def test_disk_token_cache_of_another_ddp_rank_stays_out_of_the_run_folder(tmp_path, monkeypatch):
    from alan.models.raptor_module import TokenCache, _cache_path

    monkeypatch.setenv("RANK", "1")
    path = _cache_path(tmp_path / "run")
    cache = TokenCache([3, 2], 4, 8, path)
    assert path.is_file() and not (tmp_path / "run").exists()
    cache.close()
    assert not path.parent.exists()
    monkeypatch.setenv("RANK", "0")
    assert _cache_path(tmp_path / "run") == tmp_path / "run" / "token_cache.f16"


def test_input_size_copy_keeps_the_weights_and_records_where_it_came_from(tmp_path, run_cli):
    from alan.models.raptor import set_input_size

    torch.manual_seed(0)
    head = RaptorHead(8, 3, position=1.0, grid=8).eval()
    save_head(head, tmp_path / "h", backbone_hash="feedbeef", training={"input_size": None},
              meta={"backbone_arch": "vit_micro_p8_64"})
    res = run_cli("raptor", "input-size", "--head", str(tmp_path / "h"), "--size", "96", "--out", str(tmp_path / "h96"))
    assert res.returncode == 0 and "frames at 96 px" in res.stdout, res.stderr
    copy = load_head(tmp_path / "h96")
    assert copy.input_size == 96 and copy.hash != head.hash and copy.config["backbone_hash"] == "feedbeef"
    assert copy.config["meta"]["input_size_from"] == head.hash and copy.config["training"]["input_size"] is None
    assert all(torch.equal(v, copy.state_dict()[k]) for k, v in head.state_dict().items())
    with pytest.raises(AlanError, match="multiple of the patch size 8"):
        set_input_size(tmp_path / "h", 90, tmp_path / "bad")
    save_head(head, tmp_path / "no_arch", backbone_hash="feedbeef")
    with pytest.raises(ArtifactError, match="architecture"):
        set_input_size(tmp_path / "no_arch", 96, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    # the output policy holds: an existing folder of other things is refused
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    res = run_cli("raptor", "input-size", "--head", str(tmp_path / "h"), "--size", "96", "--out", str(tmp_path / "mine"))
    assert res.returncode == 2 and (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_rebind_follows_a_gray_matched_copy_of_the_backbone_only(tmp_path, run_cli):
    from alan.models.backbones import create_backbone, load_backbone, save_backbone, with_gray_reference
    from alan.transforms.intensity import REFERENCE_POINTS

    torch.manual_seed(0)
    bb = create_backbone("vit_micro_p8_64")
    save_backbone(bb, tmp_path / "bb")
    matched = with_gray_reference(bb, list(np.linspace(0.01, 1, REFERENCE_POINTS)))
    save_backbone(matched, tmp_path / "bb_matched")
    head = RaptorHead(bb.embed_dim, 3, position=1.0, grid=8).eval()
    save_head(head, tmp_path / "h", backbone_hash=bb.hash, meta={"backbone_arch": "vit_micro_p8_64"})
    res = run_cli("raptor", "rebind", "--head", str(tmp_path / "h"), "--backbone", str(tmp_path / "bb_matched"),
                  "--out", str(tmp_path / "h2"))
    assert res.returncode == 0 and head.hash in res.stdout, res.stderr
    copy = load_head(tmp_path / "h2", load_backbone(tmp_path / "bb_matched"))
    assert copy.config["backbone_hash"] == matched.hash and copy.config["meta"]["rebound_from"] == head.hash
    assert all(torch.equal(v, copy.state_dict()[k]) for k, v in head.state_dict().items())
    # any other backbone is refused, and nothing is written
    other = create_backbone("vit_micro_p8_64")
    save_backbone(other, tmp_path / "other")
    res = run_cli("raptor", "rebind", "--head", str(tmp_path / "h"), "--backbone", str(tmp_path / "other"),
                  "--out", str(tmp_path / "bad"))
    assert res.returncode == 2 and "not a gray-matched copy" in res.stderr and not (tmp_path / "bad").exists()
