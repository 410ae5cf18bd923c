"""RawIndex, RawFile and RawFiles through Luigi, on a scratch store."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import luigi
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.helpers import DEMO_DATE, build
from ztfluigi import naming, storage
from ztfluigi.archive import RAW_METADATA_COLUMNS
from ztfluigi.tasks import RawFile, RawFiles, RawIndex
from ztfluigi.tasks.raw import night_index


def test_rawindex_and_raw_files_through_luigi(luigi_store):
    result = build(RawIndex(date=DEMO_DATE))
    assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS
    path = luigi_store / naming.rawindex_relpath(DEMO_DATE)
    table = pq.read_table(path)
    assert set(RAW_METADATA_COLUMNS) <= set(table.column_names)
    assert table.num_rows == 16 * (20 + 55 + 3)
    assert table.schema.metadata[b"ztfluigi.product"] == b"RawIndex"
    flats = table.filter(pc.equal(table["imgtype"], "flat"))
    assert set(flats["ledid"].to_pylist()) == {2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13}

    unit = RawFiles(date=DEMO_DATE, ccdid=4, imgtype="bias", first=10)
    assert not unit.complete()
    assert build(unit).status == luigi.execution_summary.LuigiStatusCode.SUCCESS
    assert unit.complete()
    names = [r.filename for r in unit.branches()]
    assert len(names) == 10
    stored = sorted(p.name for p in (luigi_store / "raw").rglob("*.fits.fz"))
    assert stored == sorted(names)
    # Deleting one file makes the unit incomplete; running again rebuilds exactly that file.
    victim = luigi_store / unit.branches()[3].relpath
    before = {p: p.stat().st_mtime_ns for p in (luigi_store / "raw").rglob("*.fits.fz")}
    content = victim.read_bytes()
    victim.unlink()
    assert not unit.complete()
    build(unit)
    after = {p: p.stat().st_mtime_ns for p in (luigi_store / "raw").rglob("*.fits.fz")}
    assert victim.read_bytes() == content
    assert {p for p in after if after[p] != before.get(p)} == {victim}


def test_single_raw_file_task(luigi_store):
    build(RawIndex(date=DEMO_DATE))
    name = night_index(DEMO_DATE)["filename"][-1].as_py()
    task = RawFile(filename=name)
    assert build(task).status == luigi.execution_summary.LuigiStatusCode.SUCCESS
    assert storage.read_bytes(task.output())[:9] == b"SIMPLE  ="


def test_raw_file_not_in_the_index_fails_cleanly(luigi_store):
    task = RawFile(filename="ztf_20190331123456_000000_bi_c01_b.fits.fz")
    result = build(task)
    assert result.status != luigi.execution_summary.LuigiStatusCode.SUCCESS
    assert not task.output().exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["RawIndex", "--date", "2019-13-45"], "invalid date '2019-13-45'"),
        (["RawIndex", "--date", "2015-01-01"], "outside the ZTF era"),
        (
            ["RawFiles", "--date", "2019-03-31", "--ccdid", "17", "--imgtype", "bias"],
            "not a ZTF CCD id",
        ),
        (["RawFile", "--filename", "foo.fits"], "not a ZTF raw file name"),
    ],
)
def test_bad_parameters_give_a_one_line_error_and_nonzero_exit(tmp_path, args, message):
    proc = subprocess.run(
        [sys.executable, "-m", "luigi", "--module", "ztfluigi", *args, "--local-scheduler"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout


def test_future_dates_are_refused():
    with pytest.raises(ValueError, match="outside the ZTF era"):
        RawIndex(date=dt.date.today() + dt.timedelta(days=400))


def test_status_of_a_narrowed_night_counts_what_its_run_builds(luigi_store):
    """One CCD and filter of a night with its own calibrations: the run builds the 16 CCDs'
    master biases and flats of the filter for its focal-plane level, so status counts them."""
    from ztfluigi.tasks import ApertureCatalog
    from ztfluigi.tasks.inventory import inventory

    assert build(RawIndex(date=DEMO_DATE)).status.name == "SUCCESS"
    entry = ApertureCatalog(date=DEMO_DATE, ccdid=2, filtercode="zr")
    products = inventory(entry, count_run_calibrations=True).products
    count = {k: sum(p.kind == k for p in products) for k in ("bias", "flat", "focal_plane")}
    assert count == {"bias": 16, "flat": 16, "focal_plane": 1}
    assert all("_000000_zr_c" in p.url for p in products if p.kind == "flat")
    # clean of the narrowed night touches only its CCD's calibrations
    own = inventory(entry).products
    assert {p.url for p in own if p.kind == "bias"} == {p.url for p in products
                                                       if p.kind == "bias" and "_c02_" in p.url}
