"""Where each quadrant looks on the sky: focal-plane layout → per-quadrant TPV WCS.

The camera maps the sky onto the focal plane by a gnomonic projection about the pointing; each
quadrant's WCS is the local linearisation of that map at the quadrant centre (CRPIX at IPAC's
(1536.5, 1540.5) of the full quadrant), plus the small TPV distortion terms of a real IPAC
solution. The resulting header WCS *is* the truth: stars are placed through it.
"""

from __future__ import annotations

import functools

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ztfluigi import camera
from ztfluigi.sim import headers


def deproject(
    xi: np.ndarray, eta: np.ndarray, ra0: float, dec0: float
) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic standard coordinates (deg) about (ra0, dec0) → (ra, dec) in degrees."""
    x, y = np.radians(xi), np.radians(eta)
    d0 = np.radians(dec0)
    denom = np.cos(d0) - y * np.sin(d0)
    ra = np.radians(ra0) + np.arctan2(x, denom)
    dec = np.arctan2(np.sin(d0) + y * np.cos(d0), np.hypot(x, denom))
    return np.mod(np.degrees(ra), 360.0), np.degrees(dec)


def project(
    ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float
) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) → gnomonic standard coordinates (deg) about (ra0, dec0)."""
    a, d = np.radians(ra) - np.radians(ra0), np.radians(dec)
    d0 = np.radians(dec0)
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a)
    xi = np.cos(d) * np.sin(a) / cos_c
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a)) / cos_c
    return np.degrees(xi), np.degrees(eta)


@functools.cache
def _tpv_distortion() -> dict[str, float]:
    """The PV terms of the real IPAC solution (CCD 13 q3), without the constant offsets."""
    real = headers.real_science_header()
    pv = {k: float(v) for k, v in real.items() if k.startswith(("PV1_", "PV2_"))}
    pv["PV1_0"] = pv["PV2_0"] = 0.0
    return pv


def quadrant_wcs_header(
    ra0: float, dec0: float, ccdid: int, qid: int, shape: tuple[int, int]
) -> fits.Header:
    """WCS cards (IPAC style, ``RA---TPV``) of a quadrant window for a pointing (ra0, dec0)."""
    lay = camera.focal_plane_layout()[(ccdid, qid)]
    xc, yc = camera.IPAC_CRPIX[0] - 1.0, camera.IPAC_CRPIX[1] - 1.0  # 0-based full-size
    xi_c, eta_c = lay.pixel_to_focal(xc, yc)
    crval = deproject(xi_c, eta_c, ra0, dec0)
    # Jacobian of pixel → local gnomonic coordinates about CRVAL, by central differences.
    step = 50.0
    cd = np.empty((2, 2))
    for j, (dx, dy) in enumerate(((step, 0.0), (0.0, step))):
        plus = project(*deproject(*lay.pixel_to_focal(xc + dx, yc + dy), ra0, dec0), *crval)
        minus = project(*deproject(*lay.pixel_to_focal(xc - dx, yc - dy), ra0, dec0), *crval)
        cd[:, j] = (np.asarray(plus) - np.asarray(minus)) / (2 * step)
    y0, x0 = camera.window_offset(shape)
    h = fits.Header()
    cards = [
        ("WCSVERS", "2.1", "WCS version number"),
        ("WCSAXES", 2, "Number of WCS axes"),
        ("WCSNAME", "ZTF", "Name of the WCS coordinate system"),
        ("RADESYS", "ICRS", "Coordinate reference system"),
        ("CTYPE1", "RA---TPV", "Name of coord X axis"),
        ("CTYPE2", "DEC--TPV", "Name of coord Y axis"),
        ("CRPIX1", camera.IPAC_CRPIX[0] - x0, "Coord system X ref pixel"),
        ("CRPIX2", camera.IPAC_CRPIX[1] - y0, "Coord system Y ref pixel"),
        ("CRVAL1", float(crval[0]), "Coord system value at CRPIX1"),
        ("CRVAL2", float(crval[1]), "Coord system value at CRPIX2"),
        ("CUNIT1", "deg", "Coordinate units for X axis"),
        ("CUNIT2", "deg", "Coordinate units for Y axis"),
        ("CD1_1", float(cd[0, 0]), "WCS matrix"),
        ("CD1_2", float(cd[0, 1]), "WCS matrix"),
        ("CD2_1", float(cd[1, 0]), "WCS matrix"),
        ("CD2_2", float(cd[1, 1]), "WCS matrix"),
    ]
    for card in cards:
        h.append(card)
    for key, value in _tpv_distortion().items():
        h.append((key, value, "Projection distortion parameter"))
    return h


def quadrant_wcs(ra0: float, dec0: float, ccdid: int, qid: int, shape: tuple[int, int]) -> WCS:
    """The astropy WCS of :func:`quadrant_wcs_header`."""
    return WCS(quadrant_wcs_header(ra0, dec0, ccdid, qid, shape))
