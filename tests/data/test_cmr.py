"""ED/ES arrays, heart masks and the segmented input on Records with known content."""

import numpy as np
import pytest
from skimage.morphology import dilation
from skimage.morphology import disk as sk_disk

from alan.pipelines.sscl.masks import AlanMasks
from alan.data.cmr import (FrameDataset, GroundTruthMasks, dilate, heart_mask, load_cine_frames,
                           load_slices)
from alan.transforms.intensity import scale_by_percentile as normalise_intensity
from alan.transforms.spatial import pad_to_square as to_square
from alan.errors import DataError
from alan.records import Record


def _record(i, h=16, w=16, t=5, ed=0, es=3, empty_es=False, masks=True, seed=0):
    rng = np.random.default_rng(seed + i)
    cine = rng.integers(0, 1000, size=(t, h, w)).astype(np.int16)
    lv = np.zeros((h, w), bool)
    lv[5:9, 5:9] = True
    myo = np.zeros((h, w), bool)
    myo[4:10, 4] = True
    rv = np.zeros((h, w), bool)
    rv[5:8, 10:12] = True
    la = np.zeros((h, w), bool)
    la[0:2, 0:2] = True  # not part of the heart mask
    m_ed = {"LV": lv, "MYO": myo, "RV": rv, "LA": la}
    m_es = {"LV": np.zeros_like(lv), "MYO": np.zeros_like(lv), "RV": np.zeros_like(lv)} if empty_es else \
        {"LV": lv[::-1].copy(), "MYO": myo, "RV": rv}
    return Record(id=f"p{i}_s0", load_frames=lambda: cine, n_frames=t, height=h, width=w,
                  load_masks=(lambda: {ed: m_ed, es: m_es}) if masks else None, annotated=(ed, es) if masks else (),
                  ed=ed, es=es, label=["A", "B"][i % 2], split="train", patient=f"p{i}")


def test_heart_mask_is_union_of_lv_myo_rv_only():
    r = _record(0)
    m = r.masks[0]
    got = heart_mask(m)
    assert np.array_equal(got, m["LV"] | m["MYO"] | m["RV"])
    assert not got[0, 0]  # LA excluded
    with pytest.raises(KeyError):
        heart_mask({"LA": m["LA"]})


@pytest.mark.parametrize("margin", [0, 1, 3])
def test_dilate_matches_skimage(margin):
    m = _record(0).masks[0]["LV"]
    want = dilation(m, sk_disk(margin)).astype(bool) if margin else m
    assert np.array_equal(dilate(m, margin), want)
    stack = np.stack([m, m[::-1]])
    assert np.array_equal(dilate(stack, margin)[1], dilate(m[::-1], margin))


def test_segmented_input_is_image_times_mask_at_ed_and_es():
    recs = [_record(i) for i in range(3)]
    data = load_slices(recs, size=16, mask_source=GroundTruthMasks())
    for i, r in enumerate(recs):
        x = normalise_intensity(r.frames)
        for k, f in enumerate((r.ed, r.es)):
            m = heart_mask(r.masks[f])
            assert np.array_equal(data.masks[i, k], m)
            full = np.clip(np.rint(x[f] * 255), 0, 255).astype(np.uint8)
            assert np.array_equal(data.full[i, k], full)
            assert np.array_equal(data.segmented[i, k], np.where(m, full, 0))
    assert list(data.labels) == ["A", "B", "A"] and list(data.patients) == ["p0", "p1", "p2"]
    assert data.images("segmented") is data.segmented and data.images("full") is data.full


def test_margin_dilates_the_applied_mask_and_empty_slices_are_dropped():
    recs = [_record(0), _record(1, empty_es=True)]
    data = load_slices(recs, size=16, mask_source=GroundTruthMasks(), margin=2)
    assert len(data) == 1 and data.skipped == {"empty heart mask at ED or ES": 1}
    m = dilation(heart_mask(recs[0].masks[0]), sk_disk(2)).astype(bool)
    assert np.array_equal(data.masks[0, 0], m)
    assert (data.segmented[0, 0][~m] == 0).all()


def test_non_square_frames_are_padded_centred_and_resized():
    r = _record(0, h=12, w=16)
    data = load_slices([r], size=8, mask_source=GroundTruthMasks())
    assert data.full.shape == (1, 2, 8, 8)
    pad = to_square(np.ones((1, 12, 16), np.float32), 16)
    assert pad[0, :2].sum() == 0 and pad[0, -2:].sum() == 0 and pad[0, 2:14].all()
    assert data.masks.dtype == bool


def test_full_only_without_masks_and_segmented_needs_a_source():
    data = load_slices([_record(0, masks=False)], size=16)
    assert data.segmented is None
    with pytest.raises(DataError, match="mask source"):
        data.images("segmented")
    with pytest.raises(DataError, match="no ground-truth masks"):
        load_slices([_record(0, masks=False)], size=16, mask_source=GroundTruthMasks())


def test_gt_masks_for_unannotated_cine_frames_are_the_union():
    r = _record(0)
    m = GroundTruthMasks()(r, [0, 1, 3], r.frames)
    assert np.array_equal(m[1], heart_mask(r.masks[0]) | heart_mask(r.masks[3]))
    frames = load_cine_frames([r, _record(1)], size=16, input="segmented", mask_source=GroundTruthMasks())
    assert frames.shape == (10, 16, 16) and frames.dtype == np.uint8
    assert (frames[1][~m[1]] == 0).all()
    ds = FrameDataset(frames)
    assert len(ds) == 10 and tuple(ds[0].shape) == (1, 16, 16)


class _FakeP2S:
    def __init__(self, k):
        self.k, self.target = k, f"class{k}"

    def predict(self, parcels, frames=None):  # the frames serve a bright cut, which this fake has not
        return parcels == self.k


class _FakeParcellator:
    work_size = 8
    provenance = {"backbone_hash": "b", "head_hash": "h", "work_size": 8}

    def __init__(self):
        self.seen = []

    def __call__(self, frames):
        self.seen.append(frames)
        p = np.zeros(frames.shape, np.int64)
        p[:, 1:3, 1:3] = 1
        p[:, 4:6, 4:6] = 2
        p[:, 6:8, 0:2] = 3  # a class no model claims
        return p


def test_alan_mask_source_ors_parcel_to_segment_predictions_at_native_size():
    r = _record(0)
    par = _FakeParcellator()
    src = AlanMasks(par, [_FakeP2S(1), _FakeP2S(2)])
    data = load_slices([r], size=16, mask_source=src)
    work = par.seen[0]
    assert work.shape == (2, 8, 8) and work.dtype == np.float32  # ED and ES at the working size, in [0, 1]
    want = np.zeros((16, 16), bool)
    want[2:6, 2:6] = want[8:12, 8:12] = True  # 8 px work grid -> 16 px native (nearest)
    assert np.array_equal(data.masks[0, 0], want) and np.array_equal(data.masks[0, 1], want)
    assert data.mask_config["source"] == "alan" and data.mask_config["targets"] == ["class1", "class2"]
    assert data.mask_config["backbone_hash"] == "b"


def test_normalise_intensity_percentile_scaling():
    x = np.arange(1000, dtype=np.int16).reshape(10, 10, 10)
    y = normalise_intensity(x, percentile=50)
    assert y.dtype == np.float32 and y.max() == 1.0 and y.min() == 0.0
    assert y.reshape(-1)[250] == pytest.approx(250 / np.percentile(x, 50))


def test_alan_mask_source_from_locked_artifacts(tmp_path):
    """The real plumbing: backbone + head artifacts -> Parcellator -> parcel-to-segment JSON files."""
    import json

    from alan.models.backbones import create_backbone, save_backbone
    from alan.models.raptor import RaptorHead, save_head
    from alan.pipelines.segment import Parcellator, fit_segmenter

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    bb = create_backbone("vit_tiny_p8_112")
    save_backbone(bb, tmp_path / "bb")
    head = RaptorHead(bb.embed_dim, 4)
    save_head(head, tmp_path / "head", backbone_hash=bb.hash)
    recs = [_record(i, h=24, w=24) for i in range(2)]
    for i, target in enumerate(("LV", "RV")):
        model = fit_segmenter(Parcellator(bb, head, work_size=24), recs, target, closing=False, snake=False)
        path = tmp_path / f"{target}.json"
        model.to_json(path)
        doc = json.loads(path.read_text())
        doc["interior_parcels"] = [i]  # hand-edited: one parcel class per target
        path.write_text(json.dumps(doc))
    src = AlanMasks.from_paths(tmp_path / "bb", tmp_path / "head", [tmp_path / "LV.json", tmp_path / "RV.json"])
    r = recs[0]
    m = src(r, [r.ed, r.es], r.frames)
    assert m.shape == (2, 24, 24) and m.dtype == bool
    cfg = src.config()
    assert cfg["targets"] == ["LV", "RV"] and cfg["backbone_hash"] == bb.hash and cfg["head_hash"] == head.hash
    # a parcel-to-segment model fitted on another backbone is refused
    other = create_backbone("vit_tiny_p8_112")
    save_backbone(other, tmp_path / "bb2")
    save_head(head, tmp_path / "head2", backbone_hash=other.hash)
    with pytest.raises(Exception, match="fitted on"):
        AlanMasks.from_paths(tmp_path / "bb2", tmp_path / "head2", [tmp_path / "LV.json"])
