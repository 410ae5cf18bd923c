"""Whole-night CPU seconds per science quadrant, every stage, one CCD of the demo night.

``ApertureCatalog --date 2019-03-31 --ccdid C --filtercode F`` runs through the real task
classes in this process (one Luigi worker, local scheduler, ``[sim] scale`` as asked), on a fresh
local store. The CPU time of this process (user + system, all threads) is attributed to the task
family that was running (each ``run()`` call timed, including the partial runs of tasks that
yield dynamic dependencies); the rest (scheduling, completeness checks) is its own row. The
synthetic instrument's rendering (``SimArchive`` raw files, IPAC headers and masks, night
metadata; the synthetic Gaia store) is timed inside those tasks and reported apart: with real
data it is a download, not computation.

A narrowed night builds what its quadrants need: the CCD's science files, IPAC inputs and
catalogues, and — for the focal-plane level — the master bias and flat of all 16 CCDs in that
filter. The masters are therefore reported per CCD (their CPU / 16) as well as per quadrant of
this run (a real night's masters serve ≈ 200 exposures, this demo night's 3).

Projection to the toy sample (≈ 3 M quadrants, 2018–2023, ≈ 1,800 nights): per-quadrant work ×
3 M + the nights' masters (16 CCDs × (bias + 3 filters' flats) per night, the flat's cost taken
from the filter measured) × 1,800; at ``--scale`` s > 1 every pixel cost is multiplied by s²
(pixel work scales with the area; the stars per quadrant too), the number of quadrants not.

    python bench/bench_night_cpu.py [--scale 1] [--ccdid 7] [--filtercode zr]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import luigi  # noqa: E402
import luigi.configuration  # noqa: E402
import luigi.worker  # noqa: E402

DATE = dt.date(2019, 3, 31)
RESULTS = Path("bench/results")
TOY_QUADRANTS = 3.0e6
TOY_NIGHTS = 1800
ISSUE_CPU_HOURS = 640.0  #: issue #15: 0.77 s per quadrant × 3 M quadrants
MASTERS = ("MasterBias", "MasterFlat", "FocalPlaneLevel")
#: SimArchive methods that render the synthetic instrument (outermost call counted)
SIM_RENDERING = ("fetch_raw", "science_header", "science_mask", "fetch_science_headers",
                 "night_metadata")  # fmt: skip


def cpu() -> float:
    """CPU seconds (user + system) of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Ledger:
    """CPU seconds by task family, and the simulator's rendering inside them."""

    def __init__(self) -> None:
        self.family: dict[str, float] = defaultdict(float)
        self.rendering: dict[str, float] = defaultdict(float)
        self.runs: dict[str, int] = defaultdict(int)
        self.current: list[str] = []
        self.catalogue_steps: dict[str, list[float]] = defaultdict(list)  #: inside the units

    @contextlib.contextmanager
    def patched(self) -> Iterator[None]:
        """Time every task ``run()`` (luigi's in-process TaskProcess) and every rendering call."""
        from ztfluigi.archive.sim import SimArchive
        from ztfluigi.sim import gaia
        from ztfluigi.tasks import catalog

        saved: list[tuple[object, str, Callable]] = []
        depth = [0]  # rendering calls nest (a header table renders headers): outermost only

        def wrap(owner: object, name: str, book: Callable[[float], None]) -> None:
            original = getattr(owner, name)
            saved.append((owner, name, original))

            def timed(*args, **kwargs):
                depth[0] += 1
                t0 = cpu()
                try:
                    return original(*args, **kwargs)
                finally:
                    depth[0] -= 1
                    if depth[0] == 0:
                        book(cpu() - t0)

            setattr(owner, name, timed)

        original_run = luigi.worker.TaskProcess.run
        ledger = self

        def run(process):  # noqa: ANN001, ANN202 - luigi's TaskProcess
            family = process.task.task_family
            if family == "RawFiles":  # science files serve quadrants, calibration ones masters
                family += "/" + ("object" if process.task.imgtype == "object" else "calibration")
            ledger.current.append(family)
            t0 = cpu()
            try:
                return original_run(process)
            finally:
                ledger.family[family] += cpu() - t0
                ledger.runs[family] += 1
                ledger.current.pop()

        luigi.worker.TaskProcess.run = run
        for name in SIM_RENDERING:
            wrap(SimArchive, name, lambda s, n=name: self._render(n, s))
        wrap(gaia, "write_sim_catalog", lambda s: self._render("write_sim_catalog", s))
        # the catalogue units' steps (names as tasks/catalog.py calls them)
        steps = ((catalog, "read_stored_raw"), (catalog, "read_calibration"),
                 (catalog, "science_quadrant"), (catalog.catalogue, "quadrant_catalogue"),
                 (catalog.storage, "write_parquet"))  # fmt: skip
        for owner, name in steps:
            wrap(owner, name, lambda s, n=name: self._step(n, s))
        try:
            yield
        finally:
            luigi.worker.TaskProcess.run = original_run
            for owner, name, original in saved:
                setattr(owner, name, original)

    def _step(self, name: str, seconds: float) -> None:
        if self.current and self.current[-1] == "ApertureCatalogUnit":
            self.catalogue_steps[name].append(seconds)

    def _render(self, name: str, seconds: float) -> None:
        family = self.current[-1] if self.current else "(outside tasks)"
        self.rendering[f"{family}:{name}"] += seconds


def configure(root: Path, scale: int) -> None:
    cfg = luigi.configuration.get_config()
    settings = {
        "ztfluigi": {"root": str(root), "archive": "sim", "refcat": "sim"},
        "sim": {"seed": "0", "scale": str(scale), "n_fields": "3"},
    }
    for section, values in settings.items():
        if not cfg.has_section(section):
            cfg.add_section(section)
        for key, value in values.items():
            cfg.set(section, key, value)


def count_catalogues(entry: luigi.Task) -> int:
    return sum(len(unit.output()) for unit in entry.requires())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--ccdid", type=int, default=7)
    parser.add_argument("--filtercode", default="zr")
    parser.add_argument("--keep", action="store_true", help="keep the store")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ztfluigi-bench-night-cpu-"))
    from ztfluigi import config
    from ztfluigi.tasks import ApertureCatalog  # first: importing reloads luigi's configuration

    configure(scratch / "store", args.scale)
    if not config.settings().root.startswith(str(scratch)):
        sys.exit(f"the store is not the scratch one: {config.settings().root}")

    ledger = Ledger()
    load_start = os.getloadavg()
    t_wall, t_cpu = time.perf_counter(), cpu()
    try:
        with ledger.patched():
            entry = ApertureCatalog(date=DATE, ccdid=args.ccdid, filtercode=args.filtercode)
            ok = luigi.build([entry], local_scheduler=True, workers=1, log_level="WARNING")
        wall, total = time.perf_counter() - t_wall, cpu() - t_cpu
        if not ok:
            sys.exit("the night failed")
        quadrants = count_catalogues(entry)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    render_by_family: dict[str, float] = defaultdict(float)
    for key, seconds in ledger.rendering.items():
        render_by_family[key.split(":")[0]] += seconds
    rendering = sum(ledger.rendering.values())
    net = {f: s - render_by_family.get(f, 0.0) for f, s in ledger.family.items()}
    in_tasks = sum(ledger.family.values())
    # the synthetic Gaia store is built once by the simulator (real Gaia DR3 is given)
    synthetic = rendering + net.pop("SimRefCatalog", 0.0)
    calibration_raw = net.get("RawFiles/calibration", 0.0)
    masters = sum(net.get(f, 0.0) for f in MASTERS) + calibration_raw
    per_ccd_masters = masters / 16.0
    catalogues = net.get("ApertureCatalogUnit", 0.0)
    inputs = sum(v for f, v in net.items()
                 if f not in (*MASTERS, "ApertureCatalogUnit", "RawFiles/calibration"))  # fmt: skip
    scheduling = total - in_tasks
    area = args.scale**2  # pixel work at scale 1 / at this scale
    per_quadrant = {
        "catalogue (read, science quadrant, photometry, write)": catalogues / quadrants,
        "inputs net of rendering (science raw verify+write, IPAC tables, index)":
            inputs / quadrants,
        "scheduling and completeness checks": scheduling / quadrants,
        "masters (16 CCDs, their raw frames' verify+write) / this run's quadrants":
            masters / quadrants,
    }  # fmt: skip
    quadrant_work = catalogues + inputs + scheduling
    # real-size projection: pixel work × area; scheduling per quadrant does not scale
    q_real = (catalogues + inputs) / quadrants * area + scheduling / quadrants
    masters_ccd_night_real = per_ccd_masters * area
    # a calibration night: bias + flats in 3 filters; the flats' cost from the measured filter
    # (their raw frames' share split alike)
    flat_share = net.get("MasterFlat", 0.0) / max(net.get("MasterBias", 0.0) + net.get(
        "MasterFlat", 0.0), 1e-9)  # fmt: skip
    ccd_night_all_filters = masters_ccd_night_real * (1 + 2 * flat_share)
    toy_hours = (TOY_QUADRANTS * q_real + TOY_NIGHTS * 16 * ccd_night_all_filters) / 3600
    record = {
        "date": DATE.isoformat(), "ccdid": args.ccdid, "filtercode": args.filtercode,
        "scale": args.scale, "quadrants": quadrants, "wall_s": round(wall, 1),
        "cpu_s_total": round(total, 2), "load_average_1min_start_end": [
            load_start[0], os.getloadavg()[0]],
        "cpu_s_by_task_family": {k: round(v, 2) for k, v in sorted(ledger.family.items())},
        "runs_by_task_family": dict(sorted(ledger.runs.items())),
        "cpu_s_sim_rendering": {k: round(v, 2) for k, v in sorted(ledger.rendering.items())},
        "cpu_s_sim_rendering_total": round(rendering, 2),
        "cpu_s_synthetic_excluded": round(synthetic, 2),
        "cpu_s_net_of_rendering_by_family": {k: round(v, 2) for k, v in sorted(net.items())},
        "cpu_s_scheduling": round(scheduling, 2),
        # per call: the first carries the process's one-time costs (numba kernels loaded from
        # their cache, imports); a worker that builds thousands of quadrants pays them once
        "cpu_s_catalogue_unit_steps": {
            k: {"calls": len(v), "total": round(sum(v), 3), "first": round(v[0], 3),
                "median": round(statistics.median(v), 4)}
            for k, v in ledger.catalogue_steps.items()
        },
        "cpu_s_per_quadrant_this_scale": {k: round(v, 4) for k, v in per_quadrant.items()},
        "cpu_s_per_quadrant_this_scale_without_masters": round(quadrant_work / quadrants, 4),
        "masters_cpu_s_per_ccd_this_scale": round(per_ccd_masters, 2),
        "projection": {
            "area_factor_to_scale_1": area,
            "cpu_s_per_quadrant_real_size": round(q_real, 3),
            "masters_cpu_s_per_ccd_night_real_size_this_filter": round(masters_ccd_night_real, 2),
            "masters_cpu_s_per_ccd_night_real_size_3_filters": round(ccd_night_all_filters, 2),
            "toy_sample_cpu_hours": round(toy_hours, 0),
            "toy_sample_quadrants": TOY_QUADRANTS, "toy_sample_nights": TOY_NIGHTS,
            "issue_15_cpu_hours": ISSUE_CPU_HOURS,
        },
    }  # fmt: skip
    print(json.dumps(record, indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"night_cpu_scale{args.scale}_c{args.ccdid:02d}_{args.filtercode}.json"
    out.write_text(json.dumps(record, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
