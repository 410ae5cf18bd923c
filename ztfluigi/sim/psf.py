"""Moffat point-spread function: rendering stars into a quadrant with exactly known fluxes."""

from __future__ import annotations

import numpy as np

BETA = 2.5  #: Moffat index typical of seeing-limited ground-based PSFs
SUBSAMPLE = 3  #: sub-pixel samples per axis when integrating the profile over pixels


def moffat_alpha(fwhm_pix: float, beta: float = BETA) -> float:
    """Moffat core width α (pixels) for a FWHM."""
    return fwhm_pix / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def encircled_energy(
    radius_pix: np.ndarray | float, fwhm_pix: float, beta: float = BETA
) -> np.ndarray:
    """Fraction of a Moffat's flux inside ``radius_pix`` (analytic)."""
    a = moffat_alpha(fwhm_pix, beta)
    return 1.0 - (1.0 + (np.asarray(radius_pix) / a) ** 2) ** (1.0 - beta)


def stamp_radius(counts: np.ndarray) -> np.ndarray:
    """Half-size (pixels) of the square stamp a star is rendered in: larger for bright stars."""
    return np.clip(np.ceil(4.0 * np.log10(np.maximum(counts, 10.0))), 8, 30).astype(int)


def render(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    counts: np.ndarray,
    fwhm_pix: float,
    beta: float = BETA,
) -> None:
    """Add stars (0-based pixel centres ``x``, ``y``; total ``counts``) to ``image`` in place.

    The profile is integrated over each pixel on a SUBSAMPLE² grid; each star deposits exactly
    ``counts × EE(stamp)`` where EE(stamp) is its flux inside the stamp, so the image holds a
    known flux (the wings beyond the stamp, < 0.3 %, are lost and reported by
    :func:`stamp_fraction`).
    """
    alpha = moffat_alpha(fwhm_pix, beta)
    radii = stamp_radius(counts)
    offsets = (np.arange(SUBSAMPLE) + 0.5) / SUBSAMPLE - 0.5
    for r in np.unique(radii):
        members = np.flatnonzero(radii == r)
        # Chunks bound the temporary (n, k, k, s, s) array to ≈50 MB.
        n_per_chunk = max(1, 6_000_000 // ((2 * r + 1) ** 2 * SUBSAMPLE**2))
        for start in range(0, members.size, n_per_chunk):
            _render_chunk(image, x, y, counts, members[start : start + n_per_chunk], r, alpha,
                          beta, offsets)  # fmt: skip


def _render_chunk(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    counts: np.ndarray,
    sel: np.ndarray,
    r: int,
    alpha: float,
    beta: float,
    offsets: np.ndarray,
) -> None:
    ny, nx = image.shape
    x0, y0 = np.floor(x[sel] + 0.5).astype(int), np.floor(y[sel] + 0.5).astype(int)
    grid = np.arange(-r, r + 1)
    # (n, k) pixel-centre offsets from each star, then sub-pixel samples.
    dx = (x0[:, None] - x[sel, None]) + grid[None, :]
    dy = (y0[:, None] - y[sel, None]) + grid[None, :]
    sx = dx[:, :, None] + offsets[None, None, :]
    sy = dy[:, :, None] + offsets[None, None, :]
    r2 = sy[:, :, None, :, None] ** 2 + sx[:, None, :, None, :] ** 2
    prof = (1.0 + r2 / alpha**2) ** (-beta)
    pix = prof.mean(axis=(3, 4)) * (beta - 1.0) / (np.pi * alpha**2)  # flux fraction per pixel
    stamps = pix * counts[sel, None, None]
    rows = y0[:, None, None] + grid[None, :, None]
    cols = x0[:, None, None] + grid[None, None, :]
    rows, cols = np.broadcast_arrays(rows, cols)
    inside = (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
    np.add.at(image, (rows[inside], cols[inside]), stamps[inside].astype(image.dtype))


def stamp_fraction(counts: np.ndarray, fwhm_pix: float, beta: float = BETA) -> np.ndarray:
    """Approximate fraction of each star's flux inside its stamp (inscribed-circle bound)."""
    return encircled_energy(stamp_radius(counts) + 0.5, fwhm_pix, beta)
