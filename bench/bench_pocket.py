"""Pocket-effect correction per real-size quadrant (3080×3072 + 30 overscan columns), 1 core:
today's numpy inversion (``pocket.correct``) vs the compiled one (``pocket.correct_compiled``),
and the raw corrections of a quadrant (``corrections.correct_quadrant``) with the pocket on/off,
numpy step by step vs the fused numba pass. Best of ``--repeat`` runs (wall clock; CPU time of
this process beside it, less sensitive to a loaded machine), and the agreement of the outputs.

Input: one pocket-era synthetic raw quadrant (the simulator applies the pocket model from
2019-10-22), CCD 6 (the worst pocket amplifiers) or ``--ccdid``, a science exposure at scale 1.

    python bench/bench_pocket.py [--repeat 5] [--ccdid 6] [--qid 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ztfluigi import camera, corrections, nonlinearity, pocket  # noqa: E402
from ztfluigi.corrections import CorrectionSpec  # noqa: E402
from ztfluigi.sim import rawfile, schedule  # noqa: E402

DATE = dt.date(2020, 1, 15)
RESULTS = Path("bench/results")
TARGET_FRACTION, TARGET_TOTAL_S = 0.10, 0.35  #: pocket ≤ 10 % of a 0.35 s quadrant


def best(func: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(best wall-clock s, best CPU s of this process) over ``repeat`` calls."""
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        func()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in float32 ulps (signed-magnitude ordering, so ±0 and sign changes count right)."""

    def key(x: np.ndarray) -> np.ndarray:
        i = np.ascontiguousarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)

    return np.abs(key(a) - key(b))


def agreement(new: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """max |Δ| (DN), max ulps where |ref| > 1e-3 DN, pixels differing, max |Δ| below 1e-3 DN."""
    d = np.abs(new.astype(np.float64) - ref.astype(np.float64))
    u = ulps(new, ref)
    big = np.abs(ref) > 1e-3
    return {
        "max_abs_dn": float(d.max()),
        "max_ulps_above_1e-3_dn": int(u[big].max(initial=0)),
        "pixels_differing": int(np.count_nonzero(u)),
        "max_abs_dn_below_1e-3_dn": float(d[~big].max(initial=0.0)),
        "bitwise": bool(np.array_equal(new, ref)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ccdid", type=int, default=6)
    parser.add_argument("--qid", type=int, default=1)
    args = parser.parse_args()
    ccdid, qid = args.ccdid, args.qid
    cfg = schedule.SimConfig(scale=1)
    exp = next(e for e in schedule.night_log(cfg, DATE) if e.imgtype == "object")
    t0 = time.perf_counter()
    data, over = rawfile.render_quadrant(cfg, DATE, exp, ccdid, qid)
    print(f"rendered c{ccdid:02d} q{qid} {exp.imgtype} {DATE} {data.shape} in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)  # fmt: skip

    # The frame pocket.correct receives inside correct_quadrant (overscan + NL, read order).
    spec = CorrectionSpec()
    a, b = nonlinearity.coefficients(ccdid, qid, DATE)
    d64, o64 = corrections.subtract_overscan(data.astype(np.float64), over.astype(np.float64),
                                             qid, spec)  # fmt: skip
    frame = np.hstack([camera.raw_to_read(nonlinearity.correct(d64, a, b), qid),
                       camera.raw_to_read(nonlinearity.correct(o64, a, b), qid)])  # fmt: skip
    pars = pocket.parameters(ccdid, qid)
    pocket.correct_compiled(frame[:20], pars)  # compile (or load the cache) outside the timing
    corrections.correct_quadrant(data[:20], over[:20], ccdid, qid, DATE, spec)
    corrections.correct_quadrant(data[:20], over[:20], ccdid, qid, DATE,
                                 CorrectionSpec(pocket="off"))  # fmt: skip

    rows: dict[str, tuple[float, float]] = {}
    rows["pocket.correct (numpy, today)"] = best(lambda: pocket.correct(frame, pars), args.repeat)
    rows["pocket.correct_compiled (numba)"] = best(
        lambda: pocket.correct_compiled(frame, pars), args.repeat
    )
    outputs = {}
    for engine in ("numpy", "numba"):
        for setting in ("off", "on"):
            s = CorrectionSpec(pocket=setting)

            def run(engine: str = engine, s: CorrectionSpec = s) -> None:
                outputs[(engine, s.pocket)] = corrections.correct_quadrant(
                    data, over, ccdid, qid, DATE, s, engine=engine
                )

            rows[f"correct_quadrant {engine}, pocket {setting}"] = best(run, args.repeat)

    agree = {
        "pocket.correct_compiled vs pocket.correct (float32)": agreement(
            pocket.correct_compiled(frame, pars).astype(np.float32),
            pocket.correct(frame, pars).astype(np.float32),
        ),
        "correct_quadrant numba vs numpy, pocket off": agreement(
            outputs[("numba", "off")], outputs[("numpy", "off")]
        ),
        "correct_quadrant numba vs numpy, pocket on": agreement(
            outputs[("numba", "on")], outputs[("numpy", "on")]
        ),
    }
    print(f"\nseconds per quadrant, best of {args.repeat} (wall | CPU of this process); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip
    for name, (wall, cpu) in rows.items():
        print(f"  {name:<42}{wall:8.3f}{cpu:8.3f}")
    share = {
        (engine, i): rows[f"correct_quadrant {engine}, pocket on"][i]
        - rows[f"correct_quadrant {engine}, pocket off"][i]
        for engine in ("numpy", "numba") for i in (0, 1)
    }  # fmt: skip
    pocket_numpy, pocket_numba = share[("numpy", 0)], share[("numba", 0)]
    print(f"  pocket share of correct_quadrant (wall | CPU): numpy {share[('numpy', 0)]:.3f} | "
          f"{share[('numpy', 1)]:.3f} s, fused numba {share[('numba', 0)]:.3f} | "
          f"{share[('numba', 1)]:.3f} s (target <= {TARGET_FRACTION * TARGET_TOTAL_S:.3f} s)")
    print("agreement:")
    for name, values in agree.items():
        print(f"  {name}: {values}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "quadrant": {"ccdid": ccdid, "qid": qid, "date": DATE.isoformat(),
                     "shape": list(data.shape), "imgtype": exp.imgtype},
        "repeat": args.repeat,
        "seconds_best_wall_cpu": {k: [round(w, 4), round(c, 4)] for k, (w, c) in rows.items()},
        "pocket_in_correct_quadrant_s": {"numpy": round(pocket_numpy, 4),
                                         "numba": round(pocket_numba, 4)},
        "pocket_in_correct_quadrant_cpu_s": {"numpy": round(share[("numpy", 1)], 4),
                                             "numba": round(share[("numba", 1)], 4)},
        "target_s": TARGET_FRACTION * TARGET_TOTAL_S,
        "agreement": agree,
        "load_average_1min": os.getloadavg()[0],
    }  # fmt: skip
    (RESULTS / "pocket.json").write_text(json.dumps(record, indent=1))
    print(f"written {RESULTS / 'pocket.json'}")


if __name__ == "__main__":
    main()
