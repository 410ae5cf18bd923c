"""One-pass exact aperture kernel (ztfluigi.apertures) against sep 1.4 and photutils exact, on
synthetic images and on the real IPAC quadrant shipped in the ztfimg 0.19.0 sdist."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import sep
from astropy.io import fits
from photutils import aperture as photutils_aperture
from photutils.geometry import circular_overlap_grid

from tests.reference_env import cache_dir, clean_env
from ztfluigi import apertures as ap
from ztfluigi import photometry as ph

RADII = np.asarray(ph.RADII, dtype=float)
TOL = 1e-12  #: |ours − theirs| ≤ TOL × Σ |pixel| × overlap (relative for positive images)


def abs_scale(data, x, y, radii, mask=None):
    """Σ |pixel| × overlap per aperture: the scale of rounding of a sum of signed pixels."""
    return ap.circular_apertures(np.abs(np.nan_to_num(data)), x, y, radii).sum


def sep_sums(data, x, y, radii, err=None, bad=None):
    return sep.sum_circle(np.ascontiguousarray(data, np.float32), x, y, np.asarray(radii)[:, None],
                          err=err, mask=bad, subpix=0)  # fmt: skip


def rescaled(res):
    """sep's returned flux and error from the kernel's unmasked sums (q = area / unmasked)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        q = res.area / (res.area - res.masked_area)
    return res.sum * q, np.sqrt(res.var * q)


@pytest.fixture(scope="module")
def field():
    rng = np.random.default_rng(5)
    shape = (300, 320)
    data = rng.normal(0.0, 10.0, shape).astype(np.float32)  # background-subtracted-like
    err = rng.uniform(1, 3, shape).astype(np.float32)
    mask = np.where(rng.uniform(size=shape) < 0.02, 1 << 8, 0).astype(np.int16)
    mask[rng.uniform(size=shape) < 0.02] |= 1 << 1  # source bit: not excluded by MASK_PHOT
    x = rng.uniform(-15, 335, 3000)
    y = rng.uniform(-15, 315, 3000)
    x[:6] = [10, 10.5, -0.4, 319.4, 100.25, 150.0]  # centres, edges, overhangs
    y[:6] = [10, 20.5, 50, 50, 299.6, 150.0]
    return {"data": data, "err": err, "mask": mask, "x": x, "y": y}


def test_overlap_equals_photutils_exact():
    for r in (0.3, 1.0, 2.5, 3.0, 7.3, 12.0):
        for cx, cy in ((0.0, 0.0), (0.5, 0.5), (0.27, -0.41), (-0.5, 0.13)):
            n = int(np.ceil(r)) + 2
            grid = np.arange(-n, n + 1)
            dx, dy = np.meshgrid(grid - cx, grid - cy)
            ours = ap.circular_overlap(dx, dy, r)
            theirs = circular_overlap_grid(grid[0] - cx - 0.5, grid[-1] - cx + 0.5,
                                           grid[0] - cy - 0.5, grid[-1] - cy + 0.5,
                                           grid.size, grid.size, r, 1, 1)  # fmt: skip
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-13)
            np.testing.assert_allclose(ours.sum(), np.pi * r * r, rtol=1e-13)


def test_sums_errors_and_flags_equal_sep(field):
    f = field
    bad = (f["mask"] & ph.MASK_PHOT) != 0
    res = ap.circular_apertures(f["data"], f["x"], f["y"], RADII, err=f["err"], mask=f["mask"],
                                bits=ph.MASK_PHOT)  # fmt: skip
    flux, ferr, flag = sep_sums(f["data"], f["x"], f["y"], RADII, err=f["err"], bad=bad)
    ours_flux, ours_err = rescaled(res)
    scale = abs_scale(f["data"], f["x"], f["y"], RADII)
    both = np.isfinite(flux)
    assert np.array_equal(both, np.isfinite(ours_flux))
    assert both.mean() > 0.9 and (~both).any()
    assert np.all(np.abs(ours_flux - flux)[both] <= TOL * scale[both])
    np.testing.assert_allclose(ours_err[both], ferr[both], rtol=TOL)
    # sep's own flags, emulated: box truncation (16) and masked pixels within r + 0.7072 (32)
    assert np.array_equal(res.sep_flag, flag & (ap.SEP_APER_TRUNC | ap.SEP_APER_HASMASKED))
    # areas: in-image overlap, the same with and without a mask
    area, _, _ = sep_sums(np.ones_like(f["data"]), f["x"], f["y"], RADII)
    np.testing.assert_allclose(res.area, area, rtol=TOL, atol=TOL)


def test_masked_count_is_inside_the_circle_only(field):
    """n_masked counts masked pixels overlapping the circle; sep's 32 also fires for masked pixels
    within r + 0.7072 px with zero overlap."""
    f = field
    bad = (f["mask"] & ph.MASK_PHOT) != 0
    res = ap.circular_apertures(f["data"], f["x"], f["y"], RADII, mask=bad)
    masked_area, _, _ = sep_sums(bad.astype(np.float32), f["x"], f["y"], RADII)
    np.testing.assert_allclose(res.masked_area, masked_area, rtol=TOL, atol=TOL)
    assert np.array_equal(res.n_masked > 0, masked_area > 0)
    sep32 = (res.sep_flag & ap.SEP_APER_HASMASKED) != 0
    assert np.all(sep32[res.n_masked > 0])
    assert (sep32 & (res.n_masked == 0)).sum() > 10  # sep's false positives exist here
    # a masked pixel just outside the circle: sep flags it, the count does not
    data = np.ones((40, 40), np.float32)
    mask = np.zeros((40, 40), bool)
    mask[24, 19] = True  # centre 4.68 px < r + 0.7072 away, nearest corner 4.003 px > r = 4
    one = ap.circular_apertures(data, [21.35], [19.95], [4.0], mask=mask)
    assert one.n_masked[0, 0] == 0 and one.masked_area[0, 0] == 0
    assert one.sep_flag[0, 0] == ap.SEP_APER_HASMASKED
    assert sep_sums(data, np.array([21.35]), np.array([19.95]), [4.0], bad=mask)[2][0, 0] == 32


def test_sums_equal_photutils_exact(field):
    f = field
    data = f["data"] + np.float32(100.0)  # positive: relative agreement is meaningful
    x, y = f["x"][:400], f["y"][:400]
    res = ap.circular_apertures(data, x, y, RADII, err=f["err"])
    for k, r in enumerate(RADII):
        aper = photutils_aperture.CircularAperture(np.column_stack([x, y]), r)
        t = photutils_aperture.aperture_photometry(data, aper, method="exact", error=f["err"])
        s = np.asarray(t["aperture_sum"], float)
        e = np.asarray(t["aperture_sum_err"], float)
        ok = np.isfinite(s)  # photutils: NaN for apertures entirely off the image
        assert np.all(res.area[k][~ok] == 0)
        np.testing.assert_allclose(res.sum[k][ok], s[ok], rtol=TOL)
        np.testing.assert_allclose(np.sqrt(res.var[k][ok]), e[ok], rtol=1e-7)  # float32 err²


def test_background_map_is_subtracted_in_float32(field):
    f = field
    rng = np.random.default_rng(2)
    image = (f["data"] + np.float32(150.0)).astype(np.float32)
    back = (150.0 + rng.normal(0, 0.3, image.shape)).astype(np.float32)
    a = ap.circular_apertures(image, f["x"], f["y"], RADII, back=back, mask=f["mask"], bits=6141)
    b = ap.circular_apertures(image - back, f["x"], f["y"], RADII, mask=f["mask"], bits=6141)
    assert np.array_equal(a.sum, b.sum) and np.array_equal(a.area, b.area)


def test_saturation_from_bits_and_level():
    data = np.full((50, 50), 10.0, np.float32)
    data[25, 25] = 1000.0  # above the level, no bit
    mask = np.zeros((50, 50), np.int16)
    mask[10, 10] = 1 << 8  # bit, below the level
    xy = [25.0, 10.0, 40.0]
    res = ap.circular_apertures(data, xy, xy, [3.0], mask=mask, bits=ph.MASK_PHOT,
                                saturated_bits=1 << 8, saturate=500.0)  # fmt: skip
    assert res.n_saturated[0].tolist() == [1, 1, 0]
    assert res.n_masked[0].tolist() == [1, 1, 0]  # saturated pixels are excluded
    np.testing.assert_allclose(res.sum[0, :2], 10.0 * (np.pi * 9 - 1), rtol=1e-12)


def test_inputs_radii_order_and_dtypes(field):
    f = field
    x, y = f["x"][:200], f["y"][:200]
    ref = ap.circular_apertures(f["data"], x, y, RADII, err=f["err"], mask=f["mask"], bits=6141)
    shuffled = RADII[::-1].copy()
    rev = ap.circular_apertures(f["data"].astype(">f4"), x, y, shuffled, err=f["err"],
                                mask=f["mask"].astype(">i2"), bits=6141)  # fmt: skip
    for name in ("sum", "var", "area", "masked_area", "n_masked", "sep_flag"):
        assert np.array_equal(getattr(rev, name)[::-1], getattr(ref, name)), name
    boolean = ap.circular_apertures(f["data"], x, y, RADII, mask=(f["mask"] & 6141) != 0)
    assert np.array_equal(boolean.sum, ap.circular_apertures(f["data"], x, y, RADII,
                                                             mask=f["mask"], bits=6141).sum)
    nan = ap.circular_apertures(f["data"], [np.nan, 20.0], [5.0, np.inf], [3.0])
    assert np.all(nan.area == 0) and np.all(nan.sep_flag == 16)
    with pytest.raises(ValueError, match="radii"):
        ap.circular_apertures(f["data"], x, y, [])
    with pytest.raises(ValueError, match="mask shape"):
        ap.circular_apertures(f["data"], x, y, RADII, mask=np.zeros((3, 3), np.int16))


def test_disk_mask():
    out, n = ap.disk_mask((50, 60), [10.0, 59.5, np.nan], [10.0, -2.0, 5.0], [3.0, 4.0, 2.0])
    yy, xx = np.mgrid[:50, :60]
    expected = ((xx - 10) ** 2 + (yy - 10) ** 2 <= 9) | ((xx - 59.5) ** 2 + (yy + 2) ** 2 <= 16)
    assert np.array_equal(out, expected) and n == 2  # the NaN centre is skipped
    # one cell: the second disk is left out once the first has covered > 3 %
    capped, n = ap.disk_mask((50, 60), [10.0, 30.0, 45.0], [25.0] * 3, [8.0] * 3, 0.03)
    assert n == 1 and capped[:, 20:].sum() == 0
    # cells of 20 × 50 px: each disk in its own cell, the base counts towards the limit
    base = np.zeros((50, 60), bool)
    base[:, 40:] = True  # the third cell is full already
    cells, n = ap.disk_mask((50, 60), [10.0, 30.0, 50.0], [25.0] * 3, [5.0] * 3, 0.2,
                            base=base, cell=(20, 50))  # fmt: skip
    assert n == 2 and cells[25, 10] and cells[25, 30] and cells[:, 40:].all()
    disk = ((xx - 10) ** 2 + (yy - 25) ** 2 <= 25).sum()
    assert cells.sum() == base.sum() + 2 * disk


# ------------------------------------------------------------------------------------------
# Bitwise contract of the compiled kernels (issue #15: faster, the same bits)
# ------------------------------------------------------------------------------------------


def pixel_by_pixel(data, x, y, radii, back, err, mask, bits, sat_bits, saturate):
    """The kernel's arithmetic in plain Python, one pixel at a time (its pre-#15 loop): for each
    radius, whole pixels (centre within r − 0.7072) are added in buckets by the first radius that
    holds them, rows then columns ascending, and the buckets summed cumulatively; pixels of the
    partial band (within r + 0.7072, in sep's box) add ``value × _overlap`` in the same order."""
    ny, nx = data.shape
    nk = len(radii)
    r_in2 = [(r - ap._BAND) ** 2 if r - ap._BAND > 0 else 0.0 for r in radii]
    r_out2 = [(r + ap._BAND) * (r + ap._BAND) for r in radii]
    out = {f: np.zeros((nk, len(x))) for f in ("sum", "var", "area", "marea", "nmask", "nsat")}
    sep32 = np.zeros((nk, len(x)), bool)
    for i, (xi, yi) in enumerate(zip(x, y, strict=True)):
        box = [(max(int(xi - r + 0.5), 0), min(int(xi + r + 1.4999999), nx),
                max(int(yi - r + 0.5), 0), min(int(yi + r + 1.4999999), ny)) for r in radii]
        full = np.zeros((6, nk))
        part = np.zeros((6, nk))
        masked_band = np.zeros(nk, bool)
        x0, x1, y0, y1 = box[-1]
        for iy in range(y0, y1):
            for ix in range(x0, x1):
                dx, dy = ix - xi, iy - yi
                rpix2 = dx * dx + dy * dy
                if rpix2 >= r_out2[-1]:
                    continue
                raw = data[iy, ix]
                pix = float(raw - back[iy, ix])  # in float32, then exactly to float64
                var = float(err[iy, ix] * err[iy, ix])
                bitsval = int(mask[iy, ix])
                saturated = bool(bitsval & sat_bits) or raw > saturate
                masked = bool(bitsval & bits) or raw > saturate or not np.isfinite(pix)
                kf = next((k for k in range(nk) if rpix2 <= r_in2[k]), nk)
                if kf < nk:
                    terms = (0.0, 0.0, 1, 1, 1, saturated) if masked else (pix, var, 1, 0, 0, 0)
                    for f, t in enumerate(terms):
                        full[f, kf] += t
                for k in range(kf - 1, -1, -1):
                    if not rpix2 < r_out2[k]:
                        break
                    bx0, bx1, by0, by1 = box[k]
                    if not (bx0 <= ix < bx1 and by0 <= iy < by1):
                        continue
                    ov = ap._overlap(dx - 0.5, dy - 0.5, dx + 0.5, dy + 0.5, radii[k])
                    masked_band[k] |= masked
                    if masked:
                        terms = (0.0, 0.0, ov, ov, ov > 0, ov > 0 and saturated)
                    else:
                        terms = (pix * ov, var * ov, ov, 0.0, 0, 0)
                    for f, t in enumerate(terms):
                        part[f, k] += t
        cumulative = np.zeros(6)
        for k in range(nk):
            for f, name in enumerate(out):
                cumulative[f] += full[f, k]
                out[name][k, i] = cumulative[f] + part[f, k]
            sep32[k, i] = cumulative[4] > 0 or masked_band[k]
    return out, sep32


@pytest.mark.parametrize("queue", [ap._QUEUE, 0])
@pytest.mark.parametrize("radii", [RADII, np.array([0.4, 1.0, 2.5, 3.0, 3.3, 3.6, 3.6, 6.0])])
def test_kernel_is_bitwise_its_pixel_by_pixel_arithmetic(radii, queue, monkeypatch):
    """Every output, bitwise, on stars anywhere (edges, off the image, centred on pixel centres
    and edges), with a background and an error map, mask bits, NaNs and saturated pixels; the
    second radius set has radii below 2.83 px (sep's asin arc), a repeat and radii closer than
    0.71 px (a pixel in more than two partial bands). ``queue`` 0: the queue of partial pixels
    holds one row's, so that it is drained several times per star."""
    monkeypatch.setattr(ap, "_QUEUE", queue)
    rng = np.random.default_rng(11)
    shape = (48, 61)
    data = rng.normal(100.0, 10.0, shape).astype(np.float32)
    data[5, 7], data[30, 40] = np.nan, 5000.0
    back = rng.normal(100.0, 1.0, shape).astype(np.float32)
    err = rng.uniform(1.0, 3.0, shape).astype(np.float32)
    mask = np.where(rng.uniform(size=shape) < 0.05, 1 << 8, 0).astype(np.int16)
    mask[rng.uniform(size=shape) < 0.05] |= 1 << 1
    x = np.concatenate([rng.uniform(-8, 69, 30), [20.0, 20.5, 0.0, 60.5, 30.25, -20.0]])
    y = np.concatenate([rng.uniform(-8, 56, 30), [20.0, 20.5, 47.0, 10.0, -0.5, 10.0]])
    res = ap.circular_apertures(data, x, y, radii, back=back, err=err, mask=mask, bits=6141,
                                saturated_bits=1 << 8, saturate=2000.0)  # fmt: skip
    ref, sep32 = pixel_by_pixel(data, x, y, list(radii), back, err, mask, 6141, 1 << 8, 2000.0)
    fields = {"sum": res.sum, "var": res.var, "area": res.area, "marea": res.masked_area,
              "nmask": res.n_masked, "nsat": res.n_saturated}  # fmt: skip
    for name, ours in fields.items():
        assert np.array_equal(ours, ref[name]), name
    assert ref["nmask"].any() and ref["nsat"].any() and np.isfinite(res.sum).all()
    assert np.array_equal((res.sep_flag & ap.SEP_APER_HASMASKED) != 0, sep32)


def test_simd_overlap_is_bitwise_the_scalar_port():
    """``_partial`` (branch-free, SIMD) and the pieces the kernel adds to it give ``_overlap``'s
    bits on pixels all around circles of many radii, pixel centres on the axes included."""
    rng = np.random.default_rng(3)
    n = 200_000
    r = rng.choice([0.3, 1.0, 2.0, 2.9, 3.0, 4.5, 7.25, 12.0, 40.0], n)
    angle = rng.uniform(0, 2 * np.pi, n)
    dist = r + rng.uniform(-0.8, 0.8, n)
    dx = np.round(dist * np.cos(angle) + rng.uniform(-0.5, 0.5, n), 3)
    dy = np.round(dist * np.sin(angle) + rng.uniform(-0.5, 0.5, n), 3)
    dx[:2000], dy[2000:4000] = rng.uniform(-0.5, 0.5, 2000), rng.uniform(-0.5, 0.5, 2000)
    out, redo = np.empty(n), np.empty(n, np.int64)
    ap._partial(dx, dy, r, n, out, redo, np.empty(n), np.empty(n), np.empty(n, bool))
    for j in np.flatnonzero(redo == 1):  # the kernel's fallbacks
        out[j] = ap._overlap(dx[j] - 0.5, dy[j] - 0.5, dx[j] + 0.5, dy[j] + 0.5, r[j])
    for j in np.flatnonzero(redo == 2):
        out[j] += ap._quadrant(dx[j] - 0.5, 0.0, dx[j] + 0.5, dy[j] + 0.5, r[j])
    for j in np.flatnonzero(redo == 3):
        out[j] += ap._quadrant(0.0, dy[j] - 0.5, dx[j] + 0.5, dy[j] + 0.5, r[j])
    expected = np.array([ap.circular_overlap(a, b, c) for a, b, c in zip(dx, dy, r, strict=True)])
    assert np.array_equal(out, expected)
    assert (redo == 0).mean() > 0.5 and all((redo == code).any() for code in (1, 2, 3))


def test_disk_mask_is_bitwise_its_sequential_definition():
    """Random disks (fractional centres, some off the image, radii 0.4–30 px) painted in order
    into a base with cells and a limit: the mask and the count equal painting each disk as
    ``dx² + dy² ≤ r²`` after checking its cell's masked fraction."""
    rng = np.random.default_rng(8)
    shape, cell, frac = (203, 256), (64, 50), 0.3
    base = rng.uniform(size=shape) < 0.05
    n = 400
    x, y = rng.uniform(-20, shape[1] + 20, n), rng.uniform(-20, shape[0] + 20, n)
    r = rng.uniform(0.4, 30.0, n)
    x[:3], y[:3], r[:3] = [10.0, 100.5, np.nan], [10.0, 100.5, 5.0], [7.0, 7.5, 3.0]
    ours, painted = ap.disk_mask(shape, x, y, r, frac, base=base, cell=cell)
    expected, count = base.copy(), 0
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for xi, yi, ri in zip(x, y, r, strict=True):
        if not np.isfinite(xi):
            continue
        cx = min(max(int(np.floor(xi + 0.5)), 0), shape[1] - 1) // cell[0]
        cy = min(max(int(np.floor(yi + 0.5)), 0), shape[0] - 1) // cell[1]
        c = expected[cy * cell[1]:(cy + 1) * cell[1], cx * cell[0]:(cx + 1) * cell[0]]
        if c.sum() > frac * c.size:
            continue
        expected |= (xx - xi) * (xx - xi) + (yy - yi) * (yy - yi) <= ri * ri
        count += 1
    assert np.array_equal(ours, expected) and painted == count
    assert 0 < count < n - 1  # the limit left some out
    # rows and cells not in whole 8-byte words: the byte-wise count
    odd, painted_odd = ap.disk_mask((203, 251), x, y, r, frac, base=base[:, :251], cell=(61, 50))
    assert painted_odd > 0 and odd.sum() > base[:, :251].sum()


# ------------------------------------------------------------------------------------------
# The real IPAC quadrant of the ztfimg 0.19.0 sdist (ztf_formats.md §6.1)
# ------------------------------------------------------------------------------------------

SDIST = "ztfimg==0.19.0"
REAL = "ztf_20200924431759_000655_zr_c13_o_q3_{}.fits"


def real_quadrant_dir() -> Path:
    """The sdist's sciimg/mskimg, fetched once with pip (31 MB) into the cache, under a lock."""
    if os.environ.get("ZTFLUIGI_IPAC_QUADRANT"):
        return Path(os.environ["ZTFLUIGI_IPAC_QUADRANT"])
    cache = cache_dir() / "ztfimg-0.19.0-data"
    done = cache / "complete"
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                            ":all:", "--quiet", "-d", str(cache), SDIST], check=True,
                           env=clean_env(), timeout=1200)  # fmt: skip
            tarball = next(cache.glob("ztfimg-0.19.0.tar.gz"))
            with tarfile.open(tarball) as tar:
                for member in tar.getmembers():
                    if member.name.endswith(("_sciimg.fits", "_mskimg.fits")):
                        member.name = Path(member.name).name
                        tar.extract(member, cache, filter="data")
            tarball.unlink()
            done.write_text("ok")
    return cache


@pytest.fixture(scope="module")
def real():
    d = real_quadrant_dir()
    data = fits.getdata(d / REAL.format("sciimg"))
    header = fits.getheader(d / REAL.format("sciimg"))
    mask = fits.getdata(d / REAL.format("mskimg"))  # big-endian int16, as stored
    back, rms = ph.background(data, mask)
    sub = (data.astype(np.float32) - back).astype(np.float32)
    return {"data": data, "mask": mask, "header": header, "back": back, "rms": rms, "sub": sub}


def test_real_quadrant_kernel_equals_sep_and_photutils(real):
    data, mask, back, rms, sub = (real[k] for k in ("data", "mask", "back", "rms", "sub"))
    rng = np.random.default_rng(0)
    x = rng.uniform(-5, 3077, 4000)
    y = rng.uniform(-5, 3085, 4000)
    bad = ph._bad_pixels(sub, mask, ph.MASK_PHOT)
    res = ap.circular_apertures(data, x, y, RADII, back=back, err=rms, mask=mask, bits=6141)
    flux, ferr, flag = sep_sums(sub, x, y, RADII, err=rms, bad=bad)
    ours, ours_err = rescaled(res)
    both = np.isfinite(flux)
    assert np.array_equal(both, np.isfinite(ours))
    scale = abs_scale(sub, x, y, RADII)
    assert np.all(np.abs(ours - flux)[both] <= TOL * scale[both])
    np.testing.assert_allclose(ours_err[both], ferr[both], rtol=TOL)
    assert np.array_equal(res.sep_flag, flag & 48)
    # photutils exact on the raw (positive) image, unmasked
    x, y = x[:300], y[:300]
    raw = ap.circular_apertures(data, x, y, RADII)
    for k in (0, 4, 9):
        aper = photutils_aperture.CircularAperture(np.column_stack([x, y]), RADII[k])
        s = np.asarray(photutils_aperture.aperture_photometry(
            data.astype(np.float32), aper, method="exact")["aperture_sum"], float)  # fmt: skip
        ok = np.isfinite(s)
        np.testing.assert_allclose(raw.sum[k][ok], s[ok], rtol=TOL)


def test_real_quadrant_saturated_stars(real):
    """Every saturated star: flag 2, flux the unmasked sum (not scaled up as the reference)."""
    from scipy import ndimage

    mask, header = real["mask"], real["header"]
    lab, n = ndimage.label((mask & ph.MASK_SATURATED) != 0)
    cy, cx = np.asarray(ndimage.center_of_mass(np.ones_like(lab), lab, range(1, n + 1))).T
    assert n > 100
    back, rms, sub = real["back"], real["rms"], real["sub"]
    sat = float(header["SATURATE"])
    new = ph.aperture_photometry(sub, mask, cx, cy, ph.RADII, rms, 6.0, spec=ph.PhotometrySpec(),
                                 saturate=sat - float(np.median(back)))  # fmt: skip
    old = ph.aperture_photometry(sub, mask, cx, cy, ph.RADII, rms, 6.0)
    assert np.all(new["flag"][-1] & ph.FLAG_SATURATED)
    assert np.all(old["flag"][-1] & ph.APER_HASMASKED)
    plain = ap.circular_apertures(sub, cx, cy, RADII, mask=mask, bits=ph.MASK_PHOT,
                                  saturate=sat - float(np.median(back)))  # fmt: skip
    usable = np.isfinite(new["flux"][-1])
    assert usable.mean() > 0.9
    np.testing.assert_array_equal(new["flux"][-1][usable], plain.sum[-1][usable])
    assert np.all(old["flux"][-1][usable] > new["flux"][-1][usable])  # the reference scales up
