"""Scheduling a campaign: tasks a scheduler holds, its size and the overhead per quadrant.

The real task classes run with every pixel-producing step stubbed exactly as
``bench_scheduling.py`` does (empty products), over 1 week, 1 month, 3 months of synthetic nights
(``--fields`` fields per night, 3 exposures each, 16 CCDs), one filter. Three ways of asking for
the same catalogues, each in its own process (peak RSS is per process):

* ``range``: today's ``ApertureCatalogRange`` — every night in one scheduler graph;
* ``dynamic``: the campaign's windows yielded one after the other as dynamic dependencies of
  one task (the alternative measured before choosing);
* ``campaign``: ``ApertureCatalogCampaign`` — each window one Luigi build of its own.

Reported per run: scheduler tasks held at peak (the largest scheduler's task count; tasks are
never pruned while their worker lives), the pickled scheduler state at peak (what luigid keeps
and dumps), the JSON of the scheduler's task list at peak (what the visualiser loads), wall time,
quadrants, overhead per quadrant (wall, and CPU of the process and its children: on a shared
machine the CPU figure is the steadier one), process peak RSS.

    python bench/bench_campaign.py --fields 20 --spans 7,30,91
    # memory per window of the campaign driver; --keep-instances: as before it cleared Luigi's
    # task instance cache; --memory trace: the allocation sites that grew (tracemalloc, slower)
    python bench/bench_campaign.py --fields 3 --strategies campaign --spans 56 --memory rss
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import luigi
import luigi.configuration
import luigi.interface

START = dt.date(2019, 9, 1)


def _configure(root: Path, fields: int) -> None:
    cfg = luigi.configuration.get_config()
    settings = {
        "ztfluigi": {"root": str(root), "archive": "sim", "refcat": "sim"},
        "sim": {"scale": "8", "n_fields": str(fields)},
    }
    for section, values in settings.items():
        if not cfg.has_section(section):
            cfg.add_section(section)
        for k, v in values.items():
            cfg.set(section, k, v)


def _stub_ipac_inputs(touch) -> None:  # noqa: ANN001 - bench_scheduling's _touch
    """The stored IPAC inputs (header tables, masks) as empty products, if this tree has them."""
    try:
        from ztfluigi.tasks import ipac
    except ImportError:
        return
    ipac.IpacHeaders.run = lambda self: touch(self.output())

    def masks(self, todo):  # noqa: ANN001, ANN202 - BranchedUnit.run_branches
        for branch in todo:
            touch(ipac.mask_targets(*branch)[0])

    ipac.IpacMasks.run_branches = masks


def _rss_mb() -> float:
    """This process's resident memory now, MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e6


def _watch_windows(trace: bool) -> dict[str, list]:
    """Record, as each campaign window starts and after the last: resident memory, Luigi's task
    instance cache, and (``trace``) the allocation sites that grew most since the first window."""
    import tracemalloc

    from luigi.task_register import Register

    from ztfluigi.tasks.campaign import ApertureCatalogCampaign

    seen: dict[str, list] = {"rss_mb": [], "task_instances": [], "top_growth": []}
    report = ApertureCatalogCampaign._report
    if trace:
        tracemalloc.start(10)
    first: list = []

    def watching(self, i, n, window, state, n_failed):  # noqa: ANN001, ANN202 - _report
        gc.collect()
        seen["rss_mb"].append(round(_rss_mb(), 1))
        seen["task_instances"].append(len(Register._Register__instance_cache or {}))
        if trace:
            snap = tracemalloc.take_snapshot()
            if not first:
                first.append(snap)
            elif i == n:
                top = snap.compare_to(first[0], "traceback")[:8]
                seen["top_growth"] = [f"{s.size_diff / 1e6:+.1f} MB {s.count_diff:+d} blocks: "
                                      + " <- ".join(str(f) for f in s.traceback[-4:])
                                      for s in top]  # fmt: skip
        return report(self, i, n, window, state, n_failed)

    ApertureCatalogCampaign._report = watching
    return seen


def run_one(strategy: str, days: int, fields: int, window: int, workers: int,
            memory: str = "", keep_instances: bool = False) -> dict:  # fmt: skip
    """One strategy over ``days`` nights in this process; the measured record (``memory``:
    'rss' or 'trace' also records memory per campaign window; ``keep_instances``: the campaign
    does not clear Luigi's task instance cache, as before)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_scheduling import _touch, stub_pixel_work

    from ztfluigi.tasks import ApertureCatalogRange, catalog
    from ztfluigi.tasks.campaign import ApertureCatalogCampaign, RegionNight

    root = Path(tempfile.mkdtemp(prefix="ztfluigi-campaign-"))
    _configure(root, fields)
    catalog.SimRefCatalog.run = lambda self: _touch(self.output())
    stub_pixel_work()
    _stub_ipac_inputs(_touch)

    # the largest scheduler so far and the latest one (an earlier, smaller one is let go: keeping
    # every window's scheduler would itself grow with the campaign)
    schedulers: dict[str, object] = {"peak": None, "last": None, "count": 0}

    def n_held(sched: object) -> int:
        return -1 if sched is None else len(sched._state._tasks)

    factory = luigi.interface._WorkerSchedulerFactory
    create = factory.create_local_scheduler

    def recording(self):  # noqa: ANN001, ANN202 - luigi's factory method
        sched = create(self)
        if n_held(schedulers["last"]) > n_held(schedulers["peak"]):
            schedulers["peak"] = schedulers["last"]
        schedulers["last"], schedulers["count"] = sched, schedulers["count"] + 1
        return sched

    factory.create_local_scheduler = recording
    stop = START + dt.timedelta(days=days - 1)
    windows = _watch_windows(memory == "trace") if memory and strategy == "campaign" else {}
    if keep_instances:  # as before the campaign cleared Luigi's instance cache per window
        from luigi.task_register import Register

        Register.clear_instance_cache = classmethod(lambda cls: None)

    class DynamicWindows(ApertureCatalogCampaign):
        """The windows as dynamic dependencies of one task, yielded one after the other."""

        def run(self):  # noqa: ANN202 - a generator of dynamic dependencies
            for i in range(0, len(self.nights()), self.window):
                yield [self.night_task(d) for d in self.nights()[i : i + self.window]]

    if strategy == "range":
        entry = ApertureCatalogRange(start=START, stop=stop, filtercode="zr")
    elif strategy == "dynamic":
        entry = DynamicWindows(start=START, stop=stop, region="", filtercode="zr", window=window)
    else:
        entry = ApertureCatalogCampaign(start=START, stop=stop, region="", filtercode="zr",
                                        window=window, window_workers=workers)  # fmt: skip
    outer_workers = workers if strategy != "campaign" else 1
    t0 = time.perf_counter()
    result = luigi.build([entry], local_scheduler=True, workers=outer_workers,
                         log_level="WARNING", detailed_summary=True)  # fmt: skip
    wall = time.perf_counter() - t0
    peak = max(schedulers["peak"], schedulers["last"], key=n_held)
    n_tasks = len(peak._state._tasks)
    state_bytes = len(pickle.dumps(peak._state))
    page_bytes = len(json.dumps(peak.task_list("", "")))
    quadrants = sum(len(u.branches()) for d in entry_nights(START, stop)
                    for u in RegionNight(date=d, filtercode="zr").requires())  # fmt: skip
    t0 = time.perf_counter()
    complete = entry.complete()
    t_check = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime
    return {
        "strategy": strategy + (" (instances kept)" if keep_instances else ""), "nights": days,
        "fields_per_night": fields, "window": window,
        "status": result.status.name, "complete": complete, "quadrants": quadrants,
        "peak_scheduler_tasks": n_tasks, "schedulers": schedulers["count"],
        "peak_state_pickle_mb": round(state_bytes / 1e6, 2),
        "peak_task_list_json_mb": round(page_bytes / 1e6, 2),
        "wall_s": round(wall, 1), "overhead_ms_per_quadrant": round(1000 * wall / quadrants, 2),
        "cpu_s": round(cpu, 1), "cpu_ms_per_quadrant": round(1000 * cpu / quadrants, 2),
        "complete_check_s": round(t_check, 2),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **({"per_window": windows} if windows else {}),
    }  # fmt: skip


def entry_nights(start: dt.date, stop: dt.date) -> list[dt.date]:
    """The nights from ``start`` to ``stop``, both included."""
    return [start + dt.timedelta(days=i) for i in range((stop - start).days + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=20, help="science fields per night")
    parser.add_argument("--spans", default="7,30,91", help="campaign lengths in nights")
    parser.add_argument("--strategies", default="campaign,range,dynamic")
    parser.add_argument("--window", type=int, default=7, help="nights per window")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-range-nights", type=int, default=31,
                        help="longest span run for range/dynamic (they grow with it)")
    parser.add_argument("--memory", choices=("", "rss", "trace"), default="",
                        help="campaign: record memory per window (trace: tracemalloc, slower)")
    parser.add_argument("--keep-instances", action="store_true",
                        help="campaign: keep Luigi's task instance cache (the unbounded before)")
    parser.add_argument("--one", nargs=2, metavar=("STRATEGY", "NIGHTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        record = run_one(args.one[0], int(args.one[1]), args.fields, args.window, args.workers,
                         args.memory, args.keep_instances)  # fmt: skip
        print(json.dumps(record))
        return
    records = []
    for days in (int(s) for s in args.spans.split(",")):
        for strategy in args.strategies.split(","):
            if strategy != "campaign" and days > args.max_range_nights:
                continue
            cmd = [sys.executable, __file__, "--fields", str(args.fields), "--window",
                   str(args.window), "--workers", str(args.workers), "--memory", args.memory,
                   *(["--keep-instances"] if args.keep_instances else []),
                   "--one", strategy, str(days)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            record = json.loads(out.strip().splitlines()[-1])
            print(json.dumps(record), flush=True)
            records.append(record)
    out_dir = Path("bench/results")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "campaign.json").write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
