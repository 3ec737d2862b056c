"""ED+ES classifier: macro AUC vs sklearn, the Adam/CE step vs torch, frozen vs fine-tuned encoders."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alan.downstream.classifier import EDESClassifier, group_split
from alan.metrics import macro_auc
from alan.models.encoders import create_encoder


def test_group_split_keeps_patients_on_one_side():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(30), 4)
    y = np.repeat(rng.integers(0, 3, 30), 4)
    tr, va = group_split(y, groups, 0.2, seed=0)
    assert len(tr) + len(va) == len(y) and len(va) > 0
    assert not set(groups[tr]) & set(groups[va])
    assert set(y[va]) == {0, 1, 2}


def test_one_epoch_is_one_adam_step_with_weight_decay_on_cross_entropy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 5)).astype(np.float32)
    y = np.array([0, 1, 2] * 4)
    clf = EDESClassifier(lr=0.05, batch_size=12, max_epochs=1, val_fraction=0, standardize=False, seed=3)
    clf.fit_features(x, y)
    torch.manual_seed(3)
    layer = torch.nn.Linear(5, 3)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05, weight_decay=1e-4)
    loss = F.cross_entropy(layer(torch.from_numpy(x)), torch.from_numpy(y))
    opt.zero_grad()
    loss.backward()
    opt.step()
    torch.testing.assert_close(clf.layer_.weight, layer.weight)
    torch.testing.assert_close(clf.layer_.bias, layer.bias)
    assert clf.history_[0]["train_loss"] == pytest.approx(float(loss))


def test_linear_layer_learns_separable_features_and_stops_early():
    rng = np.random.default_rng(3)
    n, d = 300, 8
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, d)) + 3 * np.eye(3, d)[y]
    groups = np.arange(n) // 3
    clf = EDESClassifier(lr=1e-2, max_epochs=300, patience=5).fit_features(x[:200], y[:200], groups[:200])
    p = clf.predict_proba_features(x[200:])
    assert np.allclose(p.sum(1), 1, atol=1e-5)
    assert macro_auc(y[200:], p, clf.classes_) > 0.95
    assert len(clf.history_) < 300 and "val_loss" in clf.history_[0]
    assert clf.history_[clf.best_epoch_]["val_loss"] == min(h["val_loss"] for h in clf.history_)


def _images(n, seed):
    """ED/ES pairs whose class is the brightness of a central square."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 40, size=(n, 2, 32, 32)).astype(np.uint8)
    x[:, :, 8:24, 8:24] += (100 + 100 * y)[:, None, None, None].astype(np.uint8)
    return x, np.array(["low", "high"])[y]


def test_frozen_encoders_do_not_change_and_transform_concatenates():
    enc = create_encoder("vgg_tiny", img_size=32, seed=0)
    before = {k: v.clone() for k, v in enc.state().items()}
    x, y = _images(40, 0)
    clf = EDESClassifier(enc, lr=1e-2, max_epochs=30, patience=5).fit(x, y, groups=np.arange(40))
    after = enc.state()
    assert all(torch.equal(before[k], after[k]) for k in before)
    feats = clf.transform(x[:3])
    with torch.no_grad():
        e = enc.eval()
        want = torch.cat([e(torch.from_numpy(x[:3, 0:1])), e(torch.from_numpy(x[:3, 1:2]))], 1).numpy()
    np.testing.assert_allclose(feats, want, rtol=1e-5, atol=1e-5)
    assert set(clf.predict(x[:5])) <= {"low", "high"}
    xt, yt = _images(40, 1)
    assert macro_auc(yt, clf.predict_proba(xt), clf.classes_) > 0.9


def test_finetune_trains_copies_of_the_encoders():
    enc_ed = create_encoder("densenet_tiny", img_size=32, seed=0)
    enc_es = create_encoder("densenet_tiny", img_size=32, seed=1)
    before = {k: v.clone() for k, v in enc_ed.state().items()}
    x, y = _images(24, 2)
    clf = EDESClassifier(enc_ed, enc_es, finetune=True, lr=1e-3, batch_size=8, max_epochs=2, patience=5)
    clf.fit(x, y, groups=np.arange(24))
    assert all(torch.equal(before[k], v) for k, v in enc_ed.state().items())  # originals untouched
    tuned = clf.encoder_ed_.state()
    assert any(not torch.equal(before[k], tuned[k]) for k in before)
    p = clf.predict_proba(x)
    assert p.shape == (24, 2) and np.allclose(p.sum(1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="fine-tuned"):
        clf.predict_proba_features(np.zeros((1, 4)))
