"""View features: the CLS token or grid-pooled patch tokens."""

import numpy as np
import torch

from alan.pipelines.views import GRID, view_features


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
