"""The one-pass background mask equals its numpy definition, and star disks painted in place equal
the painted copy."""

from __future__ import annotations

import numpy as np
import pytest

from ztfluigi import apertures, photometry


@pytest.mark.parametrize("order", ["=", ">"])
def test_background_mask_is_its_numpy_definition(order):
    rng = np.random.default_rng(5)
    image = rng.normal(100, 10, (67, 91)).astype(np.float32)
    image[3, 4], image[10, 11], image[20, 30] = np.nan, np.inf, 5e4
    mask = rng.integers(-(2**15), 2**15, image.shape).astype(np.int16)
    mask[rng.random(image.shape) < 0.7] = 0
    image, mask = image.astype(image.dtype.newbyteorder(order)), mask.astype(f"{order}i2")
    bad, nonfinite = apertures.background_mask(image, mask, photometry.MASK_ALL, 4e4)
    expected = (~np.isfinite(image) | ((mask.astype(np.int64) & photometry.MASK_ALL) != 0)
                | (image > 4e4))  # fmt: skip
    assert bad.dtype == bool and bad.flags.c_contiguous and np.array_equal(bad, expected)
    assert nonfinite
    clean, nonfinite = apertures.background_mask(np.ones((4, 5), np.float32), None, 1)
    assert not clean.any() and not nonfinite


def test_star_mask_in_place_equals_the_copy():
    rng = np.random.default_rng(6)
    base = rng.random((300, 260)) < 0.1
    x, y = rng.uniform(-20, 280, 200), rng.uniform(-20, 320, 200)
    g = rng.uniform(10, 21, 200)
    copied = photometry.star_mask(base.shape, x, y, g, base=base, mesh=(64, 70))
    painted = base.copy()
    same = photometry.star_mask(base.shape, x, y, g, base=painted, mesh=(64, 70), in_place=True)
    assert same is painted and np.array_equal(painted, copied)
    assert copied.sum() > base.sum()
