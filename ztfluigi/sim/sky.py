"""The night sky seen by a science quadrant: sky background and the stars that fall on it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ztfluigi import camera
from ztfluigi.refcat import at_epoch, footprint_cone
from ztfluigi.sim import astrometry, gaia
from ztfluigi.sim.schedule import Exposure

#: Zero points (mag giving 1 e⁻ in 30 s above the atmosphere) and extinction (mag/airmass).
ZERO_POINT_E = {"zg": 28.55, "zr": 28.38, "zi": 27.85}
EXTINCTION = {"zg": 0.21, "zr": 0.12, "zi": 0.06}
#: Dark-sky background (e⁻ per pixel per 30 s) at zenith; the real zr sciimg has ≈157 DN ≈ 950 e⁻.
SKY_E = {"zg": 700.0, "zr": 950.0, "zi": 1500.0}
STAR_MARGIN_PIX = 40  #: stars this far outside a window still throw light into it


def zero_point_e(filtercode: str, airmass: float) -> float:
    """Magnitude that gives 1 e⁻ in a 30 s exposure at ``airmass``."""
    return ZERO_POINT_E[filtercode] - EXTINCTION[filtercode] * airmass


def filter_magnitude(filtercode: str, g: np.ndarray, bp: np.ndarray, rp: np.ndarray) -> np.ndarray:
    """ZTF-band magnitude from Gaia G, BP, RP (smooth synthetic colour transformations)."""
    colour = np.nan_to_num(bp - rp, nan=1.0)
    if filtercode == "zg":
        return g + 0.10 + 0.45 * (colour - 0.8)
    if filtercode == "zr":
        return g - 0.15 + 0.05 * (colour - 0.8)
    return g - 0.40 - 0.20 * (colour - 0.8)


def sky_electrons(exp: Exposure, airmass: float, moon_illumination: float) -> float:
    """Sky background (e⁻/pixel) of a science exposure."""
    moon = 1.0 + 2.0 * moon_illumination**2 * {"zg": 1.5, "zr": 1.0, "zi": 0.7}[exp.filtercode]
    return SKY_E[exp.filtercode] * (exp.exptime / 30.0) * airmass**0.5 * moon


@dataclass(frozen=True)
class QuadrantStars:
    """Stars whose light reaches a quadrant window, at the exposure epoch."""

    source_id: np.ndarray
    ra: np.ndarray  #: deg at the exposure epoch
    dec: np.ndarray
    x: np.ndarray  #: 0-based raw-oriented window pixel coordinates
    y: np.ndarray
    mag: np.ndarray  #: ZTF-band magnitude
    electrons: np.ndarray  #: total e⁻ in the exposure at unit response


def quadrant_stars(
    seed: int, exp: Exposure, ccdid: int, qid: int, shape: tuple[int, int], airmass: float
) -> QuadrantStars:
    """Stars of the synthetic Gaia sky moved to the exposure epoch and placed through the WCS."""
    wcs = astrometry.quadrant_wcs(exp.ra, exp.dec, ccdid, qid, shape)
    margin = (STAR_MARGIN_PIX + 20) * camera.PIXEL_SCALE
    ra_c, dec_c, radius = footprint_cone(wcs, shape, margin)
    cat = at_epoch(gaia.generate_cone(seed, ra_c, dec_c, radius), exp.obsjd - 2400000.5)
    col = {name: cat.column(name).to_numpy(zero_copy_only=False) for name in cat.column_names}
    ra, dec = col["ra"], col["dec"]
    x, y = wcs.all_world2pix(ra, dec, 0) if ra.size else (ra, dec)
    keep = (
        (x > -STAR_MARGIN_PIX) & (x < shape[1] + STAR_MARGIN_PIX)
        & (y > -STAR_MARGIN_PIX) & (y < shape[0] + STAR_MARGIN_PIX)
    )  # fmt: skip
    mag = filter_magnitude(
        exp.filtercode, col["phot_g_mean_mag"], col["phot_bp_mean_mag"], col["phot_rp_mean_mag"]
    )
    electrons = 10 ** (-0.4 * (mag - zero_point_e(exp.filtercode, airmass))) * exp.exptime / 30.0
    return QuadrantStars(
        col["source_id"][keep], ra[keep], dec[keep], x[keep], y[keep], mag[keep], electrons[keep]
    )
