"""The synthetic detector: each amplifier's electronics and response (truth to recover).

Everything is a pure function of (seed, ccdid, qid[, date]) evaluated on a quadrant *window*
(``camera.quadrant_shape(scale)``) in raw orientation; smooth patterns are functions of the real
full-size read coordinates or focal-plane position, so a window samples the real quadrant.

Signal chain of a raw pixel (electrons e⁻ → measured ADU), applied by ``sim.rawfile``:
``electrons × response → Poisson → /gain + bias structure + read noise → pocket → NL⁻¹ →
+ pedestal(row) → saturation``.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

import numpy as np

from ztfluigi import camera, nonlinearity
from ztfluigi.sim.schedule import LED_FILTERS, rng_for

FULL_WELL = 350_000.0  #: e⁻ (≈58 600 DN after flat-fielding, the IPAC SATURATE)
ADC_MAX = 65535.0  #: ADU


@dataclass(frozen=True)
class Amplifier:
    """Electronic truth of one amplifier (one quadrant)."""

    ccdid: int
    qid: int
    gain: float  #: e⁻/ADU
    read_noise: float  #: e⁻
    pedestal: float  #: ADU, overscan plateau level
    nl_a: float  #: non-linearity A of the table valid on the date
    nl_b: float

    @property
    def saturation(self) -> float:
        """Raw ADU level where the pixel saturates (full well or ADC), including the pedestal."""
        return min(ADC_MAX, self.pedestal + FULL_WELL / self.gain)


def amplifier(seed: int, ccdid: int, qid: int, date: dt.date) -> Amplifier:
    """Gain ≈6 e⁻/ADU, read noise ≈9 e⁻, pedestal 30–130 ADU (nightly drift ±2 ADU)."""
    rng = rng_for(seed, "amplifier", ccdid, qid)
    gain, rn, ped = rng.normal(6.0, 0.15), rng.normal(9.0, 0.5), rng.uniform(30, 130)
    ped += rng_for(seed, "pedestal", ccdid, qid, date.isoformat()).normal(0, 1.0)
    a, b = nonlinearity.coefficients(ccdid, qid, date)
    return Amplifier(ccdid, qid, float(gain), float(rn), float(ped), a, b)


def _full_read_coords(qid: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Full-size read-order (row, column) of each window pixel, raw orientation (broadcastable)."""
    y0, x0 = camera.window_offset(shape)
    rows = np.arange(shape[0])[:, None] + y0
    cols = np.arange(shape[1])[None, :] + x0
    if qid in (2, 3):
        cols = camera.QUADRANT_SHAPE[1] - 1 - cols
    if qid in (3, 4):
        rows = camera.QUADRANT_SHAPE[0] - 1 - rows
    return rows, cols


def overscan_row_profile(
    seed: int, ccdid: int, qid: int, read_rows: np.ndarray, frame_key: str
) -> np.ndarray:
    """Pedestal drift (ADU, mean ≈ 0) at the given full-size read rows of one frame.

    A smooth quadratic in the read row (what a P0–P2 Legendre overscan model captures) whose
    coefficients change from frame to frame.
    """
    fixed = rng_for(seed, "overscan", ccdid, qid).normal([0.0, 3.0, 1.5], [0.0, 0.5, 0.3])
    frame = rng_for(seed, "overscan-frame", frame_key, ccdid, qid).normal(0.0, [1.5, 0.5, 0.3])
    t = 2.0 * np.asarray(read_rows) / (camera.QUADRANT_SHAPE[0] - 1) - 1.0
    c = fixed + frame
    return c[0] + c[1] * t + c[2] * 0.5 * (3 * t**2 - 1)


@functools.lru_cache(maxsize=128)
def bias_structure(seed: int, ccdid: int, qid: int, shape: tuple[int, int]) -> np.ndarray:
    """Fixed bias pattern above the overscan level (ADU, raw orientation, float32, read-only).

    A glow near the amplifier's first-read rows, a column-to-column pattern of ≈0.3 ADU and a
    few hot columns (+20…80 ADU): what a master bias must reproduce.
    """
    rng = rng_for(seed, "bias-structure", ccdid, qid)
    rows, cols = _full_read_coords(qid, shape)
    glow = 3.0 * np.exp(-rows / 150.0) + 1.0 * np.exp(-cols / 400.0)
    column = rng.normal(0.0, 0.3, camera.QUADRANT_SHAPE[1])[cols[0]]
    structure = (glow + column[None, :]).astype(np.float32)
    for col in hot_columns(seed, ccdid, qid, shape):
        structure[:, col] += rng_for(seed, "hot", ccdid, qid, col).uniform(20, 80)
    structure.setflags(write=False)
    return structure


def _defect_columns(
    seed: int, kind: str, ccdid: int, qid: int, ncols: int, rate: float
) -> list[int]:
    rng = rng_for(seed, kind, ccdid, qid)
    n = rng.poisson(rate * ncols / camera.QUADRANT_SHAPE[1])
    if kind == "dead" and ncols < camera.QUADRANT_SHAPE[1]:
        n = max(n, int(rng.random() < 0.5))  # keep a few defects in small test windows
    return sorted(int(c) for c in rng.choice(ncols, size=min(n, ncols), replace=False))


def hot_columns(seed: int, ccdid: int, qid: int, shape: tuple[int, int]) -> list[int]:
    """Window columns with a hot (high bias) column."""
    return _defect_columns(seed, "hot", ccdid, qid, shape[1], 4.0)


def dead_columns(seed: int, ccdid: int, qid: int, shape: tuple[int, int]) -> list[int]:
    """Window columns with a low-responsivity (≈5 %) column."""
    return _defect_columns(seed, "dead", ccdid, qid, shape[1], 4.0)


@functools.lru_cache(maxsize=128)
def pixel_response(seed: int, ccdid: int, qid: int, shape: tuple[int, int]) -> np.ndarray:
    """Pixel response non-uniformity (mean 1, ≈0.8 % rms) with dead columns at ≈5 %."""
    rng = rng_for(seed, "prnu", ccdid, qid)
    prnu = (1.0 + 0.008 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    prnu[:, dead_columns(seed, ccdid, qid, shape)] *= 0.05
    prnu.setflags(write=False)
    return prnu


def focal_plane_coords(
    ccdid: int, qid: int, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(xi, eta) in degrees (East, North of the field centre) of every window pixel."""
    y0, x0 = camera.window_offset(shape)
    lay = camera.focal_plane_layout()[(ccdid, qid)]
    y = np.arange(shape[0])[:, None] + y0
    x = np.arange(shape[1])[None, :] + x0
    return lay.pixel_to_focal(x, y)


def vignetting(xi: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Optical throughput relative to the field centre (the same for sky and dome light)."""
    r2 = (xi**2 + eta**2) / 4.5**2
    return 1.0 - 0.07 * r2 - 0.02 * r2**2


def dome_over_sky(filtercode: str, xi: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Smooth ratio of dome-screen to sky illumination (what star flats measure), ≈±1.5 %."""
    tilt = {"zg": (0.010, -0.004), "zr": (0.007, 0.003), "zi": (-0.005, 0.006)}[filtercode]
    r2 = (xi**2 + eta**2) / 4.5**2
    return 1.0 + tilt[0] * xi / 3.6 + tilt[1] * eta / 3.7 + 0.012 * (r2 - 0.5)


def led_pattern(led: int, xi: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Per-LED colour pattern of the dome illumination (mean ≈1, a few per mil to ≈1 %)."""
    angle = np.radians(37.0 * led)
    amp = 0.004 + 0.001 * (led % 4)
    return 1.0 + amp * (np.cos(angle) * xi + np.sin(angle) * eta) / 3.6


def led_rate(led: int) -> float:
    """Dome-flat illumination per pixel at the field centre (e⁻/s): 30 000–41 000 ADU in 10 s."""
    return 6.0 * (30_000.0 + 1_000.0 * ((led * 7) % 12)) / 10.0


@functools.lru_cache(maxsize=64)
def sky_response(seed: int, ccdid: int, qid: int, shape: tuple[int, int]) -> np.ndarray:
    """Response to sky light (dimensionless): vignetting × PRNU."""
    xi, eta = focal_plane_coords(ccdid, qid, shape)
    response = (vignetting(xi, eta) * pixel_response(seed, ccdid, qid, shape)).astype(np.float32)
    response.setflags(write=False)
    return response


@functools.lru_cache(maxsize=64)
def dome_response(seed: int, ccdid: int, qid: int, shape: tuple[int, int], led: int) -> np.ndarray:
    """Response to the dome light of ``led``: vignetting × PRNU × dome/sky × LED pattern."""
    xi, eta = focal_plane_coords(ccdid, qid, shape)
    illum = (
        vignetting(xi, eta) * dome_over_sky(LED_FILTERS[led], xi, eta) * led_pattern(led, xi, eta)
    )
    response = (illum * pixel_response(seed, ccdid, qid, shape)).astype(np.float32)
    response.setflags(write=False)
    return response
