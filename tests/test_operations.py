"""Operating a store: ``ztfluigi status``, ``ztfluigi clean``, date ranges."""

import datetime as dt

import luigi
import pytest

from tests.helpers import DEMO_DATE, luigi_settings
from ztfluigi import cli, storage
from ztfluigi.tasks import ApertureCatalog, ApertureCatalogRange
from ztfluigi.tasks.inventory import inventory
from ztfluigi.tasks.parameters import InvalidParameter

pytestmark = pytest.mark.slow  # whole synthetic nights built for status/clean

ENTRY = ["ApertureCatalog", "--date", DEMO_DATE.isoformat(), "--filtercode", "zg"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A small night (scale 32, one field, zg) built once for the module."""
    root = tmp_path_factory.mktemp("ops") / "store"
    with luigi_settings({
        "ztfluigi": {"root": str(root), "archive": "sim", "refcat": "sim"},
        "sim": {"seed": "0", "scale": "32", "n_fields": "1"},
    }):  # fmt: skip
        entry = ApertureCatalog(date=DEMO_DATE, filtercode="zg")
        assert luigi.build([entry], local_scheduler=True, workers=2, log_level="WARNING")
        yield entry, root


def status_rows(capsys, *words):
    capsys.readouterr()
    code = cli.main(["status", *words])
    text = capsys.readouterr().out
    rows = {line.split()[0]: tuple(map(int, line.split()[1:])) for line in text.splitlines()
            if line.split() and line.split()[-1].isdigit() and line[0].isalpha()}  # fmt: skip
    return code, rows, text


def test_status_counts_every_kind_with_one_listing_per_directory(store, capsys):
    entry, root = store
    code, rows, text = status_rows(capsys, "--check", *ENTRY)
    assert code == 0
    files = {p.as_posix() for p in root.rglob("*") if p.is_file()}
    expected = {p.url for p in inventory(entry).products if p.kind != "science"}
    assert expected <= files  # every counted output is a real file
    assert rows["catalogue"] == (64, 0, 64)  # one zg exposure × 16 CCDs × 4 quadrants
    assert rows["bias"] == (16, 0, 16) and rows["flat"] == (16, 0, 16)
    assert rows["focal_plane"] == (1, 0, 1) and rows["rawindex"] == (1, 0, 1)
    assert rows["raw"][1] == 0 and rows["raw"][0] == sum(".fits.fz" in f for f in files)
    assert "science" not in rows  # virtual, nothing stored
    listings = int(text.split("(")[-1].split()[0])
    directories = {f.rpartition("/")[0] for f in expected}
    assert listings <= len(directories)


def test_clean_is_a_dry_run_until_delete_and_run_again_rebuilds(store, capsys):
    entry, root = store
    before = {p.as_posix(): p.read_bytes() for p in root.rglob("*.fits.fz")}
    narrowed = [*ENTRY, "--ccdid", "7"]
    capsys.readouterr()
    assert cli.main(["clean", "--kind", "raw", "--kind", "catalogue", *narrowed]) == 0
    dry = capsys.readouterr().out
    assert "would remove" in dry and "dry run" in dry
    assert {p.as_posix() for p in root.rglob("*.fits.fz")} == set(before)  # nothing removed
    assert cli.main(["clean", "--kind", "raw", "--delete", "-v", *narrowed]) == 0
    removed = [line.strip() for line in capsys.readouterr().out.splitlines()
               if line.startswith("  ")]  # fmt: skip
    assert removed and all("_c07_" in url and url.endswith(".fits.fz") for url in removed)
    assert not any(storage.get_target(url).exists() for url in removed)
    code, rows, _ = status_rows(capsys, "--check", *ENTRY)
    assert code == 1 and rows["raw"][1] == len(removed) and rows["catalogue"][1] == 0
    assert luigi.build([entry], local_scheduler=True, workers=1, log_level="WARNING")
    assert all(storage.read_bytes(url) == before[url] for url in removed)  # identical again
    code, rows, _ = status_rows(capsys, "--check", *ENTRY)
    assert code == 0


def test_clean_keeps_raw_frames_whose_products_are_missing(store, capsys):
    entry, root = store
    catalogue = next(p for p in inventory(entry).products if p.kind == "catalogue")
    content = storage.read_bytes(catalogue.url)
    storage.get_target(catalogue.url).remove()
    try:
        raw_name = catalogue.url.rpartition("/")[2].replace("ztfin2p3_", "ztf_")
        raw_name = raw_name.rsplit("_q", 1)[0] + ".fits.fz"
        capsys.readouterr()
        cli.main(["clean", "--kind", "raw", "-v", *ENTRY])
        listed = capsys.readouterr().out
        assert raw_name not in listed  # its catalogue is missing: keep it
        cli.main(["clean", "--kind", "raw", "-v", "--even-unused", *ENTRY])
        assert raw_name in capsys.readouterr().out
        cli.main(["clean", "--kind", "raw", "--older-than", "100000", *ENTRY])
        assert "nothing to remove" in capsys.readouterr().out
    finally:
        storage.write_bytes(storage.get_target(catalogue.url), content)


def test_entry_errors_are_one_line(capsys):
    assert cli.main(["status", "NoSuchTask", "--date", "2019-03-31"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ztfluigi: error: No task NoSuchTask") and err.count("\n") == 1
    assert cli.main(["status", "ApertureCatalog", "--date", "2019-02-30"]) == 2
    assert "invalid date '2019-02-30'" in capsys.readouterr().err
    assert cli.main(["status"]) == 2


def test_date_range_is_one_entry_per_night(store):
    entry, _ = store
    day = dt.timedelta(days=1)
    rng = ApertureCatalogRange(start=DEMO_DATE - day, stop=DEMO_DATE + day, filtercode="zg")
    assert [t.date for t in rng.requires()] == [DEMO_DATE - day, DEMO_DATE, DEMO_DATE + day]
    one = ApertureCatalogRange(start=DEMO_DATE, stop=DEMO_DATE, filtercode="zg")
    assert one.requires() == [entry] and one.complete()
    with pytest.raises(InvalidParameter, match="empty date range"):
        ApertureCatalogRange(start=DEMO_DATE, stop=DEMO_DATE - day).requires()


def test_date_range_skips_nights_closed_by_weather(tmp_path):
    """Nights without science (dome closed) are indexed once, then skipped; the range completes."""
    from ztfluigi.tasks.raw import night_index

    with luigi_settings({
        "ztfluigi": {"root": str(tmp_path / "store"), "archive": "sim", "refcat": "sim"},
        "sim": {"seed": "0", "scale": "32", "n_fields": "1", "weather_losses": "1.0"},
    }):  # fmt: skip
        day = dt.timedelta(days=1)
        rng = ApertureCatalogRange(start=DEMO_DATE, stop=DEMO_DATE + day, ccdid=3,
                                   filtercode="zg")  # fmt: skip
        assert len(rng.requires()) == 2  # not indexed yet: each night is looked at
        assert luigi.build([rng], local_scheduler=True, workers=2, log_level="WARNING")
        for night in (DEMO_DATE, DEMO_DATE + day):
            imgtypes = set(night_index(night)["imgtype"].to_pylist())
            assert imgtypes == {"bias", "flat"}  # calibrations taken, no science
        assert rng.requires() == [] and rng.complete()
        assert not list((tmp_path / "store").rglob("*apcat.parquet"))
