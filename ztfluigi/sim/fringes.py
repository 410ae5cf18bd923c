"""i-band fringes of the synthetic instrument: fixed interference modes, mixed per exposure.

Physics (``../shared/spec/fringes.md``; Medford et al. 2021, PASP 133, 064503): the thin ZTF CCDs
act as Fabry–Pérot etalons for the narrow night-sky emission lines (OH Meinel bands) inside the
zi passband; each line group makes an additive pattern ``cos(4π n t(x, y) / λ)`` that follows the
contours of the CCD thickness ``t`` — fixed per amplifier — scaled by that line group's flux.

What is injected (numbers are ours, not from the paper body, which was not read; the issue asks
for "scales of tens of pixels, a few per cent of the sky"):

* :data:`LINE_GROUPS_NM` line groups → as many fixed unit modes per quadrant
  (:func:`fringe_modes`): a warped plane-wave phase (local period :data:`PERIOD_PIX` ± 40 %,
  never stationary, so the pattern has no power on the quadrant scale) times a smooth envelope
  (±25 %). The modes are functions of the real full-size read coordinates, so a scaled window
  samples the real quadrant;
* per exposure, each group's flux relative to the *dark* (moonless) zi sky
  (:func:`line_fractions`): :data:`LINE_FRACTION` (≈1.3 % each, ≈3 % summed peak, ≈2 % rms
  together) × a common night-glow factor (log-normal, σ = 0.35) × an independent per-group factor
  (σ = 0.25), with a ±5 % per-quadrant gradient of the airglow across the field. Moonlight adds
  continuum without lines, so fringes fall relative to the sky when the Moon is up;
* the fringe light enters before the sky response (vignetting × PRNU) like all sky light, in
  photo-electrons (:func:`fringe_electrons`). Dome flats carry none (LED light has no lines):
  the flat-fielded science image then holds ``fringe_e × truth.science_scale`` DN
  (:func:`fringe_image`), the truth the correction is measured against.

Everything is a pure function of (seed, ccdid, qid) for the modes and of (seed, exposure
``filefracday``, ccdid, qid) for the mixture.
"""

from __future__ import annotations

import datetime as dt
import functools

import numpy as np
import pyarrow as pa

from ztfluigi import camera
from ztfluigi.sim import detector, sky
from ztfluigi.sim.schedule import Exposure, SimConfig, rng_for

#: Representative wavelengths (nm) of the OH line groups inside the zi band (illustrative).
LINE_GROUPS_NM = (761.0, 834.0, 882.0)
LINE_FRACTION = 0.013  #: peak fringe amplitude of one line group / dark zi sky
PERIOD_PIX = 45.0  #: mean local fringe period (pixels) at 834 nm
NIGHT_GLOW_SIGMA = 0.35  #: log-normal scatter of the common airglow level between exposures
LINE_SIGMA = 0.25  #: independent scatter of each line group (changes the mixture)
GRADIENT = 0.05  #: per-quadrant airglow gradient across the field (fraction)


def applies(cfg: SimConfig, exp: Exposure) -> bool:
    """Whether an exposure carries fringes: zi science with ``[sim] fringes`` on."""
    return bool(cfg.fringes) and exp.imgtype == "object" and exp.filtercode == "zi"


def _full_coords(qid: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Full-size read (row, col) of each window pixel as float64 broadcastable arrays."""
    rows, cols = detector._full_read_coords(qid, shape)
    return rows.astype(np.float64), cols.astype(np.float64)


@functools.lru_cache(maxsize=64)
def fringe_modes(seed: int, ccdid: int, qid: int, shape: tuple[int, int]) -> np.ndarray:
    """Unit fringe patterns (one per line group), raw orientation, float32 (L, rows, cols).

    ``envelope × cos(2π u(x, y) λ₀/λ / P + φ)``: ``u`` is a warped distance along a random
    direction whose gradient stays within 1 ± 0.4 (curved, interference-like fringes of local
    period 0.7–1.7 × :data:`PERIOD_PIX`), the same ``u`` for every line (one thickness map).
    """
    rng = rng_for(seed, "fringe-modes", ccdid, qid)
    r, c = _full_coords(qid, shape)
    theta = rng.uniform(0, np.pi)
    u = r * np.cos(theta) + c * np.sin(theta)
    for _ in range(2):  # two long-wavelength warps, each changing the gradient by ≤ 0.2
        length = rng.uniform(800.0, 2500.0)
        phi = rng.uniform(0, 2 * np.pi)
        a = rng.uniform(0, np.pi)
        amp = 0.2 * length / (2 * np.pi)
        u = u + amp * np.sin(2 * np.pi * (r * np.cos(a) + c * np.sin(a)) / length + phi)
    period = PERIOD_PIX * rng.uniform(0.85, 1.15)
    ke, le = rng.uniform(0, np.pi), rng.uniform(1500.0, 4000.0)
    envelope = 1.0 + 0.25 * np.sin(
        2 * np.pi * (r * np.cos(ke) + c * np.sin(ke)) / le + rng.uniform(0, 2 * np.pi)
    )
    ref = LINE_GROUPS_NM[1]
    modes = np.empty((len(LINE_GROUPS_NM),) + tuple(shape), np.float32)
    for k, lam in enumerate(LINE_GROUPS_NM):
        phase = 2 * np.pi * u * (ref / lam) / period + rng.uniform(0, 2 * np.pi)
        modes[k] = envelope * np.cos(phase)
    modes.setflags(write=False)
    return modes


def line_fractions(cfg: SimConfig, exp: Exposure, ccdid: int, qid: int) -> np.ndarray:
    """Peak fringe amplitude of each line group relative to the dark zi sky, this exposure."""
    rng = rng_for(cfg.seed, "fringe-mix", exp.filefracday)
    glow = np.exp(rng.normal(0.0, NIGHT_GLOW_SIGMA))
    lines = np.clip(1.0 + rng.normal(0.0, LINE_SIGMA, len(LINE_GROUPS_NM)), 0.2, None)
    direction = rng.uniform(0, 2 * np.pi)
    lay = camera.focal_plane_layout()[(ccdid, qid)]
    xi, eta = lay.pixel_to_focal(np.array(camera.QUADRANT_SHAPE[1] / 2),
                                 np.array(camera.QUADRANT_SHAPE[0] / 2))  # fmt: skip
    gradient = 1.0 + GRADIENT * (np.cos(direction) * xi + np.sin(direction) * eta) / 3.6
    return LINE_FRACTION * glow * lines * float(gradient)


def fringe_electrons(
    cfg: SimConfig, exp: Exposure, ccdid: int, qid: int, shape: tuple[int, int], airmass: float
) -> np.ndarray:
    """Fringe photo-electrons per pixel at unit response (raw orientation, float32)."""
    dark_sky = sky.sky_electrons(exp, airmass, 0.0)
    weights = (dark_sky * line_fractions(cfg, exp, ccdid, qid)).astype(np.float32)
    modes = fringe_modes(cfg.seed, ccdid, qid, shape)
    return np.tensordot(weights, modes, axes=1).astype(np.float32)


def fringe_image(cfg: SimConfig, date: dt.date, exp: Exposure, ccdid: int, qid: int) -> np.ndarray:
    """True fringe of a science quadrant in science-image DN (after bias and dome flat), float64.

    Zero for exposures without fringes. Science DN = e⁻ × ``truth.science_scale`` (the smooth
    sky-response/flat ratio: dome flats carry no fringes, so the pattern survives flat-fielding).
    """
    from ztfluigi.sim import rawfile, truth  # truth imports rawfile, which imports this module

    shape = camera.quadrant_shape(cfg.scale)
    if not applies(cfg, exp):
        return np.zeros(shape)
    cond = rawfile.conditions(exp)
    electrons = fringe_electrons(cfg, exp, ccdid, qid, shape, cond.airmass)
    return electrons * truth.science_scale(cfg, date, exp, ccdid, qid)


TRUTH_SCHEMA = pa.schema([
    ("filefracday", pa.int64()), ("ccdid", pa.int8()), ("qid", pa.int8()),
    ("line_fractions", pa.list_(pa.float64())), ("dark_sky_e", pa.float64()),
])  # fmt: skip
"""Fringe truth per science quadrant: line-group peak amplitudes / dark sky, dark sky (e⁻)."""


def truth_table(cfg: SimConfig, exposures: list[Exposure]) -> pa.Table:
    """The fringe mixture of every fringed science quadrant (for ``SimTruth``).

    With :func:`fringe_modes` and ``truth.science_scale`` it rebuilds :func:`fringe_image`.
    """
    from ztfluigi.sim import rawfile

    rows: dict[str, list[object]] = {name: [] for name in TRUTH_SCHEMA.names}
    for exp in exposures:
        if not applies(cfg, exp):
            continue
        dark = sky.sky_electrons(exp, rawfile.conditions(exp).airmass, 0.0)
        for c in range(1, 17):
            for q in range(1, 5):
                rows["filefracday"].append(int(exp.filefracday))
                rows["ccdid"].append(c)
                rows["qid"].append(q)
                rows["line_fractions"].append(line_fractions(cfg, exp, c, q).tolist())
                rows["dark_sky_e"].append(float(dark))
    return pa.table(rows, schema=TRUTH_SCHEMA)
