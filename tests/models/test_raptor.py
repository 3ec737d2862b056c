import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alan.errors import ArtifactError
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
