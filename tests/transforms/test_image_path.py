"""One image path: a frame reaches the backbone as the same tensor in training and inference."""

import numpy as np
import torch

from alan.data.clips import ClipDataset
from alan.models.parcellator import compute_tokens_and_logits
from alan.records import Record
from alan.transforms.intensity import to_uint8, to_unit
from alan.transforms.spatial import masks_to_native, pad_to_square, resize_unit, to_work


def _record(frames):
    return Record("v", load_frames=lambda: frames, n_frames=len(frames), height=frames.shape[1],
                  width=frames.shape[2], split="train")


def test_training_clip_frame_equals_inference_frame():
    rng = np.random.default_rng(0)
    for frames in (rng.integers(0, 256, (20, 150, 130), dtype=np.uint8),   # echo, non-square
                   rng.integers(0, 256, (20, 112, 112), dtype=np.uint8)):  # already at size
        clip = ClipDataset([_record(frames)], length=4, period=2, size=112)[0]
        train = clip["frames"]  # (4, 112, 112) what RAPTOR's head is trained on
        infer = torch.from_numpy(to_work([frames[i] for i in clip["frame_idx"].tolist()], 112))
        assert train.dtype == infer.dtype == torch.float32
        assert torch.equal(train, infer)


def test_the_backbone_input_of_inference_is_the_work_frame():
    """compute_tokens_and_logits feeds the backbone exactly what to_work produced (no second resize)."""
    seen = []

    class Spy(torch.nn.Module):
        config = type("C", (), {"img_size": 16})()
        embed_dim, grid = 4, 2

        def forward(self, x, size=None):
            seen.append(x.clone())
            return torch.zeros(len(x), 4), torch.zeros(len(x), 4, 4)

    class Head(torch.nn.Module):
        n_parcels = 3
        input_size = None
        grid_of = staticmethod(lambda n: 2)

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(4, 3)

        def forward(self, t):
            return self.w(t)

    frames = np.random.default_rng(1).integers(0, 256, (3, 40, 30), dtype=np.uint8)
    work = to_work(list(frames), 16)
    compute_tokens_and_logits(Spy(), Head(), work)
    assert torch.equal(seen[0], torch.from_numpy(work))


def test_intensity_and_square_helpers():
    mr = np.linspace(-50, 2000, 1000, dtype=np.float32).reshape(10, 100)
    u = to_unit(mr)
    lo, hi = np.percentile(mr, (0.5, 99.5))
    assert np.allclose(u, np.clip((mr - lo) / (hi - lo), 0, 1), atol=1e-6)
    assert to_uint8(mr).dtype == np.uint8 and to_uint8(mr).max() == 255
    x = np.ones((1, 12, 16), np.float32)
    sq = pad_to_square(x, 16)
    assert sq.shape == (1, 16, 16) and sq[0, 0].sum() == 0 and sq[0, 8].sum() == 16  # 2 rows of zeros top / bottom
    assert torch.allclose(resize_unit(np.full((1, 8, 8), 0.5, np.float32), 4), torch.full((1, 4, 4), 0.5))
    back = masks_to_native(np.ones((1, 4, 4), bool), [(9, 7)])[0]
    assert back.shape == (9, 7) and back.all()
