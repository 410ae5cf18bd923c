"""The synthetic Gaia-DR3-like sky."""

from __future__ import annotations

import uuid

import astropy.units as u
import fsspec
import numpy as np
import pyarrow as pa
import pytest
from astropy.coordinates import SkyCoord
from astropy_healpix import healpix_to_lonlat, lonlat_to_healpix, neighbours

from ztfluigi import refcat
from ztfluigi.sim import gaia

NSIDE = 2**gaia.SIM_ORDER


def pixel_at(l_deg: float, b_deg: float, order: int = gaia.SIM_ORDER) -> int:
    c = SkyCoord(l=l_deg * u.deg, b=b_deg * u.deg, frame="galactic").icrs
    return int(lonlat_to_healpix(c.ra, c.dec, 2**order, order="nested"))


def radec(l_deg: float, b_deg: float) -> tuple[float, float]:
    c = SkyCoord(l=l_deg * u.deg, b=b_deg * u.deg, frame="galactic").icrs
    return float(c.ra.deg), float(c.dec.deg)


def assert_tables_equal(a: pa.Table, b: pa.Table) -> None:
    """Equal schemas and values, NaN == NaN (``Table.equals`` treats NaN as different)."""
    assert a.schema == b.schema
    for name in a.column_names:
        np.testing.assert_array_equal(a[name].to_numpy(), b[name].to_numpy(), err_msg=name)


@pytest.fixture(scope="module")
def big_sample() -> pa.Table:
    """~46 000 stars: 128 contiguous pixels around b ≈ -30°."""
    first = pixel_at(100.0, -30.0) // 128 * 128
    return pa.concat_tables(gaia.generate_pixel(3, p) for p in range(first, first + 128))


def test_deterministic():
    p = pixel_at(160.0, -14.0)
    a = gaia.generate_pixel(42, p)
    gaia.generate_pixel(42, p + 1)  # call order must not matter
    b = gaia.generate_pixel(42, p)
    assert_tables_equal(a, b)
    assert a.schema == gaia.GAIA_COLUMNS
    other = gaia.generate_pixel(43, p)
    assert other.num_rows != a.num_rows or not np.array_equal(other["ra"], a["ra"])
    assert not np.array_equal(other["ra"].to_numpy()[:10], a["ra"].to_numpy()[:10])
    assert 700 < a.num_rows < 1300  # ~1 000 stars at |b| ≈ 14°


def test_rows_inside_pixel_and_sorted():
    p = pixel_at(60.0, 45.0)
    t = gaia.generate_pixel(1, p)
    hp = t["_healpix_29"].to_numpy()
    np.testing.assert_array_equal(hp, refcat.healpix29(t["ra"].to_numpy(), t["dec"].to_numpy()))
    assert np.all(hp >> (2 * (29 - gaia.SIM_ORDER)) == p)
    assert np.all(np.diff(hp) >= 0)
    np.testing.assert_array_equal(t["ref_epoch"].to_numpy(), 2016.0)


def test_source_id_unique_and_gaia_like():
    p = pixel_at(200.0, 20.0)
    pix = [p, *(int(q) for q in neighbours(p, NSIDE, order="nested") if q >= 0)]
    t = pa.concat_tables(gaia.generate_pixel(5, q) for q in pix)
    sid = t["source_id"].to_numpy()
    assert len(np.unique(sid)) == len(sid)
    hp = t["_healpix_29"].to_numpy()
    np.testing.assert_array_equal(sid >> 35, hp >> 34)  # order-12 pixel, as in Gaia
    assert np.all(sid & (2**35 - 1) >= 1)


def test_density_anchors():
    d = gaia.density_per_deg2(np.array([90.0, 60.0, 45.0, 30.0, 14.0, 5.0, 0.0, -14.0]))
    assert 2000 <= d[0] <= 3300 and 2000 <= d[1] <= 3300
    assert 4000 <= d[2] <= 9000 and 4000 <= d[3] <= 9000
    assert d[4] == pytest.approx(18_600, rel=0.05) and d[7] == d[4]
    assert 40_000 <= d[5] <= 200_000
    b = np.linspace(-90, 90, 3601)
    dens = gaia.density_per_deg2(b)
    assert dens.max() * 0.748 <= 150_000
    assert np.all(np.diff(dens[b >= 0]) <= 0) and np.all(np.diff(dens[b <= 0]) >= 0)


def test_counts_follow_density():
    rng = np.random.default_rng(0)
    pix = rng.choice(12 * NSIDE**2, 600, replace=False)
    lon, lat = healpix_to_lonlat(pix, NSIDE, order="nested")
    b = gaia.galactic_latitude_deg(lon.deg, lat.deg)
    pix = pix[np.abs(b) > 10]  # keep the test fast
    b = b[np.abs(b) > 10]
    counts = np.array([gaia.generate_pixel(9, int(p)).num_rows for p in pix])
    expected = gaia.density_per_deg2(b) * gaia.pixel_area_deg2()
    for sel in (np.abs(b) > 50, (np.abs(b) > 25) & (np.abs(b) <= 50), np.abs(b) <= 25):
        obs, exp = counts[sel].sum(), expected[sel].sum()
        assert abs(obs - exp) < 5 * np.sqrt(exp), (obs, exp)
    # Poisson scatter, not more
    chi2 = np.sum((counts - expected) ** 2 / expected) / len(counts)
    assert 0.7 < chi2 < 1.3


def test_galactic_latitude_vs_astropy():
    rng = np.random.default_rng(1)
    ra = rng.uniform(0, 360, 2000)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, 2000)))
    b = SkyCoord(ra * u.deg, dec * u.deg).galactic.b.deg
    assert np.abs(gaia.galactic_latitude_deg(ra, dec) - b).max() * 3600 < 0.1


def test_positions_uniform_in_pixel():
    # one big order-3 pixel (~54 deg², ~150 000 stars) split into its 64 order-6 children
    p3 = pixel_at(90.0, 70.0, order=3)
    t = gaia.generate_pixel(2, p3, order=3)
    child = t["_healpix_29"].to_numpy() >> (2 * (29 - 6))
    counts = np.bincount(child - (p3 << 6), minlength=64)
    assert counts.size == 64
    mean = t.num_rows / 64
    chi2 = np.sum((counts - mean) ** 2 / mean)
    assert chi2 < 63 + 5 * np.sqrt(2 * 63)


def test_generate_cone_brute_force():
    ra, dec = radec(120.0, 25.0)
    for radius in (0.05, 0.3, 0.7):
        pix = gaia.pixels_for_cone(ra, dec, radius)
        got = gaia.generate_cone(11, ra, dec, radius)
        allstars = pa.concat_tables(gaia.generate_pixel(11, int(p)) for p in pix)
        sep = SkyCoord(allstars["ra"].to_numpy() * u.deg, allstars["dec"].to_numpy() * u.deg)
        sep = sep.separation(SkyCoord(ra * u.deg, dec * u.deg)).deg
        want = allstars["source_id"].to_numpy()[sep <= radius]
        assert sorted(got["source_id"].to_numpy().tolist()) == sorted(want.tolist())
        assert got.schema == gaia.GAIA_COLUMNS
        # no star of a neighbouring, unused pixel falls in the cone
        ring = {int(q) for p in pix for q in neighbours(int(p), NSIDE, order="nested")} - set(
            pix.tolist()
        )
        for q in ring:
            t = gaia.generate_pixel(11, q)
            assert not refcat.cone_mask(
                t["ra"].to_numpy(), t["dec"].to_numpy(), ra, dec, radius
            ).any()


def test_proper_motions(big_sample):
    pmra = big_sample["pmra"].to_numpy()
    pmdec = big_sample["pmdec"].to_numpy()
    pm = np.hypot(pmra, pmdec)
    finite = np.isfinite(pm)
    n = big_sample.num_rows
    # ~20 % 2-parameter solutions, with all astrometric columns NaN together
    nan_frac = 1 - finite.mean()
    assert 0.17 < nan_frac < 0.23
    for col in ("parallax", "parallax_error", "pmra_error", "pmdec", "pmdec_error"):
        np.testing.assert_array_equal(np.isnan(big_sample[col].to_numpy()), ~finite)
    # typical |pm| of a few mas/yr
    assert 0.5 < np.median(pm[finite]) < 10
    # ~0.5 % high-proper-motion stars, 100-1000 mas/yr
    high = pm[finite] > 90
    assert 0.0035 < high.sum() / n < 0.0065
    assert pm[finite].max() < 1010
    # 2-parameter solutions are mostly faint
    g = big_sample["phot_g_mean_mag"].to_numpy()
    assert np.median(g[~finite]) > 20.3


def test_high_pm_in_a_quadrant():
    ra, dec = radec(150.0, 35.0)
    t = gaia.generate_cone(0, ra, dec, 0.49)  # ≈ one ZTF quadrant (0.75 deg²)
    pm = np.hypot(t["pmra"].to_numpy(), t["pmdec"].to_numpy())
    assert np.sum(pm > 100) >= 5


def test_magnitudes_and_colours(big_sample):
    g = big_sample["phot_g_mean_mag"].to_numpy().astype(float)
    bp = big_sample["phot_bp_mean_mag"].to_numpy().astype(float)
    rp = big_sample["phot_rp_mean_mag"].to_numpy().astype(float)
    assert g.min() >= 8.0 and g.max() <= 21.0
    hist, _ = np.histogram(g, bins=np.arange(9, 22, 2))
    assert np.all(np.diff(hist) > 0)  # rising towards G = 21
    cum = [np.sum(g < m) for m in (14.0, 19.0)]
    slope = np.log10(cum[1] / cum[0]) / 5.0
    assert 0.3 <= slope <= 0.4
    assert 0.35 < np.mean(g < 20) < 0.6
    colour = bp - rp
    assert 0.85 < colour.mean() < 1.25
    assert np.percentile(colour, 2) > 0.3 and np.percentile(colour, 98) < 3.0
    assert np.all(bp > g - 0.05) and np.all(rp < g + 0.05)


def test_write_sim_catalog_matches_generate_cone():
    url = f"memory://simgaia-{uuid.uuid4().hex}"
    try:
        ra, dec = radec(75.0, -40.0)
        pix = gaia.pixels_for_cone(ra, dec, 0.5)
        gaia.write_sim_catalog(url, 8, list(pix) + [int(pix[0])])
        cat = refcat.RefCatalog(url)
        assert cat.properties["obs_collection"] == "ztfsim_gaia_dr3"
        assert cat.properties["ztfsim_seed"] == "8"
        shift = 2 * (gaia.SIM_ORDER - gaia.STORE_ORDER)
        parents = sorted({(gaia.STORE_ORDER, int(p) >> shift) for p in pix})
        assert sorted(cat.partitions) == parents
        assert cat.properties["ztfsim_order"] == str(gaia.SIM_ORDER)
        got = cat.cone(ra, dec, 0.4)
        want = gaia.generate_cone(8, ra, dec, 0.4)
        assert_tables_equal(got.sort_by("source_id"), want.sort_by("source_id"))
    finally:
        fs, path = fsspec.core.url_to_fs(url)
        if fs.exists(path):
            fs.rm(path, recursive=True)


def test_store_order_does_not_change_the_stars(tmp_path):
    """The partition order and row groups change the layout only: every cone serves the same
    rows in the same order as the order-8 store (one partition per generation pixel)."""
    ra, dec = radec(30.0, 8.0)  # ~35 000 stars/deg²
    pix = gaia.pixels_for_cone(ra, dec, 0.35)
    reference = str(tmp_path / "o8")
    gaia.write_sim_catalog(reference, 5, pix, order=gaia.SIM_ORDER, row_group_rows=1 << 20)
    ref = refcat.RefCatalog(reference, cache_mb=0)
    stores = {}
    for order, rows in ((gaia.STORE_ORDER, gaia.STORE_ROW_GROUP_ROWS), (4, 3000), (7, 1000)):
        url = str(tmp_path / f"o{order}")
        gaia.write_sim_catalog(url, 5, pix, order=order, row_group_rows=rows)
        stores[order] = refcat.RefCatalog(url)
        assert {o for o, _ in stores[order].partitions} == {order}
    assert len(stores[gaia.STORE_ORDER].partitions) < len(ref.partitions) / 3
    rng = np.random.default_rng(1)
    cones = [(ra, dec, 0.3), (ra, dec, 0.5)]  # the second reaches beyond the stored pixels
    cones += [(ra + rng.uniform(-0.2, 0.2), dec + rng.uniform(-0.2, 0.2), 0.1) for _ in range(4)]
    for cone in cones:
        want = ref.cone(*cone)
        assert want.num_rows > 0
        for cat in stores.values():
            assert_tables_equal(cat.cone(*cone), want)
    want = gaia.generate_cone(5, ra, dec, 0.3)
    assert_tables_equal(stores[gaia.STORE_ORDER].cone(ra, dec, 0.3).sort_by("source_id"),
                        want.sort_by("source_id"))  # fmt: skip
    with pytest.raises(ValueError):
        gaia.write_sim_catalog(str(tmp_path / "bad"), 5, pix, order=gaia.SIM_ORDER + 1)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        gaia.generate_pixel(0, 12 * NSIDE**2)
    with pytest.raises(ValueError):
        gaia.generate_pixel(0, 0, order=13)
    with pytest.raises(ValueError):
        gaia.generate_pixel(-1, 0)
