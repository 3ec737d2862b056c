"""FrameDataset (listing, indexing, lazy decoding, LRU cache, mean/std), FrameSampler, fingerprint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alan.data.frames import FrameDataset, FrameSampler, fingerprint, resize_frames, to_uint8
from alan.errors import DataError
from alan.records import Record


def make_records(counts=(3, 5, 2), h=12, w=10, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    recs, arrays, calls = [], [], {}
    for i, t in enumerate(counts):
        if dtype == np.uint8:
            a = rng.integers(0, 256, (t, h, w), dtype=np.uint8)
        else:
            a = rng.normal(300, 80, (t, h, w)).astype(dtype)
        arrays.append(a)
        calls[i] = 0

        def load(a=a, i=i):
            calls[i] += 1
            return a

        recs.append(Record(id=f"v{i}", load_frames=load, n_frames=t, height=h, width=w, split="train"))
    return recs, arrays, calls


def test_listing_decodes_nothing_and_indexes_every_frame():
    recs, arrays, calls = make_records()
    ds = FrameDataset(recs)
    assert len(ds) == 10 and sum(calls.values()) == 0
    flat = np.concatenate(arrays)
    for i in range(len(ds)):
        x, idx = ds[i]
        assert idx == i and x.shape == (1, 12, 10) and x.dtype == torch.uint8
        np.testing.assert_array_equal(x[0].numpy(), flat[i])
    assert [ds.locate(i) for i in (0, 2, 3, 7, 8, 9)] == [(0, 0), (0, 2), (1, 0), (1, 4), (2, 0), (2, 1)]
    with pytest.raises(IndexError):
        ds.locate(10)


def test_lru_cache_decodes_each_video_once_while_it_fits():
    recs, _, calls = make_records()
    ds = FrameDataset(recs, cache_videos=2)
    for i in range(len(ds)):
        ds[i]
    assert list(calls.values()) == [1, 1, 1]
    ds[0]  # evicted by video 2 (cache of 2: videos 1, 2); now holds 2, 0
    assert calls[0] == 2
    ds[9]
    assert calls[2] == 1  # still cached
    ds[4]
    assert calls[1] == 2  # least recently used, evicted
    import copy

    clone = copy.copy(ds)  # pickled state, as a DataLoader worker gets it: no cached videos
    assert len(clone._cache) == 0 and len(clone) == len(ds)


def test_resize_matches_torch_bilinear_antialias():
    recs, arrays, _ = make_records(h=40, w=30)
    ds = FrameDataset(recs, size=16)
    x, _ = ds[4]
    ref = F.interpolate(torch.from_numpy(arrays[1][1:2]).float()[None], size=(16, 16), mode="bilinear",
                        align_corners=False, antialias=True)
    assert x.shape == (1, 16, 16)
    assert (x.float() - ref[0].round()).abs().max() <= 1


def test_mean_std_against_numpy():
    recs, arrays, _ = make_records()
    ds = FrameDataset(recs)
    mean, std = ds.mean_std()
    flat = np.concatenate(arrays).astype(np.float64) / 255
    assert mean == pytest.approx(flat.mean(), abs=1e-9) and std == pytest.approx(flat.std(), abs=1e-9)
    m1, _ = ds.mean_std(max_records=2)  # evenly spaced records 0 and 2
    assert m1 == pytest.approx(np.concatenate([arrays[0], arrays[2]]).mean() / 255, abs=1e-9)


def test_non_uint8_frames_are_scaled_per_record():
    recs, arrays, _ = make_records(dtype=np.int16)
    x, _ = FrameDataset(recs)[0]
    lo, hi = np.percentile(arrays[0].astype(np.float32), [0.5, 99.5])
    ref = np.clip((arrays[0][0].astype(np.float32) - lo) * 255 / (hi - lo) + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(x[0].numpy(), ref)
    assert to_uint8(np.full((2, 3, 3), 7, np.int16)).max() == 0  # constant input: no division by zero


def test_bad_records_fail_with_one_line():
    r = Record(id="x", load_frames=lambda: np.zeros((4, 5, 5), np.uint8), n_frames=None, source="x.avi")
    with pytest.raises(DataError, match="x.avi: record does not say its number of frames"):
        FrameDataset([r])
    r = Record(id="y", load_frames=lambda: np.zeros((4, 5, 5), np.uint8), n_frames=6, source="y.avi")
    with pytest.raises(DataError, match="y.avi: record says 6 frames but decodes to 4"):
        FrameDataset([r])[0]


def test_sampler_covers_every_frame_once_per_epoch_and_changes_with_epoch():
    recs, _, _ = make_records(counts=(7, 3, 9, 4, 6))
    ds = FrameDataset(recs)
    s = FrameSampler(ds, seed=1, window=2)
    a = list(s)
    assert sorted(a) == list(range(len(ds)))
    s.set_epoch(1)
    b = list(s)
    assert sorted(b) == list(range(len(ds))) and a != b
    s.set_epoch(0)
    assert list(s) == a
    # windows: the first 2 records' frames (whichever they are) come before anything else
    first = {ds.locate(i)[0] for i in a[: ds.counts[[ds.locate(i)[0] for i in a[:1]]].sum()]}
    assert len({ds.locate(i)[0] for i in a[:10]}) <= 3 and len(first) <= 2


def test_sampler_splits_like_distributed_sampler():
    recs, _, _ = make_records(counts=(7, 3, 9, 4))
    ds = FrameDataset(recs)
    full = list(FrameSampler(ds, seed=3, window=100))
    parts = [list(FrameSampler(ds, seed=3, window=100, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(p) for p in parts] == [8, 8, 8]
    padded = full + full[: 24 - len(full)]
    assert [padded[r::3] for r in range(3)] == parts
    s = FrameSampler(ds, seed=3, window=100)
    s.skip = 5
    assert list(s) == full[5:] and list(s) == full  # skip applies to one iteration only


def test_fingerprint_depends_on_ids_frames_format_and_extra():
    recs, _, _ = make_records()
    f = fingerprint(recs, "echonet", split="train")
    assert f == fingerprint(list(reversed(recs)), "echonet", split="train")
    assert f != fingerprint(recs[:2], "echonet", split="train")
    assert f != fingerprint(recs, "camus", split="train") != fingerprint(recs, "echonet", split="val")
    assert len(f) == 64


def test_resize_frames_noop_when_sized():
    a = np.zeros((2, 8, 8), np.uint8)
    assert resize_frames(a, 8) is a and resize_frames(a, None) is a
