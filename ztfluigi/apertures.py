"""Exact circular-aperture sums for every radius in one visit of each star's stamp (numba).

Why: ``sep.sum_circle`` called once per radius visits each stamp ten times (0.48 s per real-size
quadrant with ≈ 4 400 stars, issue #15). :func:`circular_apertures` walks each star's box once and
accumulates all radii, with sep's own arithmetic so that the numbers are those of sep 1.4 (and of
photutils ``method="exact"``) to rounding:

* **overlap**: the exact area of the pixel square ``[i − ½, i + ½]²`` inside the circle, by the
  algorithm of sep's ``overlap.h`` (Robitaille's, also photutils'), ported operation by operation;
  pixels whose centre lies within ``r − 0.7072`` px have overlap 1, pixels beyond ``r + 0.7072`` px
  are skipped, as sep does;
* **pixel set**: sep's box for each radius (``boxextent``: ``int(x − r + 0.5)`` …
  ``int(x + r + 1.4999999)``, truncated toward zero and clipped to the image);
* **accumulation**: per radius, rows then columns ascending, float64 sums of
  ``float32 pixel × overlap`` and of ``float32(err²) × overlap`` (sep squares the float32 error in
  float32). With a background map the pixel is ``float32(data − back)``, the value numpy's float32
  subtraction of the whole frame would give, so no full-frame subtraction is needed.

A pixel is **masked** when ``mask & bits`` is non-zero, its value is not finite, or it is above
``saturate``; it is **saturated** when ``mask & saturated_bits`` is non-zero or above ``saturate``.
Masked pixels are excluded from the sums and counted in the masked area.

Outputs per radius and star (arrays of shape ``(len(radii), n)``): the unmasked sum and variance
(not rescaled), the in-image area (sep's ``totarea``), the masked area, the number of masked and of
saturated pixels with a non-zero overlap (i.e. inside the circle), and sep's own flags as sep
would set them on the array passed (``16`` box truncated by the image, ``32`` a masked pixel within
``r + 0.7072`` px even with zero overlap — sep's rule, kept for comparison). What to make of them
(rescaling, flags of the catalogue) is :mod:`ztfluigi.photometry`'s business.

There is no pure-numpy engine: sep remains the reference implementation (``PhotometrySpec``
``apertures="sep"``) and the tests compare the two. Nothing here imports luigi.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np

__all__ = [
    "SEP_APER_HASMASKED",
    "SEP_APER_TRUNC",
    "ApertureSums",
    "circular_apertures",
    "background_mask",
    "circular_overlap",
    "disk_mask",
]

SEP_APER_TRUNC = 16  #: sep's APER_TRUNC as sep computes it (box extent clipped by the image)
SEP_APER_HASMASKED = 32  #: sep's APER_HASMASKED as sep computes it (masked pixel within r + 0.7072)

_BAND = 0.7072  # sep: half-diagonal margin of the partially-covered annulus, pixels


def _njit(func: Callable) -> Callable:
    """``numba.njit(nogil=True)``, cached on disk when a cache location is writable."""
    try:
        return numba.njit(cache=True, nogil=True)(func)
    except RuntimeError:  # "cannot cache function …: no locator available"
        return numba.njit(nogil=True)(func)


# ------------------------------------------------------------------------------------------
# Exact overlap of a rectangle and a circle centred at the origin (sep overlap.h)
# ------------------------------------------------------------------------------------------


# Circular segment of half-chord s·r: r² g(s), g(s) = asin(s) − s √(1 − s²) = s³ Σ c_k s^(2k),
# c_k = 2 C(2k, k) / (4^k (2k + 3)). For s ≤ 0.25 (every chord of a unit pixel once r ≥ 2.83 px)
# the 14 terms below reach 1e-17 relative, more accurate than sep's θ − sin θ (which cancels)
# and ≈ 2× faster than asin + sin; larger s use sep's formula.
_SEGMENT_SERIES = tuple(
    2.0 * math.comb(2 * k, k) / 4.0**k / (2 * k + 3) for k in range(14)
)  # fmt: skip
_C = _SEGMENT_SERIES


@_njit
def _area_arc(x1: float, y1: float, x2: float, y2: float, r: float) -> float:
    """Area between the chord (x1, y1)–(x2, y2) and the arc of radius ``r`` (sep ``area_arc``)."""
    a = math.sqrt((x2 - x1) * (x2 - x1) + (y2 - y1) * (y2 - y1))
    s = 0.5 * a / r
    if s <= 0.25:
        s2 = s * s
        p = _C[13]
        p = p * s2 + _C[12]
        p = p * s2 + _C[11]
        p = p * s2 + _C[10]
        p = p * s2 + _C[9]
        p = p * s2 + _C[8]
        p = p * s2 + _C[7]
        p = p * s2 + _C[6]
        p = p * s2 + _C[5]
        p = p * s2 + _C[4]
        p = p * s2 + _C[3]
        p = p * s2 + _C[2]
        p = p * s2 + _C[1]
        p = p * s2 + _C[0]
        return r * r * (s * s2 * p)
    theta = 2.0 * math.asin(s)
    return 0.5 * r * r * (theta - math.sin(theta))


@_njit
def _area_triangle(x1: float, y1: float, x2: float, y2: float, x3: float, y3: float) -> float:
    return 0.5 * abs(x1 * (y2 - y3) + x2 * (y3 - y1) + x3 * (y1 - y2))


@_njit
def _core(xmin: float, ymin: float, xmax: float, ymax: float, r: float) -> float:
    """Overlap for ``xmax ≥ xmin ≥ 0``, ``ymax ≥ ymin ≥ 0`` (sep ``circoverlap_core``)."""
    xmin2 = xmin * xmin
    ymin2 = ymin * ymin
    r2 = r * r
    if xmin2 + ymin2 > r2:
        return 0.0
    xmax2 = xmax * xmax
    ymax2 = ymax * ymax
    if xmax2 + ymax2 < r2:
        return (xmax - xmin) * (ymax - ymin)
    a = xmax2 + ymin2
    b = xmin2 + ymax2
    if a < r2 and b < r2:
        x1 = math.sqrt(r2 - ymax2)
        y1 = ymax
        x2 = xmax
        y2 = math.sqrt(r2 - xmax2)
        return (
            (xmax - xmin) * (ymax - ymin)
            - _area_triangle(x1, y1, x2, y2, xmax, ymax)
            + _area_arc(x1, y1, x2, y2, r)
        )
    if a < r2:
        x1 = xmin
        y1 = math.sqrt(r2 - xmin2)
        x2 = xmax
        y2 = math.sqrt(r2 - xmax2)
        return (
            _area_arc(x1, y1, x2, y2, r)
            + _area_triangle(x1, y1, x1, ymin, xmax, ymin)
            + _area_triangle(x1, y1, x2, ymin, x2, y2)
        )
    if b < r2:
        x1 = math.sqrt(r2 - ymin2)
        y1 = ymin
        x2 = math.sqrt(r2 - ymax2)
        y2 = ymax
        return (
            _area_arc(x1, y1, x2, y2, r)
            + _area_triangle(x1, y1, xmin, y1, xmin, ymax)
            + _area_triangle(x1, y1, xmin, y2, x2, y2)
        )
    x1 = math.sqrt(r2 - ymin2)
    y1 = ymin
    x2 = xmin
    y2 = math.sqrt(r2 - xmin2)
    return _area_arc(x1, y1, x2, y2, r) + _area_triangle(x1, y1, x2, y2, xmin, ymin)


@_njit
def _quadrant(xmin: float, ymin: float, xmax: float, ymax: float, r: float) -> float:
    """sep ``circoverlap`` for a box that straddles neither axis (its four reflections)."""
    if 0.0 <= xmin:
        if 0.0 <= ymin:
            return _core(xmin, ymin, xmax, ymax, r)
        return _core(-ymax, xmin, -ymin, xmax, r)  # 0 >= ymax
    if 0.0 <= ymin:  # 0 >= xmax
        return _core(-xmax, ymin, -xmin, ymax, r)
    return _core(-xmax, -ymax, -xmin, -ymin, r)


@_njit
def _overlap(xmin: float, ymin: float, xmax: float, ymax: float, r: float) -> float:
    """Area of the box inside the circle of radius ``r`` at the origin: sep ``circoverlap``,
    with its recursion unrolled (a split box never straddles an axis again) and the same order
    of additions."""
    if r <= 0.0:
        return 0.0
    x_split = not (0.0 <= xmin or 0.0 >= xmax)
    y_split = not (0.0 <= ymin or 0.0 >= ymax)
    if not x_split:
        if not y_split:
            return _quadrant(xmin, ymin, xmax, ymax, r)
        return _quadrant(xmin, ymin, xmax, 0.0, r) + _quadrant(xmin, 0.0, xmax, ymax, r)
    if not y_split:
        return _quadrant(xmin, ymin, 0.0, ymax, r) + _quadrant(0.0, ymin, xmax, ymax, r)
    return (
        _quadrant(xmin, ymin, 0.0, 0.0, r)
        + _quadrant(0.0, ymin, xmax, 0.0, r)
        + _quadrant(xmin, 0.0, 0.0, ymax, r)
        + _quadrant(0.0, 0.0, xmax, ymax, r)
    )


@_njit
def _overlap_vec(dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    out = np.empty(dx.size)
    for i in range(dx.size):
        out[i] = _overlap(dx[i] - 0.5, dy[i] - 0.5, dx[i] + 0.5, dy[i] + 0.5, r)
    return out


def circular_overlap(dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Exact area (pixels²) of unit pixels centred at ``(dx, dy)`` from a circle's centre that
    lies inside the circle of radius ``r`` (pixels); the kernel's overlap, for tests and plots."""
    dx, dy = np.broadcast_arrays(np.asarray(dx, float), np.asarray(dy, float))
    out = _overlap_vec(np.ascontiguousarray(dx).ravel(), np.ascontiguousarray(dy).ravel(), float(r))
    return out.reshape(dx.shape)


# ------------------------------------------------------------------------------------------
# All radii in one pass
# ------------------------------------------------------------------------------------------


@_njit
def _apertures(
    data: np.ndarray,
    back: np.ndarray,
    has_back: bool,
    err: np.ndarray,
    has_err: bool,
    err_value: np.float32,
    mask: np.ndarray,
    has_mask: bool,
    bits: np.int64,
    sat_bits: np.int64,
    saturate: float,
    x: np.ndarray,
    y: np.ndarray,
    visit: np.ndarray,
    radii: np.ndarray,
    out_sum: np.ndarray,
    out_var: np.ndarray,
    out_area: np.ndarray,
    out_marea: np.ndarray,
    out_nmask: np.ndarray,
    out_nsat: np.ndarray,
    out_sepflag: np.ndarray,
) -> None:
    """One pass per star over the box of the largest radius; ``radii`` ascending.

    Stars are visited in the order ``visit`` (by row: neighbouring stamps share cached rows).
    A pixel whose centre is within ``r_k − 0.7072`` of the star is wholly inside every radius
    from ``k`` on: it is added once to bucket ``k`` and the buckets are summed cumulatively at
    the end. Pixels in a radius' partial band (at most two radii for unit spacing) get their
    exact overlap for that radius.
    """
    ny, nx = data.shape
    nk = radii.size
    r_in2 = np.empty(nk)
    r_out2 = np.empty(nk)
    for k in range(nk):
        rin = radii[k] - _BAND
        r_in2[k] = rin * rin if rin > 0.0 else 0.0
        rout = radii[k] + _BAND
        r_out2[k] = rout * rout
    r_out2_max = r_out2[nk - 1]
    bx0 = np.empty(nk, np.int64)
    bx1 = np.empty(nk, np.int64)
    by0 = np.empty(nk, np.int64)
    by1 = np.empty(nk, np.int64)
    # per radius: partial-band sums (exact overlap) and full-pixel buckets
    p_sum = np.empty(nk)
    p_var = np.empty(nk)
    p_area = np.empty(nk)
    p_marea = np.empty(nk)
    p_nmask = np.empty(nk, np.int64)
    p_nsat = np.empty(nk, np.int64)
    p_sep = np.empty(nk, np.bool_)
    f_sum = np.empty(nk)
    f_var = np.empty(nk)
    f_area = np.empty(nk)
    f_marea = np.empty(nk)
    f_nmask = np.empty(nk, np.int64)
    f_nsat = np.empty(nk, np.int64)
    var_const = err_value * err_value  # float32, as sep
    for j in range(visit.size):
        i = visit[j]
        xi = x[i]
        yi = y[i]
        for k in range(nk):
            r = radii[k]
            flag = 0
            # sep boxextent: C casts truncate toward zero
            a0 = np.int64(xi - r + 0.5)
            a1 = np.int64(xi + r + 1.4999999)
            b0 = np.int64(yi - r + 0.5)
            b1 = np.int64(yi + r + 1.4999999)
            if a0 < 0:
                a0 = 0
                flag = 16
            if a1 > nx:
                a1 = nx
                flag = 16
            if b0 < 0:
                b0 = 0
                flag = 16
            if b1 > ny:
                b1 = ny
                flag = 16
            bx0[k] = a0
            bx1[k] = a1
            by0[k] = b0
            by1[k] = b1
            out_sepflag[k, i] = flag
            p_sum[k] = p_var[k] = p_area[k] = p_marea[k] = 0.0
            f_sum[k] = f_var[k] = f_area[k] = f_marea[k] = 0.0
            p_nmask[k] = p_nsat[k] = f_nmask[k] = f_nsat[k] = 0
            p_sep[k] = False
        # the largest radius has the largest box
        for iy in range(by0[nk - 1], by1[nk - 1]):
            dy = iy - yi
            dy2 = dy * dy
            for ix in range(bx0[nk - 1], bx1[nk - 1]):
                dx = ix - xi
                rpix2 = dx * dx + dy2
                if rpix2 >= r_out2_max:
                    continue
                raw = data[iy, ix]
                pix = raw - back[iy, ix] if has_back else raw
                varpix = var_const
                if has_err:
                    e = err[iy, ix]
                    varpix = e * e
                bitsval = np.int64(mask[iy, ix]) if has_mask else np.int64(0)
                above = raw > saturate
                saturated = (bitsval & sat_bits) != 0 or above
                masked = (bitsval & bits) != 0 or above or not np.isfinite(pix)
                # kf: first radius that holds the whole pixel (nk if none)
                kf = nk
                while kf > 0 and rpix2 <= r_in2[kf - 1]:
                    kf -= 1
                if kf < nk:
                    if masked:
                        f_marea[kf] += 1.0
                        f_nmask[kf] += 1
                        if saturated:
                            f_nsat[kf] += 1
                    else:
                        f_sum[kf] += pix
                        f_var[kf] += varpix
                    f_area[kf] += 1.0
                k = kf - 1
                while k >= 0 and rpix2 < r_out2[k]:
                    if bx0[k] <= ix < bx1[k] and by0[k] <= iy < by1[k]:
                        ov = _overlap(dx - 0.5, dy - 0.5, dx + 0.5, dy + 0.5, radii[k])
                        if masked:
                            p_sep[k] = True
                            p_marea[k] += ov
                            if ov > 0.0:
                                p_nmask[k] += 1
                                if saturated:
                                    p_nsat[k] += 1
                        else:
                            p_sum[k] += pix * ov
                            p_var[k] += varpix * ov
                        p_area[k] += ov
                    k -= 1
        c_sum = c_var = c_area = c_marea = 0.0
        c_nmask = c_nsat = 0
        for k in range(nk):
            c_sum += f_sum[k]
            c_var += f_var[k]
            c_area += f_area[k]
            c_marea += f_marea[k]
            c_nmask += f_nmask[k]
            c_nsat += f_nsat[k]
            out_sum[k, i] = c_sum + p_sum[k]
            out_var[k, i] = c_var + p_var[k]
            out_area[k, i] = c_area + p_area[k]
            out_marea[k, i] = c_marea + p_marea[k]
            out_nmask[k, i] = c_nmask + p_nmask[k]
            out_nsat[k, i] = c_nsat + p_nsat[k]
            if c_nmask > 0 or p_sep[k]:
                out_sepflag[k, i] |= 32


@dataclass(frozen=True)
class ApertureSums:
    """Per radius (rows) and star (columns): what one pass over each stamp measured.

    ``sum`` and ``var`` (DN, DN²) are over unmasked pixels and not rescaled; ``area`` is the
    in-image overlap area (pixels², sep's ``totarea``), ``masked_area`` its masked part;
    ``n_masked`` / ``n_saturated`` count masked / saturated pixels with non-zero overlap (inside
    the circle); ``sep_flag`` holds sep's bits 16 and 32 as sep computes them on this array.
    """

    sum: np.ndarray
    var: np.ndarray
    area: np.ndarray
    masked_area: np.ndarray
    n_masked: np.ndarray
    n_saturated: np.ndarray
    sep_flag: np.ndarray


def _native(array: np.ndarray, dtype: type) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("="))


def _mask_array(mask: np.ndarray | None, shape: tuple[int, int]) -> tuple[np.ndarray, bool]:
    if mask is None:
        return np.zeros((1, 1), np.uint8), False
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} != image shape {shape}")
    if mask.dtype == bool:
        return np.ascontiguousarray(mask).view(np.uint8), True
    if mask.dtype.kind not in "iu":
        raise ValueError(f"mask must be an integer or boolean array, not {mask.dtype}")
    return np.ascontiguousarray(mask, dtype=mask.dtype.newbyteorder("=")), True


def circular_apertures(
    data: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    radii: np.ndarray,
    *,
    back: np.ndarray | None = None,
    err: np.ndarray | float = 0.0,
    mask: np.ndarray | None = None,
    bits: int = 1,
    saturated_bits: int = 0,
    saturate: float = math.inf,
) -> ApertureSums:
    """Exact circular-aperture sums of ``data − back`` at ``(x, y)`` for every radius, one pass.

    Parameters
    ----------
    data : ndarray, 2-d
        Image (DN), used as float32 (like sep); any byte order.
    x, y : array_like, shape (n,)
        0-based aperture centres in the frame of ``data`` (pixel centres are integers).
        Non-finite centres are treated as far off the image (no pixel).
    radii : array_like, shape (k,)
        Radii (pixels), any order.
    back : ndarray, optional
        Background map (DN) subtracted pixel by pixel in float32.
    err : ndarray or float
        Per-pixel background rms (DN), float32 like sep; squared in float32.
    mask : ndarray of int or bool, optional
        Bit mask; a pixel is masked where ``mask & bits`` (bool: where True).
    bits : int
        Mask bits that exclude a pixel (ignored for a bool mask: True excludes).
    saturated_bits : int
        Mask bits that mark a pixel saturated (it is excluded only if also in ``bits``).
    saturate : float
        Pixels of ``data`` (before ``back`` is subtracted) above this value (DN) are saturated
        and excluded.

    Returns
    -------
    ApertureSums
    """
    img = _native(np.asarray(data), np.float32)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-d, got shape {img.shape}")
    r = np.atleast_1d(np.asarray(radii, dtype=np.float64))
    if r.ndim != 1 or r.size == 0 or not np.all(np.isfinite(r)) or np.any(r <= 0):
        raise ValueError(f"radii must be a non-empty sequence of positive numbers: {radii!r}")
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-d of equal length: {x.shape}, {y.shape}")
    finite = np.isfinite(x) & np.isfinite(y)
    x = np.ascontiguousarray(np.where(finite, x, -1e6))
    y = np.ascontiguousarray(np.where(finite, y, -1e6))
    if back is None:
        bk, has_back = np.zeros((1, 1), np.float32), False
    else:
        bk, has_back = _native(np.asarray(back), np.float32), True
        if bk.shape != img.shape:
            raise ValueError(f"back shape {bk.shape} != image shape {img.shape}")
    if np.ndim(err) == 0:
        er, has_err, err_value = np.zeros((1, 1), np.float32), False, np.float32(err)
    else:
        er, has_err, err_value = _native(np.asarray(err), np.float32), True, np.float32(0.0)
        if er.shape != img.shape:
            raise ValueError(f"err shape {er.shape} != image shape {img.shape}")
    mk, has_mask = _mask_array(mask, img.shape)
    if mk.dtype == np.uint8 and np.asarray(mask).dtype == bool:
        bits = 1
    order = np.argsort(r, kind="stable")
    r_sorted = np.ascontiguousarray(r[order])
    shape = (r.size, x.size)
    out = ApertureSums(
        sum=np.empty(shape), var=np.empty(shape), area=np.empty(shape),
        masked_area=np.empty(shape), n_masked=np.empty(shape, np.int32),
        n_saturated=np.empty(shape, np.int32), sep_flag=np.empty(shape, np.uint8),
    )  # fmt: skip
    _apertures(
        img, bk, has_back, er, has_err, err_value, mk, has_mask, np.int64(bits),
        np.int64(saturated_bits), float(saturate), x, y, np.argsort(y, kind="stable"), r_sorted,
        out.sum, out.var, out.area, out.masked_area, out.n_masked, out.n_saturated, out.sep_flag,
    )  # fmt: skip
    if np.any(order != np.arange(r.size)):
        inverse = np.argsort(order)
        out = ApertureSums(*(getattr(out, f)[inverse] for f in ApertureSums.__dataclass_fields__))
    return out


# ------------------------------------------------------------------------------------------
# Disks (the star mask of the background)
# ------------------------------------------------------------------------------------------


@_njit
def _disks(
    out: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    r: np.ndarray,
    cw: np.int64,
    ch: np.int64,
    max_fraction: float,
) -> int:
    ny, nx = out.shape
    ncx = (nx + cw - 1) // cw
    ncy = (ny + ch - 1) // ch
    masked = np.zeros((ncy, ncx), np.int64)
    limit = np.empty((ncy, ncx))
    for cy in range(ncy):
        for cx in range(ncx):
            h = min(ch, ny - cy * ch)
            w = min(cw, nx - cx * cw)
            limit[cy, cx] = max_fraction * h * w
    column_cell = np.empty(nx, np.int64)
    for ix in range(nx):
        column_cell[ix] = ix // cw
    for iy in range(ny):
        row = masked[iy // ch]
        for cx in range(ncx):  # a plain (vectorisable) count per cell and row
            count = 0
            for ix in range(cx * cw, min((cx + 1) * cw, nx)):
                count += out[iy, ix]
            row[cx] += count
    painted = 0
    for i in range(x.size):
        ri = r[i]
        if not (ri > 0.0) or not np.isfinite(x[i]) or not np.isfinite(y[i]):
            continue
        # the mesh cell of the centre (clamped onto the image for stars beyond the edge)
        cx = min(max(np.int64(math.floor(x[i] + 0.5)), 0), nx - 1) // cw
        cy = min(max(np.int64(math.floor(y[i] + 0.5)), 0), ny - 1) // ch
        if masked[cy, cx] > limit[cy, cx]:
            continue
        r2 = ri * ri
        ya = max(np.int64(math.ceil(y[i] - ri)), 0)
        yb = min(np.int64(math.floor(y[i] + ri)), ny - 1)
        xa = max(np.int64(math.ceil(x[i] - ri)), 0)
        xb = min(np.int64(math.floor(x[i] + ri)), nx - 1)
        for iy in range(ya, yb + 1):
            dy = iy - y[i]
            cy_row = iy // ch
            for ix in range(xa, xb + 1):
                dx = ix - x[i]
                if dx * dx + dy * dy <= r2 and not out[iy, ix]:
                    out[iy, ix] = True
                    masked[cy_row, column_cell[ix]] += 1
        painted += 1
    return painted


def disk_mask(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    radius: np.ndarray,
    max_fraction: float = 1.0,
    *,
    base: np.ndarray | None = None,
    cell: tuple[int, int] | None = None,
    in_place: bool = False,
) -> tuple[np.ndarray, int]:
    """Boolean image: ``base`` or'ed with disks of ``radius`` (pixels) at ``(x, y)`` (0-based).

    The image is cut in cells of ``cell = (width, height)`` pixels from pixel (0, 0) (default one
    cell: the image). A disk is painted only while the cell holding its centre (clamped onto the
    image) has at most ``max_fraction`` of its pixels masked, ``base`` included: pass the
    brightest stars first so that in crowded cells the faint ones are the ones left out, and the
    cells of sep's background mesh so that every cell keeps enough sky (sep ignores a mesh cell
    with fewer than half of its pixels usable, and returns 0 when all are). Returns the mask and
    the number of disks painted. Non-finite centres or radii are skipped. ``in_place``: paint
    into ``base`` itself (when it is a C-contiguous bool array) instead of a copy.
    """
    if base is None:
        out = np.zeros(shape, dtype=bool)
    elif in_place and base.dtype == bool and base.flags.c_contiguous:
        out = base
    else:
        out = np.array(base, dtype=bool, copy=True)
    if out.shape != tuple(shape):
        raise ValueError(f"base shape {out.shape} != {tuple(shape)}")
    cw, ch = (shape[1], shape[0]) if cell is None else cell
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    r = np.ascontiguousarray(np.broadcast_to(radius, x.shape), dtype=np.float64)
    painted = _disks(out, x, y, r, np.int64(cw), np.int64(ch), float(max_fraction))
    return out, int(painted)


@_njit
def _bad_pixels(image: np.ndarray, mask: np.ndarray, bits: np.int64, saturate: float,
                out: np.ndarray) -> bool:  # fmt: skip
    nonfinite = False
    for y in range(image.shape[0]):
        row_nonfinite = False
        for x in range(image.shape[1]):
            v = image[y, x]
            nf = not np.isfinite(v)
            out[y, x] = nf | ((np.int64(mask[y, x]) & bits) != 0) | (v > saturate)
            row_nonfinite |= nf
        nonfinite |= row_nonfinite
    return nonfinite


def background_mask(
    image: np.ndarray, mask: np.ndarray | None, bits: int, saturate: float = math.inf
) -> tuple[np.ndarray, bool]:
    """Pixels a background estimate must not use — non-finite, any of the mask's ``bits`` set,
    or above ``saturate`` — in one pass (a C-contiguous bool map, for :func:`disk_mask`'s
    ``base``), and whether any pixel was non-finite."""
    img = _native(np.asarray(image), np.asarray(image).dtype)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-d, got shape {img.shape}")
    if mask is None:
        m = np.zeros(img.shape, np.uint8)
    else:
        m = np.asarray(mask)
        if m.shape != img.shape:
            raise ValueError(f"mask shape {m.shape} != image shape {img.shape}")
        m = _native(m, m.dtype) if m.dtype.kind in "iu" else np.ascontiguousarray(m, np.int64)
    out = np.empty(img.shape, np.bool_)
    nonfinite = _bad_pixels(img, m, np.int64(bits), float(saturate), out)
    return out, bool(nonfinite)
