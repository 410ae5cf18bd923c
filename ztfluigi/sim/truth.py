"""The synthetic instrument's truth, in the units the pipeline produces.

What the pipeline must recover, computed noise-free from the same functions that rendered the
raw files (DESIGN.md §3.6):

* per amplifier: gain, read noise, pedestal, saturation, non-linearity coefficients;
* per CCD and filter: the noise-free normalised master flat and its ``FLTNORM``, and the
  focal-plane level ``FLTNORM_FP``, exactly as the reference recipe defines them;
* per star and science quadrant: true position (epoch-propagated sky position and raw-oriented
  0-based pixel) and true counts, in electrons and in **science-image units**: the DN the star
  has in ``S = (R − B) / Fn × FLTNORM_FP / FLTNORM`` built from noise-free calibrations.

Science-image units differ from electrons by ``sky response / (gain × flat)``: smooth, because
the pixel response non-uniformity cancels between sky and dome light; what remains is the
injected dome-vs-sky illumination difference and the LED colour mixture, which is exactly what a
pipeline that flat-fields with dome flats leaves in its photometry.
"""

from __future__ import annotations

import datetime as dt
import functools

import numpy as np
import pyarrow as pa

from ztfluigi import camera
from ztfluigi.camera import FILTER_LEDS
from ztfluigi.refcat import footprint_cone
from ztfluigi.sim import astrometry, detector, gaia, rawfile, sky
from ztfluigi.sim.schedule import FLAT_EXPTIME, Exposure, SimConfig

STAR_SCHEMA = pa.schema([
    ("filefracday", pa.int64()), ("ccdid", pa.int8()), ("qid", pa.int8()),
    ("source_id", pa.int64()), ("ra", pa.float64()), ("dec", pa.float64()),
    ("x", pa.float64()), ("y", pa.float64()), ("inside", pa.bool_()), ("mag", pa.float64()),
    ("electrons", pa.float64()), ("counts", pa.float64()), ("fwhm_pix", pa.float64()),
    ("dzp", pa.float64()),
])  # fmt: skip
"""Star truth: ``x``, ``y`` 0-based raw-oriented pixel; ``counts`` in science-image DN;
``dzp = −2.5 log10(counts / electrons)`` (mag): the zero-point offset the star sees at its
position in the pipeline's photometry, δZP(u, v) of a starflat up to a constant."""


def detector_table(cfg: SimConfig, date: dt.date) -> pa.Table:
    """One row per amplifier: ccdid, qid, gain, read_noise, pedestal, saturation, nl_a, nl_b."""
    rows = [detector.amplifier(cfg.seed, c, q, date) for c in range(1, 17) for q in range(1, 5)]
    return pa.table({
        "ccdid": [a.ccdid for a in rows], "qid": [a.qid for a in rows],
        "gain": [a.gain for a in rows], "read_noise": [a.read_noise for a in rows],
        "pedestal": [a.pedestal for a in rows], "saturation": [a.saturation for a in rows],
        "nl_a": [a.nl_a for a in rows], "nl_b": [a.nl_b for a in rows],
    })  # fmt: skip


@functools.lru_cache(maxsize=64)
def true_master_flat(
    cfg: SimConfig, date: dt.date, ccdid: int, filtercode: str
) -> tuple[np.ndarray, float]:
    """Noise-free normalised master flat (sky-oriented CCD, float64) and its FLTNORM (DN)."""
    shape = camera.quadrant_shape(cfg.scale)
    total, levels = 0.0, []
    for led in FILTER_LEDS[filtercode]:
        quads = {}
        for q in range(1, 5):
            amp = detector.amplifier(cfg.seed, ccdid, q, date)
            electrons = (
                detector.led_rate(led)
                * FLAT_EXPTIME
                * detector.dome_response(cfg.seed, ccdid, q, shape, led)
            )
            quads[q] = electrons.astype(np.float64) / amp.gain
        led_ccd = camera.assemble_ccd(quads)
        level = float(np.median(led_ccd))
        total = total + led_ccd / level
        levels.append(level)
    return total / len(levels), float(np.mean(levels))


@functools.lru_cache(maxsize=16)
def true_focal_plane_level(cfg: SimConfig, date: dt.date, filtercode: str) -> float:
    """Noise-free FLTNORM_FP: global median of the 16 de-normalised flats."""
    values = []
    for c in range(1, 17):
        flat, norm = true_master_flat(cfg, date, c, filtercode)
        values.append((flat * norm).ravel())
    return float(np.median(np.concatenate(values)))


def science_scale(cfg: SimConfig, date: dt.date, exp: Exposure, ccdid: int, qid: int) -> np.ndarray:
    """Science-image DN per photo-electron (at unit response) for each pixel, raw orientation."""
    shape = camera.quadrant_shape(cfg.scale)
    amp = detector.amplifier(cfg.seed, ccdid, qid, date)
    flat, norm = true_master_flat(cfg, date, ccdid, exp.filtercode)
    rows, cols = camera.quadrant_slice(qid, flat.shape)
    flat_q = camera.sky_to_raw(flat[rows, cols])
    response = detector.sky_response(cfg.seed, ccdid, qid, shape) / amp.gain
    fp = true_focal_plane_level(cfg, date, exp.filtercode)
    with np.errstate(divide="ignore", invalid="ignore"):
        return response * fp / (flat_q * norm)


def dzp_map(cfg: SimConfig, date: dt.date, exp: Exposure, ccdid: int, qid: int) -> np.ndarray:
    """δZP (mag) of every window pixel (raw orientation): ``−2.5 log10(science DN per e⁻)``.

    What a star at that pixel sees in the pipeline's photometry (flat-fielded with the
    focal-plane normalisation): the injected dome/sky ratio, the LED mixture of the flat and
    the flat normalisation; the gain and the pixel response cancel. A starflat measures it up
    to a constant (its gauge).
    """
    with np.errstate(divide="ignore"):
        return -2.5 * np.log10(science_scale(cfg, date, exp, ccdid, qid))


@functools.lru_cache(maxsize=16)
def quadrant_flat_levels(
    cfg: SimConfig, date: dt.date, filtercode: str
) -> dict[tuple[int, int], float]:
    """Noise-free median of each quadrant's de-normalised flat over FLTNORM_FP.

    A quadrant's flat scaled to its own median (per-quadrant normalisation) multiplies that
    quadrant's fluxes by this level with respect to the pipeline's focal-plane normalisation.
    """
    fp = true_focal_plane_level(cfg, date, filtercode)
    levels = {}
    for c in range(1, 17):
        flat, norm = true_master_flat(cfg, date, c, filtercode)
        for q in range(1, 5):
            rows, cols = camera.quadrant_slice(q, flat.shape)
            levels[(c, q)] = float(np.median(flat[rows, cols]) * norm / fp)
    return levels


def star_table(cfg: SimConfig, date: dt.date, exp: Exposure, ccdid: int, qid: int) -> pa.Table:
    """True stars of one science quadrant: ids, positions and counts (e⁻ and science DN)."""
    shape = camera.quadrant_shape(cfg.scale)
    cond = rawfile.conditions(exp)
    stars = sky.quadrant_stars(cfg.seed, exp, ccdid, qid, shape, cond.airmass)
    scale = science_scale(cfg, date, exp, ccdid, qid)
    px = np.clip(np.round(stars.x).astype(int), 0, shape[1] - 1)
    py = np.clip(np.round(stars.y).astype(int), 0, shape[0] - 1)
    inside = (
        (stars.x >= -0.5)
        & (stars.x < shape[1] - 0.5)
        & (stars.y >= -0.5)
        & (stars.y < shape[0] - 0.5)
    )
    n = stars.x.size
    return pa.table(schema=STAR_SCHEMA, data={
        "filefracday": pa.array([int(exp.filefracday)] * n, pa.int64()),
        "ccdid": pa.array([ccdid] * n, pa.int8()), "qid": pa.array([qid] * n, pa.int8()),
        "source_id": stars.source_id, "ra": stars.ra, "dec": stars.dec,
        "x": stars.x, "y": stars.y, "inside": inside, "mag": stars.mag,
        "electrons": stars.electrons,
        "counts": stars.electrons * scale[py, px],
        "fwhm_pix": np.full(n, cond.fwhm_pix),
        "dzp": -2.5 * np.log10(scale[py, px]),
    })  # fmt: skip


def refcat_pixels(cfg: SimConfig, exposures: list[Exposure], margin_pix: float = 60.0) -> set[int]:
    """HEALPix pixels (order ``gaia.SIM_ORDER``) of the sky every science quadrant sees."""
    shape = camera.quadrant_shape(cfg.scale)
    pixels: set[int] = set()
    for exp in exposures:
        if exp.imgtype != "object":
            continue
        for c in range(1, 17):
            for q in range(1, 5):
                wcs = astrometry.quadrant_wcs(exp.ra, exp.dec, c, q, shape)
                ra, dec, radius = footprint_cone(wcs, shape, margin_pix * camera.PIXEL_SCALE)
                pixels.update(int(p) for p in gaia.pixels_for_cone(ra, dec, radius))
    return pixels
