"""Fringe model build and per-quadrant correction at real size (3080 × 3072).

python bench/bench_fringes.py               # 60 exposures (default period: 20 nights × 3 zi)
python bench/bench_fringes.py --n 30        # another training-set size

The quadrants are synthesised directly (not through the raw chain, which bench_quadrant.py
times): sky of ≈250 DN (gain 6: ≈1500 e⁻) with a 0.3 % smooth gradient, the simulator's fringe
modes of CCD 5 q3 (``sim.fringes.fringe_modes`` at full size) mixed with its per-exposure
statistics, Gaussian noise of the sky (≈6.5 DN), ≈3000 Moffat stars per exposure at new
positions with the IPAC-like source bit where a star exceeds 1.5 σ. Reported: map time per
exposure, decomposition time, model build total, correction time per quadrant (best of 3), the
residual fringe (RMS over source-free pixels, against the injected truth) and background RMS
before/after, on exposures of the training set.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ztfluigi import camera, fringes
from ztfluigi.sim import fringes as simfringes
from ztfluigi.sim import psf

SHAPE = camera.QUADRANT_SHAPE
GAIN = 6.0  #: e⁻/DN
SOURCE_BIT = 1 << 1  #: IPAC "sexsources"


def synthesise(rng: np.random.Generator, modes: np.ndarray) -> tuple[np.ndarray, ...]:
    """(science DN, IPAC-like mask, true fringe DN) of one exposure."""
    sky = 250.0 * rng.uniform(0.8, 1.6)
    dark = 250.0 * rng.uniform(0.8, 1.0)  # line emission scales with the moonless sky
    glow = np.exp(rng.normal(0.0, simfringes.NIGHT_GLOW_SIGMA))
    lines = np.clip(1.0 + rng.normal(0.0, simfringes.LINE_SIGMA, modes.shape[0]), 0.2, None)
    weights = (dark * simfringes.LINE_FRACTION * glow * lines).astype(np.float32)
    fringe = np.tensordot(weights, modes, axes=1)
    x = np.linspace(-1, 1, SHAPE[1], dtype=np.float32)[None, :]
    image = (sky * (1.0 + 0.003 * x)).astype(np.float32) + fringe
    stars = np.zeros(SHAPE, np.float32)
    n = 3000
    flux = 10 ** rng.uniform(2.5, 5.5, n)
    psf.render(stars, rng.uniform(0, SHAPE[1], n), rng.uniform(0, SHAPE[0], n), flux, 2.0)
    sigma = np.sqrt(sky * GAIN) / GAIN
    image += stars + sigma * rng.standard_normal(SHAPE, dtype=np.float32)
    mask = np.where(stars > 1.5 * sigma, SOURCE_BIT, 0).astype(np.int16)
    return image, mask, fringe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="training exposures")
    parser.add_argument("--check", type=int, default=4, help="exposures corrected and scored")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    modes = np.array(simfringes.fringe_modes(0, 5, 3, SHAPE))
    t_modes = time.perf_counter() - t0
    maps, kept, t_maps = [], [], 0.0
    for i in range(args.n):
        image, mask, fringe = synthesise(rng, modes)
        t0 = time.perf_counter()
        maps.append(fringes.fringe_map(image, mask, f"exp{i:03d}"))
        t_maps += time.perf_counter() - t0
        if i < args.check:
            kept.append((image, mask, fringe))
    t0 = time.perf_counter()
    qm = fringes.build_quadrant(3, maps)
    t_decompose = time.perf_counter() - t0
    times, inj, res, before, after = [], [], [], [], []
    for image, mask, fringe in kept:
        for _ in range(3 if not times else 1):
            t0 = time.perf_counter()
            fit = fringes.correct(image, mask, qm.modes)
            times.append(time.perf_counter() - t0)
        good = ~fringes.bad_pixels(image, mask)
        inj.append(np.mean(fringe[good] ** 2))
        res.append(np.mean((fringe - (image - fit.data))[good] ** 2))
        before.append(float(np.std(image[good])))
        after.append(float(np.std(fit.data[good])))
    report = {
        "shape": list(SHAPE), "n_exposures": args.n, "modes_kept": int(qm.modes.shape[0]),
        "explained": [round(float(e), 4) for e in qm.explained],
        "sim_modes_s": round(t_modes, 2), "map_s_per_exposure": round(t_maps / args.n, 3),
        "decompose_s": round(t_decompose, 2),
        "model_build_s_per_quadrant": round(t_maps + t_decompose, 1),
        "model_build_s_per_ccd_est": round(4 * (t_maps + t_decompose), 1),
        "model_fits_mb": round(qm.modes.nbytes * 4 / 2**20, 1),
        "correct_s_per_quadrant": round(min(times), 3),
        "residual_over_injected": round(float(np.sqrt(np.mean(res) / np.mean(inj))), 4),
        "background_rms_before_dn": round(float(np.mean(before)), 3),
        "background_rms_after_dn": round(float(np.mean(after)), 3),
    }  # fmt: skip
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
