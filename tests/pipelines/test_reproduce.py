"""`alan reproduce alan` runs the paper's protocol on phantoms written in the real formats."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from alan.cli.main import app
from alan.phantom import synthesize
from alan.models.backbones import create_backbone, save_backbone


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    return {fmt: synthesize(fmt, root / fmt, seed=3, size="small") for fmt in ("echonet", "camus", "tmed2")}


def test_reproduce_alan_on_phantoms(phantoms, tmp_path):
    bb = create_backbone("vit_tiny_p8_112")
    save_backbone(bb, tmp_path / "bb")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, [
        "reproduce", "alan", "--echonet", str(phantoms["echonet"]), "--camus", str(phantoms["camus"]),
        "--tmed2", str(phantoms["tmed2"]), "--backbone", str(tmp_path / "bb"), "--k", "8",
        "--raptor-epochs", "1", "--raptor-max-steps", "2", "--out", str(out), "--accelerator", "cpu"])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    seg = results["segmentation"]
    # EchoNet gives LV; CAMUS gives LV and LA; every number is a DICE in [0, 1]
    assert set(seg["by_dataset"]) == {"echonet", "camus"}
    assert set(seg["by_dataset"]["camus"]["dice"]) == {"LV", "LA"}
    for target in ("LV", "LA"):
        for phase in ("ED", "ES"):
            assert 0.0 <= seg[target][phase]["dice_mean"] <= 1.0
    # pooled LV = frame-weighted mean of the two datasets
    parts = [seg["by_dataset"][f]["dice"]["LV"]["ED"] for f in ("echonet", "camus")]
    pooled = sum(p["mean"] * p["n"] for p in parts) / sum(p["n"] for p in parts)
    assert seg["LV"]["ED"]["dice_mean"] == pytest.approx(pooled)
    # the best class set of the fitting split, scored on test, is reported beside the region oracle
    cs = seg["by_dataset"]["camus"]["class_set_oracle"]
    assert set(cs) == {"LV", "LA"} and all(0.0 <= v <= 1.0 for t in cs.values() for v in t.values())
    views = results["views"]
    assert views["k"] == 10 and set(views["classes"]) == {"A2C", "A4C", "PLAX", "PSAX"}
    cm = np.array(views["by_k"]["10"]["confusion"])
    assert cm.sum() == views["n_test"] and np.trace(cm) / cm.sum() == pytest.approx(views["accuracy"])
    assert results["raptor"]["K"] == 8 and results["backbone"]["hash"]
    # the downstream models name what they were fitted on
    lv = json.loads((out / "models" / "echonet_LV.json").read_text())
    assert lv["provenance"]["backbone_hash"] == results["backbone"]["hash"]
    assert lv["provenance"]["head_hash"] == results["raptor"]["hash"]
    assert (out / "report.html").read_text().count("<img") >= 3


def test_a_given_head_with_the_grid_position_gets_the_shipped_recipe(phantoms, tmp_path):
    """The shipped head named by path (with its backbone) is scored with the recipe it was made
    for, not the paper's, unless the paper's is asked for."""
    from alan.models.backbones import bundled_backbone
    from alan.models.raptor import bundled_head, load_head

    assert load_head(bundled_head()).position > 0
    args = ["reproduce", "alan", "--echonet", str(phantoms["echonet"]), "--backbone", str(bundled_backbone()),
            "--head", str(bundled_head())]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "using the shipped recipe" in res.output
    assert json.loads((tmp_path / "a" / "results.json").read_text())["recipe"]["name"] == "shipped"
    res = CliRunner().invoke(app, [*args, "--recipe", "paper", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0 and "using the shipped recipe" not in res.output, res.output
    assert json.loads((tmp_path / "b" / "results.json").read_text())["recipe"]["name"] == "paper"


def test_reproduce_needs_a_dataset():
    res = CliRunner().invoke(app, ["reproduce", "alan"])
    assert res.exit_code == 2 and "give at least one of --echonet, --camus, --tmed2" in res.output


def test_camus_2019_scores_held_out_training_patients(tmp_path):
    from alan.data import open_dataset
    from alan.pipelines.protocol import scoring_sets

    ds = open_dataset(synthesize("camus", tmp_path / "camus2019", seed=3, size="small", release="2019"))
    assert not any(r.annotated for r in ds.split("test"))  # the 2019 release withholds the testing ground truth
    fit, test, info = scoring_sets(ds, ("train",), ("test",))
    assert "2019 release withholds" in info["note"] and "--camus" in info["note"]
    fit_p, test_p = {r.patient for r in fit}, {r.patient for r in test}
    train_p = sorted({r.patient for r in ds.split("train")})
    assert not fit_p & test_p and fit_p | test_p == set(train_p)
    assert sorted(test_p) == train_p[-len(test_p):] and all(r.annotated for r in test)
    # the NIfTI release has its testing ground truth: the official split is scored, with no note
    nifti = open_dataset(synthesize("camus", tmp_path / "camus_nifti", seed=3, size="small"))
    fit, test, info = scoring_sets(nifti, ("train",), ("test",))
    assert info["note"] is None and test == nifti.split("test")


def test_protocol_fits_and_scores_the_la_yielding_to_the_lv(phantoms, tmp_path):
    """`ProtocolConfig.yields` / `yield_limit`: the LA model is fitted with ``yields_to=("LV",)`` and
    the limit, and both models are scored together, so the reported LA and LV DICEs are those of
    `predict_targets` on the test frames; without the option the LA model is the paper's own mask."""
    from alan.data import open_dataset
    from alan.downstream import ParcelToSegment
    from alan.downstream.parcel_to_segment import predict_targets
    from alan.metrics import dice
    from alan.models.backbones import load_backbone
    from alan.models.parcellator import Parcellator
    from alan.models.raptor import RaptorHead, load_head, save_head
    from alan.pipelines.protocol import ProtocolConfig, run_protocol, scoring_sets
    from alan.pipelines.segment import collect_annotated
    from alan.downstream.parcel_to_segment import location_prior
    from alan.transforms.spatial import masks_to_native, masks_to_work, to_work

    digest = save_backbone(create_backbone("vit_tiny_p8_112"), tmp_path / "bb")
    save_head(RaptorHead(192, 8, position=1.0, grid=14), tmp_path / "head", backbone_hash=digest)
    bb, head = load_backbone(tmp_path / "bb"), load_head(tmp_path / "head")
    common = dict(n_parcels=8, component_by="prior", prior_support=0.05, progress=False)
    res = run_protocol(bb, tmp_path / "out", echonet=None, camus=phantoms["camus"], tmed2=None, head=head,
                       config=ProtocolConfig(yields={"LA": ("LV",)}, yield_limit=0.6, **common))
    models = {t: ParcelToSegment.from_json(res["segment_models"][f"camus_{t}"]) for t in ("LV", "LA")}
    assert models["LA"].yields_to == ("LV",) and models["LV"].yields_to == ()
    assert models["LA"].yield_limit == 0.6 and models["LV"].yield_limit == 1.0
    _, test, _ = scoring_sets(open_dataset(phantoms["camus"]), ("train",), ("test",))
    for target in ("LV", "LA"):  # both reported DICEs are those of the two models run together
        frames = collect_annotated(test, target)
        parcels = Parcellator(bb, head)(to_work(frames.images, 112))
        pred = masks_to_native(predict_targets(models, parcels)[target], [m.shape for m in frames.masks])
        scores = np.array([dice(p, t) for p, t in zip(pred, frames.masks)])
        for phase in ("ED", "ES"):
            got = res["segmentation"]["camus"]["dice"][target][phase]["mean"]
            assert got == pytest.approx(scores[np.array(frames.phases) == phase].mean(), abs=1e-9)
    plain = run_protocol(bb, tmp_path / "plain", echonet=None, camus=phantoms["camus"], tmed2=None, head=head,
                         config=ProtocolConfig(**common))
    assert ParcelToSegment.from_json(plain["segment_models"]["camus_LA"]).yields_to == ()


def test_protocol_cuts_the_masks_at_bright_pixels_with_the_frames(phantoms, tmp_path):
    """`ProtocolConfig.bright_cut`: the models are fitted with the work-size frames (their JSON
    holds the learnt level) and scored with them, so the reported DICE is that of
    `ParcelToSegment.predict(parcels, frames)` on the test frames; `cut_against` gives the LA the
    fitting split's LV prior, and names no target the protocol does not fit."""
    from alan.data import open_dataset
    from alan.downstream import ParcelToSegment
    from alan.metrics import dice
    from alan.models.backbones import load_backbone
    from alan.models.parcellator import Parcellator
    from alan.models.raptor import RaptorHead, load_head, save_head
    from alan.pipelines.protocol import ProtocolConfig, run_protocol, scoring_sets
    from alan.pipelines.segment import collect_annotated
    from alan.downstream.parcel_to_segment import location_prior
    from alan.transforms.spatial import masks_to_native, masks_to_work, to_work

    digest = save_backbone(create_backbone("vit_tiny_p8_112"), tmp_path / "bb")
    save_head(RaptorHead(192, 8, position=1.0, grid=14), tmp_path / "head", backbone_hash=digest)
    bb, head = load_backbone(tmp_path / "bb"), load_head(tmp_path / "head")
    res = run_protocol(bb, tmp_path / "out", echonet=None, camus=phantoms["camus"], tmed2=None, head=head,
                       config=ProtocolConfig(n_parcels=8, component_by="prior", bright_cut=0.2, progress=False,
                                             cut_against={"LA": ("LV",), "LV": ("RV",)}))
    model = ParcelToSegment.from_json(res["segment_models"]["camus_LV"])
    assert model.bright_cut == 0.2 and np.isfinite(model.bright_level_)
    assert model.cut_against == ()  # no RV among the targets
    fit, test, _ = scoring_sets(open_dataset(phantoms["camus"]), ("train",), ("test",))
    la = ParcelToSegment.from_json(res["segment_models"]["camus_LA"])
    lv_masks = masks_to_work(collect_annotated(fit, "LV").masks, 112)
    np.testing.assert_allclose(la.against_priors_["LV"], location_prior(lv_masks, la.prior_size), atol=1e-3)
    frames = collect_annotated(test, "LV")
    work = to_work(frames.images, 112)
    parcels = Parcellator(bb, head)(work)
    pred = masks_to_native(model.predict(parcels, work), [m.shape for m in frames.masks])
    scores = np.array([dice(p, t) for p, t in zip(pred, frames.masks)])
    for phase in ("ED", "ES"):
        got = res["segmentation"]["camus"]["dice"]["LV"][phase]["mean"]
        assert got == pytest.approx(scores[np.array(frames.phases) == phase].mean(), abs=1e-9)
