"""Aperture photometry of one real-size quadrant: today's sep path vs the one-pass exact kernel.

python bench/bench_apertures.py              # best of 5, one process, one core
python bench/bench_apertures.py --repeat 3
python bench/bench_apertures.py --kernels    # only the compiled kernels, CPU ms

The quadrant is the simulator's (seed 0, scale 1: 3080 × 3072, field 568 CCD 6 q1 of 2019-03-31,
≈ 4 500 Gaia-like stars, its IPAC-like mask and TPV header) rendered on a flat sky in DN with
Gaussian noise. Timed, each the best of --repeat, the two paths interleaved so that machine load
hits both alike:

* **sums**: ten radii of the in-footprint stars from a background-subtracted image:
  today = the IPAC-mask boolean over the frame + ``sep.sum_circle`` per radius + sep's mask
  rescaling (``photometry._sum_apertures`` on the 180°-rotated arrays, as ``photometry_catalogue``
  under ``PhotometrySpec.reference()``); new = ``photometry._sum_exact`` (the kernel reads image,
  background map and mask directly: no frame-wide subtraction or mask).
* **catalogue**: ``photometry_catalogue`` under the reference spec (sep background and sums in the
  sky frame) vs the default spec (star-masked background in the raw frame, exact sums).

Also printed: the largest |difference| of the sums relative to Σ|pixel × overlap| (≤ 1e-12).

``--kernels``: CPU time (``time.process_time``, best of --repeat, so that load from other
processes counts less) of the two compiled kernels of the default spec on this quadrant, with
the arguments ``photometry_catalogue`` gives them: ``circular_apertures`` (ten radii of the
in-footprint stars, background and rms maps, IPAC mask, saturation) and the star ``disk_mask``
painted into the background's bad-pixel map. Issue #15, same process, 2-core Xeon (4 307 stars,
6 994 disks): 86–91 → 49–53 CPU-ms and 8–11 → 3–5 CPU-ms, outputs bitwise unchanged.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from collections.abc import Callable

import numpy as np
from astropy.wcs import WCS

from ztfluigi import apertures, camera, refcat
from ztfluigi import photometry as ph
from ztfluigi.sim import detector, gaia, ipac, psf, rawfile, schedule, sky

DATE = dt.date(2019, 3, 31)


def build_quadrant() -> dict[str, object]:
    """A real-size synthetic science quadrant with its mask, header and reference catalogue."""
    cfg = schedule.SimConfig(seed=0, scale=1)
    exp = next(e for e in schedule.night_log(cfg, DATE)
               if e.imgtype == "object" and e.filtercode == "zr")  # fmt: skip
    ccdid, qid = 6, 1
    shape = camera.quadrant_shape(cfg.scale)
    cond = rawfile.conditions(exp)
    amp = detector.amplifier(cfg.seed, ccdid, qid, DATE)
    header = ipac.science_header(cfg, DATE, exp, ccdid, qid)
    header["GAIN"] = amp.gain
    stars = sky.quadrant_stars(cfg.seed, exp, ccdid, qid, shape, cond.airmass)
    sky_e = sky.sky_electrons(exp, cond.airmass, cond.moon_illumination)
    electrons = np.full(shape, sky_e, np.float32)
    psf.render(electrons, stars.x, stars.y, stars.electrons, cond.fwhm_pix)
    rng = np.random.default_rng(0)
    noise = np.sqrt(electrons + amp.read_noise**2) * rng.standard_normal(shape, dtype=np.float32)
    image = ((electrons + noise) / np.float32(amp.gain)).astype(np.float32)
    mask = ipac.mask(cfg, DATE, exp, ccdid, qid)
    ra, dec, radius = refcat.footprint_cone(WCS(header), shape, 30.0)
    cat = refcat.at_epoch(gaia.generate_cone(cfg.seed, ra, dec, radius), exp.obsjd - 2400000.5)
    return {"image": image, "mask": mask, "header": header, "refcat": cat, "gain": amp.gain}


def best(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best wall time (s) of each function over ``repeat`` interleaved rounds."""
    out = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[name] = min(out[name], time.perf_counter() - t0)
    return out


def best_cpu(fn: Callable[[], object], repeat: int, setup: Callable[[], object] | None = None
             ) -> float:  # fmt: skip
    """Best CPU time (s, this process) of ``fn(setup())`` (or ``fn()``) over ``repeat`` runs."""
    out = float("inf")
    for _ in range(repeat):
        arg = setup() if setup is not None else None
        t0 = time.process_time()
        fn(arg) if setup is not None else fn()
        out = min(out, time.process_time() - t0)
    return out


def kernels(q: dict[str, object], repeat: int) -> dict[str, object]:
    """CPU ms of the exact-aperture kernel and of the star disk painter (default spec)."""
    image, mask, header, cat = (q[k] for k in ("image", "mask", "header", "refcat"))
    spec = ph.PhotometrySpec()
    shape = image.shape
    radii = np.asarray(ph.RADII, float)
    saturate = float(header["SATURATE"])
    x_raw, y_raw = ph.positions(header, cat["ra"].to_numpy(), cat["dec"].to_numpy())
    inside = ph.in_footprint(*ph.raw_to_ref(x_raw, y_raw, shape), shape)
    gmag = cat[ph.GAIA_COLUMNS[3]].to_numpy()
    back, rms = ph.quadrant_background(image, mask, x_raw, y_raw, gmag, spec, saturate=saturate)
    xs, ys = x_raw[inside], y_raw[inside]

    def sums() -> object:
        return apertures.circular_apertures(
            image, xs, ys, radii, back=back, err=rms, mask=mask, bits=ph.MASK_PHOT,
            saturated_bits=ph.MASK_SATURATED, saturate=saturate,
        )  # fmt: skip

    # the star mask as quadrant_background paints it: brightest first into the bad-pixel map
    bad, _ = apertures.background_mask(image, mask, ph.MASK_ALL, saturate)
    g = np.where(np.isfinite(gmag), gmag, np.inf)
    order = np.argsort(g, kind="stable")
    radius = ph.star_mask_radius(gmag, spec)[order]
    xo, yo = np.asarray(x_raw, float)[order], np.asarray(y_raw, float)[order]

    def disks(base: np.ndarray) -> object:
        return apertures.disk_mask(shape, xo, yo, radius, spec.star_mask_max_fraction, base=base,
                                   cell=ph.BACKGROUND_MESH, in_place=True)  # fmt: skip

    sums(), disks(bad.copy())  # numba: load the compiled kernels before timing
    return {
        "stars": int(inside.sum()), "disks": int(np.isfinite(g).sum()), "repeat": repeat,
        "circular_apertures_cpu_ms": round(1e3 * best_cpu(sums, repeat), 2),
        "disk_mask_cpu_ms": round(1e3 * best_cpu(disks, repeat, bad.copy), 2),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--kernels", action="store_true", help="only the compiled kernels' CPU ms")
    args = parser.parse_args()

    q = build_quadrant()
    if args.kernels:
        print(json.dumps(kernels(q, args.repeat), indent=1))
        return
    image, mask, header, cat, gain = (q[k] for k in ("image", "mask", "header", "refcat", "gain"))
    shape = image.shape
    radii = np.asarray(ph.RADII, float)
    x_raw, y_raw = ph.positions(header, cat["ra"].to_numpy(), cat["dec"].to_numpy())
    x_ref, y_ref = ph.raw_to_ref(x_raw, y_raw, shape)
    inside = ph.in_footprint(x_ref, y_ref, shape)
    back, rms = ph.background(image, mask)
    sky_sub = ph.to_sky(image) - ph.to_sky(back)
    sky_mask, sky_rms = ph.to_sky(mask), ph.to_sky(rms)
    saturate = float(header["SATURATE"])

    def today() -> dict[str, np.ndarray]:
        bad = ph._bad_pixels(sky_sub, sky_mask, ph.MASK_PHOT)
        return ph._sum_apertures(sky_sub, bad, sky_rms, x_ref[inside], y_ref[inside], radii, gain)

    def kernel() -> dict[str, np.ndarray]:
        return ph._sum_exact(image, back, mask, rms, x_raw[inside], y_raw[inside], radii, gain,
                             False, saturate)  # fmt: skip

    def catalogue_reference() -> object:
        return ph.photometry_catalogue(image, mask, header, cat,
                                       spec=ph.PhotometrySpec.reference())  # fmt: skip

    def catalogue_default() -> object:
        return ph.photometry_catalogue(image, mask, header, cat)

    kernel(), catalogue_default()  # numba: load the compiled kernels before timing
    a, b = today(), kernel()
    scale = apertures.circular_apertures(np.abs(image - back), x_raw[inside], y_raw[inside],
                                         radii).sum  # fmt: skip
    both = np.isfinite(a["flux"]) & np.isfinite(b["flux"])
    worst = float(np.max(np.abs(a["flux"] - b["flux"])[both] / scale[both]))
    sums = best({"sep": today, "exact": kernel}, args.repeat)
    whole = best({"reference": catalogue_reference, "default": catalogue_default}, args.repeat)
    record = {
        "quadrant": list(shape), "stars_in_footprint": int(inside.sum()),
        "stars_in_cone": int(cat.num_rows), "radii": list(ph.RADII), "repeat": args.repeat,
        "sums_s": {k: round(v, 4) for k, v in sums.items()},
        "sums_ratio_exact_over_sep": round(sums["exact"] / sums["sep"], 3),
        "catalogue_s": {k: round(v, 4) for k, v in whole.items()},
        "catalogue_ratio_default_over_reference": round(whole["default"] / whole["reference"], 3),
        "max_abs_diff_over_sum_abs": worst,
        "flux_nan_equal": bool(np.array_equal(np.isfinite(a["flux"]), np.isfinite(b["flux"]))),
        "machine": platform.processor() or platform.machine(),
    }  # fmt: skip
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
