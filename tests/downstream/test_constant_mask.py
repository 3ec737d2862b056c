"""The constant-mask baseline against a direct computation."""

import numpy as np
import pytest

from alan.downstream.constant_mask import ConstantMask
from alan.metrics import dice


def test_mean_mask_thresholded_and_predicted_for_every_frame():
    rng = np.random.default_rng(0)
    masks = rng.random((7, 9, 11)) < 0.4
    model = ConstantMask().fit(masks)
    direct = masks.sum(0) / 7 >= 0.5  # at least 4 of 7 masks cover the pixel
    assert np.array_equal(model.mask_, masks.sum(0) >= 4) and np.array_equal(model.mask_, direct)
    pred = model.predict(np.zeros((3, 9, 11)))
    assert pred.shape == (3, 9, 11) and pred.dtype == bool and all(np.array_equal(p, direct) for p in pred)
    # the prediction ignores the image: DICE against any frame is DICE of the fixed mask
    truth = rng.random((3, 9, 11)) < 0.5
    assert np.allclose([dice(p, t) for p, t in zip(pred, truth)], [dice(direct, t) for t in truth])


def test_threshold_and_bad_input():
    masks = np.zeros((4, 2, 2), bool)
    masks[:1, 0, 0] = True  # 25 %
    masks[:3, 1, 1] = True  # 75 %
    assert ConstantMask(threshold=0.2).fit(masks).mask_.sum() == 2
    assert ConstantMask().fit(masks).mask_.tolist() == [[False, False], [False, True]]
    with pytest.raises(ValueError, match="non-empty"):
        ConstantMask().fit(np.zeros((0, 2, 2), bool))
    with pytest.raises(ValueError, match="threshold"):
        ConstantMask(threshold=0).fit(masks)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        ConstantMask().predict(masks)
