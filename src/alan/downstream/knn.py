"""Weighted k-nearest-neighbour classifier on L2-normalised features (DINO's eval_knn).

ALAN paper (*Unlocking the Heart Using Adaptive Locked Agnostic Networks*), section 4.3; Caron et
al., DINO; Wu et al. 2018. For a query q the
score of class c is the sum, over its k nearest bank entries by cosine similarity s_i, of
exp(s_i / T) [label_i = c]; scores are normalised to sum to 1. T = 0.07 as in DINO.

Queries are processed in chunks (one float32 matmul + topk each) into one similarity buffer
reused by every chunk, so the similarity matrix never exceeds `chunk_size` x bank entries and
its memory is touched once per call; by default the chunk follows the bank size and the free
memory. Works for any number of queries and classes, and clips k to the bank size (DINO's
script crashes below 100 queries or 5 classes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from alan.artifacts import load_artifact, save_artifact
from alan.downstream import check_provenance
from alan.errors import ArtifactError

KIND = "knn_bank"
FORMAT_VERSION = 1
# Similarities per chunk at most when chunk_size is None (128 MiB of float32). Measured with
# bench/bench_knn.py's data (1,000 queries x 100,000 x 384) with a reused buffer, against one
# unchunked matmul: 0.94x at 51 MiB, 0.87x at 128 MiB, 0.95x at 200 MiB, 1.04x at 390 MiB.
_SIM_BUDGET = 1 << 25
_MEMORY_SHARE = 4  # the similarity buffer takes at most 1/4 of the memory available now


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (Linux MemAvailable, else free pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def auto_chunk(n_bank: int, n_queries: int, available: int | None = None) -> int:
    """Queries per chunk: as many as keep the float32 similarity block (chunk x n_bank) within
    `_SIM_BUDGET` entries and within 1/4 of the `available` memory (None: measured now)."""
    available = available_memory() if available is None else available
    budget = _SIM_BUDGET if available is None else min(_SIM_BUDGET, available // (4 * _MEMORY_SHARE))
    return int(max(1, min(max(n_queries, 1), budget // max(n_bank, 1))))


class WeightedKNN(ClassifierMixin, BaseEstimator):
    """DINO's weighted kNN: k neighbours by cosine, votes exp(cos / temperature).

    `chunk_size` queries are scored at once (None: `auto_chunk`, from the bank size and the free
    memory). Learnt: `bank_` (N,D) float32 L2-normalised, `labels_` (N,) indices into
    `classes_`, `provenance_`.
    """

    def __init__(self, k: int = 20, temperature: float = 0.07, chunk_size: int | None = None):
        self.k = k
        self.temperature = temperature
        self.chunk_size = chunk_size

    def fit(self, X: Any, y: Any, provenance: Mapping[str, Any] | None = None) -> WeightedKNN:
        """Store the L2-normalised bank X (N, D) and its labels y (N,); `provenance` (e.g. the
        backbone hash) is kept with the bank. Refuses NaN/inf, empty, sparse, complex, object
        features that are not numbers, and continuous targets, as scikit-learn estimators do."""
        X = _numpy(X)
        if not issparse(X) and hasattr(X, "__len__") and hasattr(y, "__len__") and len(y) != len(X):
            raise ValueError(f"labels must have one entry per bank row: {len(y)} labels for {len(X)} rows")
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        self.classes_, self.labels_ = np.unique(y, return_inverse=True)
        self.bank_ = F.normalize(torch.from_numpy(X), dim=1).numpy()
        self.provenance_ = dict(provenance or {})
        self._path: Path | None = None
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Normalised class scores (n_queries, n_classes), columns in the order of `classes_`."""
        check_is_fitted(self, "bank_")
        q = _as_queries(self, X)
        bank = torch.from_numpy(self.bank_)
        labels = torch.from_numpy(self.labels_.astype(np.int64))
        n_classes = len(self.classes_)
        k = min(int(self.k), len(bank))
        chunk = int(self.chunk_size) if self.chunk_size else auto_chunk(len(bank), len(q))
        chunk = max(1, min(chunk, len(q)))
        out = torch.empty((len(q), n_classes), dtype=torch.float32)
        with torch.no_grad():
            block = torch.empty((chunk, len(bank)), dtype=torch.float32)  # reused: its pages fault in once
            for start in range(0, len(q), chunk):
                qc = F.normalize(q[start : start + chunk], dim=1)
                sims, idx = torch.mm(qc, bank.T, out=block[: len(qc)]).topk(k, dim=1)
                # exp((s - s_max) / T): same normalised scores, no overflow for small T.
                w = torch.exp((sims - sims[:, :1]) / self.temperature)
                scores = torch.zeros((len(qc), n_classes), dtype=torch.float32)
                scores.scatter_add_(1, labels[idx], w)
                out[start : start + chunk] = scores / scores.sum(1, keepdim=True)
        return out.numpy()

    def predict(self, X: Any) -> np.ndarray:
        """The class with the highest score for each query."""
        check_is_fitted(self, "bank_")
        return self.classes_[self.predict_proba(X).argmax(1)]

    def check_provenance(self, provenance: Mapping[str, Any] | None) -> None:
        """Raise `ArtifactError` if `provenance` (e.g. the backbone hash) differs from the fit's."""
        check_is_fitted(self, "bank_")
        check_provenance(self.provenance_, provenance, what="kNN bank", path=getattr(self, "_path", None))

    def save(self, path: str | Path) -> str:
        """Save the bank as a locked artifact (safetensors + JSON, kind "knn_bank"); returns its hash."""
        check_is_fitted(self, "bank_")
        config = {
            "kind": KIND,
            "format_version": FORMAT_VERSION,
            "k": int(self.k),
            "temperature": float(self.temperature),
            "chunk_size": self.chunk_size,
            "classes": [c.item() if isinstance(c, np.generic) else c for c in self.classes_],
            "n_bank": int(len(self.bank_)),
            "dim": int(self.bank_.shape[1]),
            "provenance": self.provenance_,
        }
        tensors = {"bank": torch.from_numpy(self.bank_), "labels": torch.from_numpy(self.labels_.astype(np.int64))}
        return save_artifact(path, tensors, config)

    @classmethod
    def load(cls, path: str | Path) -> WeightedKNN:
        """Load a bank saved by `save` (its hash and kind are verified)."""
        tensors, config = load_artifact(path, kind=KIND)
        if config.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(f"{path}: unsupported knn_bank format_version {config.get('format_version')!r}")
        try:
            model = cls(k=int(config["k"]), temperature=float(config["temperature"]), chunk_size=config.get("chunk_size"))
            bank, labels = tensors["bank"], tensors["labels"]
            classes = np.asarray(config["classes"])
        except KeyError as e:
            raise ArtifactError(f"{path}: knn_bank artifact lacks {e}") from None
        if bank.ndim != 2 or labels.shape != (len(bank),) or (len(labels) and int(labels.max()) >= len(classes)):
            raise ArtifactError(f"{path}: knn_bank tensors do not match its config")
        model.bank_ = bank.to(torch.float32).numpy()
        model.labels_ = labels.numpy().astype(np.int64)
        model.classes_ = classes
        model.n_features_in_ = bank.shape[1]
        model.provenance_ = dict(config.get("provenance") or {})
        model._path = Path(path)
        return model


def _numpy(X: Any) -> Any:
    """A torch tensor as a numpy array (anything else as it is, for scikit-learn's validation)."""
    return X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else X


def _as_queries(model: WeightedKNN, X: Any) -> torch.Tensor:
    """Validated float32 queries (n, D), D the bank's feature count (scikit-learn's checks and wording)."""
    try:
        return torch.from_numpy(validate_data(model, _numpy(X), dtype=np.float32, reset=False))
    except ValueError as e:
        if "features, but" in str(e):
            raise ValueError(f"{e} (the bank's feature dimensions)") from None
        raise
