"""Patient-level splits, per-patient aggregation and the classifier's cross-validated settings.

Nakashima et al., *Interaction of a priori anatomic knowledge with self-supervised contrastive
learning in cardiac MRI*, section 5.1 (70/30 splits, macro AUC); the patient-level split and the
stratified group K-fold choice of learning rate and batch size are this implementation's reading
of it (see `alan.pipelines.sscl`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from alan.downstream.classifier import EDESClassifier
from alan.errors import AlanError, DataError
from alan.metrics import macro_auc


def patient_split(patients: Sequence[Any], labels: Sequence[Any], test_size: float = 0.3,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Patient-level stratified split of slices: (train_idx, test_idx), no patient in both."""
    patients, labels = np.asarray(patients), np.asarray(labels)
    uniq, first = np.unique(patients, return_index=True)
    plabel = labels[first]
    for p, lab in zip(uniq, plabel):
        if (labels[patients == p] != lab).any():
            raise DataError(None, f"patient {p} has slices with different labels")
    counts = {c: int((plabel == c).sum()) for c in np.unique(plabel)}
    if min(counts.values()) < 2:
        raise DataError(None, f"a stratified patient split needs >= 2 patients per class, got {counts}")
    # tiny datasets: at least one test patient per class (more than test_size of them if need be)
    n_test = min(max(int(np.ceil(test_size * len(uniq))), len(counts)), len(uniq) - len(counts))
    tr_p, te_p = train_test_split(uniq, test_size=n_test, stratify=plabel, random_state=seed)
    te = np.isin(patients, te_p)
    return np.flatnonzero(~te), np.flatnonzero(te)


def aggregate(proba: np.ndarray, y: np.ndarray, groups: np.ndarray, level: str) -> tuple[np.ndarray, np.ndarray]:
    """Slice probabilities -> (labels, probabilities) at `level` ("slice" or "patient": mean per patient)."""
    if level == "slice":
        return y, proba
    if level != "patient":
        raise AlanError(f"level must be slice or patient, got {level!r}")
    uniq, inv = np.unique(groups, return_inverse=True)
    p = np.zeros((len(uniq), proba.shape[1]))
    np.add.at(p, inv, proba)
    p /= np.bincount(inv, minlength=len(uniq))[:, None]
    first = np.zeros(len(uniq), np.int64)
    first[inv[::-1]] = np.arange(len(inv))[::-1]
    return y[first], p


def score(clf: EDESClassifier, feats: np.ndarray, y: np.ndarray, groups: np.ndarray, level: str) -> float:
    proba = clf.predict_proba_features(feats)
    yy, pp = aggregate(proba, y, groups, level)
    return macro_auc(yy, pp, clf.classes_, absent="skip")


def select_hyperparameters(feats: np.ndarray, y: np.ndarray, groups: np.ndarray, base: EDESClassifier,
                           lrs: Sequence[float], batch_sizes: Sequence[int], folds: int, level: str,
                           seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Grid over (lr, batch size) by stratified group K-fold on the training part only."""
    n_groups = len(np.unique(groups))
    k = max(2, min(folds, n_groups))
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    splits = list(cv.split(np.zeros(len(y)), y, groups))
    rows = []
    for lr in lrs:
        for bs in batch_sizes:
            aucs = []
            for tr, va in splits:
                clf = replace_params(base, lr=lr, batch_size=bs).fit_features(feats[tr], y[tr], groups[tr])
                aucs.append(score(clf, feats[va], y[va], groups[va], level))
            rows.append({"lr": lr, "batch_size": bs, "cv_auc": float(np.nanmean(aucs)) if not np.all(np.isnan(aucs))
                         else float("nan")})
    ok = [r for r in rows if not np.isnan(r["cv_auc"])]
    best = max(ok, key=lambda r: r["cv_auc"]) if ok else rows[0]
    return {"lr": best["lr"], "batch_size": best["batch_size"]}, rows


def replace_params(est: EDESClassifier, **params: Any) -> EDESClassifier:
    return clone(est).set_params(**params)


__all__ = ["aggregate", "patient_split", "replace_params", "score", "select_hyperparameters"]
