"""ED + ES diagnosis classifier (SSCL paper, section 5.1).

"We used a separate model for the end diastolic and end systolic frames. We then concatenated
the final layer together ... We then fine-tuned a fully connected output layer for
classification ... all models were trained using Adam optimizer with a weight decay of 1e-4.
We used sparse categorical cross-entropy loss." So: encoder_ed(ED) ++ encoder_es(ES) -> one
linear layer -> softmax; Adam (weight_decay=1e-4), cross-entropy, early stopping on a validation
part of the training data (split by `groups`, i.e. by patient, so no patient is in both).

Encoders are frozen by default: features are computed once and only the linear layer learns
(`fit_features` is that step on precomputed features, which is what cross-validation reuses).
`finetune=True` trains encoders and layer together on the images. Frozen features are
standardised with the training part's mean and std (a fixed reparametrisation of the same linear
layer that makes one learning-rate grid fit encoders whose feature scales differ by orders of
magnitude); `standardize=False` turns that off.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold
from sklearn.utils.validation import check_is_fitted
from torch import nn

from alan.metrics import macro_auc
from alan.models.encoders import Encoder


def group_split(y: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices with whole groups on one side, stratified by label when possible."""
    n_splits = max(2, int(round(1 / fraction)))
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError("need at least two groups (patients) to hold out a validation part")
    try:
        cv = StratifiedGroupKFold(n_splits=min(n_splits, n_groups), shuffle=True, random_state=seed)
        tr, va = next(cv.split(np.zeros(len(y)), y, groups))
    except ValueError:
        cv = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        tr, va = next(cv.split(np.zeros(len(y)), y, groups))
    return tr, va


class EDESClassifier(ClassifierMixin, BaseEstimator):
    """Two encoders (ED, ES) -> concatenated features -> linear layer, trained with Adam + CE.

    `fit(X, y, groups)` takes X as (N, 2, H, W) images ([:, 0] ED, [:, 1] ES; uint8 or float in
    [0, 1]); `groups` (patient ids) keep the validation part patient-disjoint. After fitting,
    `history_` holds per-epoch train_loss, val_loss (and eval_auc when `eval_set` was given).
    """

    def __init__(self, encoder_ed: Encoder | None = None, encoder_es: Encoder | None = None, finetune: bool = False,
                 lr: float = 1e-3, batch_size: int = 32, max_epochs: int = 200, patience: int = 20,
                 val_fraction: float = 0.2, weight_decay: float = 1e-4, standardize: bool = True, seed: int = 0,
                 device: str = "cpu", feature_batch_size: int = 64):
        self.encoder_ed = encoder_ed
        self.encoder_es = encoder_es
        self.finetune = finetune
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.val_fraction = val_fraction
        self.weight_decay = weight_decay
        self.standardize = standardize
        self.seed = seed
        self.device = device
        self.feature_batch_size = feature_batch_size

    # --------------------------------------------------------------------------- features
    def _encoders(self) -> tuple[Encoder, Encoder]:
        if self.encoder_ed is None:
            raise ValueError("EDESClassifier needs encoder_ed (and encoder_es) to work on images")
        enc_es = self.encoder_es if self.encoder_es is not None else copy.deepcopy(self.encoder_ed)
        return self.encoder_ed, enc_es

    @torch.no_grad()
    def transform(self, X: np.ndarray | torch.Tensor) -> np.ndarray:
        """Concatenated (ED, ES) features (N, D_ed + D_es) of the encoders in eval mode."""
        enc_ed, enc_es = self._encoders()
        x = torch.as_tensor(np.asarray(X))
        out = []
        modes = (enc_ed.training, enc_es.training)
        enc_ed.eval().to(self.device)
        enc_es.eval().to(self.device)
        try:
            for i in range(0, len(x), self.feature_batch_size):
                b = x[i:i + self.feature_batch_size].to(self.device)
                out.append(torch.cat([enc_ed(b[:, 0:1]), enc_es(b[:, 1:2])], 1).cpu())
        finally:
            enc_ed.train(modes[0])
            enc_es.train(modes[1])
        return torch.cat(out).numpy() if out else np.zeros((0, enc_ed.num_features + enc_es.num_features), np.float32)

    # --------------------------------------------------------------------------- fitting
    def _setup(self, y: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        self.classes_ = np.unique(y)
        yi = np.searchsorted(self.classes_, y)
        groups = np.arange(len(y)) if groups is None else np.asarray(groups)
        if self.val_fraction and self.val_fraction > 0:
            tr, va = group_split(yi, groups, self.val_fraction, self.seed)
        else:
            tr, va = np.arange(len(y)), np.zeros(0, np.int64)
        return yi, groups, tr, va

    def fit(self, X: np.ndarray, y: Sequence[Any], groups: Sequence[Any] | None = None,
            eval_set: tuple[np.ndarray, Sequence[Any]] | None = None) -> EDESClassifier:
        """Fit on images X (N, 2, H, W); frozen encoders: features once, then `fit_features`."""
        if not self.finetune:
            ev = None if eval_set is None else (self.transform(eval_set[0]), eval_set[1])
            return self.fit_features(self.transform(X), y, groups, eval_set=ev)
        return self._fit_finetune(np.asarray(X), np.asarray(y), groups, eval_set)

    def fit_features(self, features: np.ndarray, y: Sequence[Any], groups: Sequence[Any] | None = None,
                     eval_set: tuple[np.ndarray, Sequence[Any]] | None = None) -> EDESClassifier:
        """Train only the linear layer on precomputed frozen features (N, D)."""
        feats = np.asarray(features, dtype=np.float32)
        y = np.asarray(y)
        yi, groups, tr, va = self._setup(y, groups)
        if self.standardize:
            self.mean_ = feats[tr].mean(0)
            self.scale_ = feats[tr].std(0) + 1e-6
        else:
            self.mean_, self.scale_ = np.zeros(feats.shape[1], np.float32), np.ones(feats.shape[1], np.float32)
        z = torch.from_numpy((feats - self.mean_) / self.scale_).float()
        t = torch.from_numpy(yi).long()
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            layer = nn.Linear(z.shape[1], len(self.classes_))
        ev = None
        if eval_set is not None:
            ev = (torch.from_numpy((np.asarray(eval_set[0], np.float32) - self.mean_) / self.scale_).float(),
                  np.asarray(eval_set[1]))
        w, self.history_, self.best_epoch_ = _train_softmax_regression(
            z, t, len(self.classes_), torch.cat([layer.weight.detach(), layer.bias.detach()[:, None]], 1), tr, va,
            lr=self.lr, batch_size=self.batch_size, weight_decay=self.weight_decay, max_epochs=self.max_epochs,
            patience=self.patience, seed=self.seed, eval_fn=None if ev is None else
            (lambda wb: macro_auc(ev[1], torch.softmax(_logits(ev[0], wb), 1).numpy(), self.classes_, absent="skip")))
        with torch.no_grad():
            layer.weight.copy_(w[:, :-1])
            layer.bias.copy_(w[:, -1])
        self.layer_ = layer.eval()
        self.n_features_in_ = z.shape[1]
        return self

    def _fit_finetune(self, X: np.ndarray, y: np.ndarray, groups: Any, eval_set: Any) -> EDESClassifier:
        yi, groups, tr, va = self._setup(y, groups)
        enc_ed, enc_es = (copy.deepcopy(e) for e in self._encoders())
        self.encoder_ed_, self.encoder_es_ = enc_ed.to(self.device), enc_es.to(self.device)
        self.mean_ = self.scale_ = None
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            layer = nn.Linear(enc_ed.num_features + enc_es.num_features, len(self.classes_)).to(self.device)
        params = [*enc_ed.parameters(), *enc_es.parameters(), *layer.parameters()]
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        x = torch.as_tensor(X)
        t = torch.from_numpy(yi).long()
        g = torch.Generator().manual_seed(self.seed)
        self.layer_ = layer
        bs = max(2, min(self.batch_size, len(tr)))  # BatchNorm needs two samples

        def train_epoch() -> float:
            enc_ed.train(), enc_es.train(), layer.train()
            perm = torch.from_numpy(tr)[torch.randperm(len(tr), generator=g)]
            total, seen = 0.0, 0
            for i in range(0, len(perm) - (len(perm) % bs == 1), bs):
                idx = perm[i:i + bs]
                b = x[idx].to(self.device)
                logits = layer(torch.cat([enc_ed(b[:, 0:1]), enc_es(b[:, 1:2])], 1))
                loss = F.cross_entropy(logits, t[idx].to(self.device))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, seen = total + float(loss) * len(idx), seen + len(idx)
            return total / max(seen, 1)

        def val_loss() -> float:
            return float(F.cross_entropy(torch.from_numpy(np.log(self._proba_images(x[va]) + 1e-12)), t[va]))

        def eval_auc() -> float:
            return macro_auc(eval_set[1], self._proba_images(torch.as_tensor(eval_set[0])), self.classes_,
                             absent="skip")

        best_state, self.history_, self.best_epoch_ = early_stopping(
            train_epoch, val_loss if len(va) else None, eval_auc if eval_set is not None else None,
            lambda: copy.deepcopy((enc_ed.state_dict(), enc_es.state_dict(), layer.state_dict())),
            max_epochs=self.max_epochs, patience=self.patience)
        enc_ed.load_state_dict(best_state[0])
        enc_es.load_state_dict(best_state[1])
        layer.load_state_dict(best_state[2])
        enc_ed.eval(), enc_es.eval(), layer.eval()
        self.n_features_in_ = enc_ed.num_features + enc_es.num_features
        return self

    # --------------------------------------------------------------------------- prediction
    @torch.no_grad()
    def _proba_images(self, x: torch.Tensor) -> np.ndarray:
        enc_ed, enc_es, layer = self.encoder_ed_, self.encoder_es_, self.layer_
        modes = (enc_ed.training, enc_es.training, layer.training)
        enc_ed.eval(), enc_es.eval(), layer.eval()
        out = []
        for i in range(0, len(x), self.feature_batch_size):
            b = x[i:i + self.feature_batch_size].to(self.device)
            out.append(torch.softmax(layer(torch.cat([enc_ed(b[:, 0:1]), enc_es(b[:, 1:2])], 1)), 1).cpu())
        enc_ed.train(modes[0]), enc_es.train(modes[1]), layer.train(modes[2])
        return torch.cat(out).numpy()

    @torch.no_grad()
    def predict_proba_features(self, features: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "layer_")
        if self.finetune:
            raise ValueError("a fine-tuned classifier predicts from images, not frozen features")
        z = torch.from_numpy((np.asarray(features, np.float32) - self.mean_) / self.scale_).float()
        return torch.softmax(self.layer_(z), 1).numpy()

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (N, n_classes) for images X (N, 2, H, W), columns in `classes_` order."""
        check_is_fitted(self, "layer_")
        if self.finetune:
            return self._proba_images(torch.as_tensor(np.asarray(X)))
        return self.predict_proba_features(self.transform(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]


def _logits(z: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    return z @ wb[:, :-1].T + wb[:, -1]


def early_stopping(train_epoch: Callable[[], float], val_loss: Callable[[], float] | None,
                   eval_auc: Callable[[], float] | None, snapshot: Callable[[], Any], *, max_epochs: int,
                   patience: int) -> tuple[Any, list[dict[str, float]], int]:
    """Train epoch by epoch; keep the `snapshot()` of the epoch with the lowest validation loss
    (training loss without a validation part) and stop after `patience` epochs without a gain.

    Returns (best snapshot, per-epoch history of train_loss / val_loss / eval_auc, best epoch).
    Without `val_loss` all `max_epochs` run (nothing to stop on)."""
    best, best_state, best_epoch, wait = np.inf, snapshot(), 0, 0
    history: list[dict[str, float]] = []
    for epoch in range(max_epochs):
        rec = {"epoch": epoch, "train_loss": train_epoch()}
        if val_loss is not None:
            rec["val_loss"] = val_loss()
        if eval_auc is not None:
            rec["eval_auc"] = eval_auc()
        history.append(rec)
        score = rec.get("val_loss", rec["train_loss"])
        if score < best - 1e-6:
            best, best_state, best_epoch, wait = score, snapshot(), epoch, 0
        else:
            wait += 1
            if val_loss is not None and wait >= patience:
                break
    return best_state, history, best_epoch


@torch.no_grad()
def _train_softmax_regression(z: torch.Tensor, t: torch.Tensor, n_classes: int, wb: torch.Tensor, tr: np.ndarray,
                              va: np.ndarray, *, lr: float, batch_size: int, weight_decay: float, max_epochs: int,
                              patience: int, seed: int, eval_fn: Any = None
                              ) -> tuple[torch.Tensor, list[dict[str, float]], int]:
    """Minibatch Adam on softmax cross-entropy for one linear layer, gradients written out.

    The same arithmetic as ``nn.Linear`` + ``F.cross_entropy`` + ``torch.optim.Adam(weight_decay)``
    (L2 added to the gradient, bias included), without autograd and optimizer overhead: this
    loop runs thousands of times in the grid's cross-validation (bench/bench_classifier.py: 4.6x
    faster than torch.optim.Adam on one thread, the same weights to 1e-6). `wb` is (C, D + 1),
    bias last. Returns the weights at the lowest validation loss, the per-epoch history and that epoch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # (C, D) ops: waking a thread pool costs ~100x the op itself
    try:
        return _adam_loop(z, t, n_classes, wb, tr, va, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                          max_epochs=max_epochs, patience=patience, seed=seed, eval_fn=eval_fn)
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def _adam_loop(z: torch.Tensor, t: torch.Tensor, n_classes: int, wb: torch.Tensor, tr: np.ndarray, va: np.ndarray, *,
               lr: float, batch_size: int, weight_decay: float, max_epochs: int, patience: int, seed: int,
               eval_fn: Any) -> tuple[torch.Tensor, list[dict[str, float]], int]:
    wb = wb.clone()
    m, v = torch.zeros_like(wb), torch.zeros_like(wb)
    b1, b2, eps = 0.9, 0.999, 1e-8
    z1 = torch.cat([z, torch.ones(len(z), 1)], 1)
    onehot = F.one_hot(t, n_classes).float()
    g = torch.Generator().manual_seed(seed)
    tr_t, va_t = torch.from_numpy(np.asarray(tr)), torch.from_numpy(np.asarray(va))
    bs = max(1, min(batch_size, len(tr)))
    step = 0

    def train_epoch() -> float:
        nonlocal step
        perm = tr_t[torch.randperm(len(tr_t), generator=g)]
        total = torch.zeros(())
        for i in range(0, len(perm), bs):
            idx = perm[i:i + bs]
            zb = z1[idx]
            logp = torch.log_softmax(zb @ wb.T, 1)
            total += -(logp * onehot[idx]).sum()
            grad = (logp.exp_() - onehot[idx]).T @ zb / len(idx)
            grad.add_(wb, alpha=weight_decay)
            step += 1
            m.mul_(b1).add_(grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = (v.sqrt() / (1 - b2**step) ** 0.5).add_(eps)
            wb.addcdiv_(m, denom, value=-lr / (1 - b1**step))
        return float(total) / len(tr_t)

    def val_loss() -> float:
        return float(F.cross_entropy(z1[va_t] @ wb.T, t[va_t]))

    return early_stopping(train_epoch, val_loss if len(va_t) else None,
                          None if eval_fn is None else (lambda: eval_fn(wb)), wb.clone,
                          max_epochs=max_epochs, patience=patience)


__all__ = ["EDESClassifier", "early_stopping", "group_split"]
