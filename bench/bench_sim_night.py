"""Time and disk used to synthesise a night of raw files with the synthetic ZTF instrument.

python bench/bench_sim_night.py --scale 8 --processes 2
python bench/bench_sim_night.py --scale 1 --ccd 5        # one CCD at real size
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ztfluigi.archive.sim import SimArchive
from ztfluigi.sim.schedule import SimConfig, night_log

DATE = dt.date(2019, 3, 31)


def _render(args: tuple[int, int, str, int]) -> tuple[int, float]:
    seed, scale, filefracday, ccdid = args
    archive = SimArchive(SimConfig(seed=seed, scale=scale))
    exp = archive.exposures(DATE)[filefracday]
    t0 = time.perf_counter()
    size = len(archive.fetch_raw(exp.raw_name(ccdid)))
    return size, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=os.cpu_count())
    parser.add_argument("--ccd", type=int, default=0, help="only this CCD (0 = all 16)")
    parser.add_argument(
        "--per-kind",
        type=int,
        default=0,
        help="only the first N exposures of each image type (0 = all)",
    )
    args = parser.parse_args()
    log = night_log(SimConfig(seed=args.seed, scale=args.scale), DATE)
    if args.per_kind:
        log = [
            e
            for kind in ("bias", "flat", "object")
            for e in [x for x in log if x.imgtype == kind][: args.per_kind]
        ]
    ccds = [args.ccd] if args.ccd else list(range(1, 17))
    jobs = [(args.seed, args.scale, e.filefracday, c) for e in log for c in ccds]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.processes) as pool:
        results = list(pool.map(_render, jobs, chunksize=4))
    wall = time.perf_counter() - t0
    sizes = [s for s, _ in results]
    cpu = [t for _, t in results]
    kinds = {
        k: sum(1 for e in log if e.imgtype == k) * len(ccds) for k in ("bias", "flat", "object")
    }
    record = {
        "date": str(DATE),
        "scale": args.scale,
        "ccds": len(ccds),
        "files": len(jobs),
        **kinds,
        "processes": args.processes,
        "wall_s": round(wall, 2),
        "cpu_s_per_file": round(sum(cpu) / len(cpu), 4),
        "disk_MB": round(sum(sizes) / 1e6, 1),
        "MB_per_file": round(sum(sizes) / len(sizes) / 1e6, 2),
    }
    print(json.dumps(record, indent=1))
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"sim_night_scale{args.scale}_ccd{args.ccd}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
