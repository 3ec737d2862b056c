"""The backbone probe on constructed tokens whose answer is known."""

import numpy as np
import pytest
import torch

from alan.pipelines.probe import chamber_labels, patch_fractions, probe_backbone, probe_rows
from alan.records import Record

CODES = {"LV": 1, "LA": 2, "MYO": 3}
S, P = 64, 8  # image size and patch size: an 8 x 8 token grid


def _labels(rng):
    """A label map with an LV, a LA below it and a MYO ring, at a random place."""
    lab = np.zeros((S, S), np.uint8)
    yy, xx = np.mgrid[:S, :S]
    cy, cx = rng.integers(18, 26), rng.integers(24, 40)
    r = np.hypot(yy - cy, (xx - cx) * 1.3)
    lab[r < 14] = CODES["MYO"]
    lab[r < 9] = CODES["LV"]
    ra = np.hypot(yy - (cy + 24), (xx - cx) * 1.3)
    lab[(ra < 13) & (lab == 0)] = 4  # the atrial wall: not a labelled structure, drawn like MYO
    lab[ra < 8] = CODES["LA"]
    return lab


def _records(n, seed, image_of):
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        lab = np.stack([_labels(rng), _labels(rng)])
        frames = np.stack([image_of(l) for l in lab])
        masks = {t: {s: lab[t] == c for s, c in CODES.items()} for t in (0, 1)}
        recs.append(Record(f"r{seed}_{i}", load_frames=lambda f=frames: f, n_frames=2, height=S, width=S,
                           load_masks=lambda m=masks: m, annotated=(0, 1), ed=0, es=1,
                           label="A4C" if i % 2 else "A2C"))
    return recs


class PatchHistogram:
    """A 'backbone' whose patch token is the share of each gray level (10, 60, 120, 200) among the
    patch's pixels plus a few noise channels (so it sees only what the pixel values say);
    CLS = mean token."""

    hash = "patchhist"
    LEVELS = (10, 60, 120, 200)

    def __call__(self, frames):
        x = torch.as_tensor(np.asarray(frames), dtype=torch.float32)[:, None]
        shares = [torch.nn.functional.avg_pool2d(((x - v / 255).abs() < 1e-3).float(), P).flatten(2)  # frames in [0, 1]
                  for v in self.LEVELS]
        tokens = torch.cat(shares, 1).transpose(1, 2)  # (N, 64, 4)
        noise = 0.01 * torch.randn(*tokens.shape[:2], 4, generator=torch.Generator().manual_seed(len(x)))
        tokens = torch.cat([tokens, noise], -1)
        return tokens.mean(1), tokens


def _identity_image(lab):  # each structure its own gray level: tokens encode the structure id
    return (np.choose(lab, [10, 200, 120, 60, 10])).astype(np.uint8)


def _blood_image(lab):  # LV and LA share one gray level (blood pool): tokens cannot tell them apart
    return (np.choose(lab, [10, 200, 200, 60, 60])).astype(np.uint8)


def test_fractions_and_chamber_labels():
    m = np.zeros((1, 16, 16), bool)
    m[0, :8, :4] = True
    frac = patch_fractions(m, 2)
    assert np.allclose(frac, [[0.5, 0.0, 0.0, 0.0]])
    lab = chamber_labels({"LV": np.array([0.6, 0.2, 0.3]), "LA": np.array([0.3, 0.7, 0.3])})
    assert lab.tolist() == [1, 2, 0]


def test_structure_id_tokens_give_a_perfect_chamber_probe_and_intensity_tokens_do_not():
    bb = PatchHistogram()
    ident = probe_backbone(bb, _records(12, 0, _identity_image), _records(6, 1, _identity_image), work_size=S)
    blood = probe_backbone(bb, _records(12, 0, _blood_image), _records(6, 1, _blood_image), work_size=S)
    # patches whose mean is a pure level are classified exactly; mixed boundary patches are what is left
    assert ident["chamber"]["macro_dice"] > 0.9
    assert blood["chamber"]["macro_dice"] < ident["chamber"]["macro_dice"] - 0.15
    # which blood pool a patch lies in is what the intensity tokens cannot say
    assert min(blood["chamber"]["per_structure"]["LV"], blood["chamber"]["per_structure"]["LA"]) < 0.75
    assert set(ident["structures"]) == {"LV", "LA", "MYO"} and ident["structures"]["LV"]["linear"] > 0.9
    assert 0 < ident["pc1_share"] <= 1
    # views: the label alternates independently of the image, so the view probe is near chance
    assert ident["views"]["majority_accuracy"] == pytest.approx(0.5)
    rows = dict(probe_rows(ident))
    assert "chamber probe, macro DICE" in rows and rows["frames (fit / eval)"] == "24 / 12"


def test_collapsed_tokens_have_all_variance_on_pc1():
    class OneLine(PatchHistogram):
        def __call__(self, frames):
            cls, tok = super().__call__(frames)
            direction = torch.ones(tok.shape[-1])
            return cls, tok[..., :1] * direction  # every token on one line
    res = probe_backbone(OneLine(), _records(6, 0, _identity_image), _records(3, 1, _identity_image), work_size=S)
    assert res["pc1_share"] == pytest.approx(1.0, abs=1e-5)


def test_head_probe_feeds_frames_at_the_heads_input_size():
    """A head copied to take frames at a larger size is probed on the parcels every command makes
    with it (the Parcellator's), not on the backbone's own-size tokens."""
    from alan.downstream.parcel_to_segment import region_oracle
    from alan.metrics import dice
    from alan.models.backbones import create_backbone
    from alan.models.parcellator import Parcellator
    from alan.models.raptor import RaptorHead
    from alan.pipelines.probe import collect_probe_frames

    torch.manual_seed(0)
    bb = create_backbone("vit_tiny_p8_112").eval()
    recs = _records(3, 0, _identity_image)
    frames = collect_probe_frames(recs, 112)
    truth = frames.masks["LV"]
    result = {}
    for size in (None, 168):
        torch.manual_seed(1)
        head = RaptorHead(bb.embed_dim, 6, input_size=size)
        got = probe_backbone(bb, recs, recs, head=head)["parcels"]
        parcels = Parcellator(bb, head, work_size=112)(frames.images)
        assert got["per_frame"] == pytest.approx(np.mean([len(np.unique(p)) for p in parcels]))
        assert got["region_oracle"]["LV"] == pytest.approx(float(np.mean(dice(region_oracle(parcels, truth), truth))))
        result[size] = parcels
    assert not np.array_equal(result[None], result[168])  # the size matters, so the test can fail
