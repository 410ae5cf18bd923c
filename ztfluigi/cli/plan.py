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
from typing import TextIO

import pyarrow as pa
import pyarrow.compute as pc

#: Measured costs at real size (1 core), each (low, high) with its source.
COSTS: dict[str, tuple[float, float, str]] = {
    "quadrant_cpu_s": (0.77, 0.94, "bench/README.md bench_quadrant: raw -> catalogue per quadrant"
                       " (quiet machine / loaded)"),
    "bias_cpu_s": (5.4 + 4.4, 9.1 + 4.4, "10 raw reads (0.54 s fitsio / 0.91 s astropy) + a "
                   "full-CCD stack (4.4 s sort kernel): spec/perf_anchors.md"),
    "flat_cpu_s": (10.8 + 4.4, 18.2 + 4.4, "20 raw reads + a full-CCD stack: "
                   "spec/perf_anchors.md"),
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


def _sim_metadata(archive: object, date: dt.date) -> pa.Table:
    """The columns the plan needs, from the synthetic night log (no per-file conditions)."""
    from ztfluigi import naming

    rows: dict[str, list] = collections.defaultdict(list)
    for exp in archive.exposures(date).values():  # type: ignore[attr-defined]
        ffd, code = exp.filefracday, naming.IMGTYPE_CODES[exp.imgtype]
        stem = f"ztf_{ffd}_{exp.field:06d}_{exp.filtercode}_c"
        rows["imgtype"] += [exp.imgtype] * 16
        rows["filtercode"] += [exp.filtercode] * 16
        rows["field"] += [exp.field] * 16
        rows["ccdid"] += list(range(1, 17))
        rows["obsjd"] += [exp.obsjd] * 16
        rows["ledid"] += [exp.led] * 16
        rows["filename"] += [f"{stem}{c:02d}_{code}.fits.fz" for c in range(1, 17)]
    types = {"imgtype": pa.string(), "filtercode": pa.string(), "field": pa.int64(),
             "ccdid": pa.int64(), "obsjd": pa.float64(), "ledid": pa.int64(),
             "filename": pa.string()}  # fmt: skip
    return pa.table({k: pa.array(rows[k], type=t) for k, t in types.items()})


def night_metadata(date: dt.date) -> tuple[pa.Table, bool]:
    """The night's raw metadata and whether it is the stored RawIndex."""
    from ztfluigi import config
    from ztfluigi.archive.sim import SimArchive
    from ztfluigi.tasks.raw import RawIndex, night_index

    if RawIndex(date=date).output().exists():
        return night_index(date), True
    archive = config.get_archive()
    if isinstance(archive, SimArchive):
        return _sim_metadata(archive, date), False
    return archive.night_metadata(date), False


def plan_night(date: dt.date, spec: str, filters: list[str], listing: object,
               raw_listing: object, cal_listing: object) -> NightPlan:  # fmt: skip
    """Counts of one night: what the campaign's RegionNight of that night needs and builds."""
    from ztfluigi import calmatch
    from ztfluigi.calib import BIAS_SKIP
    from ztfluigi.tasks.calib import FocalPlaneLevel, MasterBias, MasterFlat
    from ztfluigi.tasks.campaign import catalogue_name, selected_quadrants
    from ztfluigi.tasks.raw import select_raw

    index, indexed = night_metadata(date)
    plan = NightPlan(date, indexed)
    science = [t == "object" and f in filters for t, f in
               zip(index["imgtype"].to_pylist(), index["filtercode"].to_pylist(), strict=True)]
    plan.science_exposures = sum(science) // 16
    needed_raw: list = []
    for f in filters:
        pairs = selected_quadrants(index, spec, f)
        if not pairs:
            continue
        plan.quadrants[f] = len(pairs)
        raws = sorted({r for r, _ in pairs}, key=lambda r: r.filename)
        plan.exposures[f] = len({r.filefracday for r in raws})
        needed_raw += raws
        plan.present += sum(listing.exists(date, catalogue_name(r, q)) for r, q in pairs)
    if not plan.quadrants:
        return plan
    plan.raw["object"] = len(needed_raw)
    # IPAC inputs: one header table per CCD and filter with a selected quadrant, one mask each
    plan.ipac = {"header_tables": len({(r.ccdid, r.filtercode) for r in needed_raw}),
                 "masks": sum(plan.quadrants.values())}  # fmt: skip
    masters = []
    calib = index.filter(pc.is_in(index["imgtype"], pa.array(["bias", "flat"])))
    for kind, ccdid, f in calmatch.own_calibrations(calib, range(1, 17), filters,
                                                    focal_plane=True):  # fmt: skip
        if kind == "bias":
            frames = select_raw(calib, ccdid, "bias")[BIAS_SKIP:]
            masters.append(("bias", MasterBias(date=date, ccdid=ccdid).output().path))
        elif kind == "flat":
            frames = select_raw(calib, ccdid, "flat", f)
            masters.append(("flat", MasterFlat(date=date, ccdid=ccdid, filtercode=f).output().path))
        else:
            frames = []
            masters.append(("fplevel", FocalPlaneLevel(date=date, filtercode=f).output().path))
        plan.raw[kind] = plan.raw.get(kind, 0) + len(frames)
        needed_raw += frames
    plan.raw = {k: v for k, v in plan.raw.items() if k != "fplevel"}
    plan.masters = dict(collections.Counter(k for k, _ in masters))
    plan.raw_present = sum(raw_listing.exists(date, r.filename) for r in needed_raw)
    plan.masters_present = sum(cal_listing.exists(url) for _, url in masters)
    return plan


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
    from ztfluigi import naming, storage
    from ztfluigi.tasks.campaign import NightListing, catalogue_night_dir, raw_night_dir

    start = time.monotonic()
    filters = [entry.filtercode] if entry.filtercode else list(naming.SCIENCE_FILTERS)
    listing, raw_listing = NightListing(catalogue_night_dir), NightListing(raw_night_dir)
    cal_listing = storage.ListingCache()
    nights = [plan_night(d, entry.region, filters, listing, raw_listing, cal_listing)
              for d in entry.nights()]  # fmt: skip
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
