"""Aperture photometry: sep vs photutils, flags, errors, frames, footprint, isolation, schema."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
import sep
from astropy.io import fits
from astropy.wcs import WCS
from photutils import aperture as photutils_aperture

from ztfluigi import photometry as ph

GAIN = 4.0  # e-/DN
SKY_E = 800.0  # e-/pixel
READ_NOISE_E = 8.0
FWHM = 2.5
BETA = 2.5


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def moffat_alpha(fwhm: float, beta: float = BETA) -> float:
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def moffat_ee(r, fwhm: float = FWHM, beta: float = BETA):
    """Analytic encircled energy of a Moffat profile."""
    return 1.0 - (1.0 + (np.asarray(r) / moffat_alpha(fwhm, beta)) ** 2) ** (1.0 - beta)


def moffat_image(shape, x, y, counts, fwhm=FWHM, beta=BETA, half=20, sub=5):
    """Stars integrated over pixels (sub × sub midpoint samples) on ±half-pixel stamps."""
    alpha = moffat_alpha(fwhm, beta)
    img = np.zeros(shape)
    off = (np.arange(sub) + 0.5) / sub - 0.5
    grid = np.arange(-half, half + 1)
    for xi, yi, c in zip(x, y, counts, strict=True):
        x0, y0 = int(np.floor(xi + 0.5)), int(np.floor(yi + 0.5))
        sx = (x0 + grid - xi)[:, None] + off[None, :]
        sy = (y0 + grid - yi)[:, None] + off[None, :]
        r2 = sy[:, None, :, None] ** 2 + sx[None, :, None, :] ** 2
        prof = ((1 + r2 / alpha**2) ** (-beta)).mean(axis=(2, 3)) * (beta - 1) / (np.pi * alpha**2)
        img[y0 - half : y0 + half + 1, x0 - half : x0 + half + 1] += c * prof
    return img


def photutils_sum(data, x, y, r, mask=None, error=None):
    aper = photutils_aperture.CircularAperture(np.column_stack([x, y]), r)
    t = photutils_aperture.aperture_photometry(data, aper, method="exact", mask=mask, error=error)
    s = np.asarray(t["aperture_sum"], dtype=float)
    e = np.asarray(t["aperture_sum_err"], dtype=float) if error is not None else None
    return s, e


def tan_header(shape=(385, 384), ra0=150.0, dec0=30.0, scale_arcsec=1.012, gain=GAIN):
    """A simple TAN header (raw/IPAC orientation) with a GAIN, like a science quadrant."""
    nrows, ncols = shape
    h = fits.Header()
    h["NAXIS"] = 2
    h["NAXIS1"] = ncols
    h["NAXIS2"] = nrows
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRPIX1"], h["CRPIX2"] = ncols / 2 + 0.3, nrows / 2 - 0.2
    h["CRVAL1"], h["CRVAL2"] = ra0, dec0
    s = scale_arcsec / 3600.0
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -s, 2e-7, 1e-7, s
    h["GAIN"] = gain
    return h


def refcat_table(ra, dec, source_id=None, seed=0) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = len(ra)
    g = rng.uniform(12, 20, n)
    return pa.table(
        {
            "source_id": np.arange(n, dtype=np.int64) * 7 + 11 if source_id is None else source_id,
            "ra": np.asarray(ra, dtype=np.float64),
            "dec": np.asarray(dec, dtype=np.float64),
            "pmra": np.zeros(n),
            "pmdec": np.zeros(n),
            "phot_g_mean_mag": g,
            "phot_bp_mean_mag": pa.array(g + 0.4, mask=np.arange(n) % 5 == 0),  # some nulls
            "phot_rp_mean_mag": g - 0.5,
        }
    )


def brute_isolation(ra, dec, radius_arcsec):
    ra, dec = np.radians(ra), np.radians(dec)
    dra = ra[:, None] - ra[None, :]
    ddec = dec[:, None] - dec[None, :]
    h = np.sin(ddec / 2) ** 2 + np.cos(dec[:, None]) * np.cos(dec[None, :]) * np.sin(dra / 2) ** 2
    sep_arcsec = np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))) * 3600
    np.fill_diagonal(sep_arcsec, np.inf)
    return ~(sep_arcsec <= radius_arcsec).any(axis=1)


@pytest.fixture(scope="module")
def star_field():
    """361 Moffat stars on a grid, flat Poisson sky; noiseless and noisy versions (DN)."""
    rng = np.random.default_rng(3)
    n = 800
    gx, gy = np.meshgrid(np.arange(30, n - 29, 40), np.arange(30, n - 29, 40))
    x = gx.ravel() + rng.uniform(-0.5, 0.5, gx.size)
    y = gy.ravel() + rng.uniform(-0.5, 0.5, gx.size)
    counts = 10 ** rng.uniform(3, 6.5, x.size)  # e-
    stars_e = moffat_image((n, n), x, y, counts)
    noisy = (rng.poisson(stars_e + SKY_E) + rng.normal(0, READ_NOISE_E, (n, n))) / GAIN
    # IPAC-like source bits around the stars: excluded from the background, not from the sums.
    yy, xx = np.mgrid[:n, :n]
    mask = np.zeros((n, n), np.int16)
    for xi, yi in zip(x, y, strict=True):
        near = (xx - xi) ** 2 + (yy - yi) ** 2 < 18**2
        mask[near] |= 1 << 1
        mask[int(round(yi)), int(round(xi))] |= 1 << 11
    return {
        "x": x,
        "y": y,
        "counts": counts,
        "stars": (stars_e / GAIN).astype(np.float32),
        "noisy": noisy.astype(np.float32),
        "mask": mask,
    }


# ------------------------------------------------------------------------------------------
# Constants
# ------------------------------------------------------------------------------------------


def test_constants():
    assert ph.MASK_ALL == 8191
    assert ph.MASK_PHOT == 6141
    assert ph.RADII == (3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
    assert (ph.APER_TRUNC, ph.APER_HASMASKED, ph.APER_ALLMASKED) == (16, 32, 64)
    assert ph.FLAG_OFFIMAGE & (ph.APER_TRUNC | ph.APER_HASMASKED | ph.APER_ALLMASKED) == 0


# ------------------------------------------------------------------------------------------
# Sums against photutils
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frame", ["sky", "raw"])
def test_sums_agree_with_photutils_exact(star_field, frame):
    data, mask = star_field["noisy"], star_field["mask"]
    back, rms = ph.background(data, mask)
    sub = data - back
    x, y = star_field["x"], star_field["y"]
    res = ph.aperture_photometry(sub, mask, x, y, ph.RADII, rms, GAIN, frame=frame)
    for k, r in enumerate(ph.RADII):
        assert np.all(res["flag"][k] == 0)
        s, e = photutils_sum(sub, x, y, r, error=rms)
        np.testing.assert_allclose(res["flux"][k], s, rtol=1e-9, atol=0)
        np.testing.assert_allclose(res["flux_err_bkg"][k], e, rtol=1e-9, atol=0)


def test_sums_agree_with_photutils_at_arbitrary_subpixel_positions():
    rng = np.random.default_rng(7)
    data = rng.normal(50, 10, (120, 130)).astype(np.float32)
    x = rng.uniform(15, 115, 200)
    y = rng.uniform(15, 105, 200)
    x[:4] = [20.0, 20.5, 40.25, 60.75]  # pixel centres, edges, quarter pixels
    y[:4] = [20.0, 20.5, 40.75, 60.25]
    res = ph.aperture_photometry(data, None, x, y, (2.5, 3, 7.3, 12), 1.0, None)
    for k, r in enumerate((2.5, 3, 7.3, 12)):
        s, _ = photutils_sum(data, x, y, r)
        np.testing.assert_allclose(res["flux"][k], s, rtol=1e-9, atol=1e-9 * np.abs(s).max())


# ------------------------------------------------------------------------------------------
# Flags: masked pixels, truncation, no pixel
# ------------------------------------------------------------------------------------------


def test_masked_pixels_flag_32_and_rescaled_flux():
    rng = np.random.default_rng(1)
    shape = (80, 90)
    data = (rng.normal(0, 1, shape) + 100.0).astype(np.float32)
    x, y = np.array([40.3]), np.array([35.6])
    mask = np.zeros(shape, np.int16)
    mask[35, 41] = 1 << 8  # saturated: excluded
    mask[37, 39] = 1 << 4  # noisy: excluded
    mask[34, 40] = (1 << 1) | (1 << 11)  # source bits only: kept
    res = ph.aperture_photometry(data, mask, x, y, [4.0], 1.0, None)
    assert res["flag"][0, 0] == ph.APER_HASMASKED
    bad = (mask & ph.MASK_PHOT) != 0
    s_masked, _ = photutils_sum(data, x, y, 4.0, mask=bad)
    area_all, _ = photutils_sum(np.ones(shape), x, y, 4.0)
    area_ok, _ = photutils_sum(np.ones(shape), x, y, 4.0, mask=bad)
    np.testing.assert_allclose(res["flux"][0], s_masked * area_all / area_ok, rtol=1e-10)
    # sep (the reference's f_k_ebkg) rescales the variance, not the error, by q = area ratio;
    # flux_err completes it: q·S has variance q²·Var(S)
    q = area_all / area_ok
    np.testing.assert_allclose(res["flux_err_bkg"][0], np.sqrt(area_ok * q), rtol=1e-10)
    np.testing.assert_allclose(res["flux_err"][0], np.sqrt(area_ok) * q, rtol=1e-10)
    res_g = ph.aperture_photometry(data, mask, x, y, [4.0], 1.0, 2.0)
    np.testing.assert_allclose(
        res_g["flux_err"][0], np.sqrt(q * (area_ok * q + res_g["flux"][0] / 2.0)), rtol=1e-10
    )
    # source bits alone are no flag
    only_sources = np.where(mask == ((1 << 1) | (1 << 11)), mask, 0).astype(np.int16)
    res2 = ph.aperture_photometry(data, only_sources, x, y, [4.0], 1.0, None)
    assert res2["flag"][0, 0] == 0


def test_non_finite_pixel_is_masked():
    data = np.full((50, 50), 10.0, np.float32)
    data[25, 25] = np.nan
    res = ph.aperture_photometry(data, None, [25.2], [24.9], [3.0], 1.0, 2.0)
    assert res["flag"][0, 0] == ph.APER_HASMASKED
    np.testing.assert_allclose(res["flux"][0, 0], 10.0 * np.pi * 9, rtol=1e-10)


def test_all_masked_flag_64():
    data = np.ones((50, 50), np.float32)
    mask = np.zeros((50, 50), np.int16)
    mask[20:31, 20:31] = 1 << 9  # dead
    res = ph.aperture_photometry(data, mask, [25.0, 5.0], [25.0, 25.0], [3.0], 1.0, 2.0)
    assert res["flag"][0, 0] & ph.APER_ALLMASKED
    assert np.isnan(res["flux"][0, 0]) and np.isnan(res["flux_err"][0, 0])
    assert res["flag"][0, 1] == 0 and np.isfinite(res["flux"][0, 1])


def test_edge_star_flags_truncation_without_rescaling():
    shape = (60, 70)  # (nrows, ncols)
    data = np.ones(shape, np.float32)
    r = 3.0
    # raw x: deep low edge, low edge by 0.9 px, high edge by 0.9 px, inside, tangent
    x = np.array([1.0, 1.6, 70 - 1 - 1.6, 35.0, 2.5])
    y = np.full(x.size, 30.0)
    area, _ = photutils_sum(data, x, y, r)  # in-image area (photutils does not rescale)
    for frame in ("sky", "raw"):
        res = ph.aperture_photometry(data, None, x, y, [r], 1.0, None, frame=frame)
        np.testing.assert_allclose(res["flux"][0], area, rtol=1e-10)  # truncated, not rescaled
        flags = res["flag"][0]
        assert np.all(flags[:3] & ph.FLAG_OFFIMAGE)  # exact geometry, whatever sep says
        assert flags[3] == 0 and flags[4] == 0
        assert np.all(flags[[0]] & ph.APER_TRUNC)
    # sep's own APER_TRUNC misses overhangs < 1 px on the low-index side of the array it sees:
    # the reference runs in the sky frame, so the raw *high* edge is the one it misses.
    sky = ph.aperture_photometry(data, None, x, y, [r], 1.0, None, frame="sky")["flag"][0]
    raw = ph.aperture_photometry(data, None, x, y, [r], 1.0, None, frame="raw")["flag"][0]
    assert sky[1] & ph.APER_TRUNC and not sky[2] & ph.APER_TRUNC
    assert raw[2] & ph.APER_TRUNC and not raw[1] & ph.APER_TRUNC


def test_sky_frame_flags_equal_sep_on_rotated_array():
    rng = np.random.default_rng(5)
    shape = (64, 72)
    data = rng.normal(0, 1, shape).astype(np.float32)
    mask = np.where(rng.uniform(size=shape) < 0.02, 1 << 8, 0).astype(np.int16)
    x = rng.uniform(-3, 75, 300)
    y = rng.uniform(-3, 67, 300)
    res = ph.aperture_photometry(data, mask, x, y, ph.RADII, 1.0, None)
    xr, yr = ph.raw_to_ref(x, y, shape)
    f, e, fl = sep.sum_circle(
        ph.to_sky(data),
        xr,
        yr,
        np.asarray(ph.RADII, float)[:, None],
        err=1.0,
        mask=ph.to_sky((mask & ph.MASK_PHOT) != 0),
        subpix=0,
    )
    sep_bits = ph.APER_TRUNC | ph.APER_HASMASKED
    assert np.array_equal(res["flag"] & sep_bits, fl & sep_bits)
    np.testing.assert_array_equal(res["flux"], f)
    # all-masked (NaN flux) apertures get 64; no other changes
    assert np.array_equal((res["flag"] & ph.APER_ALLMASKED) != 0, ~np.isfinite(f))


# ------------------------------------------------------------------------------------------
# Injected stars: encircled energy, errors and pulls
# ------------------------------------------------------------------------------------------


def test_noiseless_aperture_flux_is_injected_times_encircled_energy(star_field):
    x, y, counts = star_field["x"], star_field["y"], star_field["counts"]
    res = ph.aperture_photometry(star_field["stars"], None, x, y, ph.RADII, 0.0, None)
    ratio = res["flux"] / (counts / GAIN) / moffat_ee(np.asarray(ph.RADII))[:, None]
    assert np.abs(ratio[-1] - 1).max() < 2e-4  # r = 12
    assert np.abs(ratio[5:] - 1).max() < 1e-3  # r ≥ 8
    assert np.abs(ratio - 1).max() < 0.02  # r = 3: pixelisation of a steep profile


def test_poisson_errors_give_unit_pulls(star_field):
    """flux_err (background + Poisson) gives pulls of unit width; background-only does not."""
    x, y, counts = star_field["x"], star_field["y"], star_field["counts"]
    truth = ph.aperture_photometry(star_field["stars"], None, x, y, ph.RADII, 0.0, None)["flux"]
    _, rms = ph.background(star_field["noisy"], star_field["mask"])
    sub = star_field["noisy"] - np.float32(SKY_E / GAIN)  # the true sky: tests the error model
    res = ph.aperture_photometry(sub, star_field["mask"], x, y, ph.RADII, rms, GAIN)
    bright = counts > 3e5
    assert bright.sum() > 60
    for k in range(len(ph.RADII)):
        pull = (res["flux"][k] - truth[k]) / res["flux_err"][k]
        chi2 = np.mean(pull**2)
        assert 0.85 < chi2 < 1.2, (ph.RADII[k], chi2)
        assert 0.8 < pull[bright].std() < 1.25
        pull_bkg = (res["flux"][k] - truth[k]) / res["flux_err_bkg"][k]
        assert pull_bkg[bright].std() > 1.8  # background-only error underestimates bright stars
    assert np.all(res["flux_err"] >= res["flux_err_bkg"])


def test_pipeline_background_and_flux_at_r12(star_field):
    """With the sep background (as the reference): flux(r=12) ≈ injected × EE(12)."""
    data, mask = star_field["noisy"], star_field["mask"]
    x, y, counts = star_field["x"], star_field["y"], star_field["counts"]
    back, rms = ph.background(data, mask)
    assert abs(np.median(back) - SKY_E / GAIN) < 0.5  # DN, sky 200 DN
    np.testing.assert_allclose(np.median(rms), np.sqrt(SKY_E + READ_NOISE_E**2) / GAIN, rtol=0.03)
    res = ph.aperture_photometry(data - back, mask, x, y, ph.RADII, rms, GAIN)
    expected = counts / GAIN * moffat_ee(12.0)
    pull = (res["flux"][-1] - expected) / res["flux_err"][-1]
    assert abs(np.median(pull)) < 1.0
    assert 0.8 < pull.std() < 1.4
    bright = counts > 1e6
    np.testing.assert_allclose(res["flux"][-1][bright], expected[bright], rtol=0.01)


# ------------------------------------------------------------------------------------------
# Background
# ------------------------------------------------------------------------------------------


def test_background_in_reference_sky_frame():
    rng = np.random.default_rng(8)
    shape = (385, 384)  # a scale-8 quadrant: not a multiple of the 192 × 220 mesh
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    data = (rng.normal(200, 7, shape) + 0.02 * xx + 0.03 * yy).astype(np.float32)
    mask = np.where(rng.uniform(size=shape) < 0.01, 1 << 1, 0).astype(np.int16)
    back, rms = ph.background(data, mask)
    ref = sep.Background(ph.to_sky(data), mask=ph.to_sky((mask & ph.MASK_ALL) != 0), bw=192, bh=220)
    np.testing.assert_array_equal(back, ph.to_sky(ref.back()))
    np.testing.assert_array_equal(rms, ph.to_sky(ref.rms()))
    back_raw, _ = ph.background(data, mask, frame="raw")
    assert np.abs(back_raw - back).max() > 1e-3  # the mesh alignment matters
    assert back.dtype == np.float32 and back.shape == data.shape


def test_background_accepts_fits_byte_order():
    rng = np.random.default_rng(2)
    data = rng.normal(100, 3, (100, 110)).astype(">f4")
    mask = np.zeros((100, 110), ">i2")
    back, rms = ph.background(data, mask, bw=32, bh=32)
    np.testing.assert_allclose(np.median(back), 100, atol=0.5)
    np.testing.assert_allclose(np.median(rms), 3, rtol=0.1)


# ------------------------------------------------------------------------------------------
# Frames, positions, footprint
# ------------------------------------------------------------------------------------------


def test_frame_conversions_round_trip():
    shape = (3080, 3072)
    rng = np.random.default_rng(0)
    x_raw, y_raw = rng.uniform(-5, 3077, 100), rng.uniform(-5, 3085, 100)
    x_ref, y_ref = ph.raw_to_ref(x_raw, y_raw, shape)
    np.testing.assert_allclose(x_ref, 3072 - 1 - x_raw)
    np.testing.assert_allclose(y_ref, 3080 - 1 - y_raw)
    back = ph.ref_to_raw(x_ref, y_ref, shape)
    np.testing.assert_allclose(back, (x_raw, y_raw), atol=1e-12)
    x_ipac, y_ipac = ph.raw_to_ipac(x_raw, y_raw)
    np.testing.assert_allclose((x_ipac, y_ipac), (x_raw + 1, y_raw + 1))
    np.testing.assert_allclose(ph.ipac_to_raw(x_ipac, y_ipac), (x_raw, y_raw), atol=1e-12)
    # the reference's own relation: X_fits = 3072 − x, Y_fits = 3080 − y
    np.testing.assert_allclose(x_ipac, 3072 - x_ref, atol=1e-9)
    np.testing.assert_allclose(y_ipac, 3080 - y_ref, atol=1e-9)
    # pixel values follow the coordinates through the array rotation
    arr = np.arange(12).reshape(3, 4)
    sky = ph.to_sky(arr)
    xr, yr = ph.raw_to_ref(np.array([1]), np.array([2]), arr.shape)
    assert sky[int(yr[0]), int(xr[0])] == arr[2, 1]


def test_wcs_round_trip_tan():
    h = tan_header()
    wcs = WCS(h)
    rng = np.random.default_rng(4)
    x0, y0 = rng.uniform(-10, 394, 50), rng.uniform(-10, 395, 50)
    ra, dec = wcs.all_pix2world(x0, y0, 0)
    x, y = ph.positions(h, ra, dec)  # a header works as well as a WCS
    np.testing.assert_allclose(x, x0, atol=1e-8)
    np.testing.assert_allclose(y, y0, atol=1e-8)
    x1, y1 = wcs.all_world2pix(ra, dec, 1)
    np.testing.assert_allclose(ph.raw_to_ipac(x, y), (x1, y1), atol=1e-8)
    assert ph.positions(wcs, [], [])[0].size == 0


def test_wcs_round_trip_sim_tpv():
    from ztfluigi.sim import astrometry

    shape = (385, 384)
    h = astrometry.quadrant_wcs_header(150.0, 30.0, 13, 3, shape)
    wcs = WCS(h)
    x0, y0 = np.array([0.0, 100.3, 383.0]), np.array([0.0, 200.7, 384.0])
    ra, dec = wcs.all_pix2world(x0, y0, 0)
    x, y = ph.positions(h, ra, dec)
    np.testing.assert_allclose(np.c_[x, y], np.c_[x0, y0], atol=1e-6)


def test_footprint_rule_is_the_references():
    shape = (3080, 3072)
    eps = 1e-9
    x = np.array([0, 3072, -eps, 3072 + eps, 1536, 1536, 1536, 1536, np.nan, -0.4])
    y = np.array([1540, 1540, 1540, 1540, 0, 3080, -eps, 3080 + eps, 1540, 1540])
    keep = ph.in_footprint(x, y, shape)
    assert keep.tolist() == [True, True, False, False, True, True, False, False, False, False]
    # in raw terms: −1 ≤ x_raw ≤ ncols − 1
    x_raw = np.array([-1.0, -1.0 - eps, 3071.0, 3071.0 + eps, 3071.4])
    keep = ph.in_footprint(*ph.raw_to_ref(x_raw, np.full(5, 10.0), shape), shape)
    assert keep.tolist() == [True, False, True, False, False]


# ------------------------------------------------------------------------------------------
# Isolation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ra0, dec0", [(0.0, 0.0), (150.0, 60.0), (359.9, -30.0)])
def test_isolation_matches_brute_force(ra0, dec0):
    rng = np.random.default_rng(int(dec0) + 100)
    n = 1500
    half = 0.25
    ra = (ra0 + rng.uniform(-half, half, n) / np.cos(np.radians(dec0))) % 360
    dec = dec0 + rng.uniform(-half, half, n)
    ra[1], dec[1] = ra[0], dec[0]  # exact duplicate: neighbours of each other
    iso = ph.isolation(ra, dec, 20.0)
    expected = brute_isolation(ra, dec, 20.0)
    assert np.array_equal(iso, expected)
    assert not iso[0] and not iso[1]
    assert 0.2 < iso.mean() < 0.8


def test_isolation_edge_cases():
    assert ph.isolation([], []).size == 0
    assert ph.isolation([10.0], [20.0]).tolist() == [True]
    d = 19.9 / 3600
    iso = ph.isolation([10.0, 10.0, 10.0, np.nan], [20.0, 20.0 + d, 21.0, 20.0])
    assert iso.tolist() == [False, False, True, False]
    iso = ph.isolation([10.0, 10.0], [20.0, 20.0 + 20.1 / 3600])
    assert iso.tolist() == [True, True]


def test_isolation_fast_for_20000_sources():
    import time

    rng = np.random.default_rng(0)
    ra, dec = rng.uniform(10, 10.9, 20000), rng.uniform(0, 0.9, 20000)
    t0 = time.perf_counter()
    ph.isolation(ra, dec)
    assert time.perf_counter() - t0 < 1.0


# ------------------------------------------------------------------------------------------
# Schema and the whole chain
# ------------------------------------------------------------------------------------------


def test_schema():
    schema = ph.catalogue_schema()
    names = schema.names
    assert names[:11] == [
        "source_id",
        "ra",
        "dec",
        "phot_g_mean_mag",
        "phot_bp_mean_mag",
        "phot_rp_mean_mag",
        "x",
        "y",
        "x_ipac",
        "y_ipac",
        "isolated",
    ]
    assert len(names) == 11 + 5 * 10
    types = {f.name: f.type for f in schema}
    assert types["source_id"] == pa.int64()
    assert types["ra"] == types["dec"] == pa.float64()
    for name in (
        "phot_g_mean_mag",
        "phot_bp_mean_mag",
        "phot_rp_mean_mag",
        "x",
        "y",
        "x_ipac",
        "y_ipac",
    ):
        assert types[name] == pa.float32()
    assert types["isolated"] == pa.bool_()
    for k in range(10):
        assert types[f"f_{k}"] == types[f"f_{k}_e"] == types[f"f_{k}_ebkg"] == pa.float32()
        assert types[f"f_{k}_f"] == pa.uint8()
        assert types[f"r_{k}"] == pa.uint8()
    assert ph.catalogue_schema([2.5, 4]).field("r_0").type == pa.float32()


@pytest.fixture(scope="module")
def quadrant():
    """A 385 × 384 raw-oriented quadrant with a TAN WCS, stars, mask and a reference catalogue."""
    shape = (385, 384)
    nrows, ncols = shape
    header = tan_header(shape)
    wcs = WCS(header)
    rng = np.random.default_rng(11)
    gx, gy = np.meshgrid(np.arange(25, ncols - 20, 36.0), np.arange(25, nrows - 20, 36.0))
    x = np.concatenate(
        [
            gx.ravel() + rng.uniform(-0.5, 0.5, gx.size),
            [2.0, -12.0, -0.8, -1.2, ncols - 1.3, ncols - 0.7, 200.0],
        ]
    )
    y = np.concatenate(
        [
            gy.ravel() + rng.uniform(-0.5, 0.5, gy.size),
            [150.0, 150.0, 300.0, 300.0, 100.0, 100.0, nrows + 40.0],
        ]
    )
    counts = np.full(x.size, 2e5)
    pad = 70
    image_e = moffat_image((nrows + 2 * pad, ncols + 2 * pad), x + pad, y + pad, counts)
    image_e = image_e[pad:-pad, pad:-pad]
    image = ((rng.poisson(image_e + SKY_E) + rng.normal(0, READ_NOISE_E, shape)) / GAIN).astype(
        np.float32
    )
    mask = np.zeros(shape, np.int16)
    mask[int(round(y[0])), int(round(x[0])) + 2] = 1 << 8  # a saturated pixel in star 0
    ra, dec = wcs.all_pix2world(x, y, 0)
    inside_expected = (x >= -1) & (x <= ncols - 1) & (y >= -1) & (y <= nrows - 1)
    return {
        "shape": shape,
        "header": header,
        "image": image,
        "mask": mask,
        "x": x,
        "y": y,
        "refcat": refcat_table(ra, dec),
        "inside": inside_expected,
    }


def test_photometry_catalogue(quadrant):
    q = quadrant
    meta = {"rawfile": "ztf_20190331xxx_c13_o.fits.fz", "radii": "caller value is replaced"}
    table = ph.photometry_catalogue(q["image"], q["mask"], q["header"], q["refcat"], metadata=meta,
                                    spec=ph.PhotometrySpec.reference())  # fmt: skip
    assert table.schema.remove_metadata() == ph.catalogue_schema().remove_metadata()
    # footprint: the reference's rule on the WCS positions
    assert table.num_rows == q["inside"].sum()
    expected_ids = q["refcat"]["source_id"].to_numpy()[q["inside"]]
    assert np.array_equal(table["source_id"].to_numpy(), expected_ids)
    # float64 positions and unchanged magnitudes (nulls → NaN)
    np.testing.assert_array_equal(table["ra"].to_numpy(), q["refcat"]["ra"].to_numpy()[q["inside"]])
    bp = table["phot_bp_mean_mag"].to_numpy()
    assert np.isnan(bp).any() and np.isfinite(bp).any()
    # x/y conventions
    nrows, ncols = q["shape"]
    x_raw, y_raw = q["x"][q["inside"]], q["y"][q["inside"]]
    np.testing.assert_allclose(table["x"].to_numpy(), ncols - 1 - x_raw, atol=1e-3)
    np.testing.assert_allclose(table["y"].to_numpy(), nrows - 1 - y_raw, atol=1e-3)
    np.testing.assert_allclose(table["x_ipac"].to_numpy(), x_raw + 1, atol=1e-3)
    np.testing.assert_allclose(table["y_ipac"].to_numpy(), y_raw + 1, atol=1e-3)
    # photometry equals the step-by-step functions
    back, rms = ph.background(q["image"], q["mask"])
    step = ph.aperture_photometry(q["image"] - back, q["mask"], x_raw, y_raw, ph.RADII, rms, GAIN)
    for k in range(10):
        np.testing.assert_allclose(table[f"f_{k}"].to_numpy(), step["flux"][k], rtol=1e-4)
        np.testing.assert_allclose(table[f"f_{k}_e"].to_numpy(), step["flux_err"][k], rtol=1e-4)
        assert np.array_equal(table[f"f_{k}_f"].to_numpy(), step["flag"][k])
        assert np.all(table[f"r_{k}"].to_numpy() == ph.RADII[k])
    flags = table["f_9_f"].to_numpy()
    assert flags[0] == ph.APER_HASMASKED  # the saturated pixel
    interior = (x_raw > 13) & (x_raw < ncols - 14) & (y_raw > 13) & (y_raw < nrows - 14)
    assert np.all(flags[interior][1:] == 0)
    assert np.all(flags[~interior] & ph.FLAG_OFFIMAGE)
    f12 = table["f_9"].to_numpy()[interior][1:]
    np.testing.assert_allclose(np.median(f12), 2e5 / GAIN * moffat_ee(12.0), rtol=0.01)
    # isolation among the whole catalogue: star at x_raw = 2 sees its neighbour at x_raw = −12
    iso = dict(zip(table["source_id"].to_numpy(), table["isolated"].to_numpy(), strict=True))
    sid = q["refcat"]["source_id"].to_numpy()
    n_grid = len(q["x"]) - 7
    assert not iso[sid[n_grid]]
    ref_like = ph.photometry_catalogue(
        q["image"], q["mask"], q["header"], q["refcat"], isolation_scope="footprint",
        spec=ph.PhotometrySpec.reference(),
    )  # fmt: skip
    assert ref_like["isolated"].to_numpy()[ref_like["source_id"].to_numpy() == sid[n_grid]][0]
    # metadata
    md = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert md["rawfile"] == meta["rawfile"]
    assert json.loads(md["radii"]) == list(ph.RADII)
    assert md["mask_bits"] == "6141"
    assert "x_raw+1" in md["xy_convention"]
    assert float(md["gain"]) == GAIN and float(md["isolation_arcsec"]) == 20.0
    assert json.loads(md["image_shape"]) == [nrows, ncols]


def test_photometry_catalogue_empty_and_errors(quadrant):
    q = quadrant
    far = refcat_table([10.0], [-40.0])
    table = ph.photometry_catalogue(q["image"], q["mask"], q["header"], far)
    assert table.num_rows == 0
    assert table.schema.remove_metadata() == ph.catalogue_schema().remove_metadata()
    header = q["header"].copy()
    del header["GAIN"]
    with pytest.raises(KeyError, match="GAIN"):
        ph.photometry_catalogue(q["image"], q["mask"], header, q["refcat"])
    with pytest.raises(ValueError, match="isolation_scope"):
        ph.photometry_catalogue(
            q["image"], q["mask"], q["header"], q["refcat"], isolation_scope="quadrant"
        )
    with pytest.raises(ValueError, match="radii"):
        ph.aperture_photometry(q["image"], None, [1.0], [1.0], [], 1.0, None)


# ------------------------------------------------------------------------------------------
# PhotometrySpec: the reference kept bit for bit, the default path
# ------------------------------------------------------------------------------------------


def reference_chain(image, mask, header, refcat, gain):
    """The reference's photometry straight from sep (ztfin2p3 aperture.py + ztfluigi's flags
    1/64 and Poisson term), independent of photometry_catalogue's code paths."""
    nrows, ncols = image.shape
    x_raw, y_raw = WCS(header).all_world2pix(refcat["ra"].to_numpy(), refcat["dec"].to_numpy(), 0)
    x, y = ncols - 1.0 - x_raw, nrows - 1.0 - y_raw
    inside = (x >= 0) & (x <= ncols) & (y >= 0) & (y <= nrows)
    x, y = x[inside], y[inside]
    sky = np.ascontiguousarray(image[::-1, ::-1], dtype=np.float32)
    smask = mask[::-1, ::-1]
    bkg = sep.Background(sky, mask=np.ascontiguousarray((smask & 8191) != 0), bw=192, bh=220)
    sub = sky - bkg.back()
    bad = np.ascontiguousarray(((smask & 6141) != 0) | ~np.isfinite(sub))
    r = np.asarray(ph.RADII, float)[:, None]
    flux, ebkg, flag = sep.sum_circle(sub, x, y, r, err=bkg.rms(), mask=bad, subpix=0)
    off = (x - r < -0.5) | (x + r > ncols - 0.5) | (y - r < -0.5) | (y + r > nrows - 0.5)
    flag = flag.astype(np.uint8) | np.where(off, 1, 0).astype(np.uint8)
    flag |= np.where(np.isfinite(flux), 0, 64).astype(np.uint8)
    area = sep.sum_circle(np.ones_like(sub), x, y, r, subpix=0)[0]
    area_bad = sep.sum_circle(bad.astype(np.float32), x, y, r, subpix=0)[0]
    q = np.where((flag & 32) != 0, area / (area - area_bad), 1.0)
    err = np.sqrt((ebkg**2 + np.maximum(np.nan_to_num(flux), 0) / gain) * q)
    return flux, err, ebkg, flag


def test_reference_spec_reproduces_the_reference_chain(quadrant):
    q = quadrant
    table = ph.photometry_catalogue(q["image"], q["mask"], q["header"], q["refcat"],
                                    spec=ph.PhotometrySpec.reference())  # fmt: skip
    flux, err, ebkg, flag = reference_chain(q["image"], q["mask"], q["header"], q["refcat"], GAIN)
    for k in range(len(ph.RADII)):
        assert np.array_equal(table[f"f_{k}"].to_numpy(), flux[k].astype(np.float32),
                              equal_nan=True)  # fmt: skip
        assert np.array_equal(table[f"f_{k}_ebkg"].to_numpy(), ebkg[k].astype(np.float32),
                              equal_nan=True)  # fmt: skip
        np.testing.assert_allclose(table[f"f_{k}_e"].to_numpy(), err[k], rtol=1e-6)
        assert np.array_equal(table[f"f_{k}_f"].to_numpy(), flag[k])
    md = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert md["photometry.PHAPER"] == "sep" and md["photometry.PHBACK"] == "sep"
    assert "2" not in json.loads(md["flag_bits"])


def test_spec_cards_and_validation():
    spec = ph.PhotometrySpec()
    assert (spec.apertures, spec.background, spec.saturation) == ("exact", "starmasked", True)
    cards = dict((k, v) for k, v, _ in spec.header_cards())
    assert cards["PHAPER"] == "exact" and cards["PHSMR20"] == 8.0
    assert all(len(k) <= 8 for k in cards)
    assert spec.metadata()["photometry.PHBACK"] == "starmasked"
    ref = ph.PhotometrySpec.reference()
    assert (ref.apertures, ref.background, ref.saturation) == ("sep", "sep", False)
    with pytest.raises(ValueError, match="saturation"):
        ph.PhotometrySpec(apertures="sep")
    with pytest.raises(ValueError, match="background"):
        ph.PhotometrySpec(background="median")
    r = ph.star_mask_radius(np.array([30.0, 21.0, 20.0, 15.0, 5.0, np.nan]))
    np.testing.assert_allclose(r, [3.0, 8 * 10**-0.08, 8.0, 8 * 10**0.4, 40.0, 3.0])


def test_default_spec_exact_sums_equal_the_reference_sums(quadrant):
    """Same background (sep's), exact engine without saturation: sums equal sep's ≤ 1e-12."""
    q = quadrant
    mixed = ph.PhotometrySpec(apertures="exact", background="sep", saturation=False)
    a = ph.photometry_catalogue(q["image"], q["mask"], q["header"], q["refcat"], spec=mixed)
    b = ph.photometry_catalogue(q["image"], q["mask"], q["header"], q["refcat"],
                                spec=ph.PhotometrySpec.reference())  # fmt: skip
    for k in range(len(ph.RADII)):
        for col in (f"f_{k}", f"f_{k}_e", f"f_{k}_ebkg"):
            np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-6)
        fa, fb = a[f"f_{k}_f"].to_numpy(), b[f"f_{k}_f"].to_numpy()
        assert np.array_equal((fa & 1) != 0, (fb & 1) != 0)
        assert np.array_equal((fa & 16) != 0, (fa & 1) != 0)  # exact truncation
        assert np.all((fb & 32)[(fa & 32) != 0])  # ours ⊆ sep's


def test_default_spec_flags_saturation_without_rescaling(quadrant):
    q = quadrant
    nrows, ncols = q["shape"]
    x_raw, y_raw = q["x"][q["inside"]], q["y"][q["inside"]]
    peak = q["image"][np.clip(np.round(y_raw).astype(int), 0, nrows - 1),
                      np.clip(np.round(x_raw).astype(int), 0, ncols - 1)]  # fmt: skip
    level = float(np.median(peak))  # DN: half of the (equal) stars have a core above it
    header = q["header"].copy()
    header["SATURATE"] = level
    table = ph.photometry_catalogue(q["image"], q["mask"], header, q["refcat"])
    flags = table["f_9_f"].to_numpy()
    sat = (flags & ph.FLAG_SATURATED) != 0
    assert sat[peak > level].all() and sat.sum() >= 10
    assert np.all(flags[sat] & ph.APER_HASMASKED)
    # the flux is the unmasked sum, not scaled up: below the unsaturated stars' median
    f12 = table["f_9"].to_numpy()
    clean = flags == 0
    assert np.all(f12[sat] < np.median(f12[clean]))
    md = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert "2" in json.loads(md["flag_bits"]) and float(md["saturate"]) == level
    assert md["photometry.PHAPER"] == "exact" and md["photometry.PHSATUR"] == "True"
    # star 0 has the IPAC saturated bit: flag 2 even without SATURATE
    plain = ph.photometry_catalogue(q["image"], q["mask"], q["header"], q["refcat"])
    assert plain["f_9_f"].to_numpy()[0] == ph.FLAG_SATURATED | ph.APER_HASMASKED


def test_flag_32_only_for_masked_pixels_inside_the_circle():
    data = np.full((60, 60), 5.0, np.float32)
    mask = np.zeros((60, 60), np.int16)
    mask[24, 19] = 1 << 4  # noisy; 4.68 px from the centre, nearest corner 4.003 px > r = 4
    x, y = [21.35], [19.95]
    ref = ph.aperture_photometry(data, mask, x, y, [4.0], 1.0, None, frame="raw")
    new = ph.aperture_photometry(data, mask, x, y, [4.0], 1.0, None, spec=ph.PhotometrySpec())
    assert ref["flag"][0, 0] == ph.APER_HASMASKED and new["flag"][0, 0] == 0
    np.testing.assert_allclose(new["flux"], ref["flux"], rtol=1e-12)


def test_big_endian_mask_reads_the_same_bits():
    """FITS masks are big-endian: bit 1 (source) must not be read as bit 9 (dead)."""
    data = np.full((40, 40), 5.0, np.float32)
    mask = np.zeros((40, 40), np.int16)
    mask[18:23, 18:23] = 1 << 1
    for spec in (None, ph.PhotometrySpec()):
        a = ph.aperture_photometry(data, mask, [20.0], [20.0], [3.0], 1.0, None, spec=spec)
        b = ph.aperture_photometry(data, mask.astype(">i2"), [20.0], [20.0], [3.0], 1.0, None,
                                   spec=spec)  # fmt: skip
        assert a["flag"][0, 0] == b["flag"][0, 0] == 0
        assert np.array_equal(a["flux"], b["flux"])


def test_star_masked_background_with_either_engine(quadrant):
    """The star-masked background serves the sep engine too (same maps, rotated)."""
    q = quadrant
    exact = ph.PhotometrySpec(saturation=False)
    with_sep = ph.PhotometrySpec(apertures="sep", saturation=False)
    a = ph.photometry_catalogue(q["image"], q["mask"], q["header"], q["refcat"], spec=exact)
    b = ph.photometry_catalogue(q["image"], q["mask"], q["header"], q["refcat"], spec=with_sep)
    for k in range(len(ph.RADII)):
        np.testing.assert_allclose(a[f"f_{k}"].to_numpy(), b[f"f_{k}"].to_numpy(), rtol=1e-6)
    md = {k.decode(): v.decode() for k, v in b.schema.metadata.items()}
    assert md["photometry.PHBACK"] == "starmasked" and "reference stars" in md["background"]


def test_star_mask_keeps_every_background_cell_usable():
    """150 000 stars on a real-size quadrant (the galactic plane): sep drops mesh cells less
    than half usable and returns 0 when all are; the star mask leaves every cell ≥ 60 % sky."""
    rng = np.random.default_rng(0)
    shape, n = (3080, 3072), 150_000
    x, y = rng.uniform(-20, 3092, n), rng.uniform(-20, 3100, n)
    g = np.clip(21 + np.log10(rng.uniform(1e-4, 1, n)) / 0.33, 8, 21)  # mostly faint, as Gaia
    ipac = np.zeros(shape, np.int16)
    ipac[:, :500] = 1 << 1  # a strip already 100 % masked by IPAC's source mask
    bad = ph._bad_pixels(np.zeros(shape, np.float32), ipac, ph.MASK_ALL)
    masked = ph.star_mask(shape, x, y, g, base=bad)
    bw, bh = ph.BACKGROUND_MESH
    cells = masked[: shape[0] // bh * bh, 500 // bw * bw + bw : shape[1] // bw * bw]
    frac = cells.reshape(shape[0] // bh, bh, -1, bw).mean(axis=(1, 3))
    assert frac.max() < 0.6 and frac.mean() > 0.35  # crowded, still sky in every cell
    image = rng.normal(150, 5, shape).astype(np.float32)
    back, _ = ph.quadrant_background(image, ipac, x, y, g, saturate=math.inf)
    assert abs(float(np.median(back[:, 600:])) - 150) < 0.1
