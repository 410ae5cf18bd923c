"""The pipeline end to end through HTTP: ``archive = http://127.0.0.1:PORT`` gives what sim gives.

One CCD and filter of the synthetic night is built twice, in two stores: from the synthetic
archive directly, and from the IRSA-compatible server in front of the same synthetic archive
(metadata by IBE search, LEDs by ranged reads, raw files and IPAC products by download). The
focal-plane level needs all 16 CCDs' master flats, so the HTTP store starts with the other 15
master flats of the first run; everything of the chosen CCD — RawIndex, raw files, master bias
and flat, focal-plane level, catalogues — is built from the HTTP archive and compared. The
synthetic Gaia catalogue is a product of ``archive = sim`` only: the HTTP run reads the one the
first run wrote, as a configured ``refcat`` store.
"""

import shutil
import time
from types import SimpleNamespace

import luigi
import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from tests.helpers import DEMO_DATE, luigi_settings, reference_metaheader
from ztfluigi import ipac
from ztfluigi.archive.server import DATA_PREFIX, SEARCH_PREFIX, IrsaServer
from ztfluigi.archive.sim import SimArchive
from ztfluigi.sim.schedule import SimConfig
from ztfluigi.tasks import ApertureCatalog
from ztfluigi.tasks.catalog import refcat_url

pytestmark = pytest.mark.slow  # one CCD-night over HTTP and from the simulator

CCD, FILTER = 6, "zr"
SIM = {"seed": "0", "scale": "32", "n_fields": "1"}


def build(root, archive, refcat="sim"):
    """Run the narrowed night; (result, seconds, reference catalogue used)."""
    settings = {"ztfluigi": {"root": str(root), "archive": archive, "refcat": refcat}, "sim": SIM}
    with luigi_settings(settings):
        t0 = time.monotonic()
        result = luigi.build([ApertureCatalog(date=DEMO_DATE, ccdid=CCD, filtercode=FILTER)],
                             local_scheduler=True, workers=1, log_level="WARNING",
                             detailed_summary=True)  # fmt: skip
        return result, time.monotonic() - t0, refcat_url(DEMO_DATE)


def files(root, pattern):
    return {p.relative_to(root).as_posix(): p for p in root.rglob(pattern) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("chain")
    sim_root, http_root = base / "sim", base / "http"
    sim_result, sim_seconds, refcat = build(sim_root, "sim")
    for rel, path in files(sim_root, "*_l00_flat.fits").items():
        if f"_c{CCD:02d}_" not in path.name:
            (http_root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, http_root / rel)
    archive = SimArchive(SimConfig(seed=0, scale=32, n_fields=1))
    with IrsaServer(archive) as server:
        http_result, http_seconds, _ = build(http_root, server.url, refcat)
        requests = list(server.requests)
        url = server.url
    yield SimpleNamespace(sim_root=sim_root, http_root=http_root, sim_result=sim_result,
                          http_result=http_result, requests=requests, url=url,
                          seconds=(sim_seconds, http_seconds))  # fmt: skip


def test_both_runs_succeed(runs):
    ok = luigi.execution_summary.LuigiStatusCode.SUCCESS
    assert runs.sim_result.status == ok, runs.sim_result.summary_text
    assert runs.http_result.status == ok, runs.http_result.summary_text


def test_the_night_index_is_the_same(runs):
    (rel, path), = files(runs.http_root, "*_rawindex.parquet").items()
    got, expected = pq.read_table(path), pq.read_table(runs.sim_root / rel)
    assert got.replace_schema_metadata(None).equals(expected.replace_schema_metadata(None))
    assert got.schema.metadata[b"ztfluigi.archive"].decode() == runs.url


def test_raw_files_are_byte_identical(runs):
    got = files(runs.http_root / "raw", "*.fits.fz")
    # the last 10 biases, the 20 zr flats (4 LEDs x 5) and the zr science exposure of the CCD
    assert len(got) == 10 + 20 + 1
    assert all(f"_c{CCD:02d}_" in rel for rel in got)
    for rel, path in got.items():
        assert path.read_bytes() == (runs.sim_root / "raw" / rel).read_bytes(), rel


def test_calibrations_are_the_same(runs):
    got = files(runs.http_root / "cal", "*.fits")
    built = {rel for rel in got if f"_c{CCD:02d}_" in rel or "fp_flatnorm" in rel}
    assert len(built) == 3  # master bias, master flat, focal-plane level
    for rel in built:
        with fits.open(got[rel]) as a, fits.open(runs.sim_root / "cal" / rel) as b:
            assert len(a) == len(b)
            for ha, hb in zip(a, b, strict=True):
                if ha.data is None:
                    continue
                if isinstance(ha, fits.BinTableHDU):
                    assert ha.data.tobytes() == hb.data.tobytes(), rel
                else:
                    np.testing.assert_array_equal(ha.data, hb.data, err_msg=rel)
            for key in ("FLTNORM", "FLTNORM_FP", "NFRAMES"):
                assert a[0].header.get(key) == b[0].header.get(key), (rel, key)


def test_catalogues_are_the_same(runs):
    got = files(runs.http_root / "sci", "*_apcat.parquet")
    assert len(got) == 4  # one science exposure x 4 quadrants
    assert set(got) == set(files(runs.sim_root / "sci", "*_apcat.parquet"))
    rows = 0
    for rel, path in got.items():
        a, b = pq.read_table(path), pq.read_table(runs.sim_root / "sci" / rel)
        assert a.replace_schema_metadata(None).equals(b.replace_schema_metadata(None)), rel
        meta_a = {k.decode(): v.decode() for k, v in a.schema.metadata.items()}
        meta_b = {k.decode(): v.decode() for k, v in b.schema.metadata.items()}
        assert meta_a.pop("archive") == runs.url and meta_b.pop("archive").startswith("sim(")
        # the content digest covers the metadata, so it differs by the archive's name alone
        assert meta_a.pop("ztfluigi.sha256") != meta_b.pop("ztfluigi.sha256")
        assert meta_a == meta_b  # same raw file, calibration files, refcat, epoch, versions
        rows += a.num_rows
    assert rows > 0


def test_what_went_over_http(runs):
    kinds = {"search": 0, "led": 0, "raw": 0, "sciimg": 0, "mskimg": 0}
    for r in runs.requests:
        assert r.status in (200, 206) and r.fault == ""
        if r.path.startswith(SEARCH_PREFIX):
            kinds["search"] += 1
        elif r.path.startswith(DATA_PREFIX + "raw/"):
            kinds["led" if r.range else "raw"] += 1
        else:
            kinds[r.path.rsplit("_", 1)[1].split(".")[0]] += 1
    # one search, one ranged header read per flat exposure (55), the CCD's 31 raw files, and
    # per science quadrant a ranged sciimg header read and a mask download
    assert kinds == {"search": 1, "led": 55, "raw": 31, "sciimg": 4, "mskimg": 4}
    print(f"HTTP requests {kinds}; sim run {runs.seconds[0]:.1f} s (16 CCDs' flats), "
          f"HTTP run {runs.seconds[1]:.1f} s (one CCD)")


def test_catalogues_rebuild_offline_from_the_stores(runs, tmp_path):
    """Stored raw files, calibrations and IPAC headers/masks suffice: with the archive gone
    (the fixture's server is stopped), deleted catalogues come back identical."""
    before = {rel: pq.read_table(p) for rel, p in files(runs.http_root, "*_apcat.parquet").items()}
    for path in files(runs.http_root, "*_apcat.parquet").values():
        path.unlink()
    result, _, _ = build(runs.http_root, runs.url, refcat_url_of(runs))
    assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, result.summary_text
    after = {rel: pq.read_table(p) for rel, p in files(runs.http_root, "*_apcat.parquet").items()}
    assert after.keys() == before.keys()
    assert all(after[rel].equals(before[rel]) for rel in before)


@pytest.mark.parametrize("headers", ["ipacheader", "reference metaheader"])
def test_a_ztfdata_mirror_with_ipac_files_needs_no_download(runs, tmp_path, headers):
    """Raw files, the night index and the IPAC headers and masks in a ``$ZTFDATA``-layout
    mirror (``raw_root``): a fresh product store is built with zero downloads. The headers may
    be ztfluigi's tables or the reference pipeline's ``metaheader_{YYYYMM}.parquet``."""
    mirror, products = tmp_path / "ztfdata", tmp_path / "products"
    patterns = ["*.fits.fz", "*_rawindex.parquet", "*_mskimg.fits*"]
    if headers == "ipacheader":
        patterns.append("*_ipacheader.parquet")
    else:
        (path,) = files(runs.http_root, "*_ipacheader.parquet").values()
        table = pq.read_table(path)
        (mirror / "meta" / "metaheader").mkdir(parents=True)
        pq.write_table(reference_metaheader(ipac.headers_from_table(table)),
                       mirror / "meta" / "metaheader" / f"metaheader_{DEMO_DATE:%Y%m}.parquet")
    for pattern in patterns:
        for rel, path in files(runs.http_root, pattern).items():
            (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, mirror / rel)
    for rel, path in files(runs.sim_root, "*_l00_flat.fits").items():
        if f"_c{CCD:02d}_" not in path.name:
            (products / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, products / rel)
    archive = SimArchive(SimConfig(seed=0, scale=32, n_fields=1))
    settings = {"ztfluigi": {"root": str(products), "raw_root": str(mirror)}, "sim": SIM}
    with IrsaServer(archive) as server, luigi_settings(settings):
        result, _, _ = build(products, server.url, refcat_url_of(runs))
        requests = list(server.requests)
    assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, result.summary_text
    assert [r.path for r in requests if r.path.startswith(DATA_PREFIX)] == []
    got = files(products, "*_apcat.parquet")
    assert len(got) == 4
    for rel, path in got.items():
        assert pq.read_table(path).equals(pq.read_table(runs.http_root / rel))


def refcat_url_of(runs) -> str:
    """The synthetic Gaia store the first (sim) run wrote: a configured refcat for HTTP runs."""
    return str(next(runs.sim_root.glob("refcat/*/*")))
