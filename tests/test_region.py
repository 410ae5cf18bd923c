"""Sky regions: field/CCD/quadrant footprints of the real grid overlapping an R.A./Dec box."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ztfluigi import camera, region


def _centres() -> tuple[np.ndarray, np.ndarray]:
    ra, dec = region.footprints()
    # corner means are within arcseconds of the quadrant centres at |Dec| < 80°
    rel = (ra - ra[..., :1] + 180.0) % 360.0 - 180.0  # unwrapped about the first corner
    return (ra[..., 0] + rel.mean(axis=-1)) % 360.0, dec.mean(axis=-1)


def test_parse_presets_and_boxes():
    toy = region.parse_region("toy")
    assert (toy.ra_min, toy.ra_max, toy.dec_min, toy.dec_max) == (345.0, 65.0, -5.0, 35.0)
    assert toy.ra_width == 80.0 and toy.ra_centre == 25.0 and toy.spec() == "toy"
    box = region.parse_region("-15,65,-5,35")
    assert box.ra_min == 345.0 and box.spec() == "345,65,-5,35"
    assert region.parse_region("") is None
    for bad in ("nowhere", "1,2,3", "1,2,30,10", "1,2,-95,0"):
        with pytest.raises(ValueError):
            region.parse_region(bad)


def test_wrap_through_zero_selects_both_sides():
    sel = region.selection("355,5,-3,3")
    _, ra0, dec0 = region.field_grid()
    chosen = np.isin(region.field_grid()[0], sel.fields)
    d_ra = (ra0[chosen] + 180.0) % 360.0 - 180.0
    assert (d_ra < 0).any() and (d_ra > 0).any()
    # fields far from the box (beyond a focal-plane half-diagonal, ≈ 5.5°) are never selected
    assert np.all(np.abs(d_ra) < 5.0 + 5.5) and np.all(np.abs(dec0[chosen]) < 3.0 + 5.5)
    # the same box without wrapping (5 → 355 the long way) is its complement in R.A.
    other = region.selection("5,355,-3,3")
    assert set(sel.fields) | set(other.fields) >= set(sel.fields)
    assert len(other.fields) > 10 * len(sel.fields)


def test_quadrant_centres_inside_are_selected_and_far_ones_not():
    box = region.parse_region("toy")
    sel = region.selection(box)
    ra, dec = _centres()
    inside = box.contains(ra, dec)
    assert inside.sum() > 1000
    assert np.all(sel.mask[inside])
    # quadrants whose centre is more than a quadrant diagonal (1.3°) outside are never selected
    far = ~region.Region(box.ra_min - 1.3 / np.cos(np.radians(36)), box.ra_max
                         + 1.3 / np.cos(np.radians(36)), -6.3, 36.3).contains(ra, dec)  # fmt: skip
    assert not np.any(sel.mask[far])
    # and the ones selected without their centre inside straddle an edge of the box
    edge = sel.mask & ~inside
    assert edge.sum() > 0


def test_a_quadrant_partly_inside_counts():
    ra, dec = region.footprints()
    row, rc = 500, camera.rcid(7, 2)
    # a 0.01° box around one corner of that quadrant, just inside it
    c_ra, c_dec = ra[row, rc, 0], dec[row, rc, 0]
    centre_ra, centre_dec = ra[row, rc].mean(), dec[row, rc].mean()
    step_ra, step_dec = 0.02 * np.sign(centre_ra - c_ra), 0.02 * np.sign(centre_dec - c_dec)
    lo_ra, hi_ra = sorted((c_ra, c_ra + step_ra))
    lo_dec, hi_dec = sorted((c_dec, c_dec + step_dec))
    sel = region.selection(f"{lo_ra},{hi_ra},{lo_dec},{hi_dec}")
    field = int(region.field_grid()[0][row])
    assert sel.selects(field, 7, 2)
    assert not sel.selects(field, 16, 4) and not sel.selects(field, 1, 1)
    # far fewer quadrants than the whole camera: only those touching that small box
    assert sel.mask[row].sum() <= 4


def test_a_box_between_quadrants_selects_neither_side_beyond_the_gap():
    ra, dec = region.footprints()
    row = 500
    # a box strictly outside every quadrant: just beyond the East edge of the focal plane
    corner_ra = ra[row].max() + 0.05
    sel = region.selection(f"{corner_ra},{corner_ra + 0.01},{dec[row].min()},{dec[row].max()}")
    field = int(region.field_grid()[0][row])
    assert not sel.mask[row].any() and not sel.selects(field, 1, 1)


def test_whole_sky_and_unknown_fields():
    sel = region.selection("")
    assert sel.selects(1, 1, 1) and sel.quadrants_mask(np.array([0, 5])).all()
    toy = region.selection("toy")
    assert not toy.selects(0, 1, 1)  # calibration exposures have field 0
    rows = toy.quadrants_mask(np.array([0, int(toy.fields[0])]))
    assert not rows[0].any() and rows[1].any()
    first = int(toy.fields[0])
    assert toy.qids(first, 1) == [q for q in range(1, 5) if toy.selects(first, 1, q)]


def test_toy_sample_size_and_speed():
    t0 = time.perf_counter()
    sel = region.selection("12,13,20,21")  # a new box: not cached
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0 and sel.mask.any()
    toy = region.selection("toy")
    # R.A. 80° × Dec 40° ≈ 3,000 deg² ≈ 4,000 quadrants of 0.75 deg²; primary and secondary grids
    n_primary = toy.mask[region.field_grid()[0][:, None].repeat(64, 1) < 1000].sum()
    assert 3500 < n_primary < 6000
