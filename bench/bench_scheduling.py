"""Scheduling overhead of a real-size night: Luigi + completeness checks, no pixel work.

A synthetic night with ``--fields`` fields (3 exposures each, 16 CCDs: 83 fields ≈ 4 000
science raw files ≈ 16 000 quadrants) is scheduled through the real task classes; every
pixel-producing step (raw synthesis, master calibrations, quadrant catalogues) is replaced by
writing an empty product, so what remains is the scheduler, the dependency walk (including the
dynamic calibration matching) and the listing-based completeness checks. Reported: wall time,
scheduler tasks, quadrants, overhead per quadrant, and the no-op re-check of the complete night.

    python bench/bench_scheduling.py --fields 83
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import re
import tempfile
import time
from pathlib import Path

import luigi
import luigi.configuration
import pyarrow as pa

from ztfluigi import storage
from ztfluigi.cli.status import status_table
from ztfluigi.tasks import ApertureCatalog, RawIndex, calib, catalog, ipac, raw, science

DATE = dt.date(2019, 3, 31)


def _touch(target: storage.FsspecTarget) -> None:
    storage.write_bytes(target, b"")


def stub_pixel_work() -> None:
    """Replace every pixel-producing step with writing an empty product (bench only)."""
    raw.fetch_raw = lambda rawname, target: _touch(target)
    for cls in (calib.MasterBias, calib.MasterFlat, calib.FocalPlaneLevel, ipac.IpacHeaders):
        cls.run = lambda self: _touch(self.output())

    def fetch_masks(self, todo):  # noqa: ANN001, ANN202 - as IpacMasks.run_branches
        for branch in todo:
            _touch(self.branch_output(branch))

    ipac.IpacMasks.run_branches = fetch_masks

    def build(task, date, ccdid, filtercode, todo):  # noqa: ANN001, ANN202 - same as the real one
        yield from science.calibration_tasks(date, ccdid, filtercode)
        for rawname, qid in todo:
            storage.write_parquet(catalog.catalog_target(rawname, qid), pa.table({"x": [0.0]}))

    catalog.build_catalogues = build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=83)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ztfluigi-sched-"))
    cfg = luigi.configuration.get_config()
    settings = {
        "ztfluigi": {"root": str(root), "archive": "sim", "refcat": "sim"},
        "sim": {"scale": "8", "n_fields": str(args.fields)},
    }
    for section, values in settings.items():
        if not cfg.has_section(section):
            cfg.add_section(section)
        for k, v in values.items():
            cfg.set(section, k, v)
    catalog.SimRefCatalog.run = lambda self: _touch(self.output())
    stub_pixel_work()
    t0 = time.perf_counter()
    luigi.build([RawIndex(date=DATE)], local_scheduler=True, log_level="WARNING")
    t_index = time.perf_counter() - t0
    entry = ApertureCatalog(date=DATE)
    t0 = time.perf_counter()
    result = luigi.build([entry], local_scheduler=True, workers=args.workers,
                         log_level="WARNING", detailed_summary=True)  # fmt: skip
    t_build = time.perf_counter() - t0
    n_quadrants = sum(len(u.branches()) for u in entry.requires())
    n_tasks = len(result.worker._scheduled_tasks)
    t0 = time.perf_counter()
    assert entry.complete()
    t_check = time.perf_counter() - t0
    t0 = time.perf_counter()
    luigi.build([entry], local_scheduler=True, workers=1, log_level="WARNING")
    t_noop = time.perf_counter() - t0
    # ztfluigi status of the complete night: bulk existence of every stored output
    text = io.StringIO()
    t0 = time.perf_counter()
    missing = status_table(["ApertureCatalog", "--date", DATE.isoformat()], out=text)
    t_status = time.perf_counter() - t0
    print(text.getvalue())
    listings = int(re.search(r"\((\d+) directory listings\)", text.getvalue()).group(1))
    outputs = int(re.search(r"checked (\d+) outputs", text.getvalue()).group(1))
    record = {
        "fields": args.fields, "science_quadrants": n_quadrants, "scheduler_tasks": n_tasks,
        "rawindex_s": round(t_index, 2), "schedule_and_run_s": round(t_build, 1),
        "overhead_ms_per_quadrant": round(1000 * t_build / n_quadrants, 2),
        "complete_check_s": round(t_check, 2), "noop_rerun_s": round(t_noop, 2),
        "status": result.status.name,
        "ztfluigi_status_s": round(t_status, 2), "status_outputs": outputs,
        "status_listings": listings, "status_missing": missing,
    }  # fmt: skip
    print(json.dumps(record, indent=1))
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "scheduling.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
