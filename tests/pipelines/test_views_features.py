"""View features: the CLS token or grid-pooled patch tokens, of frames at an input size."""

import numpy as np
import pytest
import torch

from alan.downstream.knn import WeightedKNN
from alan.errors import AlanError
from alan.metrics import accuracy, confusion_matrix
from alan.pipelines.views import (GRID, bank_input_size, cls_features, evaluate_views, fit_views, record_frame,
                                  view_features)
from alan.transforms.spatial import resize_unit, to_work


def test_grid_features_are_patch_tokens_averaged_per_cell():
    n, g, d = 2, 14, 3
    tokens = torch.randn(n, g * g, d)
    cls = torch.randn(n, d)
    assert torch.equal(view_features(cls, tokens, "cls"), cls)
    got = view_features(cls, tokens, "grid").reshape(n, d, GRID, GRID)
    cell = g // GRID
    grid = tokens.reshape(n, g, g, d)
    for i in range(GRID):
        for j in range(GRID):
            want = grid[:, i * cell:(i + 1) * cell, j * cell:(j + 1) * cell].mean((1, 2))
            assert torch.allclose(got[:, :, i, j], want, atol=1e-6)


@pytest.fixture(scope="module")
def views_data(tmp_path_factory):
    """A small backbone (112 px, patch 8) and the TMED-2 phantom's train / test images."""
    from alan.data import open_dataset
    from alan.models.backbones import create_backbone
    from alan.phantom import synthesize

    torch.manual_seed(0)
    bb = create_backbone("vit_micro_p8_112").eval()
    ds = open_dataset(synthesize("tmed2", tmp_path_factory.mktemp("views") / "tmed2", seed=5, size="small"))
    return bb, ds.split("train"), ds.split("test")


def _direct(bb, records, features, size):
    """View features by hand: the records' frames to the backbone's size, then to `size` px, one
    backbone pass at that size."""
    frames = resize_unit(to_work([record_frame(r) for r in records], 112), size)
    with torch.no_grad():
        return view_features(*bb(frames, size), features).numpy()


@pytest.mark.parametrize("size", [112, 128])
def test_a_bank_and_analyze_see_a_large_frame_the_same_way(views_data, size):
    """Frames larger than the backbone's size: the bank's features of a record are the ones the
    parcellator gives `analyze` for the same frame (work frames at 112 px, view features at the
    bank's size), so a recording is scored on the features its bank was fitted on."""
    from dataclasses import replace

    import cv2

    from alan.models.parcellator import compute_tokens_and_logits
    from alan.models.raptor import RaptorHead

    bb, train, _ = views_data
    big = [replace(r, load_frames=(lambda f=cv2.resize(record_frame(r), (173, 201)): f[None]), height=201, width=173)
           for r in train[:4]]
    bank = cls_features(bb, big, features="grid", input_size=size)
    head = RaptorHead(bb.embed_dim, 4).eval()
    frames = to_work([record_frame(r) for r in big], 112)
    got, _ = compute_tokens_and_logits(bb, head, frames, features="grid", view_size=size)
    np.testing.assert_allclose(bank, got.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("features", ["cls", "grid"])
def test_features_at_an_input_size_are_a_pass_at_that_size(views_data, features):
    bb, train, _ = views_data
    recs = train[:5]
    at_128 = cls_features(bb, recs, batch_size=2, features=features, input_size=128)
    np.testing.assert_allclose(at_128, _direct(bb, recs, features, 128), rtol=1e-5, atol=1e-5)
    native = cls_features(bb, recs, batch_size=2, features=features)
    with torch.no_grad():  # today's call, bit for bit: frames at the backbone's own size
        today = view_features(*bb(to_work([record_frame(r) for r in recs], 112)), features).numpy()
    assert np.array_equal(native, today)
    assert np.array_equal(cls_features(bb, recs, batch_size=2, features=features, input_size=112), today)
    assert at_128.shape == native.shape and not np.allclose(at_128, native, atol=1e-3)
    with pytest.raises(AlanError, match="multiple of the patch size"):
        cls_features(bb, recs, features=features, input_size=100)


def test_fit_views_records_the_input_size_and_evaluate_views_uses_it(views_data):
    bb, train, test = views_data
    knn = fit_views(bb, train, k=3, features="grid", input_size=128)
    assert knn.provenance_["features"] == "grid" and knn.provenance_["input_size"] == 128
    assert bank_input_size(knn) == 128
    assert fit_views(bb, train, k=3).provenance_["input_size"] == 112  # the native size, by number
    got = evaluate_views(knn, bb, test, ks=(1, 3, 5))
    truth = np.array([r.label for r in test])
    labels = [r.label for r in train]
    classes = [str(c) for c in knn.classes_]
    x_train, x_test = _direct(bb, train, "grid", 128), _direct(bb, test, "grid", 128)
    for k in (1, 3, 5):
        pred = WeightedKNN(k=k).fit(x_train, labels).predict(x_test)
        assert got["by_k"][str(k)]["accuracy"] == pytest.approx(accuracy(truth, pred))
        assert got["by_k"][str(k)]["confusion"] == confusion_matrix(truth, pred, labels=classes).tolist()


def test_a_bank_without_an_input_size_is_at_the_backbones_own_size(views_data, tmp_path):
    bb, train, test = views_data
    x_train = _direct(bb, train, "cls", 112)
    old = WeightedKNN(k=3).fit(x_train, [r.label for r in train], provenance={"backbone_hash": None})
    old.save(tmp_path / "bank")
    old = WeightedKNN.load(tmp_path / "bank")
    assert "input_size" not in old.provenance_ and bank_input_size(old) is None
    got = evaluate_views(old, bb, test, ks=(3,))
    pred = WeightedKNN(k=3).fit(x_train, [r.label for r in train]).predict(_direct(bb, test, "cls", 112))
    assert got["by_k"]["3"]["confusion"] == confusion_matrix(np.array([r.label for r in test]), pred,
                                                             labels=[str(c) for c in old.classes_]).tolist()
