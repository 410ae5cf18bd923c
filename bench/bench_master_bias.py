"""Master bias of one real-size CCD (10 frames of 6160×6144): read, corrections, stacking.

Compares, in the same process and on the same frames, raw readers (fitsio vs astropy) and the
stacking step (ztfluigi's kernel vs astropy ``sigma_clip`` + ``nanmedian``, the reference
pipeline's path), reporting time, peak memory and agreement.

    python bench/bench_master_bias.py            # generates 10 synthetic raw biases once (cache)
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import sigma_clip

from ztfluigi import calib, corrections, raw
from ztfluigi.archive.sim import SimArchive
from ztfluigi.sim.schedule import SimConfig

DATE = dt.date(2019, 3, 31)
CCDID = 5


def synthetic_biases(cache: Path) -> list[Path]:
    """The last 10 biases of CCD 5 on the demo night at real size (generated once)."""
    archive = SimArchive(SimConfig(seed=0, scale=1))
    biases = [e for e in archive.exposures(DATE).values() if e.imgtype == "bias"][calib.BIAS_SKIP :]
    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    for exp in biases:
        name = exp.raw_name(CCDID)
        path = cache / name.filename
        if not path.exists():
            path.write_bytes(archive.fetch_raw(name))
        paths.append(path)
    return paths


def timed(fn, *args):  # noqa: ANN001, ANN202
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, seconds, peak / 1e9


def read_astropy(content: bytes) -> list[np.ndarray]:
    with fits.open(io.BytesIO(content)) as hdul:
        return [np.asarray(hdul[i].data, dtype=np.float32) for i in range(1, 9)]


def astropy_stack(frames: list[np.ndarray]) -> np.ndarray:
    stack = np.stack(frames)
    clipped = sigma_clip(stack, sigma=3, maxiters=1, cenfunc="median", stdfunc="std", axis=0,
                         masked=False, copy=False)  # fmt: skip
    return np.nanmedian(clipped, axis=0).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("bench/results/raw_biases_scale1"))
    parser.add_argument("--no-astropy", action="store_true", help="skip the astropy stack")
    args = parser.parse_args()
    paths = synthetic_biases(args.cache)
    contents = [p.read_bytes() for p in paths]
    t_fitsio = min(timed(raw.read_raw, contents[0], paths[0].name)[1] for _ in range(2))
    t_astropy = min(timed(read_astropy, contents[0])[1] for _ in range(2))
    t0 = time.perf_counter()
    frames = []
    t_read = t_corr = 0.0
    for content, path in zip(contents, paths, strict=True):
        t1 = time.perf_counter()
        ccd = raw.read_raw(content, path.name)
        t2 = time.perf_counter()
        frames.append(corrections.correct_ccd(ccd.data, ccd.overscan, CCDID, DATE))
        t_read += t2 - t1
        t_corr += time.perf_counter() - t2
    ours, t_stack, mem_stack = timed(calib.master_bias, frames)
    total = time.perf_counter() - t0
    input_gb = sum(f.nbytes for f in frames) / 1e9
    record = {
        "frames": len(frames), "shape": list(frames[0].shape), "input_GB": round(input_gb, 2),
        "read_fitsio_s_per_file": round(t_fitsio, 3),
        "read_astropy_s_per_file": round(t_astropy, 3),
        "read_ratio_astropy_over_fitsio": round(t_astropy / t_fitsio, 2),
        "read_s": round(t_read, 2), "corrections_s": round(t_corr, 2),
        "stack_s": round(t_stack, 2), "stack_peak_GB": round(mem_stack, 2),
        "master_bias_total_s": round(total, 2),
    }  # fmt: skip
    if not args.no_astropy:
        ref, t_ref, mem_ref = timed(astropy_stack, frames)
        record.update({
            "astropy_stack_s": round(t_ref, 2), "astropy_stack_peak_GB": round(mem_ref, 2),
            "speedup_vs_astropy": round(t_ref / t_stack, 1),
            "memory_ratio_vs_astropy": round(mem_ref / mem_stack, 1),
            "max_abs_diff_vs_astropy": float(np.nanmax(np.abs(ref - ours))),
        })  # fmt: skip
    print(json.dumps(record, indent=1))
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "master_bias.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
