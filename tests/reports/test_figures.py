import matplotlib.image as mpimg
import numpy as np

from alan.reports.figures import parcel_atlas, parcel_colors


def test_parcel_colors_are_fixed_per_id_and_distinct():
    a, b = parcel_colors(8), parcel_colors(64)
    np.testing.assert_array_equal(a, b[:8])  # a parcel's colour does not depend on K
    assert len({tuple(np.round(c, 6)) for c in b}) == 60  # tab20 x 3 shades, then repeats
    assert b.min() >= 0 and b.max() <= 1


def test_parcel_atlas_writes_one_panel_per_frame(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (5, 32, 32)).astype(np.uint8)
    parcels = np.zeros((5, 32, 32), np.int64)
    parcels[:, :, 16:] = 3
    masks = np.zeros((5, 32, 32), bool)
    masks[:, 8:24, 8:24] = True
    path = parcel_atlas(images, parcels, tmp_path / "sub" / "atlas.png", masks=masks, labels=list("abcde"), cols=3)
    img = mpimg.imread(path)
    assert path.is_file() and img.ndim == 3 and img.shape[1] > img.shape[0]  # 3 columns x 2 rows
    assert not list(path.parent.glob(".*tmp*"))
