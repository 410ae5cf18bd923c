"""HATS reference-catalogue store: layout, cone searches, proper motion."""

from __future__ import annotations

import uuid
import warnings

import astropy.units as u
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import SkyCoord
from astropy.time import Time
from astropy_healpix import lonlat_to_healpix

from ztfluigi import refcat


def random_sky(n: int, ra0: float, dec0: float, half: float, seed: int = 0) -> pa.Table:
    """Uniform points in a (ra, dec) box, with an id column."""
    rng = np.random.default_rng(seed)
    ra = (ra0 + rng.uniform(-half, half, n) / np.cos(np.radians(dec0))) % 360.0
    dec = dec0 + rng.uniform(-half, half, n)
    return pa.table(
        {
            "source_id": np.arange(n, dtype=np.int64),
            "ra": ra,
            "dec": dec,
            "mag": rng.uniform(10, 21, n).astype(np.float32),
        }
    )


def split(table: pa.Table, order: int) -> dict[tuple[int, int], pa.Table]:
    """Partition a table by NESTED pixel at one order."""
    pix = refcat.healpix29(table["ra"].to_numpy(), table["dec"].to_numpy())
    pix >>= 2 * (29 - order)
    return {(order, int(p)): table.filter(pa.array(pix == p)) for p in np.unique(pix)}


def brute_ids(table: pa.Table, ra: float, dec: float, radius: float) -> set[int]:
    """source_ids within the cone, by astropy separations over all rows."""
    cat = SkyCoord(table["ra"].to_numpy() * u.deg, table["dec"].to_numpy() * u.deg)
    sep = cat.separation(SkyCoord(ra * u.deg, dec * u.deg)).deg
    return set(table["source_id"].to_numpy()[sep <= radius].tolist())


@pytest.fixture()
def memory_url():
    url = f"memory://refcat-test-{uuid.uuid4().hex}"
    yield url
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


@pytest.fixture(scope="module")
def sky() -> pa.Table:
    return random_sky(60_000, 150.0, 30.0, 2.0)


@pytest.mark.parametrize("kind", ["local", "file", "memory"])
def test_round_trip(kind, tmp_path, memory_url, sky):
    url = {"local": str(tmp_path / "cat"), "file": f"file://{tmp_path}/cat", "memory": memory_url}[
        kind
    ]
    parts = split(sky, 5)
    assert not refcat.catalog_exists(url)
    refcat.write_catalog(url, parts, name="roundtrip", extra_properties={"ztf_note": "x"})
    assert refcat.catalog_exists(url)
    cat = refcat.RefCatalog(url)
    assert sorted(cat.partitions) == sorted(parts)
    assert cat.properties["obs_collection"] == "roundtrip"
    assert cat.properties["ztf_note"] == "x"
    assert cat.schema.names == ["source_id", "ra", "dec", "mag", "_healpix_29"]
    back = pa.concat_tables(cat.read_partition(*key) for key in cat.partitions)
    assert back.num_rows == sky.num_rows
    back = back.sort_by("source_id")
    np.testing.assert_array_equal(back["ra"].to_numpy(), sky["ra"].to_numpy())
    np.testing.assert_array_equal(back["dec"].to_numpy(), sky["dec"].to_numpy())
    np.testing.assert_array_equal(back["mag"].to_numpy(), sky["mag"].to_numpy())
    hp = refcat.healpix29(sky["ra"].to_numpy(), sky["dec"].to_numpy())
    np.testing.assert_array_equal(back["_healpix_29"].to_numpy(), hp)
    for key in cat.partitions:
        h = cat.read_partition(*key, columns=["_healpix_29"])["_healpix_29"].to_numpy()
        assert np.all(np.diff(h) >= 0)  # sorted inside each partition
        assert np.all(h >> (2 * (29 - key[0])) == key[1])


def test_layout_files(tmp_path):
    root = tmp_path / "cat"
    sky = random_sky(5000, 12.0, 22.0, 1.0)
    parts = split(sky, 6)
    assert any(npix >= 10_000 for _, npix in parts)
    refcat.write_catalog(str(root), parts, name="layout")
    for name in ("properties", "hats.properties", "partition_info.csv"):
        assert (root / name).is_file()
    assert (root / "dataset" / "_common_metadata").is_file()
    assert (root / "dataset" / "_metadata").is_file()
    for order, npix in parts:
        ndir = npix // 10_000 * 10_000
        assert (root / f"dataset/Norder={order}/Dir={ndir}/Npix={npix}.parquet").is_file()
    lines = (root / "partition_info.csv").read_text().split()
    assert lines[0] == "Norder,Npix"
    assert sorted(tuple(map(int, line.split(","))) for line in lines[1:]) == sorted(parts)
    props = refcat.read_properties(str(root))
    assert props["obs_collection"] == "layout"
    assert props["dataproduct_type"] == "object"
    assert props["hats_col_ra"] == "ra" and props["hats_col_dec"] == "dec"
    assert props["hats_col_healpix"] == "_healpix_29"
    assert props["hats_col_healpix_order"] == "29"
    assert int(props["hats_nrows"]) == sky.num_rows
    assert int(props["hats_max_rows"]) == max(t.num_rows for t in parts.values())
    assert int(props["hats_order"]) == 6
    assert (root / "properties").read_text() == (root / "hats.properties").read_text()
    md = pq.read_metadata(root / "dataset" / "_metadata")
    assert md.num_rows == sky.num_rows
    paths = {md.row_group(i).column(0).file_path for i in range(md.num_row_groups)}
    expected = {refcat.partition_relpath(o, n)[len("dataset/") :] for o, n in parts}
    assert paths == expected
    schema = pq.read_schema(root / "dataset" / "_common_metadata")
    assert schema.field("_healpix_29").type == pa.int64()
    assert schema.field("ra").type == pa.float64()


def test_cone_matches_brute_force(memory_url, sky):
    refcat.write_catalog(memory_url, split(sky, 5), name="cone")
    cat = refcat.RefCatalog(memory_url)
    rng = np.random.default_rng(5)
    for _ in range(25):
        ra = 150.0 + rng.uniform(-2.5, 2.5)
        dec = 30.0 + rng.uniform(-2.5, 2.5)
        radius = float(10 ** rng.uniform(-2.5, 0.3))
        got = cat.cone(ra, dec, radius)
        ids = got["source_id"].to_numpy().tolist()
        assert len(ids) == len(set(ids))
        assert set(ids) == brute_ids(sky, ra, dec, radius)
        assert got.schema == cat.schema
    sub = cat.cone(150.0, 30.0, 0.5, columns=["mag", "source_id"])
    assert sub.column_names == ["mag", "source_id"]
    assert set(sub["source_id"].to_numpy().tolist()) == brute_ids(sky, 150.0, 30.0, 0.5)


def test_cone_empty_and_far(memory_url, sky):
    refcat.write_catalog(memory_url, split(sky, 5), name="cone")
    cat = refcat.RefCatalog(memory_url)
    assert cat.partitions_for_cone(10.0, -40.0, 1.0) == []
    empty = cat.cone(10.0, -40.0, 1.0)
    assert empty.num_rows == 0 and empty.schema == cat.schema
    assert cat.cone(10.0, -40.0, 1.0, columns=["mag"]).column_names == ["mag"]
    assert cat.cone(150.0, 30.0, 0.0).num_rows == 0


def test_partitions_for_cone_superset():
    """Every pixel holding a point of the cone is selected (astropy-healpix alone misses some)."""
    rng = np.random.default_rng(11)
    for _ in range(300):
        order = int(rng.integers(2, 12))
        ra = rng.uniform(0, 360)
        dec = np.degrees(np.arcsin(rng.uniform(-1, 1)))
        radius = float(10 ** rng.uniform(-3.5, 0.5))
        # dense random points on the cone's edge and inside
        n = 3000
        rho = radius * np.sqrt(rng.uniform(0.0, 1.0, n))
        rho[: n // 2] = radius * (1 - 1e-9)
        pa_ = rng.uniform(0, 2 * np.pi, n)
        c = SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(pa_ * u.rad, rho * u.deg)
        need = set(lonlat_to_healpix(c.ra, c.dec, 2**order, order="nested").tolist())
        got = set(refcat.healpix_cone(ra, dec, radius, order).tolist())
        assert need <= got, (order, ra, dec, radius)


def test_mixed_orders(memory_url):
    sky = random_sky(40_000, 45.0, 10.0, 4.0, seed=3)
    parts = split(sky, 3)
    # refine some order-3 pixels into order-4 and order-5 children
    keys = sorted(parts, key=lambda k: -parts[k].num_rows)
    mixed = {k: parts[k] for k in keys[2:]}
    for key, order in ((keys[0], 4), (keys[1], 5)):
        for child, table in split(parts[key], order).items():
            mixed[child] = table
    orders = {o for o, _ in mixed}
    assert orders == {3, 4, 5}
    refcat.write_catalog(memory_url, mixed, name="mixed")
    cat = refcat.RefCatalog(memory_url)
    assert cat.orders == [3, 4, 5]
    assert cat.properties["hats_order"] == "5"
    rng = np.random.default_rng(2)
    seen_orders = set()
    for _ in range(20):
        ra = 45.0 + rng.uniform(-4, 4)
        dec = 10.0 + rng.uniform(-4, 4)
        radius = float(rng.uniform(0.05, 2.0))
        keys_read = cat.partitions_for_cone(ra, dec, radius)
        seen_orders |= {o for o, _ in keys_read}
        got = cat.cone(ra, dec, radius)
        assert set(got["source_id"].to_numpy().tolist()) == brute_ids(sky, ra, dec, radius)
    assert seen_orders == {3, 4, 5}


def test_partitions_counted_and_listing_fallback(tmp_path, sky):
    root = tmp_path / "cat"
    refcat.write_catalog(str(root), split(sky, 6), name="count")
    cat = refcat.RefCatalog(str(root))
    reads = []
    original = cat.read_row_groups

    def counting(order, npix, groups, columns=None):
        reads.append((order, npix))
        return original(order, npix, groups, columns)

    cat.read_row_groups = counting
    cat.cone(150.0, 30.0, 0.3)
    assert set(reads) <= set(cat.partitions_for_cone(150.0, 30.0, 0.3))
    assert 0 < len(reads) < len(cat.partitions)
    (root / "partition_info.csv").unlink()
    assert not refcat.catalog_exists(str(root))
    listed = refcat.RefCatalog(str(root))
    assert sorted(listed.partitions) == sorted(cat.partitions)


def test_ra_wrap_and_pole(memory_url):
    rng = np.random.default_rng(9)
    n = 30_000
    ra = np.concatenate([rng.uniform(358, 360, n // 2), rng.uniform(0, 2, n // 2)])
    dec = rng.uniform(-2, 2, n)
    pole_ra = rng.uniform(0, 360, n)
    pole_dec = 90 - np.degrees(np.arccos(rng.uniform(np.cos(np.radians(3)), 1, n)))
    sky = pa.table(
        {
            "source_id": np.arange(2 * n, dtype=np.int64),
            "ra": np.concatenate([ra, pole_ra]),
            "dec": np.concatenate([dec, pole_dec]),
        }
    )
    refcat.write_catalog(memory_url, split(sky, 4), name="wrap")
    cat = refcat.RefCatalog(memory_url)
    for ra0, dec0, r in ((0.0, 0.0, 1.0), (359.5, 1.0, 0.7), (0.2, -1.0, 0.5), (123.0, 89.5, 1.5)):
        got = cat.cone(ra0, dec0, r)
        assert set(got["source_id"].to_numpy().tolist()) == brute_ids(sky, ra0, dec0, r)


def test_write_validation(tmp_path, sky):
    parts = split(sky, 5)
    key, table = next(iter(parts.items()))
    with pytest.raises(ValueError, match="outside"):
        refcat.write_catalog(str(tmp_path / "a"), {(key[0], key[1] + 1): table}, name="bad")
    parent = (key[0] - 1, key[1] >> 2)
    with pytest.raises(ValueError, match="overlaps"):
        refcat.write_catalog(str(tmp_path / "b"), {key: table, parent: table}, name="bad")
    with pytest.raises(ValueError):
        refcat.write_catalog(str(tmp_path / "c"), {key: table.slice(0, 0)}, name="empty")
    assert not refcat.catalog_exists(str(tmp_path / "c"))


def test_rewrite_replaces_store(memory_url, sky):
    refcat.write_catalog(memory_url, split(sky, 5), name="first")
    small = sky.slice(0, 1000)
    refcat.write_catalog(memory_url, split(small, 5), name="second")
    cat = refcat.RefCatalog(memory_url)
    assert cat.properties["obs_collection"] == "second"
    assert int(cat.properties["hats_nrows"]) == 1000
    assert cat.cone(150.0, 30.0, 5.0).num_rows == 1000


def test_missing_store_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        refcat.RefCatalog(str(tmp_path / "nothing"))


# ------------------------------------------------------------------------------------------
# Proper motion
# ------------------------------------------------------------------------------------------


def test_julian_year_to_mjd():
    assert refcat.julian_year_to_mjd(2000.0) == 51544.5
    assert refcat.julian_year_to_mjd(refcat.GAIA_DR3_EPOCH) == pytest.approx(
        Time(refcat.GAIA_DR3_EPOCH, format="jyear", scale="tt").mjd, abs=1e-9
    )


@pytest.mark.parametrize("years", [-3.0, 3.254, 10.0])
def test_proper_motion_vs_astropy(years):
    rng = np.random.default_rng(4)
    n = 2000
    ra = rng.uniform(0, 360, n)
    dec = rng.uniform(-80, 80, n)
    pm = 10 ** rng.uniform(-1, 3, n)  # up to 1 000 mas/yr
    ang = rng.uniform(0, 2 * np.pi, n)
    pmra, pmdec = pm * np.sin(ang), pm * np.cos(ang)
    t_from = Time("J2016")
    mjd_to = t_from.mjd + years * 365.25
    ra1, dec1 = refcat.propagate_proper_motion(ra, dec, pmra, pmdec, refcat.GAIA_DR3_EPOCH, mjd_to)
    coord = SkyCoord(
        ra=ra * u.deg,
        dec=dec * u.deg,
        pm_ra_cosdec=pmra * u.mas / u.yr,
        pm_dec=pmdec * u.mas / u.yr,
        obstime=t_from,
        frame="icrs",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ErfaWarning: distance overridden
        moved = coord.apply_space_motion(new_obstime=Time(mjd_to, format="mjd"))
    sep = SkyCoord(ra1 * u.deg, dec1 * u.deg).separation(moved).to_value(u.mas)
    assert sep.max() < 1.0
    # and the motion itself is right: |pm|·Δt
    moved_by = SkyCoord(ra * u.deg, dec * u.deg).separation(SkyCoord(ra1 * u.deg, dec1 * u.deg))
    np.testing.assert_allclose(moved_by.to_value(u.mas), pm * abs(years), rtol=1e-4, atol=0.01)
    assert ra1.dtype == np.float64 and np.all((ra1 >= 0) & (ra1 < 360))


def test_proper_motion_near_pole():
    ra = np.array([0.0, 90.0, 200.0])
    dec = np.array([89.9999, 89.99, -89.999])
    pmra = np.array([1000.0, -800.0, 500.0])
    pmdec = np.array([1000.0, 300.0, -900.0])
    t_from = Time("J2016")
    mjd_to = t_from.mjd + 3652.5
    ra1, dec1 = refcat.propagate_proper_motion(ra, dec, pmra, pmdec, 2016.0, mjd_to)
    coord = SkyCoord(
        ra=ra * u.deg,
        dec=dec * u.deg,
        pm_ra_cosdec=pmra * u.mas / u.yr,
        pm_dec=pmdec * u.mas / u.yr,
        obstime=t_from,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        moved = coord.apply_space_motion(new_obstime=Time(mjd_to, format="mjd"))
    sep = SkyCoord(ra1 * u.deg, dec1 * u.deg).separation(moved).to_value(u.mas)
    assert sep.max() < 1.0


def test_proper_motion_nan_is_zero():
    ra = np.array([10.0, 359.9999, 0.0, 45.0])
    dec = np.array([20.0, -30.0, 89.0, 0.0])
    pmra = np.array([np.nan, np.nan, 0.0, np.nan])
    pmdec = np.array([np.nan, 0.0, np.nan, 5.0])
    ra1, dec1 = refcat.propagate_proper_motion(ra, dec, pmra, pmdec, 2016.0, 60000.0)
    np.testing.assert_array_equal(ra1[:3], ra[:3])
    np.testing.assert_array_equal(dec1[:3], dec[:3])
    # NaN pmra with finite pmdec moves along dec only
    dt = (60000.0 - refcat.julian_year_to_mjd(2016.0)) / 365.25
    assert ra1[3] == pytest.approx(45.0, abs=1e-12)
    assert dec1[3] == pytest.approx(5.0 * dt / 3.6e6, rel=1e-9)


# ------------------------------------------------------------------------------------------
# Row groups, cache, atomic writes, other layouts
# ------------------------------------------------------------------------------------------


def assert_same_rows(a: pa.Table, b: pa.Table) -> None:
    """Same schema, rows and row order (NaN == NaN)."""
    assert a.schema == b.schema
    for name in a.column_names:
        np.testing.assert_array_equal(a[name].to_numpy(), b[name].to_numpy(), err_msg=name)


def test_healpix_cone_ranges_superset():
    rng = np.random.default_rng(21)
    for _ in range(60):
        ra = rng.uniform(0, 360)
        dec = np.degrees(np.arcsin(rng.uniform(-1, 1)))
        radius = float(10 ** rng.uniform(-3, 0.5))
        n = 2000
        rho = radius * np.sqrt(rng.uniform(0.0, 1.0, n))
        rho[: n // 2] = radius * (1 - 1e-9)
        c = SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(
            rng.uniform(0, 2 * np.pi, n) * u.rad, rho * u.deg
        )
        ranges = refcat.healpix_cone_ranges(ra, dec, radius)
        assert np.all(ranges[:, 0] < ranges[:, 1]) and np.all(ranges[1:, 0] > ranges[:-1, 1])
        hp = refcat.healpix29(c.ra.deg, c.dec.deg)
        assert refcat._in_ranges(hp, ranges).all(), (ra, dec, radius)


def test_row_groups_skipped_same_rows(tmp_path, sky):
    one = str(tmp_path / "one")
    many = str(tmp_path / "many")
    refcat.write_catalog(one, split(sky, 4), name="rg", row_group_rows=1 << 20)
    refcat.write_catalog(many, split(sky, 4), name="rg", row_group_rows=500)
    assert pq.read_metadata(tmp_path / "many" / "dataset" / "_metadata").num_row_groups > 100
    a, b = refcat.RefCatalog(one, cache_mb=0), refcat.RefCatalog(many, cache_mb=0)
    rng = np.random.default_rng(8)
    for _ in range(12):
        ra, dec = 150.0 + rng.uniform(-2, 2), 30.0 + rng.uniform(-2, 2)
        radius = float(10 ** rng.uniform(-2, 0))
        got = b.cone(ra, dec, radius)
        assert_same_rows(got, a.cone(ra, dec, radius))
        assert set(got["source_id"].to_numpy().tolist()) == brute_ids(sky, ra, dec, radius)
    assert b.stats["row_groups_skipped"] > 10 * b.stats["row_groups_read"]


def test_cache_hits_and_bound(tmp_path, sky):
    url = str(tmp_path / "cat")
    refcat.write_catalog(url, split(sky, 5), name="cache", row_group_rows=2000)
    fresh = refcat.RefCatalog(url, cache_mb=0)
    cached = refcat.RefCatalog(url)
    cones = [(150.0 + dx, 30.0 + dy, 0.35) for dx in (-0.2, 0.2) for dy in (-0.2, 0.2)]
    for cone in cones + cones:
        assert_same_rows(cached.cone(*cone), fresh.cone(*cone))
    assert cached.stats["row_groups_cached"] > cached.stats["row_groups_read"] > 0
    assert fresh.stats["row_groups_cached"] == 0
    tiny = refcat.RefCatalog(url, cache_mb=0.05)  # ~one row group: evicts all the time
    for cone in cones + cones:
        assert_same_rows(tiny.cone(*cone), fresh.cone(*cone))
    assert tiny._cached_bytes <= tiny.cache_bytes
    cols = cached.cone(150.0, 30.0, 0.3, columns=["mag"])
    assert cols.column_names == ["mag"]
    np.testing.assert_array_equal(cols["mag"], fresh.cone(150.0, 30.0, 0.3)["mag"])


def test_writes_are_atomic_commits_properties_last(tmp_path, sky, monkeypatch):
    from ztfluigi import storage

    committed = []
    original = storage.write_bytes

    def recording(target, data):
        committed.append(target.path)
        original(target, data)

    monkeypatch.setattr(storage, "write_bytes", recording)
    monkeypatch.setattr(
        fsspec.spec.AbstractFileSystem, "pipe_file", lambda *a, **k: pytest.fail("pipe_file")
    )
    root = tmp_path / "cat"
    refcat.write_catalog(str(root), split(sky, 5), name="atomic")
    on_disk = sorted(str(p) for p in root.rglob("*") if p.is_file())
    assert sorted(committed) == on_disk  # every file went through the atomic commit
    assert committed[-1] == str(root / "properties")
    assert committed[-2] == str(root / "hats.properties")
    assert not [p for p in on_disk if ".tmp-" in p]


def test_store_without_index_column_and_directory_leaves(tmp_path, sky):
    """Stores written elsewhere: no ``_healpix_29`` column; ``Npix=N/`` directory leaves."""
    root = tmp_path / "cat"
    parts = split(sky, 5)
    refcat.write_catalog(str(root), parts, name="plain")
    for order, npix in parts:
        leaf = root / refcat.partition_relpath(order, npix)
        table = pq.read_table(leaf).drop_columns(["_healpix_29"])
        leaf.unlink()
        leaf.with_suffix("").mkdir()
        pq.write_table(table, leaf.with_suffix("") / "part0.parquet")
    schema = pq.read_schema(root / "dataset" / "_common_metadata").remove(4)
    pq.write_metadata(schema, root / "dataset" / "_common_metadata")
    (root / "dataset" / "_metadata").unlink()
    for name in ("properties", "hats.properties"):
        text = (root / name).read_text().replace("hats_npix_suffix=.parquet", "hats_npix_suffix=/")
        (root / name).write_text(text)
    cat = refcat.RefCatalog(str(root))
    assert cat.healpix_column is None and cat.npix_suffix == "/"
    for ra, dec, radius in ((150.0, 30.0, 0.8), (151.2, 29.1, 0.2), (10.0, 10.0, 1.0)):
        got = cat.cone(ra, dec, radius, columns=["source_id", "mag"])
        assert got.column_names == ["source_id", "mag"]
        assert set(got["source_id"].to_numpy().tolist()) == brute_ids(sky, ra, dec, radius)
