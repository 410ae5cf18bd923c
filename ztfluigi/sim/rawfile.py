"""Raw CCD files exactly as IRSA serves them, rendered from the synthetic instrument.

One file per CCD and exposure: a primary header and 4 quadrant + 4 overscan extensions, float32,
Rice tile-compressed with subtractive dithering, deterministic dither seed, quantisation step
= 1/16 of the expected pixel noise (q = 16 reproduces the size of real raw files; giving the
step explicitly rather than letting CFITSIO estimate the noise per tile is 4× faster),
CHECKSUM/DATASUM with fixed comments — the same seed and date give byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import tempfile
from dataclasses import dataclass

import fitsio
import numpy as np
from astropy.io import fits

from ztfluigi import camera, fitschecksum, nonlinearity, pocket
from ztfluigi.sim import astrometry, detector, ephemeris, fringes, headers, psf, sky
from ztfluigi.sim.schedule import Exposure, SimConfig, rng_for

QUANTIZE_LEVEL = 16  #: quantisation step = expected pixel noise / 16 (fpack's default q is 4)
TRAIL_FRACTION = 0.12  #: charge of the last data pixel trailing into the first overscan column
TRAIL_DECAY = 0.45  #: per-column decay of the trailing charge
COSMIC_RATE = 1.5  #: cosmic rays per cm² per minute of exposure + readout
PIXEL_CM = 15e-4


@dataclass(frozen=True)
class Conditions:
    """Observing conditions of an exposure."""

    airmass: float
    moon_illumination: float
    fwhm_pix: float


def conditions(exp: Exposure) -> Conditions:
    """Airmass, Moon and seeing (PSF FWHM in pixels) of an exposure."""
    alt, _ = ephemeris.altaz(exp.ra, exp.dec, exp.obsjd)
    am = float(ephemeris.airmass(alt)) if exp.imgtype == "object" else 1.0
    illum = float(ephemeris.moon_illuminated_fraction(exp.obsjd))
    return Conditions(am, illum, exp.seeing / camera.PIXEL_SCALE)


def expected_electrons(
    cfg: SimConfig, exp: Exposure, ccdid: int, qid: int, shape: tuple[int, int]
) -> np.ndarray:
    """Noise-free photo-electrons per pixel (raw orientation, float32), response included."""
    if exp.imgtype == "bias":
        return np.zeros(shape, np.float32)
    if exp.imgtype == "flat":
        rate = detector.led_rate(exp.led) * exp.exptime
        return rate * detector.dome_response(cfg.seed, ccdid, qid, shape, exp.led)
    cond = conditions(exp)
    light = np.full(shape, sky.sky_electrons(exp, cond.airmass, cond.moon_illumination), np.float32)
    if fringes.applies(cfg, exp):  # zi night-sky lines: additive fringes (sim.fringes)
        light += fringes.fringe_electrons(cfg, exp, ccdid, qid, shape, cond.airmass)
    stars = sky.quadrant_stars(cfg.seed, exp, ccdid, qid, shape, cond.airmass)
    psf.render(light, stars.x, stars.y, stars.electrons, cond.fwhm_pix)
    return light * detector.sky_response(cfg.seed, ccdid, qid, shape)


def cosmic_rays(
    cfg: SimConfig, exp: Exposure, ccdid: int, qid: int, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, electrons) of cosmic-ray hits: short tracks of 1–4 pixels."""
    rng = rng_for(cfg.seed, "cosmics", exp.filefracday, ccdid, qid)
    area = shape[0] * shape[1] * PIXEL_CM**2
    n = rng.poisson(COSMIC_RATE * area * (exp.exptime + 10.0) / 60.0)
    r0, c0 = rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)
    length = rng.integers(1, 5, n)
    direction = rng.integers(0, 2, n)
    rows = np.concatenate([r0 + direction * k for k in range(4)])
    cols = np.concatenate([c0 + (1 - direction) * k for k in range(4)])
    valid = np.concatenate([k < length for k in range(4)])
    charge = np.tile(rng.uniform(500, 8000, n), 4)
    keep = valid & (rows < shape[0]) & (cols < shape[1])
    return rows[keep], cols[keep], charge[keep]


def render_quadrant(
    cfg: SimConfig, date: dt.date, exp: Exposure, ccdid: int, qid: int
) -> tuple[np.ndarray, np.ndarray]:
    """Measured ADU of one amplifier: (data, overscan) in raw orientation, float32."""
    shape = camera.quadrant_shape(cfg.scale)
    amp = detector.amplifier(cfg.seed, ccdid, qid, date)
    rng = rng_for(cfg.seed, "noise", exp.filefracday, ccdid, qid)
    electrons = expected_electrons(cfg, exp, ccdid, qid, shape)
    cr_rows, cr_cols, cr_charge = cosmic_rays(cfg, exp, ccdid, qid, shape)
    np.add.at(electrons, (cr_rows, cr_cols), cr_charge.astype(np.float32))
    # Poisson (Gaussian approximation, ≥ hundreds of e⁻ wherever it matters) and read noise.
    sigma = np.sqrt(np.maximum(electrons, 0.0) + np.float32(amp.read_noise**2))
    signal = electrons + sigma * rng.standard_normal(shape, dtype=np.float32)
    signal /= np.float32(amp.gain)
    signal += detector.bias_structure(cfg.seed, ccdid, qid, shape)
    # Read orientation: overscan columns follow the last data column of each row.
    data_read = camera.raw_to_read(signal, qid)
    k = np.arange(camera.OVERSCAN_COLUMNS, dtype=np.float32)
    trail = TRAIL_FRACTION * np.maximum(data_read[:, -1:], 0.0) * TRAIL_DECAY ** k[None, :]
    os_noise = (amp.read_noise / amp.gain) * rng.standard_normal(
        (shape[0], camera.OVERSCAN_COLUMNS), dtype=np.float32
    )
    frame = np.hstack([data_read, trail + os_noise]).astype(np.float64)
    if pocket.is_active(date):
        frame = pocket.apply(frame, pocket.parameters(ccdid, qid)).astype(np.float64)
    frame = nonlinearity.distort(frame, amp.nl_a, amp.nl_b)
    frame += (
        amp.pedestal
        + detector.overscan_row_profile(
            cfg.seed, ccdid, qid, _read_rows(qid, shape), exp.filefracday
        )[:, None]
    )
    frame = np.clip(frame, 0.0, amp.saturation).astype(np.float32)
    data = camera.read_to_raw(frame[:, : shape[1]], qid)
    overscan = camera.read_to_raw(frame[:, shape[1] :], qid)
    return np.ascontiguousarray(data), np.ascontiguousarray(overscan)


def _read_rows(qid: int, shape: tuple[int, int]) -> np.ndarray:
    """Full-size read-row number of each read-oriented window row."""
    y0 = camera.window_offset(shape)[0]
    if qid in (3, 4):
        y0 = camera.QUADRANT_SHAPE[0] - (y0 + shape[0])
    return y0 + np.arange(shape[0])


def _fitsio_records(header: fits.Header) -> list[dict[str, object]]:
    return [{"name": c.keyword, "value": c.value, "comment": c.comment} for c in header.cards]


@functools.lru_cache(maxsize=256)
def _extension_records(
    seed: int, date: dt.date, ra: float, dec: float, ccdid: int, qid: int, shape: tuple[int, int]
) -> list[dict[str, object]]:
    """Quadrant-extension header records (cached: calibration frames share their pointing)."""
    amp = detector.amplifier(seed, ccdid, qid, date)
    wcs = astrometry.quadrant_wcs_header(ra, dec, ccdid, qid, shape)
    return _fitsio_records(headers.raw_extension_header(amp, wcs))


def quantization_step(amp: detector.Amplifier, mean_electrons: float) -> float:
    """Quantisation step (ADU): the expected pixel noise divided by QUANTIZE_LEVEL."""
    sigma_adu = np.sqrt(amp.read_noise**2 + max(mean_electrons, 0.0)) / amp.gain
    return float(sigma_adu / QUANTIZE_LEVEL)


def render_raw_file(cfg: SimConfig, date: dt.date, exp: Exposure, ccdid: int) -> bytes:
    """The bytes of the raw ``.fits.fz`` file of CCD ``ccdid`` in exposure ``exp``."""
    shape = camera.quadrant_shape(cfg.scale)
    primary = headers.raw_primary_header(exp, ccdid)
    dither = int(rng_for(cfg.seed, "dither", exp.filefracday, ccdid).integers(1, 10001))
    compression = dict(compress="RICE", qmethod="SUBTRACTIVE_DITHER_1", dither_seed=dither)
    with tempfile.TemporaryDirectory(prefix="ztfsim-") as tmp:
        path = os.path.join(tmp, exp.raw_name(ccdid).filename)
        overscans = []
        with fitsio.FITS(path, "rw", clobber=True) as out:
            out.write(None, header=_fitsio_records(primary))
            for qid in range(1, 5):
                amp = detector.amplifier(cfg.seed, ccdid, qid, date)
                data, overscan = render_quadrant(cfg, date, exp, ccdid, qid)
                overscans.append((overscan, quantization_step(amp, 0.0)))
                level = float(np.median(data[::7, ::7])) - amp.pedestal  # typical signal, ADU
                step = quantization_step(amp, level * amp.gain)
                records = _extension_records(cfg.seed, date, exp.ra, exp.dec, ccdid, qid, shape)
                out.write(data, header=records, extname=str(qid), qlevel=-step, **compression)
            for qid, (overscan, step) in enumerate(overscans, start=1):
                ext = [{"name": "CCD_ID", "value": ccdid}, {"name": "AMP_ID", "value": qid - 1}]
                out.write(overscan, header=ext, qlevel=-step, **compression)
        with open(path, "rb") as fh:
            raw = fh.read()
    return fitschecksum.add_checksums(raw)
