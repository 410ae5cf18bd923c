"""CPU cost of the simulated IPAC mask per quadrant: full render (before) vs fast path (after).

python bench/bench_sim_mask.py --scale 8 --ccds 16
python bench/bench_sim_mask.py --scale 1 --ccds 1

"cold": the detector's cached arrays (response, bias structure) are cleared before each quadrant,
as for the first exposure of a quadrant in a process; "warm": a second exposure of the same
quadrants (those caches hit, as in a catalogue unit that runs several exposures of one CCD).
Every fast mask is checked equal to the reference.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time

import numpy as np

from ztfluigi.archive.sim import SimArchive
from ztfluigi.sim import detector, ipac
from ztfluigi.sim.schedule import SimConfig

DATE = dt.date(2019, 3, 31)


def _clear_caches() -> None:
    for cached in (detector.sky_response, detector.pixel_response, detector.bias_structure,
                   ipac._cell_maxima):  # fmt: skip
        cached.cache_clear()


def _cpu(func, *args) -> tuple[float, np.ndarray]:
    t0 = time.process_time()
    out = func(*args)
    return time.process_time() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=8)
    parser.add_argument("--ccds", type=int, default=16, help="first N CCDs (4 quadrants each)")
    args = parser.parse_args()
    archive = SimArchive(SimConfig(seed=0, scale=args.scale))
    science = [e for e in archive.exposures(DATE).values() if e.imgtype == "object"][:2]
    quadrants = [(c, q) for c in range(1, args.ccds + 1) for q in range(1, 5)]
    times: dict[str, list[float]] = {k: [] for k in
                                     ("ref_cold", "new_cold", "ref_warm", "new_warm")}  # fmt: skip
    for which, exp in zip(("cold", "warm"), science, strict=True):
        if which == "warm":  # the first exposure fills the caches, as in a catalogue unit
            for ccdid, qid in quadrants:
                ipac.mask(archive.config, DATE, science[0], ccdid, qid)
        for ccdid, qid in quadrants:
            if which == "cold":
                _clear_caches()
            t_new, new = _cpu(ipac.mask, archive.config, DATE, exp, ccdid, qid)
            if which == "cold":
                _clear_caches()
            t_ref, ref = _cpu(ipac.mask_reference, archive.config, DATE, exp, ccdid, qid)
            if not np.array_equal(new, ref):
                raise SystemExit(f"mask differs: {exp.filefracday} c{ccdid} q{qid}")
            times[f"new_{which}"].append(t_new)
            times[f"ref_{which}"].append(t_ref)
    result = {
        "scale": args.scale,
        "quadrants": len(quadrants),
        **{f"{k}_cpu_s_per_quadrant": round(float(np.mean(v)), 4) for k, v in times.items()},
        "identical": True,
    }
    result["speedup_cold"] = round(result["ref_cold_cpu_s_per_quadrant"]
                                   / result["new_cold_cpu_s_per_quadrant"], 1)  # fmt: skip
    result["speedup_warm"] = round(result["ref_warm_cpu_s_per_quadrant"]
                                   / result["new_warm_cpu_s_per_quadrant"], 1)  # fmt: skip
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
