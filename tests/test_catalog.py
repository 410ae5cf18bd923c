"""The whole chain: raw → calibrations → virtual science quadrants → aperture catalogues."""

import json

import luigi
import numpy as np
import pytest

from tests import catalogue_regression
from tests.helpers import DEMO_DATE, build, luigi_settings
from ztfluigi import storage
from ztfluigi.sim import psf
from ztfluigi.tasks import (
    ApertureCatalog,
    ApertureCatalogUnit,
    QuadrantCatalog,
    ScienceQuadrant,
    SimTruth,
)
from ztfluigi.tasks.catalog import catalog_target
from ztfluigi.tasks.science import MissingInput

pytestmark = pytest.mark.slow  # a whole synthetic night (scale 8, three fields)


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """One synthetic night (scale 8, three fields, zr) built once for the module."""
    root = tmp_path_factory.mktemp("night") / "store"
    settings = catalogue_regression.SETTINGS
    with luigi_settings({**settings, "ztfluigi": {**settings["ztfluigi"], "root": str(root)}}):
        entry = ApertureCatalog(date=DEMO_DATE, filtercode="zr")
        result = build(entry, SimTruth(date=DEMO_DATE), workers=2)
        yield entry, result, root


def units_of(entry):
    return [t for t in entry.requires() if isinstance(t, ApertureCatalogUnit)]


def joined(entry):
    """Catalogue rows joined with the simulator's truth (source, exposure, quadrant)."""
    truth = storage.read_parquet(SimTruth(date=DEMO_DATE).output()["stars"])
    columns = [truth[c].to_pylist() for c in ("filefracday", "ccdid", "qid", "source_id")]
    key = {k: i for i, k in enumerate(zip(*columns, strict=True))}
    rows = []
    for unit in units_of(entry):
        for (rawname, qid), target in zip(unit.branches(), unit.output(), strict=True):
            cat = storage.read_parquet(target)
            for i, s in enumerate(cat["source_id"].to_pylist()):
                j = key[(int(rawname.filefracday), rawname.ccdid, qid, s)]
                rows.append((cat, i, j, rawname.ccdid))
    return truth, rows


def test_night_builds_every_quadrant_catalogue(night):
    entry, result, root = night
    assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS
    assert entry.complete()
    units = units_of(entry)
    n = sum(len(u.output()) for u in units)
    assert n == 3 * 16 * 4  # three zr exposures, 16 CCDs × 4 quadrants
    cat = storage.read_parquet(units[0].output()[0])
    meta = {k.decode(): v.decode() for k, v in cat.schema.metadata.items()}
    assert meta["bias_night"] == meta["flat_night"] == "2019-03-31"
    assert meta["raw_file"].endswith("_zr_c01_o.fits.fz") and float(meta["epoch_mjd"]) > 58573
    assert meta["radii"] == "[3, 4, 5, 6, 7, 8, 9, 10, 11, 12]"
    for col in ("source_id", "ra", "dec", "x", "y", "phot_g_mean_mag", "f_0", "f_9_e", "isolated"):
        assert col in cat.column_names


def test_demo_ccd_catalogues_are_unchanged(night):
    """The demo night's CCD 7 catalogues equal the golden digests taken before the speed work of
    issue #15 (tests/catalogue_regression.py; regenerate only for an intended change)."""
    bad = catalogue_regression.golden_differences(catalogue_regression.demo_ccd_catalogues())
    assert not bad, json.dumps(bad, indent=1)[:4000]


def test_photometry_recovers_the_true_counts(night):
    entry, _, _ = night
    truth, rows = joined(entry)
    flux, err, true, ccd = [], [], [], []
    for cat, i, j, ccdid in rows:
        if cat["f_9_f"][i].as_py() != 0 or not cat["isolated"][i].as_py():
            continue
        counts = truth["counts"][j].as_py()
        if not 1e3 < counts < 4e5:  # well measured and unsaturated
            continue
        ee = psf.encircled_energy(12.0, truth["fwhm_pix"][j].as_py())
        flux.append(cat["f_9"][i].as_py() / ee)
        err.append(cat["f_9_e"][i].as_py() / ee)
        true.append(counts)
        ccd.append(ccdid)
    flux, err, true, ccd = map(np.array, (flux, err, true, ccd))
    assert flux.size >= 300, flux.size
    pull = (flux - true) / err
    chi2 = np.mean(pull**2)
    print(
        f"isolated stars: {flux.size}, chi2/dof {chi2:.3f}, pull mean {pull.mean():.3f} "
        f"std {pull.std():.3f}, median ratio {np.median(flux / true):.5f}"
    )
    # The quoted errors describe the scatter (the background-estimation error, not in f_k_e,
    # adds a few per cent) ...
    assert 0.9 < pull.std() < 1.15
    # ... and unbiased: the star-masked background leaves no faint-star light (sep's background
    # of the reference settings left ≈ 0.05 DN/pixel, −0.2σ at r = 12 px)
    assert abs(pull.mean()) < 0.1
    assert abs(np.median(flux / true) - 1) < 0.005
    # No trend across the focal plane: inner CCDs (6, 7, 10, 11) vs outer ones.
    inner = np.isin(ccd, [6, 7, 10, 11])
    if inner.sum() >= 3 and (~inner).sum() >= 3:
        d = np.mean(pull[inner]) - np.mean(pull[~inner])
        assert abs(d) < 4 * np.sqrt(1 / inner.sum() + 1 / (~inner).sum())


def test_catalogue_positions_are_the_true_positions(night):
    entry, _, _ = night
    truth, rows = joined(entry)
    dx = [cat["x_ipac"][i].as_py() - 1 - truth["x"][j].as_py() for cat, i, j, _ in rows]
    dy = [cat["y_ipac"][i].as_py() - 1 - truth["y"][j].as_py() for cat, i, j, _ in rows]
    assert len(dx) > 100
    assert np.max(np.abs(dx)) < 1e-3 and np.max(np.abs(dy)) < 1e-3


def stored_products(entry):
    """Every stored product the night's entry stands for, by kind (targets)."""
    from ztfluigi.tasks.inventory import inventory

    kinds = {"catalogue": [], "raw": [], "bias": [], "flat": [], "focal_plane": [],
             "ipacheader": [], "mask": []}  # fmt: skip
    for product in inventory(entry).products:
        if product.kind in kinds:
            kinds[product.kind].append(storage.get_target(product.url))
    return kinds


def test_regeneration_rebuilds_exactly_the_deleted_outputs(night):
    """Delete a random subset of every stored kind (catalogues; raw science, bias and flat frames;
    IPAC header tables and masks; master biases and flats; the focal-plane level); the same
    command rebuilds exactly those, identical to the first run (raw and IPAC files byte for byte,
    calibration pixels bit for bit, catalogues and header tables equal)."""
    entry, _, root = night
    kinds = stored_products(entry)
    rng = np.random.default_rng(6)
    raws = kinds.pop("raw")
    victims = [raws[i] for i in rng.choice(len(raws), 6, replace=False)]
    for imgtype in ("_b.fits", "_f.fits", "_o.fits"):  # at least one frame of each raw type
        of_type = [t for t in raws if imgtype in t.path and t not in victims]
        victims.append(of_type[rng.integers(len(of_type))])
    for targets in kinds.values():
        count = max(1, len(targets) // 10)
        victims += [targets[i] for i in rng.choice(len(targets), count, replace=False)]
    print("deleting", *sorted(t.path.rsplit("/", 1)[-1] for t in victims), sep="\n  ")
    assert {v.path for v in victims} <= {p.as_posix() for p in root.rglob("*")}
    before = {t.path: storage.read_bytes(t) for t in victims}
    for t in victims:
        t.remove()
    stamps = {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert not entry.complete()
    assert build(entry, workers=2).status == luigi.execution_summary.LuigiStatusCode.SUCCESS
    after = {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    rebuilt = {p for p in after if after[p] != stamps.get(p)}
    assert rebuilt == {t.path for t in victims}
    for t in victims:
        if t.path.endswith((".fits.fz", ".fits.gz")):
            assert storage.read_bytes(t) == before[t.path]
        elif t.path.endswith(".fits"):
            old, new = fits_hdus(before[t.path]), storage.read_fits(t)
            for a, b in zip(old, new, strict=True):  # pixels and tables bit for bit
                assert (a.data is None and b.data is None) or (
                    np.asarray(a.data).tobytes() == np.asarray(b.data).tobytes())
        else:
            assert storage.read_parquet(t).equals(parquet_table(before[t.path]))
    # A single quadrant stays addressable.
    unit = next(t for t in entry.requires() if isinstance(t, ApertureCatalogUnit))
    rawname, qid = unit.branches()[0]
    one = QuadrantCatalog(filename=rawname.filename, qid=qid)
    assert one.complete() and one.output().path == catalog_target(rawname, qid).path


def fits_hdus(content):
    from astropy.io import fits

    return fits.HDUList.fromstring(content)


def parquet_table(content):
    import io

    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(content))


def test_virtual_science_quadrant_is_what_the_catalogue_measured(night):
    """ScienceQuadrant stores nothing, is complete when its inputs are, and load() rebuilds the
    exact image the unit measured: photometry of the loaded image equals the stored catalogue."""
    from ztfluigi import catalogue, config, refcat
    from ztfluigi.tasks.catalog import refcat_url
    from ztfluigi.tasks.science import load_calibration, stored_calibration

    entry, _, root = night
    unit = next(t for t in entry.requires() if isinstance(t, ApertureCatalogUnit))
    rawname, qid = unit.branches()[5]
    task = ScienceQuadrant(filename=rawname.filename, qid=qid)
    assert task.complete()
    assert not list(root.rglob("*sciimg*"))  # virtual: never stored by default
    sci = task.output().load()
    assert sci.data.dtype == np.float32 and sci.data.shape == sci.mask.shape
    assert sci.header["QID"] == qid and sci.header["RAWFILE"] == rawname.filename
    assert "MAGZP" not in sci.header and "SATURATE" in sci.header  # trap 13
    calibration = load_calibration(*stored_calibration(rawname.date, rawname.ccdid,
                                                       rawname.filtercode))  # fmt: skip
    url = refcat_url(rawname.date)
    again = catalogue.quadrant_catalogue(sci, rawname, qid, calibration, refcat.RefCatalog(url),
                                         url, config.get_archive().name,
                                         config.processing_specs().correction)  # fmt: skip
    stored = storage.read_parquet(catalog_target(rawname, qid))
    assert again.equals(stored)


def test_single_quadrant_with_stored_science_image(tmp_path):
    """QuadrantCatalog builds one catalogue; store_science caches the science quadrant as FITS."""
    from astropy.wcs import WCS

    from ztfluigi import naming
    from ztfluigi.tasks import RawIndex
    from ztfluigi.tasks.raw import night_index

    root = tmp_path / "store"
    with luigi_settings({
        "ztfluigi": {"root": str(root), "archive": "sim", "refcat": "sim", "store_science": "true"},
        "sim": {"seed": "3", "scale": "32", "n_fields": "1"},
    }):  # fmt: skip
        assert build(RawIndex(date=DEMO_DATE), workers=2).status.name == "SUCCESS"
        index = night_index(DEMO_DATE)
        name = next(f for f in index["filename"].to_pylist() if f.endswith("_c09_o.fits.fz"))
        task = QuadrantCatalog(filename=name, qid=3)
        virtual = ScienceQuadrant(filename=name, qid=3)
        assert not virtual.complete()  # no calibration built yet
        with pytest.raises(MissingInput, match="not in the raw store yet"):
            virtual.output().load()
        assert build(task, workers=2).status.name == "SUCCESS"
        assert virtual.complete() and virtual.output().cached()
        rawname = naming.parse_raw_filename(name)
        others = [catalog_target(rawname, q) for q in (1, 2, 4)]
        assert task.output().exists() and not any(t.exists() for t in others)
        rel = naming.science_quadrant_relpath(rawname, 3, "sciimg.fits", prefix="ztfin2p3")
        hdu = storage.read_fits(str(root / rel))[0]
        assert hdu.data.shape == (96, 96) and hdu.header["QID"] == 3
        assert "IPMAGZP" in hdu.header and "MAGZP" not in hdu.header  # trap 13
        assert hdu.header["BIASNGHT"] == "20190331"
        WCS(hdu.header)  # the IPAC TPV solution survives
        mask = storage.read_fits(str(root / rel.replace("sciimg", "mskimg")))[0]
        assert mask.data.dtype.kind == "i"
        loaded = virtual.output().load()  # now read from the stored copy
        assert np.array_equal(loaded.data, hdu.data, equal_nan=True)
        assert np.array_equal(loaded.mask, mask.data)


def test_a_night_reads_as_one_dataset(night):
    """Rows carry their exposure identity: a night's catalogues are one pyarrow dataset, filtered
    without parsing file names."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from ztfluigi.catalogue import EXPOSURE_COLUMNS

    entry, _, root = night
    # the IRSA tree also holds the IPAC masks (raw store = root here): select the catalogues
    night_set = ds.dataset(sorted(map(str, root.glob("sci/*/*/*/*_apcat.parquet"))),
                           format="parquet")  # fmt: skip
    assert set(EXPOSURE_COLUMNS) <= set(night_set.schema.names)
    ccd1 = night_set.to_table(filter=(pc.field("ccdid") == 1) & (pc.field("qid") == 2))
    unit = next(u for u in entry.requires() if u.ccdid == 1)
    files = [t for (r, q), t in zip(unit.branches(), unit.output(), strict=True) if q == 2]
    assert ccd1.num_rows == sum(storage.read_parquet(t).num_rows for t in files) > 0
    assert set(ccd1["rcid"].to_pylist()) == {1} and set(ccd1["filtercode"].to_pylist()) == {"zr"}
    one = storage.read_parquet(files[0])
    assert abs(one["obsmjd"][0].as_py() - float(one.schema.metadata[b"epoch_mjd"])) < 1e-6


def test_catalogue_files_are_trimmed_without_losing_a_value(night):
    """Footer statistics only on the columns queries filter on, dictionaries only where values
    repeat: smaller files than pyarrow's defaults, the same table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ztfluigi.catalogue import FILTER_COLUMNS

    _, _, root = night
    path = max(root.glob("sci/*/*/*/*_apcat.parquet"), key=lambda p: p.stat().st_size)
    stored = pq.ParquetFile(path)
    table = stored.read()
    defaults = pa.BufferOutputStream()
    pq.write_table(table, defaults, write_page_checksum=True)
    assert path.stat().st_size < 0.9 * defaults.getvalue().size
    assert pq.read_table(pa.BufferReader(defaults.getvalue())).equals(table)
    row_group = stored.metadata.row_group(0)
    with_stats = {row_group.column(i).path_in_schema for i in range(row_group.num_columns)
                  if row_group.column(i).is_stats_set}  # fmt: skip
    assert with_stats == set(FILTER_COLUMNS) & set(table.column_names)
