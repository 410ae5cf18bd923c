"""Starflat fit at real size: time, peak memory, design-matrix size, and the δZP cell grid.

Catalogues of a real-size (scale 1) starflat are synthesised from the simulator's truth at real
star density without pixels (:mod:`ztfluigi.sim.starflat`, analytic dome/sky δZP), then fitted
(:mod:`ztfluigi.starflat`) with several cell grids; for each: fit time, peak memory (RSS),
design matrix (rows × columns, non-zeros), χ²/dof, pull std and RMS of fit − truth (mmag).

python bench/bench_starflat.py                      # zr, grids 3, 5, 7, 9, 11
python bench/bench_starflat.py --grids 7 --scale 8  # the demo scale
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import time

import numpy as np

from ztfluigi import starflat
from ztfluigi.sim import starflat as simflat
from ztfluigi.sim.schedule import SimConfig

DATE = dt.date(2019, 3, 31)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def truth_cells(result: starflat.StarflatResult, true) -> np.ndarray:  # noqa: ANN001
    """The truth δZP averaged over every fitted cell, in the fit's gauge."""
    ix, iy = starflat.cell_index(true["x"].to_numpy(), true["y"].to_numpy(), result.config.grid)
    nx, ny = result.config.grid
    rc = 4 * (true["ccdid"].to_numpy().astype(np.int64) - 1) + true["qid"].to_numpy() - 1
    key = (rc * ny + iy) * nx + ix
    sums = np.bincount(key, weights=true["dzp"].to_numpy(), minlength=64 * nx * ny)
    counts = np.bincount(key, minlength=64 * nx * ny)
    fitted = ((4 * (result.cell_ccdid - 1) + result.cell_qid - 1) * ny + result.cell_iy) * nx \
        + result.cell_ix  # fmt: skip
    return result.in_gauge(sums[fitted] / counts[fitted])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--filter", default="zr")
    parser.add_argument("--grids", default="3,5,7,9,11")
    args = parser.parse_args()
    cfg = SimConfig(scale=args.scale, starflat_dates=(DATE.isoformat(),))
    t0 = time.perf_counter()
    tables, true = simflat.synthetic_catalogues(cfg, DATE, args.filter, exact=args.scale > 1)
    t_gen = time.perf_counter() - t0
    rows = sum(t.num_rows for t in tables)
    print(json.dumps({"scale": args.scale, "filter": args.filter, "catalogues": len(tables),
                      "catalogue_rows": rows, "synthesis_s": round(t_gen, 1),
                      "peak_rss_mb": round(peak_rss_mb())}), flush=True)  # fmt: skip
    for n in (int(g) for g in args.grids.split(",")):
        config = starflat.StarflatConfig(grid=(n, n))
        t0 = time.perf_counter()
        meas = starflat.measurements_from_catalogues(tables, config)
        t_sel = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = starflat.fit_starflat(meas, config)
        t_fit = time.perf_counter() - t0
        resid = result.dzp - truth_cells(result, true)
        s = result.solver
        print(json.dumps({
            "grid": n, "selected": meas.size, "stars": int(result.source_id.size),
            "measurements": result.n_measurements, "cells": int(result.dzp.size),
            "design": [s["design_rows"], s["design_columns"]], "nnz": s["design_nnz"],
            "lsmr_itn": s["itn"], "iterations": result.iterations, "free": result.n_free,
            "chi2_dof": round(result.chi2_dof, 4),
            "pull_std": round(float(np.std(resid / result.dzp_err)), 3),
            "rms_fit_minus_truth_mmag": round(1000 * float(np.sqrt(np.mean(resid**2))), 3),
            "median_cell_err_mmag": round(1000 * float(np.median(result.dzp_err)), 3),
            "select_s": round(t_sel, 1), "fit_s": round(t_fit, 1),
            "peak_rss_mb": round(peak_rss_mb()),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
