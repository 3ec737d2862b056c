"""The parcel-to-segment JSON validator: every malformed document is refused, one line per problem."""

import copy
import json

import numpy as np
import pytest

from alan.downstream.model_schema import interior_ids, validate_model
from alan.downstream.parcel_to_segment import ParcelToSegment
from alan.errors import ArtifactError

K = 6


def fitted() -> ParcelToSegment:
    rng = np.random.default_rng(0)
    parcels = rng.integers(0, K, size=(4, 16, 16))
    masks = np.isin(parcels, [1, 3])
    prov = {"backbone_hash": "b0b0", "head_hash": "h1h1", "n_parcels": K, "work_size": 16}
    return ParcelToSegment(n_parcels=K, snake=False, closing=False).fit(parcels, masks, provenance=prov)


@pytest.fixture
def doc() -> dict:
    return fitted().to_dict()


def load(tmp_path, doc) -> ParcelToSegment:
    path = tmp_path / "lv.json"
    path.write_text(json.dumps(doc))
    return ParcelToSegment.from_json(path)


def test_written_model_is_valid_and_round_trips(tmp_path, doc):
    assert validate_model(json.loads(json.dumps(doc))) == []
    model = load(tmp_path, doc)
    assert model.interior_parcels_ == doc["interior_parcels"] == [1, 3]


def test_interior_as_k_booleans_is_read_as_booleans(tmp_path, doc):
    # the README's form of the model: K booleans; JSON true is not the id 1
    doc["interior_parcels"] = [False, False, True, False, True, False]
    model = load(tmp_path, doc)
    assert model.interior_parcels_ == [2, 4]
    np.testing.assert_array_equal(model.interior_, doc["interior_parcels"])


def test_interior_ids_both_forms_agree():
    assert interior_ids([True, False, True], 3) == ([0, 2], [])
    assert interior_ids([0, 2], 3) == ([0, 2], [])
    assert interior_ids([], 3) == ([], [])


def _drop(key):
    def edit(d):
        del d[key]
    return edit


def _set(path, value):
    def edit(d):
        *head, last = path
        for p in head:
            d = d[p]
        d[last] = value
    return edit


MALFORMED = {
    "booleans of the wrong length": (_set(["interior_parcels"], [True, False]), "2 booleans, expected n_parcels = 6"),
    "booleans mixed with ids": (_set(["interior_parcels"], [True, 3]), "mixes booleans and integers"),
    "id out of range": (_set(["interior_parcels"], [1, 6]), "outside 0..5"),
    "repeated id": (_set(["interior_parcels"], [1, 1]), "repeats parcel id"),
    "id as a string": (_set(["interior_parcels"], ["1"]), "integer parcel ids"),
    "interior not a list": (_set(["interior_parcels"], 3), "must be a list"),
    "missing interior": (_drop("interior_parcels"), "missing key 'interior_parcels'"),
    "missing provenance": (_drop("provenance"), "missing key 'provenance'"),
    "empty provenance": (_set(["provenance"], {}), "provenance.backbone_hash is missing"),
    "empty head hash": (_set(["provenance", "head_hash"], ""), "provenance.head_hash is empty"),
    "provenance not an object": (_set(["provenance"], "b0b0"), "provenance must be an object"),
    "K not an integer": (_set(["n_parcels"], "6"), "n_parcels must be an integer"),
    "K zero": (_set(["n_parcels"], 0), "n_parcels must be an integer >= 1"),
    "K boolean": (_set(["n_parcels"], True), "n_parcels must be an integer"),
    "unknown target": (_set(["target"], "LVV"), "target must be one of"),
    "stats list too short": (_set(["stats", "presence"], [0.5] * 5), "stats.presence has 5 values, expected n_parcels = 6"),
    "stats list too long": (_set(["stats", "identified"], [True] * 7), "stats.identified has 7 values"),
    "stats wrong type": (_set(["stats", "n_present"], [1, 2, "x", 0, 0, 0]), "stats.n_present[2] must be an integer"),
    "stats not an object": (_set(["stats"], []), "stats must be an object"),
    "hyperparameter wrong type": (_set(["hyperparameters", "snake"], "yes"), "hyperparameters.snake must be true or false"),
    "hyperparameter out of range": (_set(["hyperparameters", "overlap"], 1.5), "hyperparameters.overlap must be in [0, 1]"),
    "unknown hyperparameter": (_set(["hyperparameters", "overlapp"], 0.5), "unknown name 'overlapp'"),
    "hyperparameter K disagrees": (_set(["hyperparameters", "n_parcels"], 64), "hyperparameters.n_parcels = 64 differs"),
    "bad component_by": (_set(["hyperparameters", "component_by"], "area"), "component_by must be one of"),
    "unknown top-level key": (_set(["interior_parcel"], [1]), "unknown key 'interior_parcel'"),
    "wrong format": (_set(["format"], "something"), "not a parcel-to-segment model"),
    "wrong version": (_set(["format_version"], 2), "unsupported format_version"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_model_is_refused_naming_the_file(tmp_path, doc, case):
    edit, expected = MALFORMED[case]
    bad = copy.deepcopy(doc)
    edit(bad)
    with pytest.raises(ArtifactError) as e:
        load(tmp_path, bad)
    lines = str(e.value).splitlines()
    assert any(expected in line for line in lines), lines
    assert all(line.startswith(str(tmp_path / "lv.json") + ": ") for line in lines)


def test_every_problem_is_reported_one_line_each(tmp_path, doc):
    doc["interior_parcels"] = [9]
    doc["provenance"] = {}
    doc["stats"]["hit_rate"] = [0.1]
    with pytest.raises(ArtifactError) as e:
        load(tmp_path, doc)
    lines = str(e.value).splitlines()
    assert len(lines) == 4, lines  # id out of range, backbone_hash, head_hash, hit_rate length
    assert any("outside 0..5" in ln for ln in lines) and any("stats.hit_rate" in ln for ln in lines)


@pytest.mark.parametrize("text,expected", [("[1, 2]", "expected an object"), ("{oops", "invalid JSON"),
                                           ("null", "expected an object")])
def test_not_a_model_document(tmp_path, text, expected):
    path = tmp_path / "lv.json"
    path.write_text(text)
    with pytest.raises(ArtifactError, match=expected):
        ParcelToSegment.from_json(path)


def test_folder_and_binary_file_are_refused(tmp_path):
    with pytest.raises(ArtifactError, match="is a folder"):
        ParcelToSegment.from_json(tmp_path)
    path = tmp_path / "lv.json"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ArtifactError, match="lv.json"):
        ParcelToSegment.from_json(path)


def test_model_for_another_k_is_refused_for_the_head(tmp_path, doc):
    model = load(tmp_path, doc)
    model.check_provenance({"backbone_hash": "b0b0", "head_hash": "h1h1", "n_parcels": K})
    with pytest.raises(ArtifactError, match="K=6 parcels, the head has K=8") as e:
        model.check_provenance({"backbone_hash": "b0b0", "head_hash": "h1h1", "n_parcels": 8})
    assert "\n" not in str(e.value)
