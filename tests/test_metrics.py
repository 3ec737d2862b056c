"""Metrics against direct computations and sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from alan import metrics
from alan.errors import AlanError


def test_dice_per_frame_matches_formula():
    rng = np.random.default_rng(0)
    a = rng.random((5, 12, 10)) < 0.4
    b = rng.random((5, 12, 10)) < 0.5
    expected = [2 * (a[i] & b[i]).sum() / (a[i].sum() + b[i].sum()) for i in range(5)]
    np.testing.assert_allclose(metrics.dice(a, b), expected)
    assert metrics.dice(a[0], b[0]) == pytest.approx(expected[0])
    assert isinstance(metrics.dice(a[0], b[0]), float)


def test_dice_edge_cases():
    empty = np.zeros((2, 4, 4), bool)
    full = np.ones((2, 4, 4), bool)
    np.testing.assert_array_equal(metrics.dice(empty, empty), [1.0, 1.0])  # documented convention
    np.testing.assert_array_equal(metrics.dice(empty, full), [0.0, 0.0])
    np.testing.assert_array_equal(metrics.dice(full, full), [1.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        metrics.dice(empty, full[:, :3])


def test_dice_summary():
    s = np.array([0.5, 0.8, 0.9, 0.7])
    out = metrics.dice_summary(s)
    assert out == {"mean": pytest.approx(s.mean()), "std": pytest.approx(np.sqrt(((s - s.mean()) ** 2).mean())), "n": 4}
    assert metrics.dice_summary([])["n"] == 0


def test_accuracy_per_class_and_confusion_match_sklearn():
    rng = np.random.default_rng(1)
    classes = ["A2C", "A4C", "PLAX", "PSAX"]
    t = rng.choice(classes, 200)
    p = np.where(rng.random(200) < 0.7, t, rng.choice(classes, 200))
    assert metrics.accuracy(t, p) == pytest.approx(accuracy_score(t, p))
    per = metrics.per_class_accuracy(t, p, labels=classes)
    np.testing.assert_allclose(list(per.values()), recall_score(t, p, labels=classes, average=None))
    assert list(per) == classes
    np.testing.assert_array_equal(metrics.confusion_matrix(t, p, labels=classes), sk_confusion_matrix(t, p, labels=classes))
    cm = metrics.confusion_matrix(t, p, labels=classes)
    assert cm[0, 1] == np.sum((t == "A2C") & (p == "A4C"))
    assert np.isnan(metrics.per_class_accuracy(["a"], ["a"], labels=["a", "b"])["b"])


def test_macro_auc_is_mean_of_one_vs_rest_aucs():
    rng = np.random.default_rng(2)
    classes = [0, 1, 2]
    t = rng.integers(0, 3, 120)
    logits = rng.normal(size=(120, 3)) + 1.5 * np.eye(3)[t]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    direct = np.mean([roc_auc_score(t == c, proba[:, c]) for c in classes])
    assert metrics.macro_auc(t, proba, classes) == pytest.approx(direct)
    tb = t[t < 2]
    pb = proba[t < 2][:, :2]
    pb = pb / pb.sum(1, keepdims=True)
    assert metrics.macro_auc(tb, pb, [0, 1]) == pytest.approx(roc_auc_score(tb, pb[:, 1]))


def test_macro_auc_refuses_a_class_absent_from_y_true():
    proba = np.full((4, 3), 1 / 3)
    with pytest.raises(AlanError, match=r"class\(es\) \['PSAX'\] have no sample"):
        metrics.macro_auc(["A2C", "A4C", "A2C", "A4C"], proba, ["A2C", "A4C", "PSAX"])


def test_area_length_volume_of_an_ellipsoid_and_ejection_fraction():
    # prolate ellipsoid, long axis L, short semi-axis b: A = pi (L/2) b, V = 4/3 pi b^2 (L/2)
    length, b = 80.0, 22.0
    area = np.pi * (length / 2) * b
    assert metrics.area_length_volume(area, length) == pytest.approx(4 / 3 * np.pi * b**2 * length / 2)
    assert metrics.ejection_fraction(120.0, 50.0) == pytest.approx(70 / 120)
    np.testing.assert_allclose(metrics.ejection_fraction([100, 80], [40, 60]), [0.6, 0.25])


def test_macro_auc_skip_policy_for_absent_classes():
    rng = np.random.default_rng(0)
    classes = np.array(["DCM", "HCM", "MINF", "NOR", "RV"])
    y = rng.choice(classes, 60)
    p = rng.dirichlet(np.ones(5), 60)
    p[np.arange(60), np.searchsorted(classes, y)] += rng.uniform(0, 0.5, 60)
    p /= p.sum(1, keepdims=True)
    assert metrics.macro_auc(y, p, classes, absent="skip") == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    # a class missing from y_true: the mean of the present classes' one-vs-rest AUCs
    keep = y != "RV"
    want = np.mean([roc_auc_score(y[keep] == c, p[keep, i]) for i, c in enumerate(classes) if c != "RV"])
    assert metrics.macro_auc(y[keep], p[keep], classes, absent="skip") == pytest.approx(want)
    # binary case is the plain AUC of the positive class
    yb = rng.choice(["a", "b"], 40)
    pb = rng.dirichlet(np.ones(2), 40)
    assert metrics.macro_auc(yb, pb, ["a", "b"], absent="skip") == pytest.approx(roc_auc_score(yb == "b", pb[:, 1]))
    assert np.isnan(metrics.macro_auc(["a"] * 5, pb[:5], ["a", "b"], absent="skip"))

    # skip: a label the model never saw counts as a negative of every class
    yu = np.where(y == "RV", "XX", y)
    assert metrics.macro_auc(yu, p, [*classes[:4], "YY"], absent="skip") == pytest.approx(
        np.mean([roc_auc_score(yu == c, p[:, i]) for i, c in enumerate(classes[:4])]))
    with pytest.raises(AlanError, match="not among"):
        metrics.macro_auc(yu, p, [*classes[:4], "YY"])
    with pytest.raises(ValueError, match="absent"):
        metrics.macro_auc(yb, pb, ["a", "b"], absent="ignore")
