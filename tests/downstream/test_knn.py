"""WeightedKNN against sklearn's brute-force cosine kNN with DINO's exp(cos / T) weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from alan.downstream import WeightedKNN
from alan.errors import ArtifactError


def data(n_bank=300, n_query=40, dim=16, n_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    y = rng.integers(0, n_classes, n_bank)
    x = centres[y] + rng.normal(scale=1.5, size=(n_bank, dim))
    q = centres[rng.integers(0, n_classes, n_query)] + rng.normal(scale=1.5, size=(n_query, dim))
    return x.astype(np.float32), y, q.astype(np.float32)


def oracle(x, y, q, k, t=0.07):
    clf = KNeighborsClassifier(k, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1 - d) / t))
    return clf.fit(x, y).predict_proba(q)


@pytest.mark.parametrize("k", [1, 2, 10, 20])
def test_matches_sklearn_oracle(k):
    x, y, q = data()
    ours = WeightedKNN(k=k).fit(x, y).predict_proba(q)
    np.testing.assert_allclose(ours, oracle(x, y, q, k), atol=2e-5)
    np.testing.assert_allclose(ours.sum(1), 1, atol=1e-6)


def test_other_temperature_and_chunking():
    x, y, q = data(seed=1)
    full = WeightedKNN(k=7, temperature=0.5).fit(x, y).predict_proba(q)
    np.testing.assert_allclose(full, oracle(x, y, q, 7, t=0.5), atol=2e-5)
    chunked = WeightedKNN(k=7, temperature=0.5, chunk_size=3).fit(x, y).predict_proba(q)
    np.testing.assert_allclose(chunked, full, atol=1e-6)


def test_chunk_follows_bank_size_and_free_memory(monkeypatch):
    from alan.downstream import knn

    big = 1 << 40
    assert knn.auto_chunk(100_000, 1000, available=big) == knn._SIM_BUDGET // 100_000  # the similarity budget
    assert knn.auto_chunk(1000, 50, available=big) == 50  # never more than the queries
    assert knn.auto_chunk(10_000_000, 5, available=big) == 3
    assert knn.auto_chunk(100_000, 1000, available=64 << 20) == (64 << 20) // 16 // 100_000  # a quarter of free memory
    assert knn.auto_chunk(100_000, 1000, available=0) == 1
    assert knn.available_memory() is None or knn.available_memory() > 0
    # tiny free memory: many small chunks, the same scores as the oracle
    monkeypatch.setattr(knn, "available_memory", lambda: 300 * 4 * 4 * 3)  # 3 queries per chunk on a 300 bank
    x, y, q = data(seed=2)
    seen = []
    real_mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda a, b, **kw: seen.append(len(a)) or real_mm(a, b, **kw))
    ours = WeightedKNN(k=5).fit(x, y).predict_proba(q)
    assert max(seen) == 3 and sum(seen) == len(q)
    np.testing.assert_allclose(ours, oracle(x, y, q, 5), atol=2e-5)


def test_small_cases_string_labels_and_k_beyond_bank():
    x, y, q = data(n_bank=6, n_query=1, n_classes=2, seed=2)
    names = np.array(["A2C", "PLAX"])[y]
    model = WeightedKNN(k=50).fit(x, names)  # k clipped to the 6 bank entries
    np.testing.assert_allclose(model.predict_proba(q), oracle(x, names, q, 6), atol=2e-5)
    assert list(model.classes_) == sorted(set(names))
    assert model.predict(q)[0] in {"A2C", "PLAX"}


def test_predict_is_argmax_and_scale_invariant():
    x, y, q = data(seed=3)
    model = WeightedKNN(k=10).fit(x, y + 10)
    proba = model.predict_proba(q)
    np.testing.assert_array_equal(model.predict(q), model.classes_[proba.argmax(1)])
    np.testing.assert_allclose(model.predict_proba(5 * q), proba, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(model.bank_, axis=1), 1, atol=1e-6)
    assert model.score(q, model.predict(q)) == 1.0
    np.testing.assert_allclose(model.predict_proba(torch.from_numpy(q)), proba)


def test_validation():
    x, y, q = data()
    with pytest.raises(ValueError, match="dimensions"):
        WeightedKNN().fit(x, y).predict_proba(q[:, :5])
    with pytest.raises(ValueError, match="labels"):
        WeightedKNN().fit(x, y[:-1])
    with pytest.raises(ValueError, match="k must be"):
        WeightedKNN(k=0).fit(x, y)


def test_save_load_round_trip_and_provenance(tmp_path):
    x, y, q = data(seed=4)
    names = np.array(["A2C", "A4C", "PLAX", "PSAX"])[y]
    model = WeightedKNN(k=2).fit(x, names, provenance={"backbone": "abcd"})
    digest = model.save(tmp_path / "bank")
    config = json.loads((tmp_path / "bank" / "config.json").read_text())
    assert config["kind"] == "knn_bank" and config["hash"] == digest
    assert config["k"] == 2 and config["temperature"] == 0.07 and config["classes"] == ["A2C", "A4C", "PLAX", "PSAX"]
    loaded = WeightedKNN.load(tmp_path / "bank")
    np.testing.assert_array_equal(loaded.predict_proba(q), model.predict_proba(q))
    np.testing.assert_array_equal(loaded.predict(q), model.predict(q))
    assert loaded.provenance_ == {"backbone": "abcd"}
    loaded.check_provenance({"backbone": "abcd", "head": "x"})
    with pytest.raises(ArtifactError, match="fitted on backbone abcd, not ffff"):
        loaded.check_provenance({"backbone": "ffff"})
    config["k"] = 3  # edited by hand: the content hash no longer matches
    (tmp_path / "bank" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="hash"):
        WeightedKNN.load(tmp_path / "bank")
