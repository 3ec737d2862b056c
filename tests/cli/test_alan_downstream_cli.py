"""`alan segment`, `alan views` and `alan analyze` through the CLI on small phantoms."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from alan.cli.main import app
from alan.phantom import synthesize
from alan.models.backbones import create_backbone, save_backbone
from alan.models.raptor import RaptorHead, save_head

run = CliRunner().invoke


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    echonet = synthesize("echonet", root / "echonet", seed=5, size="small")
    tmed2 = synthesize("tmed2", root / "tmed2", seed=5, size="small")
    bb = create_backbone("vit_tiny_p8_112")
    digest = save_backbone(bb, root / "bb")
    head = RaptorHead(bb.embed_dim, 8)
    save_head(head, root / "head", backbone_hash=digest)
    return root, echonet, tmed2


def test_segment_fit_eval_and_analyze(setup, tmp_path):
    root, echonet, _ = setup
    common = ["--backbone", str(root / "bb"), "--head", str(root / "head")]
    res = run(app, ["segment", "fit", *common, "--data", str(echonet), "--split", "all", "--target", "LV",
                    "--out", str(tmp_path / "lv.json")])
    assert res.exit_code == 0, res.output
    model = json.loads((tmp_path / "lv.json").read_text())
    assert model["target"] == "LV" and model["n_parcels"] == 8 and len(model["stats"]["identified"]) == 8
    res = run(app, ["segment", "eval", "--model", str(tmp_path / "lv.json"), *common, "--data", str(echonet),
                    "--split", "all", "--json", "--figures", str(tmp_path / "fig"), "--save-masks", str(tmp_path / "nii")])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout[res.stdout.index("{"):])
    # nnU-Net style label maps beside the ground truth, at the file's resolution, one per scored frame
    cases = json.loads((tmp_path / "nii" / "dataset.json").read_text())["cases"]
    assert len(cases) == sum(s["n"] for s in rep["dice"]["LV"].values())
    from alan.data import open_dataset
    from alan.metrics import dice
    from alan.pipelines.labelmaps import read_label_map

    recs = {r.id: r for r in open_dataset(echonet).records}
    for case in cases[:3]:
        pred, _ = read_label_map(tmp_path / "nii" / "predictions" / f"{case['case']}.nii.gz")
        truth, _ = read_label_map(tmp_path / "nii" / "labels" / f"{case['case']}.nii.gz")
        rec = recs[case["record"]]
        np.testing.assert_array_equal(truth[0] == 1, rec.masks[case["frame"]]["LV"])
        assert pred.shape == (1, rec.height, rec.width)
        assert dice(pred[0] == 1, truth[0] == 1) == pytest.approx(case["dice"])
    assert set(rep["dice"]["LV"]) == {"ED", "ES"} and all(0 <= s["mean"] <= 1 for s in rep["dice"]["LV"].values())
    assert rep["ef"]["n"] >= 1 and (tmp_path / "fig" / "dice_hist_echonet_LV.png").is_file()
    # the HTML page plays one recording's overlay: an H.264 file that OpenCV decodes, linked by the page
    video_path = tmp_path / "fig" / "overlay_echonet_LV.mp4"
    cap = cv2.VideoCapture(str(video_path))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape[2] == 3
    page = (tmp_path / "fig" / "report.html").read_text()
    assert "<video" in page and "overlay_echonet_LV.mp4" in page and rep["report"].endswith("report.html")
    # a model fitted on another head is refused in one line
    other = RaptorHead(192, 8)
    save_head(other, tmp_path / "other", backbone_hash=json.loads((root / "bb" / "config.json").read_text())["hash"])
    res = run(app, ["segment", "eval", "--model", str(tmp_path / "lv.json"), "--backbone", str(root / "bb"),
                    "--head", str(tmp_path / "other"), "--data", str(echonet), "--split", "all"])
    assert res.exit_code != 0 and "head_hash" in str(res.exception)
    video = sorted((echonet / "Videos").glob("*.avi"))[0]
    res = run(app, ["analyze", str(video), *common, "--segment", str(tmp_path / "lv.json"), "--out", str(tmp_path / "an"),
                    "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    folder = tmp_path / "an" / "records" / video.stem
    s = json.loads((folder / "summary.json").read_text())
    labels, _ = read_label_map(folder / "labels.nii.gz")
    assert labels.shape[0] == s["frames"] and s["lv_area_px"] == (labels == 1).sum(axis=(1, 2)).astype(float).tolist()
    assert (folder / "overlay.mp4").stat().st_size > 0 and (folder / "lv_area.png").is_file()
    assert (tmp_path / "an" / "results.csv").read_text().splitlines()[1].startswith(f"{video.stem},ok,")


def test_views_fit_eval(setup, tmp_path):
    root, _, tmed2 = setup
    res = run(app, ["views", "fit", "--backbone", str(root / "bb"), "--data", str(tmed2), "--out", str(tmp_path / "bank")])
    assert res.exit_code == 0, res.output
    res = run(app, ["views", "eval", "--bank", str(tmp_path / "bank"), "--backbone", str(root / "bb"), "--data",
                    str(tmed2), "--k", "1", "--k", "3", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout[res.stdout.index("{"):])
    assert set(rep["by_k"]) == {"1", "3"}
    for r in rep["by_k"].values():
        cm = np.array(r["confusion"])
        assert cm.sum() == rep["n_test"] and np.trace(cm) / cm.sum() == pytest.approx(r["accuracy"])


def test_views_fit_at_an_input_size_round_trip(setup, tmp_path):
    import os
    import subprocess
    import sys

    import torch

    from alan.data import open_dataset
    from alan.downstream.knn import WeightedKNN
    from alan.metrics import accuracy
    from alan.models.backbones import load_backbone, view_features
    from alan.pipelines.views import bank_input_size, record_frame
    from alan.transforms.spatial import to_work

    root, _, tmed2 = setup
    res = run(app, ["views", "fit", "--backbone", str(root / "bb"), "--data", str(tmed2), "--features", "grid",
                    "--input-size", "128", "--k", "3", "--out", str(tmp_path / "bank")])
    assert res.exit_code == 0, res.output
    assert "grid features at 128 px" in " ".join(res.output.split())
    prov = json.loads((tmp_path / "bank" / "config.json").read_text())["provenance"]
    assert prov["input_size"] == 128 and prov["features"] == "grid"
    assert bank_input_size(WeightedKNN.load(tmp_path / "bank")) == 128
    res = run(app, ["views", "eval", "--bank", str(tmp_path / "bank"), "--backbone", str(root / "bb"), "--data",
                    str(tmed2), "--k", "1", "--k", "3", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout[res.stdout.index("{"):])
    # by hand: the train / test images at 128 px through the backbone, a kNN on their grid features
    bb, ds = load_backbone(root / "bb"), open_dataset(tmed2)

    def feats(split):
        recs = ds.split(split)
        with torch.no_grad():
            x = view_features(*bb(to_work([record_frame(r) for r in recs], 128), 128), "grid").numpy()
        return x, [r.label for r in recs]

    (x_train, y_train), (x_test, y_test) = feats("train"), feats("test")
    for k in (1, 3):
        pred = WeightedKNN(k=k).fit(x_train, y_train).predict(x_test)
        assert rep["by_k"][str(k)]["accuracy"] == pytest.approx(accuracy(np.array(y_test), pred))
    # a size off the patch grid (8) is one line on stderr before anything is written; 0 fails while parsing
    env = {**os.environ, "COLUMNS": "200"}
    for bad, says in (("100", "not a positive multiple of the patch size 8"), ("0", "--input-size")):
        p = subprocess.run([sys.executable, "-m", "alan.cli.main", "views", "fit", "--backbone", str(root / "bb"),
                            "--data", str(tmed2), "--input-size", bad, "--out", str(tmp_path / "bad")],
                           capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 2 and says in p.stderr and "Traceback" not in p.stderr + p.stdout
        assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("features, size", [("cls", None), ("grid", None), ("cls", 128)])
def test_analyze_scores_views_on_the_features_the_bank_was_fitted_on(setup, tmp_path, features, size):
    import torch

    from alan.data import open_dataset
    from alan.downstream.knn import WeightedKNN
    from alan.models.backbones import load_backbone, view_features
    from alan.transforms.spatial import to_work

    root, echonet, tmed2 = setup
    common = ["--backbone", str(root / "bb"), "--head", str(root / "head")]
    at = [] if size is None else ["--input-size", str(size)]
    res = run(app, ["views", "fit", "--backbone", str(root / "bb"), "--data", str(tmed2), "--features", features,
                    *at, "--out", str(tmp_path / "bank")])
    assert res.exit_code == 0, res.output
    res = run(app, ["segment", "fit", *common, "--data", str(echonet), "--split", "all", "--target", "LV",
                    "--out", str(tmp_path / "lv.json")])
    assert res.exit_code == 0, res.output
    record = open_dataset(echonet, "echonet").records[0]
    res = run(app, ["analyze", str(record.source), *common, "--segment", str(tmp_path / "lv.json"),
                    "--views", str(tmp_path / "bank"), "--out", str(tmp_path / "an"), "--no-progress"])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "an" / "records" / Path(record.source).stem / "summary.json").read_text())
    # oracle: the bank's own features of the recording's frames, as `views fit` makes them
    knn, bb = WeightedKNN.load(tmp_path / "bank"), load_backbone(root / "bb")
    frames, size = np.asarray(record.frames), size or 112
    with torch.no_grad():
        feats = view_features(*bb(to_work(list(frames), size), size), features).numpy()
    want = knn.predict_proba(feats[:: max(1, len(frames) // 16)]).mean(axis=0)
    got = np.array([s["view_scores"][str(c)] for c in knn.classes_])
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert s["view"] == str(knn.classes_[int(np.argmax(want))])


def test_segment_fit_with_a_prior_support(setup, tmp_path):
    """`--prior-support` is kept in the model JSON with the prior grid, the saved model predicts as
    the same estimator fitted through the API, and an out-of-range value is one line, exit 2."""
    from alan.downstream import ParcelToSegment
    from alan.models.parcellator import Parcellator
    from alan.pipelines.segment import fit_segmenter
    from alan.data import open_dataset

    root, echonet, _ = setup
    common = ["--backbone", str(root / "bb"), "--head", str(root / "head")]
    res = run(app, ["segment", "fit", *common, "--data", str(echonet), "--split", "all", "--target", "LV",
                    "--prior-support", "0.3", "--out", str(tmp_path / "lv.json")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "lv.json").read_text())
    assert doc["hyperparameters"]["prior_support"] == 0.3 and len(doc["location_prior"]) == 16
    parcellator = Parcellator.load(root / "bb", root / "head")
    records = open_dataset(echonet).records
    direct = fit_segmenter(parcellator, records, "LV", prior_support=0.3)
    parcels = parcellator(np.stack([np.asarray(r.frames[r.ed]) for r in records[:3]]))
    saved = ParcelToSegment.from_json(tmp_path / "lv.json")
    assert np.array_equal(saved.predict(parcels), direct.predict(parcels))
    res = run(app, ["segment", "fit", *common, "--data", str(echonet), "--target", "LV", "--prior-support", "1.5",
                    "--out", str(tmp_path / "bad.json")])
    assert res.exit_code == 2 and "prior-support" in res.output and not (tmp_path / "bad.json").exists()


def test_segment_la_yielding_to_the_lv(setup, tmp_path):
    """`--yields-to LV` is kept in the LA model's JSON; `segment eval` of that model refuses to run
    without the LV model (one line naming it) and with `--with lv.json` scores exactly the API's
    `predict_targets` masks, for the LA and, given the LA (`--yield-limit` lets it take the LV's
    pixels), for the LV; analyze refuses a model set that lacks a target yielded to. `--bright-cut`
    models: fitted with the frames, scored and analysed with them; `--cut-against LV` keeps the LV
    masks' prior in the LA's JSON."""
    from alan.data import open_dataset
    from alan.downstream import ParcelToSegment
    from alan.downstream.parcel_to_segment import predict_targets
    from alan.errors import AlanError
    from alan.metrics import dice
    from alan.models.parcellator import Parcellator
    from alan.pipelines.analyze import check_segmenters
    from alan.downstream.parcel_to_segment import location_prior
    from alan.pipelines.segment import collect_annotated
    from alan.transforms.spatial import masks_to_native, masks_to_work, to_work

    root, _, _ = setup
    camus = synthesize("camus", tmp_path / "camus", seed=5, size="small")
    common = ["--backbone", str(root / "bb"), "--head", str(root / "head"), "--data", str(camus)]
    for target, extra in (("LV", []), ("LA", ["--yields-to", "LV", "--yield-limit", "0.6"])):
        res = run(app, ["segment", "fit", *common, "--split", "train", "--target", target, "--component-by", "prior",
                        *extra, "--out", str(tmp_path / f"{target}.json")])
        assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "LA.json").read_text())["hyperparameters"]["yields_to"] == ["LV"]
    assert json.loads((tmp_path / "LA.json").read_text())["hyperparameters"]["yield_limit"] == 0.6
    res = run(app, ["segment", "eval", "--model", str(tmp_path / "LA.json"), *common, "--split", "test",
                    "--baseline-split", "train", "--json"])
    assert res.exit_code != 0 and "yields to LV" in str(res.exception)
    # hand-edited models that both claim every parcel, the LA with limit 0: the LV gives way wherever
    # the LA's mask is (a random head's parcels give the fitted models little to contest)
    for t in ("LV", "LA"):
        fitted = ParcelToSegment.from_json(tmp_path / f"{t}.json")
        edited = fitted.with_interior(range(fitted.n_parcels_)).set_params(yield_limit=0.0)
        edited.to_json(tmp_path / f"{t}.json")
    models = {t: ParcelToSegment.from_json(tmp_path / f"{t}.json") for t in ("LV", "LA")}
    for target, other in (("LA", "LV"), ("LV", "LA")):
        res = run(app, ["segment", "eval", "--model", str(tmp_path / f"{target}.json"), "--with",
                        str(tmp_path / f"{other}.json"), *common, "--split", "test", "--baseline-split", "train", "--json"])
        assert res.exit_code == 0, res.output
        rep = json.loads(res.stdout[res.stdout.index("{"):])
        frames = collect_annotated(open_dataset(camus).split("test"), target)
        parcels = Parcellator.load(root / "bb", root / "head")(to_work(frames.images, 112))
        pred = masks_to_native(predict_targets(models, parcels)[target], [m.shape for m in frames.masks])
        scores = np.array([dice(p, t) for p, t in zip(pred, frames.masks)])
        for phase in ("ED", "ES"):
            want = scores[np.array(frames.phases) == phase].mean()
            assert rep["dice"][target][phase]["mean"] == pytest.approx(want, abs=1e-9)
        if target == "LV":  # the LA took some of the LV's own mask
            assert (predict_targets(models, parcels)["LV"] != models["LV"].predict(parcels)).any()
    parcellator = Parcellator.load(root / "bb", root / "head")
    check_segmenters(parcellator, models)
    with pytest.raises(AlanError, match="yields to RV"):
        check_segmenters(parcellator, {**models, "LA": models["LA"].set_params(yields_to=("LV", "RV"))})
    res = run(app, ["segment", "fit", *common, "--target", "LA", "--yields-to", "LA", "--out", str(tmp_path / "bad.json")])
    assert res.exit_code == 2 and "yields-to" in res.output and not (tmp_path / "bad.json").exists()
    res = run(app, ["segment", "fit", *common, "--target", "LA", "--yields-to", "LV", "--yield-limit", "1.5",
                    "--out", str(tmp_path / "bad.json")])
    assert res.exit_code == 2 and "yield-limit" in res.output and not (tmp_path / "bad.json").exists()
    res = run(app, ["segment", "fit", *common, "--split", "train", "--target", "LV", "--component-by", "prior",
                    "--bright-cut", "0.2", "--out", str(tmp_path / "cut.json")])
    assert res.exit_code == 0, res.output
    cut = json.loads((tmp_path / "cut.json").read_text())
    assert cut["hyperparameters"]["bright_cut"] == 0.2 and isinstance(cut["bright_level"], float)
    res = run(app, ["segment", "eval", "--model", str(tmp_path / "cut.json"), *common, "--split", "test", "--json"])
    assert res.exit_code == 0, res.output  # scored with the frames
    res = run(app, ["analyze", str(camus), "--split", "test", *common[:4], "--segment", str(tmp_path / "cut.json"),
                    "--out", str(tmp_path / "an"), "--no-progress"])
    assert res.exit_code == 0, res.output
    rec = open_dataset(camus).split("test")[0]
    folder = next(d for d in (tmp_path / "an" / "records").iterdir() if json.loads((d / "summary.json").read_text())["record"] == rec.id)
    work = to_work(list(np.asarray(rec.frames)), 112)
    want = ParcelToSegment.from_json(tmp_path / "cut.json").predict(Parcellator.load(root / "bb", root / "head")(work), work)
    native = masks_to_native(want, [np.asarray(rec.frames).shape[1:]] * len(want))
    assert json.loads((folder / "summary.json").read_text())["lv_area_px"] == [int(m.sum()) for m in native]
    res = run(app, ["segment", "fit", *common, "--target", "LV", "--bright-cut", "2", "--out", str(tmp_path / "bad.json")])
    assert res.exit_code == 2 and "bright-cut" in res.output and not (tmp_path / "bad.json").exists()
    res = run(app, ["segment", "fit", *common, "--split", "train", "--target", "LA", "--component-by", "prior",
                    "--bright-cut", "0.2", "--cut-against", "LV", "--out", str(tmp_path / "la_cut.json")])
    assert res.exit_code == 0, res.output
    la_cut = json.loads((tmp_path / "la_cut.json").read_text())
    lv_masks = masks_to_work(collect_annotated(open_dataset(camus).split("train"), "LV", images=False).masks, 112)
    np.testing.assert_allclose(la_cut["against_priors"]["LV"], location_prior(lv_masks, 16), atol=1e-3)
    for bad, hint in ((["--bright-cut", "0.2", "--cut-against", "LA"], "cut-against"), (["--cut-against", "LV"], "cut-against")):
        res = run(app, ["segment", "fit", *common, "--target", "LA", *bad, "--out", str(tmp_path / "bad.json")])
        assert res.exit_code == 2 and hint in res.output and not (tmp_path / "bad.json").exists()
