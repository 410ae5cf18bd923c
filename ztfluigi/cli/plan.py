"""``ztfluigi plan ApertureCatalogCampaign …``: what a campaign would fetch, build and cost, without
building anything.

Night metadata come from the stored RawIndex when there is one, else from the archive (the
synthetic archive computes its night log on the spot; IRSA answers one query per night). The
counts are those the campaign's tasks then build; bytes and CPU-hours are projections at real
size from measured per-product costs (:data:`COSTS`, each with its source).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from typing import TextIO

import numpy as np
import pyarrow as pa

#: Measured costs at real size (1 core), each (low, high) with its source.
COSTS: dict[str, tuple[float, float, str]] = {
    "quadrant_cpu_s": (0.28, 0.66, "bench/README.md, 2026-12-02: bench_quadrant raw -> catalogue"
                       " per quadrant (0.279) .. bench_night_cpu everything a quadrant costs at"
                       " night level: its raw file's verification, IPAC inputs, scheduling (0.66)"),
    "bias_cpu_s": (7.7, 7.7 + 3.6, "bench_night_cpu (scale 2 x 4): MasterBias 7.7 CPU-s per CCD;"
                   " + the verification of its 20 raw biases at download (0.18 s a frame)"),
    "flat_cpu_s": (17.0, 17.0 + 3.6, "bench_night_cpu (scale 2 x 4): MasterFlat 17.0 CPU-s per"
                   " CCD and filter; + the verification of its 20 raw flats at download"),
    "raw_bytes": (33.5e6, 33.5e6, "a real raw CCD file, RICE_1: spec/perf_anchors.md"),
    "master_bytes": (151.5e6, 151.5e6, "float32 6160x6144 FITS (the stored scale-32 master "
                     "is 155,520 bytes: 192x192x4 + 2 header blocks)"),
    "catalogue_bytes": (0.5e6, 2.1e6, "4360 stars x 61 columns (bench_quadrant's quadrant), "
                        "parquet compressed .. 8 bytes per value"),
}  # fmt: skip


@dataclasses.dataclass
class NightPlan:
    """What one night of a campaign stands for."""

    date: dt.date
    indexed: bool  #: its RawIndex is stored
    science_exposures: int = 0  #: science exposures in the campaign's filter(s)
    exposures: dict[str, int] = dataclasses.field(default_factory=dict)  #: with a selected quadrant
    quadrants: dict[str, int] = dataclasses.field(default_factory=dict)  #: selected, per band
    present: int = 0  #: selected catalogues already stored
    raw: dict[str, int] = dataclasses.field(default_factory=dict)  #: needed raw files per imgtype
    raw_present: int = 0
    masters: dict[str, int] = dataclasses.field(default_factory=dict)  #: own masters per kind
    masters_present: int = 0
    ipac: dict[str, int] = dataclasses.field(default_factory=dict)  #: header tables, masks


@dataclasses.dataclass
class NightRows:
    """A night's raw files as columns, one row per CCD file (what the plan counts).

    File names are made only for the rows asked (:meth:`filenames`): a plan over a fresh store
    needs none, and a survey night has ≈ 14,000 files.
    """

    imgtype: np.ndarray
    filtercode: np.ndarray
    field: np.ndarray
    ccdid: np.ndarray
    obsjd: np.ndarray
    ledid: np.ndarray | None  #: None when the metadata have no LED column
    filenames: Callable[[np.ndarray], list[str]]  #: names of the rows at these positions

    @classmethod
    def from_table(cls, table: pa.Table) -> NightRows:
        """From a RawIndex (or the archive's night metadata)."""

        def col(name: str) -> np.ndarray:
            return table[name].to_numpy(zero_copy_only=False)

        has_led = "ledid" in table.column_names
        return cls(col("imgtype"), col("filtercode"), col("field"), col("ccdid"), col("obsjd"),
                   col("ledid") if has_led else None,
                   lambda rows: table["filename"].take(pa.array(rows)).to_pylist())  # fmt: skip

    @classmethod
    def from_exposures(cls, exposures: list) -> NightRows:
        """From the synthetic night log: every exposure reads the 16 CCDs."""
        from ztfluigi import camera

        n_ccd = camera.N_CCD

        def col(attr: str, dtype: type) -> np.ndarray:
            return np.repeat(np.array([getattr(e, attr) for e in exposures], dtype=dtype), n_ccd)

        def filenames(rows: np.ndarray) -> list[str]:
            return [exposures[i // n_ccd].raw_name(i % n_ccd + 1).filename for i in rows.tolist()]

        ccdid = np.tile(np.arange(1, n_ccd + 1), len(exposures))
        return cls(col("imgtype", str), col("filtercode", str), col("field", int), ccdid,
                   col("obsjd", float), col("led", int), filenames)  # fmt: skip

    def calibration_table(self, rows: np.ndarray) -> pa.Table:
        """The columns :func:`ztfluigi.calmatch.own_calibrations` reads, for these rows."""
        cols = {"imgtype": self.imgtype[rows], "ccdid": self.ccdid[rows],
                "filtercode": self.filtercode[rows]}  # fmt: skip
        if self.ledid is not None:
            cols["ledid"] = self.ledid[rows]
        return pa.table({k: pa.array(v) for k, v in cols.items()})


def night_metadata(date: dt.date, indexed: bool) -> NightRows:
    """The night's raw files: its stored RawIndex if ``indexed``, else the archive's metadata
    (the synthetic archive's night log directly, without per-file conditions)."""
    from ztfluigi import config
    from ztfluigi.archive.sim import SimArchive
    from ztfluigi.tasks.raw import night_index

    if indexed:
        return NightRows.from_table(night_index(date))
    archive = config.get_archive()
    if isinstance(archive, SimArchive):
        return NightRows.from_exposures(list(archive.exposures(date).values()))
    return NightRows.from_table(archive.night_metadata(date))


class _OwnCalibrations:
    """:func:`ztfluigi.calmatch.own_calibrations` memoised on the night's frame counts.

    The answer depends only on the number of frames per (image type, CCD, filter, LED) and on
    whether LEDs are known, which most nights share: a five-year plan asks ≈ 2,000 times for a
    handful of distinct answers.
    """

    def __init__(self, filters: list[str]) -> None:
        self.filters = filters
        self._known: dict[tuple, list] = {}

    def __call__(self, night: NightRows, rows: np.ndarray
                 ) -> list[tuple[str, int | None, str | None]]:  # fmt: skip
        from ztfluigi import calmatch

        leds = night.ledid[rows].tolist() if night.ledid is not None else [None] * rows.size
        counts = collections.Counter(zip(night.imgtype[rows].tolist(), night.ccdid[rows].tolist(),
                                         night.filtercode[rows].tolist(), leds, strict=True))
        key = (night.ledid is not None, frozenset(counts.items()))
        if key not in self._known:
            self._known[key] = calmatch.own_calibrations(
                night.calibration_table(rows), range(1, 17), self.filters, focal_plane=True)
        return self._known[key]


def plan_night(date: dt.date, spec: str, filters: list[str], listings: _Listings,
               own_calibrations: _OwnCalibrations) -> NightPlan:  # fmt: skip
    """Counts of one night: what the campaign's RegionNight of that night needs and builds."""
    from ztfluigi import config, naming
    from ztfluigi.calib import BIAS_SKIP
    from ztfluigi.tasks.campaign import catalogue_name, indexed_rawname, quadrant_selection

    indexed = listings.indexed(date)
    night = night_metadata(date, indexed)
    plan = NightPlan(date, indexed)
    science = (night.imgtype == "object") & np.isin(night.filtercode, filters)
    plan.science_exposures = int(science.sum()) // 16
    needed_raw: list[np.ndarray] = []
    catalogues: list[tuple[np.ndarray, np.ndarray]] = []  # rows, their selected qid mask
    for f in filters:
        rows = np.flatnonzero(science & (night.filtercode == f))
        quads = quadrant_selection(night.field[rows], night.ccdid[rows], spec)
        used = quads.any(axis=1)
        if not used.any():
            continue
        rows, quads = rows[used], quads[used]
        plan.quadrants[f] = int(quads.sum())
        plan.exposures[f] = int(np.unique(night.obsjd[rows]).size)
        needed_raw.append(rows)
        catalogues.append((rows, quads))
    if not plan.quadrants:
        return plan
    if listings.catalogues.names(date):  # a night not built yet needs no catalogue name
        for rows, quads in catalogues:
            for name, qs in zip(night.filenames(rows), quads.tolist(), strict=True):
                raw = indexed_rawname(name)
                plan.present += sum(listings.catalogues.exists(date, catalogue_name(raw, q + 1))
                                    for q in range(4) if qs[q])  # fmt: skip
    science_rows = np.concatenate(needed_raw)
    plan.raw["object"] = int(science_rows.size)
    # IPAC inputs: one header table per CCD and filter with a selected quadrant, one mask each
    ccd_filter = {(c, f) for c, f in zip(night.ccdid[science_rows].tolist(),
                                         night.filtercode[science_rows].tolist(), strict=True)}
    plan.ipac = {"header_tables": len(ccd_filter), "masks": sum(plan.quadrants.values())}
    calib = np.flatnonzero(np.isin(night.imgtype, ["bias", "flat"]))
    calib = calib[np.argsort(night.obsjd[calib], kind="stable")]  # select_raw's order
    settings = config.settings()
    masters: list[tuple[str, str]] = []
    for kind, ccdid, f in own_calibrations(night, calib):
        on_ccd = calib[night.ccdid[calib] == ccdid] if ccdid else calib[:0]
        if kind == "bias":
            frames = on_ccd[night.imgtype[on_ccd] == "bias"][BIAS_SKIP:]
            relpath = naming.master_bias_relpath(date, ccdid)
        elif kind == "flat":
            frames = on_ccd[(night.imgtype[on_ccd] == "flat") & (night.filtercode[on_ccd] == f)]
            relpath = naming.master_flat_relpath(date, ccdid, f)
        else:
            frames = on_ccd
            relpath = naming.focal_plane_relpath(date, f, "fp_flatnorm.fits")
        masters.append((kind, settings.cal_url(relpath)))
        if kind != "fplevel":
            plan.raw[kind] = plan.raw.get(kind, 0) + int(frames.size)
            needed_raw.append(frames)
    plan.masters = dict(collections.Counter(k for k, _ in masters))
    if listings.raw.names(date):
        names = night.filenames(np.concatenate(needed_raw))
        plan.raw_present = sum(listings.raw.exists(date, n) for n in names)
    plan.masters_present = sum(listings.cal.exists(url) for _, url in masters)
    return plan


class _Listings:
    """What a plan asks the stores: night listings of catalogues and raw files, master
    calibrations and RawIndexes by directory (one listing each)."""

    def __init__(self) -> None:
        from ztfluigi import storage
        from ztfluigi.tasks.campaign import NightListing, catalogue_night_dir, raw_night_dir

        self.catalogues = NightListing(catalogue_night_dir)
        self.raw = NightListing(raw_night_dir)
        self.cal = storage.ListingCache()
        self.indexes = storage.ListingCache()

    def indexed(self, date: dt.date) -> bool:
        """Whether the night's RawIndex is stored (one listing per year of indexes)."""
        from ztfluigi.tasks.raw import rawindex_url

        return self.indexes.exists(rawindex_url(date))


@dataclasses.dataclass
class CampaignPlan:
    """A campaign's plan: one :class:`NightPlan` per night, and how long it took to make."""

    entry: str
    filters: list[str]
    nights: list[NightPlan]
    elapsed_s: float = 0.0

    def totals(self) -> dict[str, object]:
        """Sums over nights (counts) and the projections (bytes, CPU-hours) at real size."""
        quadrants: collections.Counter = collections.Counter()
        exposures: collections.Counter = collections.Counter()
        raw: collections.Counter = collections.Counter()
        masters: collections.Counter = collections.Counter()
        ipac: collections.Counter = collections.Counter()
        for n in self.nights:
            ipac.update(n.ipac)
            quadrants.update(n.quadrants)
            exposures.update(n.exposures)
            raw.update(n.raw)
            masters.update(n.masters)
        n_quad, n_raw = sum(quadrants.values()), sum(raw.values())
        n_present = sum(n.present for n in self.nights)
        raw_present = sum(n.raw_present for n in self.nights)
        masters_present = sum(n.masters_present for n in self.nights)
        to_build = n_quad - n_present
        flats_like = masters["flat"]
        lo_hi = [
            (to_build * COSTS["quadrant_cpu_s"][i] + masters["bias"] * COSTS["bias_cpu_s"][i]
             + flats_like * COSTS["flat_cpu_s"][i]) / 3600.0
            for i in (0, 1)
        ]  # fmt: skip
        n_masters = sum(masters.values())
        return {
            "nights": len(self.nights),
            "nights_indexed": sum(n.indexed for n in self.nights),
            "nights_with_science": sum(n.science_exposures > 0 for n in self.nights),
            "nights_with_selection": sum(bool(n.quadrants) for n in self.nights),
            "exposures": dict(exposures), "quadrants": dict(quadrants),
            "catalogues_present": n_present, "catalogues_to_build": to_build,
            "raw_files": dict(raw), "raw_present": raw_present,
            "raw_to_download": n_raw - raw_present,
            "download_gb": (n_raw - raw_present) * COSTS["raw_bytes"][0] / 1e9,
            "masters": dict(masters), "masters_present": masters_present,
            "ipac": dict(ipac),
            "masters_to_build": n_masters - masters_present,
            "cpu_hours": lo_hi,
            "storage_gb": [(n_quad * COSTS["catalogue_bytes"][i]
                            + n_masters * COSTS["master_bytes"][i]
                            + n_raw * COSTS["raw_bytes"][i]) / 1e9 for i in (0, 1)],
            "elapsed_s": round(self.elapsed_s, 2),
        }  # fmt: skip


def plan_campaign(entry: object) -> CampaignPlan:
    """The plan of an :class:`~ztfluigi.tasks.campaign.ApertureCatalogCampaign` (nothing built)."""
    from ztfluigi import naming

    start = time.monotonic()
    filters = [entry.filtercode] if entry.filtercode else list(naming.SCIENCE_FILTERS)
    listings, own = _Listings(), _OwnCalibrations(filters)
    nights = [plan_night(d, entry.region, filters, listings, own) for d in entry.nights()]
    return CampaignPlan(str(entry), filters, nights, time.monotonic() - start)


def print_plan(plan: CampaignPlan, out: TextIO) -> None:
    """The plan as a short human-readable report."""
    t = plan.totals()
    print(plan.entry, file=out)
    print(f"nights {t['nights']}: {t['nights_with_science']} with science in "
          f"{','.join(plan.filters)}, {t['nights_with_selection']} with selected quadrants; "
          f"{t['nights_indexed']} indexed (others from the archive)", file=out)  # fmt: skip
    print(f"{'band':<6}{'exposures':>10}{'quadrants':>11}", file=out)
    for f in plan.filters:
        print(f"{f:<6}{t['exposures'].get(f, 0):>10}{t['quadrants'].get(f, 0):>11}", file=out)
    raw = t["raw_files"]
    print(f"raw files: {sum(raw.values())} needed ({', '.join(f'{v} {k}' for k, v in raw.items())})"
          f", {t['raw_present']} present, {t['raw_to_download']} to download "
          f"≈ {t['download_gb']:.1f} GB at real size", file=out)  # fmt: skip
    print(f"IPAC inputs: {t['ipac'].get('header_tables', 0)} header tables (CCD x filter), "
          f"{t['ipac'].get('masks', 0)} masks", file=out)  # fmt: skip
    masters = t["masters"]
    print(f"masters: {sum(masters.values())} ({', '.join(f'{v} {k}' for k, v in masters.items())})"
          f", {t['masters_present']} present, {t['masters_to_build']} to build", file=out)
    print(f"catalogues: {sum(t['quadrants'].values())} selected, {t['catalogues_present']} present,"
          f" {t['catalogues_to_build']} to build", file=out)  # fmt: skip
    lo, hi = t["cpu_hours"]
    s_lo, s_hi = t["storage_gb"]
    print(f"projected CPU {lo:.1f}-{hi:.1f} core-hours, storage {s_lo:.1f}-{s_hi:.1f} GB "
          "(measured per-product costs at real size: ztfluigi.cli.plan.COSTS)", file=out)
    print(f"planned in {plan.elapsed_s:.2f} s", file=out)


def _plan(args: argparse.Namespace) -> int:
    from ztfluigi.cli.entry import entry_task
    from ztfluigi.tasks.campaign import ApertureCatalogCampaign

    entry = entry_task(args.task)
    if not isinstance(entry, ApertureCatalogCampaign):
        raise ValueError("ztfluigi plan takes an ApertureCatalogCampaign, e.g. "
                         "ApertureCatalogCampaign --start 2019-10-01 --stop 2019-10-31 "
                         "--region toy --filtercode zr")  # fmt: skip
    plan = plan_campaign(entry)
    if args.json:
        record = {"totals": plan.totals(),
                  "nights": [dataclasses.asdict(n) | {"date": str(n.date)} for n in plan.nights]}
        print(json.dumps(record, indent=1))
    else:
        print_plan(plan, out=sys.stdout)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``plan``."""
    p = sub.add_parser(
        "plan", help="count what a campaign would fetch and build, and project its cost",
        description="Plan a campaign without building anything: nights, exposures, quadrants "
        "per band, raw files and GB to download, masters to build, catalogues present, projected "
        "CPU-hours and storage. Example: ztfluigi plan ApertureCatalogCampaign --start "
        "2019-10-01 --stop 2019-10-31 --region toy --filtercode zr",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("task", nargs=argparse.REMAINDER, help="the campaign task and its parameters")
    p.set_defaults(func=_plan)
