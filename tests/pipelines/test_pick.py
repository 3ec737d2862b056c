"""The parcel picker's logic (alan.pipelines.pick) on a small EchoNet phantom and a random head."""

import json
import os
from datetime import datetime

import numpy as np
import pytest
import torch

from alan.data import open_dataset
from alan.phantom import synthesize
from alan.downstream.parcel_to_segment import ParcelToSegment
from alan.errors import ArtifactError
from alan.models.backbones import create_backbone, save_backbone
from alan.models.raptor import RaptorHead, save_head
from alan.pipelines.parcels import compute_parcels
from alan.pipelines.pick import PathPolicy, PathRefused, PickSession, open_parcellator
from alan.pipelines.segment import evaluate_segmenter, fit_segmenter, to_work


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("pick")
    data = synthesize("echonet", root / "echonet", seed=3, size="small")
    torch.manual_seed(0)
    bb = create_backbone("vit_tiny_p8_112")
    digest = save_backbone(bb, root / "bb")
    save_head(RaptorHead(bb.embed_dim, 8), root / "head", backbone_hash=digest)
    parcellator = open_parcellator(root / "bb", root / "head")
    return root, open_dataset(data), parcellator


def _session(world, **kw):
    _, ds, parcellator = world
    return PickSession(ds.records, parcellator, **kw)


def _oracle_parcels(world, index):
    _, ds, parcellator = world
    frames = to_work(list(np.asarray(ds.records[index].frames)), parcellator.work_size)
    return compute_parcels(parcellator.backbone, parcellator.head, frames)


def test_toggle_at_switches_the_class_under_the_clicked_pixel(world):
    s = _session(world)
    truth = _oracle_parcels(world, 1)
    row, col = 60, 50
    cls = int(truth[3, row, col])
    assert s.parcel_at(1, 3, row, col) == cls
    assert s.toggle_at(1, 3, row, col) == (cls, True)
    assert s.interior == [cls]
    other = (cls + 1) % s.n_parcels
    assert s.toggle(other) is True and s.interior == sorted([cls, other])
    assert s.toggle_at(1, 3, row, col) == (cls, False) and s.interior == [other]
    with pytest.raises(Exception, match="outside"):
        s.parcel_at(1, 3, 500, 0)
    with pytest.raises(Exception, match="outside"):
        s.toggle(s.n_parcels)


def test_parcels_are_computed_once_per_record(world, monkeypatch):
    s = _session(world)
    calls = []
    real = type(s.parcellator).__call__
    monkeypatch.setattr(type(s.parcellator), "__call__", lambda self, f: calls.append(len(f)) or real(self, f))
    s.open(0)
    s.toggle(2)
    s.mask(0, 1), s.mask(0, 2), s.area_curve(0), s.open(0)
    assert calls == [s.records[0].n_frames]


def test_mask_and_area_curve_are_the_models_predict(world):
    s = _session(world)
    for c in (1, 3, 5):
        s.toggle(c)
    parcels = _oracle_parcels(world, 0)
    # an independent model with the same K booleans, built the way `segment fit` files are read
    path = world[0] / "three.json"
    s.save(path)
    model = ParcelToSegment.from_json(path)
    want = model.predict(parcels)
    assert want.any()
    for f in (0, len(parcels) // 2, len(parcels) - 1):
        assert np.array_equal(s.mask(0, f), want[f])
    assert np.array_equal(s.masks(0), want)
    # the phantom is stored at 112 px, the work size: native area = work area
    assert s.records[0].height == 112
    assert np.array_equal(s.area_curve(0), want.sum(axis=(1, 2)).astype(float))
    s.toggle(1)
    assert not np.array_equal(s.masks(0), want)  # a change of selection is not served from the cache


def test_dice_matches_segment_eval_on_the_records_opened(world):
    s = _session(world)
    fitted = s.fit(s.records)
    s.toggle(fitted.interior_parcels_[0] if fitted.interior_parcels_ else 0)
    assert s.dice() == []  # nothing opened yet
    s.open(0), s.open(2)
    rows = s.dice()
    ref = evaluate_segmenter(s.model, s.parcellator, [s.records[0], s.records[2]])
    assert [r["record"] for r in rows] == ref.record_ids and [r["phase"] for r in rows] == ref.phases
    np.testing.assert_allclose([r["dice"] for r in rows], ref.dice, atol=1e-12)
    # DICE still covers a record that has left the parcel cache
    small = _session(world, cache=1)
    small.toggle(3)
    small.open(0), small.open(2)
    assert [r["record"] for r in small.dice()] == ref.record_ids


def test_fit_starts_from_what_segment_fit_finds(world):
    _, ds, parcellator = world
    s = _session(world)
    val = ds.split("train")
    s.fit(val)
    ref = fit_segmenter(parcellator, val, "LV")
    assert s.interior == ref.interior_parcels_
    assert s.model.stats_["n_images"] == ref.stats_["n_images"] > 0


def test_save_writes_the_segment_fit_schema_and_loads_back(world, tmp_path):
    _, ds, parcellator = world
    s = _session(world)
    s.toggle(2), s.toggle(6)
    out = tmp_path / "lv.json"
    doc = s.save(out, by="Dr. Echo")
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(doc))
    fitted = fit_segmenter(parcellator, ds.records, "LV").to_dict()
    assert set(on_disk) == set(fitted) | {"source", "picked_at", "picked_by"}
    assert set(on_disk["stats"]) == set(fitted["stats"]) and on_disk["hyperparameters"] == fitted["hyperparameters"]
    assert on_disk["provenance"] == fitted["provenance"]  # same backbone and head hashes, same work size
    assert on_disk["source"] == "picked" and on_disk["picked_by"] == "Dr. Echo"
    assert datetime.fromisoformat(on_disk["picked_at"]).tzinfo is not None
    assert on_disk["interior_parcels"] == [2, 6]
    # what `segment eval` does with it: load, check provenance, predict
    model = ParcelToSegment.from_json(out)
    assert model.interior_parcels_ == [2, 6] and model.hand_edited_ == [2, 6]
    evaluate_segmenter(model, parcellator, ds.records[:1])
    again = _session(world)
    again.load(out)
    assert again.interior == [2, 6]
    assert oct(os.stat(out).st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_load_refuses_a_model_of_another_head_k_or_target(world, tmp_path):
    root, ds, parcellator = world
    s = _session(world)
    s.toggle(1)
    good = tmp_path / "good.json"
    s.save(good)
    doc = json.loads(good.read_text())
    for name, change, message in (
        ("head", {"provenance": {**doc["provenance"], "head_hash": "0123456789abcdef"}}, "head_hash"),
        ("k", {"n_parcels": 16, "stats": {}, "hyperparameters": {**doc["hyperparameters"], "n_parcels": 16}}, "K=16"),
        ("target", {"target": "LA", "hyperparameters": {**doc["hyperparameters"], "target": "LA"}}, "--target LA"),
    ):
        bad = tmp_path / f"{name}.json"
        bad.write_text(json.dumps({**doc, **change}))
        with pytest.raises(ArtifactError, match=message) as e:
            s.load(bad)
        assert str(bad) in str(e.value) and "\n" not in str(e.value)
        assert s.interior == [1]  # a refused load leaves the selection alone
    video = sorted((ds.root / "Videos").glob("*.avi"))[0]  # allowed under the data root, but no model
    for path, message in ((video, "not a text file"), (ds.root, "no such model file"),
                          (tmp_path / "none.json", "no such")):
        with pytest.raises(ArtifactError, match=message):
            s.load(path)


def test_save_never_replaces_a_file_that_is_not_a_model(world, tmp_path):
    s = _session(world)
    precious = tmp_path / "notes.json"
    precious.write_text('{"my": "notes"}')
    with pytest.raises(ArtifactError, match="not a parcel-to-segment model"):
        s.save(precious)
    assert precious.read_text() == '{"my": "notes"}'
    earlier = tmp_path / "earlier.json"
    s.save(earlier)
    s.toggle(4)
    s.save(earlier)  # an earlier model is replaced
    assert json.loads(earlier.read_text())["interior_parcels"] == [4]


def test_path_policy_allows_only_the_data_root_and_given_models(tmp_path):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "m.json").write_text("{}")
    model = tmp_path / "models" / "lv.json"
    policy = PathPolicy(root, (model,))
    assert policy.resolve(root / "sub" / "m.json") == (root / "sub" / "m.json").resolve()
    assert policy.resolve(str(model)) == model.resolve()
    (tmp_path / "secret.json").write_text("{}")
    (root / "link.json").symlink_to(tmp_path / "secret.json")
    for bad in (tmp_path / "secret.json", f"{root}/../secret.json", f"{root}/sub/../m.json", "/etc/passwd",
                root / "link.json", tmp_path / "models" / "other.json", "", "a\x00b"):
        with pytest.raises(PathRefused):
            policy.resolve(bad)
    single = tmp_path / "one.avi"
    assert PathPolicy(single).resolve(single) == single.resolve()
    with pytest.raises(PathRefused):
        PathPolicy(single).resolve(tmp_path / "two.avi")
