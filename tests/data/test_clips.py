import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from alan.data.clips import ClipDataset, clip_indices, collate_clips, frames_to_unit, resize_unit
from alan.records import Record


def _video(rid: str, n: int, h: int = 12, w: int = 10, calls: list | None = None) -> Record:
    """Frame t is filled with the value t (so indices can be read back from pixels)."""
    def load():
        if calls is not None:
            calls.append(rid)
        return np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None], (n, h, w)).copy()
    return Record(rid, load_frames=load, n_frames=n, height=h, width=w, split="train")


def test_clip_is_16_frames_one_apart_from_a_random_start():
    torch.manual_seed(0)
    n, span = 50, 31
    starts = set()
    for _ in range(400):
        idx = clip_indices(n, 16, 2)
        assert len(idx) == 16 and np.all(np.diff(idx) == 2)
        assert 0 <= idx[0] and idx[-1] <= n - 1
        starts.add(int(idx[0]))
    assert starts == set(range(n - span + 1))  # every admissible start occurs, no other


def test_items_carry_the_frames_at_their_indices():
    torch.manual_seed(1)
    ds = ClipDataset([_video("a", 40), _video("b", 33)])
    for i in range(2):
        item = ds[i]
        expected = item["frame_idx"].numpy().astype(np.float32) / 255
        np.testing.assert_allclose(item["frames"][:, 0, 0].numpy(), expected, rtol=1e-6)
        assert item["frames"].shape == (16, 12, 10)


def test_short_videos_pad_by_repeating_or_are_skipped():
    ds = ClipDataset([_video("short", 10), _video("long", 31)], short="pad")
    idx = ds[0]["frame_idx"].numpy()
    np.testing.assert_array_equal(idx, [0, 2, 4, 6, 8] + [9] * 11)
    skipped = ClipDataset([_video("short", 10), _video("long", 31)], short="skip")
    assert len(skipped) == 1 and skipped.records[0].id == "long" and skipped.n_skipped == 1
    with pytest.raises(ValueError):
        ClipDataset([], short="zero")


def test_resize_matches_the_backbone_input_convention():
    from alan.models.backbones import create_backbone

    bb = create_backbone("vit_tiny_p8_112")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 60, 80), dtype=np.uint8)
    ours = resize_unit(frames_to_unit(frames), 112)
    prepared = bb.prepare(frames)
    torch.testing.assert_close((ours[:, None].expand(-1, 3, -1, -1) - bb.mean) / bb.std, prepared)


def test_frames_to_unit():
    np.testing.assert_allclose(frames_to_unit(np.array([0, 255], np.uint8)), [0, 1])
    x = np.linspace(0, 0.5, 10, dtype=np.float32)
    np.testing.assert_array_equal(frames_to_unit(x), x)
    mr = np.arange(1000, dtype=np.uint16).reshape(10, 10, 10)
    u = frames_to_unit(mr)
    assert u.dtype == np.float32 and u.min() == 0 and u.max() == 1
    assert np.all(np.diff(u.ravel()) >= 0)


def test_cached_items_are_not_decoded_and_collate():
    calls: list = []
    recs = [_video("a", 40, calls=calls), _video("b", 40, calls=calls)]
    ds = ClipDataset(recs, size=16, skip_frames=lambda index, idx: index == 1)
    batch = collate_clips([ds[0], ds[1]])
    assert calls == ["a"]
    assert batch["frames"][0].shape == (16, 16, 16) and batch["frames"][1] is None
    assert batch["index"].tolist() == [0, 1] and batch["frame_idx"].shape == (2, 16)
    loader = DataLoader(ClipDataset(recs, size=16), batch_size=2, collate_fn=collate_clips)
    (full,) = list(loader)
    assert full["frames"].shape == (2, 16, 16, 16)
