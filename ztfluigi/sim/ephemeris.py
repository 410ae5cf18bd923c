"""Low-precision Sun/Moon ephemerides and Palomar horizon coordinates for the synthetic night log.

Accuracy (≈0.01° Sun, ≈0.5° Moon, Astronomical Almanac low-precision formulae) is ample for
header values and twilight times; no IERS tables or network are needed, unlike astropy's AltAz.
"""

from __future__ import annotations

import numpy as np

PALOMAR_LON = -116.8598  #: deg East (OBSLON of real headers)
PALOMAR_LAT = 33.3573  #: deg (OBSLAT)
PALOMAR_ALT = 1668.0  #: m (OBSALT)
J2000 = 2451545.0


def gmst_deg(jd: np.ndarray | float) -> np.ndarray:
    """Greenwich mean sidereal time in degrees."""
    return np.mod(280.46061837 + 360.98564736629 * (np.asarray(jd) - J2000), 360.0)


def lst_deg(jd: np.ndarray | float, lon: float = PALOMAR_LON) -> np.ndarray:
    """Local mean sidereal time in degrees."""
    return np.mod(gmst_deg(jd) + lon, 360.0)


def sun_radec(jd: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Apparent (RA, Dec) of the Sun in degrees."""
    n = np.asarray(jd) - J2000
    mean_lon = np.radians(np.mod(280.460 + 0.9856474 * n, 360))
    g = np.radians(np.mod(357.528 + 0.9856003 * n, 360))
    lam = mean_lon + np.radians(1.915) * np.sin(g) + np.radians(0.020) * np.sin(2 * g)
    eps = np.radians(23.439 - 4.0e-7 * n)
    return _ecliptic_to_equatorial(lam, np.zeros_like(lam), eps)


def moon_radec(jd: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Geocentric (RA, Dec) of the Moon in degrees (≈0.5° accuracy)."""
    t = (np.asarray(jd) - J2000) / 36525.0
    r = np.radians
    lam = r(
        218.32
        + 481267.881 * t
        + 6.29 * np.sin(r(135.0 + 477198.87 * t))
        - 1.27 * np.sin(r(259.3 - 413335.36 * t))
        + 0.66 * np.sin(r(235.7 + 890534.22 * t))
        + 0.21 * np.sin(r(269.9 + 954397.74 * t))
        - 0.19 * np.sin(r(357.5 + 35999.05 * t))
        - 0.11 * np.sin(r(186.5 + 966404.03 * t))
    )
    beta = r(
        5.13 * np.sin(r(93.3 + 483202.02 * t))
        + 0.28 * np.sin(r(228.2 + 960400.89 * t))
        - 0.28 * np.sin(r(318.3 + 6003.15 * t))
        - 0.17 * np.sin(r(217.6 - 407332.21 * t))
    )
    return _ecliptic_to_equatorial(lam, beta, r(23.439 - 0.013 * t))


def moon_illuminated_fraction(jd: np.ndarray | float) -> np.ndarray:
    """Illuminated fraction of the Moon from the Sun–Moon elongation."""
    sra, sdec = sun_radec(jd)
    mra, mdec = moon_radec(jd)
    cos_psi = np.sin(np.radians(sdec)) * np.sin(np.radians(mdec)) + np.cos(
        np.radians(sdec)
    ) * np.cos(np.radians(mdec)) * np.cos(np.radians(sra - mra))
    return (1.0 - cos_psi) / 2.0


def altaz(
    ra: np.ndarray | float, dec: np.ndarray | float, jd: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Altitude and azimuth (deg, azimuth from North through East) at Palomar."""
    ha = np.radians(lst_deg(jd) - np.asarray(ra))
    d, lat = np.radians(dec), np.radians(PALOMAR_LAT)
    sin_alt = np.sin(lat) * np.sin(d) + np.cos(lat) * np.cos(d) * np.cos(ha)
    alt = np.arcsin(np.clip(sin_alt, -1, 1))
    az = np.arctan2(
        -np.cos(d) * np.sin(ha), np.sin(d) * np.cos(lat) - np.cos(d) * np.sin(lat) * np.cos(ha)
    )
    return np.degrees(alt), np.mod(np.degrees(az), 360.0)


def hour_angle_deg(ra: np.ndarray | float, jd: np.ndarray | float) -> np.ndarray:
    """Hour angle in degrees, wrapped to [-180, 180)."""
    return np.mod(lst_deg(jd) - np.asarray(ra) + 180.0, 360.0) - 180.0


def airmass(alt_deg: np.ndarray | float) -> np.ndarray:
    """Hardie (1962) airmass, as in ZTF headers."""
    sec_z = 1.0 / np.sin(np.radians(np.clip(alt_deg, 10.0, 90.0)))  # formula valid above ~10°
    s1 = sec_z - 1.0
    return sec_z - 0.0018167 * s1 - 0.002875 * s1**2 - 0.0008083 * s1**3


def sun_crossing_jd(jd_start: float, altitude: float, rising: bool) -> float:
    """First JD after ``jd_start`` (within a day) when the Sun crosses ``altitude`` (deg)."""
    grid = jd_start + np.arange(0, 1.0, 1.0 / 1440.0)
    alt = altaz(*sun_radec(grid), grid)[0] - altitude
    sign = alt[1:] * alt[:-1] <= 0
    direction = (alt[1:] > alt[:-1]) == rising
    idx = np.flatnonzero(sign & direction)
    if idx.size == 0:
        raise ValueError(f"the Sun does not cross {altitude}° within a day of JD {jd_start}")
    i = idx[0]
    frac = alt[i] / (alt[i] - alt[i + 1])
    return float(grid[i] + frac * (grid[i + 1] - grid[i]))


def _ecliptic_to_equatorial(
    lam: np.ndarray, beta: np.ndarray, eps: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    ra = np.arctan2(np.sin(lam) * np.cos(eps) - np.tan(beta) * np.sin(eps), np.cos(lam))
    dec = np.arcsin(np.sin(beta) * np.cos(eps) + np.cos(beta) * np.sin(eps) * np.sin(lam))
    return np.mod(np.degrees(ra), 360.0), np.degrees(dec)
