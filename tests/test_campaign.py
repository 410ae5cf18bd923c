"""Campaigns: region-narrowed nights, the campaign entry, its plan, its rebuild after clean-up."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import random
from pathlib import Path

import pyarrow as pa
import pytest

from tests.helpers import build, luigi_settings
from ztfluigi import region
from ztfluigi.cli.plan import plan_campaign
from ztfluigi.tasks.campaign import (
    ApertureCatalogCampaign,
    NightListing,
    RegionParameter,
    selected_quadrants,
)
from ztfluigi.tasks.parameters import InvalidParameter

#: Two autumn nights of the default synthetic schedule (one field per night at n_fields=1):
#: 2019-10-01 observes field 400, outside the box; 2019-10-02 field 399, 16 quadrants inside.
START, STOP = dt.date(2019, 10, 1), dt.date(2019, 10, 2)
BOX = "23,26,-4,-1"


def _index(rows: list[tuple[str, str, int, int, str]]) -> pa.Table:
    names = ("imgtype", "filtercode", "field", "ccdid", "filename")
    cols = list(zip(*rows, strict=True))
    table = {n: pa.array(c) for n, c in zip(names, cols, strict=True)}
    table["obsjd"] = pa.array([2458758.5 + i / 100 for i in range(len(rows))])
    return pa.table(table)


def test_region_parameter_canonical_and_one_line_errors():
    p = RegionParameter()
    assert p.normalize("toy") == "toy"
    assert p.normalize(" -15,65,-5,35") == "345,65,-5,35"
    assert p.normalize("") == ""
    with pytest.raises(InvalidParameter, match="ra_min,ra_max,dec_min,dec_max"):
        p.normalize("345,65")


def test_selected_quadrants_follow_the_footprints():
    sel = region.selection(BOX)
    name = "ztf_20191002317921_000399_zr_c{:02d}_o.fits.fz"
    rows = [("object", "zr", 399, c, name.format(c)) for c in range(1, 17)]
    rows += [("object", "zg", 399, 5, name.replace("zr", "zg").format(5)),
             ("bias", "bi", 0, 5, "ztf_20191002010000_000000_bi_c05_b.fits.fz")]  # fmt: skip
    pairs = selected_quadrants(_index(rows), BOX, "zr")
    expected = [(c, q) for c in range(1, 17) for q in range(1, 5) if sel.selects(399, c, q)]
    assert [(r.ccdid, q) for r, q in pairs] == expected and len(expected) == 16
    assert {r.filtercode for r, _ in selected_quadrants(_index(rows), BOX)} == {"zr", "zg"}
    assert selected_quadrants(_index(rows), "300,310,60,70", "zr") == []
    assert len(selected_quadrants(_index(rows), "", "zr")) == 64


def test_night_listing_one_find_per_night(luigi_store: Path):
    from ztfluigi.tasks.campaign import catalogue_night_dir

    night_dir = Path(catalogue_night_dir(START))
    (night_dir / "123456").mkdir(parents=True)
    (night_dir / "123456" / "a_apcat.parquet").write_bytes(b"")
    (night_dir / "123456" / ".b_apcat.parquet.tmp-0abc").write_bytes(b"")
    listing = NightListing()
    assert listing.exists(START, "x/123456/a_apcat.parquet")
    assert not listing.exists(START, "x/123456/b_apcat.parquet")
    assert not listing.exists(STOP, "x/1/a_apcat.parquet")
    assert listing.n_listings == 2


def _catalogues(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in store.glob("sci/**/*_apcat.parquet")}


@pytest.mark.slow
def test_campaign_builds_the_region_rebuilds_what_is_missing_and_matches_its_plan(tmp_path):
    store = tmp_path / "store"
    with luigi_settings({
        "ztfluigi": {"root": str(store), "archive": "sim"},
        "sim": {"seed": "0", "scale": "32", "n_fields": "1"},
    }):  # fmt: skip
        campaign = ApertureCatalogCampaign(start=START, stop=STOP, region=BOX, filtercode="zr",
                                           window=1)  # fmt: skip
        plan = plan_campaign(campaign).totals()
        assert not campaign.complete()
        assert build(campaign).status.name == "SUCCESS"
        assert campaign.complete()
        built = _catalogues(store)
        # exactly the selected quadrants were built, and the plan counted them
        sel = region.selection(BOX)
        assert len(built) == 16 == plan["quadrants"]["zr"] == plan["catalogues_to_build"]
        for name in built:
            field, ccd, qid = name.split("_")[2], name.split("_")[4], name.split("_")[6]
            assert sel.selects(int(field), int(ccd[1:]), int(qid[1:]))
        assert plan["nights"] == 2 and plan["nights_with_science"] == 2
        assert plan["nights_with_selection"] == 1 and plan["exposures"] == {"zr": 1}
        raw = {p.name for p in store.glob("raw/**/*.fits.fz")}
        assert len(raw) == sum(plan["raw_files"].values())
        assert sum(n.endswith("_o.fits.fz") for n in raw) == plan["raw_files"]["object"] == 4
        assert len(list(store.glob("**/*_ipacheader.parquet"))) == plan["ipac"]["header_tables"]
        assert len(list(store.glob("**/*_mskimg.fits*"))) == plan["ipac"]["masks"] == 16
        masters = list(store.glob("cal/**/*_bias.fits")) + list(store.glob("cal/**/*_flat.fits"))
        masters += list(store.glob("cal/**/*_fp_flatnorm.fits"))
        assert len(masters) == sum(plan["masters"].values()) == 16 + 16 + 1
        after = plan_campaign(campaign).totals()
        assert after["catalogues_present"] == 16 and after["raw_to_download"] == 0
        assert after["masters_to_build"] == 0

        # delete a random subset of the catalogues: exactly those come back, identical
        rng = random.Random(7)
        gone = rng.sample(sorted(built), 5)
        kept_mtimes = {n: (store / n).stat().st_mtime_ns for n in built if n not in gone}
        for name in gone:
            (store / name).unlink()
        assert not campaign.complete()
        state = campaign.state()
        assert state.present == 11 and state.expected == 16 and state.incomplete == [STOP]
        assert build(campaign).status.name == "SUCCESS"
        assert _catalogues(store) == built
        assert all((store / n).stat().st_mtime_ns == t for n, t in kept_mtimes.items())


def _store_index(date: dt.date, rows: list[tuple[str, str, int, int, str]]) -> None:
    from ztfluigi import storage
    from ztfluigi.tasks.raw import RawIndex

    storage.write_parquet(RawIndex(date=date).output(), _index(rows))


def test_state_complete_and_status_from_stored_indexes(luigi_store: Path):
    import io

    from ztfluigi import storage
    from ztfluigi.cli.status import campaign_status
    from ztfluigi.tasks.catalog import catalog_target

    name = "ztf_20191002317921_000399_{}_c{:02d}_o.fits.fz"
    rows = [("object", f, 399, c, name.format(f, c)) for f in ("zr", "zg") for c in (5, 9)]
    _store_index(STOP, rows)
    campaign = ApertureCatalogCampaign(start=START, stop=STOP, region=BOX, filtercode="zr")
    assert not campaign.complete()
    state = campaign.state()
    assert state.unknown == [START] and state.present == 0 and state.expected == 8
    _store_index(START, [("bias", "bi", 0, 1, "ztf_20191001010000_000000_bi_c01_b.fits.fz")])
    from ztfluigi.tasks.raw import night_index

    pairs = selected_quadrants(night_index(STOP), BOX, "zr")
    for r, q in pairs:
        storage.write_bytes(catalog_target(r, q), b"")
    assert campaign.complete() and campaign.state().counts == {START: (0, 0), STOP: (8, 8)}
    catalog_target(*pairs[0]).remove()
    assert not campaign.complete()
    out = io.StringIO()
    missing = campaign_status(ApertureCatalogCampaign(start=START, stop=STOP, region=BOX), out)
    text = out.getvalue()
    # zr: 7 of 8 present; zg: none of its 8 built
    assert missing == 1 + 8
    assert "2019  zr           2        1           8         7         1" in text
    assert "2019  zg           2        1           8         0         8" in text
    assert "2019  zi           2        0           0         0         0" in text
    assert "(1 night listings)" in text  # the night without selected quadrants is not listed


def test_plan_from_the_night_log_equals_the_plan_from_stored_indexes(luigi_store: Path):
    """The plan's vectorised counts (night log, memoised calibrations) match what the task path
    reads: the stored RawIndex through ``selected_quadrants``, ``own_calibrations`` per night."""
    from ztfluigi import calmatch, config, storage
    from ztfluigi.tasks.raw import RawIndex

    nights = [dt.date(2019, 10, 1) + dt.timedelta(days=i) for i in range(4)]
    with luigi_settings({"sim": {"survey": "true", "calib_gaps": "true"}}):
        entry = ApertureCatalogCampaign(start=nights[0], stop=nights[-1], region="toy")
        from_log = plan_campaign(entry)
        assert not any(n.indexed for n in from_log.nights)
        archive = config.get_archive()
        tables = {d: archive.night_metadata(d) for d in nights}
        for d, table in tables.items():
            storage.write_parquet(RawIndex(date=d).output(), table)
        from_index = plan_campaign(entry)
    assert all(n.indexed for n in from_index.nights)
    for a, b in zip(from_log.nights, from_index.nights, strict=True):
        assert dataclasses.replace(a, indexed=True) == b
    for d, n in zip(nights, from_index.nights, strict=True):
        for f in ("zg", "zr", "zi"):
            assert n.quadrants.get(f, 0) == len(selected_quadrants(tables[d], "toy", f))
        own = calmatch.own_calibrations(tables[d], range(1, 17), ["zg", "zr", "zi"],
                                        focal_plane=True)  # fmt: skip
        expect = collections.Counter(k for k, _, _ in own) if n.quadrants else {}
        assert n.masters == dict(expect)
    totals = from_log.totals()
    assert totals["quadrants"]["zr"] > 1000 and totals["nights_with_selection"] >= 2
    assert totals["masters"]["bias"] < 16 * totals["nights_with_selection"]  # calibration gaps
