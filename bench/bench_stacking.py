"""Clipped-median stack: astropy (the reference path), ccdproc, ztfluigi numpy and numba engines.

python bench/bench_stacking.py            # 10 × (3080, 6144) float32: half a CCD
python bench/bench_stacking.py --full     # 10 × (6160, 6144) float32: a master bias

One process, synthetic bias-like frames (100 DN + 5 DN noise + per-frame offsets, 0.1 % of
"cosmic" outliers up to +5000 DN, 0.01 % NaN). Each implementation's time (best of --repeat for
the fast ones) and peak extra memory: RSS high-water mark (reset through /proc/self/clear_refs)
minus the RSS before the call, so it includes the output array but not the input stack.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ztfluigi import stacking
from ztfluigi.stacking import ClipSpec, clipped_median

MB = 1 << 20


def _status_kb(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1))


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(fn: Callable[[], np.ndarray], repeat: int = 1) -> tuple[float, float, np.ndarray]:
    """(best time in s, peak extra RSS in MB of the first call, result)."""
    best, peak, result = float("inf"), float("nan"), None
    for i in range(repeat):
        result = None
        gc.collect()
        rss0 = _status_kb("VmRSS")
        ok = _reset_peak()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
        if i == 0 and ok:
            peak = (_status_kb("VmHWM") - rss0) / 1024
    return best, peak, result


def make_stack(nframes: int, ny: int, nx: int, seed: int) -> np.ndarray:
    """Bias-like float32 frames, generated frame by frame (no float64 temporary of the stack)."""
    rng = np.random.default_rng(seed)
    stack = np.empty((nframes, ny, nx), np.float32)
    for k in range(nframes):
        frame = stack[k]
        rng.standard_normal((ny, nx), dtype=np.float32, out=frame)
        frame *= 5.0
        frame += np.float32(100.0 + rng.normal(0, 0.5))
        n_out = int(1e-3 * ny * nx)
        flat = frame.reshape(-1)
        flat[rng.integers(0, ny * nx, n_out)] += rng.uniform(20, 5000, n_out).astype(np.float32)
        flat[rng.integers(0, ny * nx, int(1e-4 * ny * nx))] = np.nan
    return stack


def astropy_path(stack: np.ndarray, spec: ClipSpec) -> np.ndarray:
    from astropy.stats import sigma_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clipped = sigma_clip(
            stack,
            sigma=spec.sigma,
            axis=0,
            maxiters=spec.iterations,
            cenfunc="median",
            stdfunc="mad_std" if spec.use_mad else "std",
            masked=False,
        )
        return np.nanmedian(clipped, axis=0)


def ccdproc_path(stack: np.ndarray, spec: ClipSpec) -> np.ndarray:
    from astropy.nddata import CCDData
    from ccdproc import Combiner

    frames = [CCDData(f, mask=~np.isfinite(f), unit="adu") for f in stack]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comb = Combiner(frames, dtype=np.float32)
        del frames
        comb.sigma_clipping(
            low_thresh=spec.sigma, high_thresh=spec.sigma, func=np.ma.median, dev_func=np.ma.std
        )
        result = comb.median_combine()
    data = np.asarray(result.data, np.float32)
    if result.mask is not None:
        data = np.where(result.mask, np.float32(np.nan), data)
    return data


def compare(result: np.ndarray, ref: np.ndarray | None) -> dict:
    if ref is None:
        return {"max_abs_diff": None, "n_diff": None, "identical": None}
    both = np.isfinite(result) & np.isfinite(ref)
    nan_mismatch = int(np.count_nonzero(np.isnan(result) != np.isnan(ref)))
    diff = np.abs(result[both].astype(np.float64) - ref[both])
    n_diff = int(np.count_nonzero(diff)) + nan_mismatch
    return {
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "n_diff": n_diff,
        "nan_mismatch": nan_mismatch,
        "identical": bool(np.array_equal(result, ref, equal_nan=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="a whole CCD (6160 rows)")
    parser.add_argument("--nframes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="repeats of the fast engines")
    parser.add_argument("--method", default="reference", choices=stacking.METHODS)
    parser.add_argument("--no-astropy", action="store_true")
    parser.add_argument("--no-ccdproc", action="store_true")
    args = parser.parse_args()

    ny, nx = (6160 if args.full else 3080), 6144
    spec = ClipSpec(method=args.method)
    t0 = time.perf_counter()
    stack = make_stack(args.nframes, ny, nx, args.seed)
    gen_s = time.perf_counter() - t0
    print(
        f"stack {stack.shape} float32 = {stack.nbytes / MB:.0f} MB (generated in {gen_s:.1f} s),"
        f" method={spec.method}, cpus={os.cpu_count()}, load={os.getloadavg()}"
    )
    rows: list[dict] = []
    ref = None

    def run(name: str, fn: Callable[[], np.ndarray], repeat: int = 1) -> np.ndarray:
        seconds, peak_mb, result = measure(fn, repeat)
        row = {"name": name, "seconds": round(seconds, 3), "peak_extra_MB": round(peak_mb)}
        row.update(compare(result, ref))
        rows.append(row)
        print(f"  {name:<34s} {seconds:8.3f} s  peak +{peak_mb:6.0f} MB", flush=True)
        return result

    if not args.no_astropy:
        ref = run("astropy sigma_clip + nanmedian", lambda: astropy_path(stack, spec))
        rows[-1].update(compare(ref, ref))
    if not args.no_ccdproc:
        try:
            import ccdproc  # noqa: F401
        except ImportError:
            print("  ccdproc not installed: skipped (pip install ccdproc)")
        else:
            if spec.use_mad:
                print("  ccdproc skipped for method=mad")
            else:
                run("ccdproc Combiner sigma_clip+median", lambda: ccdproc_path(stack, spec))

    numba_load_s = None
    engines = [("numpy", 2), ("numpy", 1)]
    t0 = time.perf_counter()
    if stacking.numba_available():
        clipped_median(stack[:, :4, :300], spec, engine="numba")  # compile or load the cache
        numba_load_s = round(time.perf_counter() - t0, 2)
        engines = [("numba", 2), ("numba", 1), *engines]
        print(f"  (numba kernels compiled/loaded in {numba_load_s} s)")
    else:
        print("  numba not installed: numba engine skipped")
    for engine, threads in engines:
        run(
            f"ztfluigi {engine} ({threads} thread{'s' * (threads > 1)})",
            lambda e=engine, t=threads: clipped_median(stack, spec, engine=e, threads=t),
            args.repeat,
        )
    if stacking.numba_available():
        frames = list(stack)  # a sequence of frames: copied block by block
        run(
            "ztfluigi numba, list of frames",
            lambda: clipped_median(frames, spec, engine="numba"),
            args.repeat,
        )

    base = rows[0]["seconds"] if ref is not None else None
    print()
    print(
        f"{'implementation':<36s} {'time s':>8s} {'×astropy':>9s} {'peak MB':>8s} "
        f"{'max|diff|':>10s} {'identical':>9s}"
    )
    for row in rows:
        row["speedup_vs_astropy"] = round(base / row["seconds"], 1) if base else None
        speed = f"{row['speedup_vs_astropy']:.1f}" if base else "-"
        diff = "-" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.3g}"
        print(
            f"{row['name']:<36s} {row['seconds']:8.3f} {speed:>9s} {row['peak_extra_MB']:8.0f} "
            f"{diff:>10s} {str(row['identical']):>9s}"
        )
    import astropy

    record = {
        "shape": list(stack.shape),
        "dtype": "float32",
        "input_MB": round(stack.nbytes / MB),
        "method": spec.method,
        "cpus": os.cpu_count(),
        "load_after": os.getloadavg(),
        "numba_compile_or_load_s": numba_load_s,
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "astropy": astropy.__version__,
        },
        "rows": rows,
    }
    for mod in ("numba", "ccdproc"):
        try:
            record["versions"][mod] = __import__(mod).__version__
        except ImportError:
            pass
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    name = (
        "stacking.json"
        if not args.full and spec.method == "reference"
        else (f"stacking_{'full' if args.full else 'half'}_{spec.method}.json")
    )
    (out / name).write_text(json.dumps(record, indent=1))
    print(f"\nwritten {out / name}")


if __name__ == "__main__":
    main()
