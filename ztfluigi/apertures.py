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

How the kernel is fast (issue #15; every output bitwise that of the plain per-pixel loop, a test):
each row of a stamp is walked over the columns within ``r_max + 0.7072`` only (pixels beyond
are never loaded); a pixel's first whole radius and first partial band come from one table
lookup; the partial-band (pixel, radius) pairs of a star are queued and their overlaps computed
by a branch-free loop on SIMD lanes (every case of sep's algorithm evaluated, the right one
selected: the same operations, so the same bits), then added in the queue's order; the next
star's stamp is prefetched while this one is measured. Indices in the hot loops are unsigned
(numba emits no negative-index wrap-around code for them).

There is no pure-numpy engine: sep remains the reference implementation (``PhotometrySpec``
``apertures="sep"``) and the tests compare the two. Nothing here imports luigi.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from ztfluigi.jit import compiled

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
_QUEUE = 4096  # (pixel, radius) pairs queued for _partial before they are added: a star's


_njit = compiled  # numpy's error model: the loops of _partial run on SIMD lanes


@intrinsic
def _prefetch(typingctx: object, array: types.Array, row: types.Integer, column: types.Integer
              ) -> tuple:  # fmt: skip
    """Ask the CPU to bring ``array[row, column]``'s cache line closer (LLVM ``prefetch``, read,
    level 2 — no effect on results): the next star's stamp arrives while this one is measured."""
    sig = types.void(array, row, column)

    def codegen(context: object, builder: ir.IRBuilder, signature: object, args: tuple) -> object:
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]],
                                       wraparound=False)  # fmt: skip
        i32 = ir.IntType(32)
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(2), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@_njit
def _prefetch_stamp(image: np.ndarray, x0: int, x1: int, y0: int, y1: int) -> None:
    """:func:`_prefetch` the cache lines of ``image[y0:y1, x0:x1]`` (bounds inside the image)."""
    step = max(64 // image.itemsize, 1)
    for iy in range(y0, y1):
        for ix in range(x0, x1, step):
            _prefetch(image, iy, ix)
        _prefetch(image, iy, x1 - 1)


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
def _segment(s: float) -> float:
    """g(s) of the segment series, ``s ≤ 0.25`` (Horner, highest term first)."""
    s2 = s * s
    p = _C[13]
    for k in range(12, -1, -1):
        p = p * s2 + _C[k]
    return s * s2 * p


@_njit
def _area_arc(x1: float, y1: float, x2: float, y2: float, r: float) -> float:
    """Area between the chord (x1, y1)–(x2, y2) and the arc of radius ``r`` (sep ``area_arc``)."""
    a = math.sqrt((x2 - x1) * (x2 - x1) + (y2 - y1) * (y2 - y1))
    s = 0.5 * a / r
    if s <= 0.25:
        return r * r * _segment(s)
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
def _partial(
    dx: np.ndarray,
    dy: np.ndarray,
    r: np.ndarray,
    n: int,
    out: np.ndarray,
    redo: np.ndarray,
    pre: np.ndarray,
    post: np.ndarray,
    fixed: np.ndarray,
) -> None:
    """:func:`_overlap` of the unit pixels centred at ``(dx, dy)`` (first ``n`` entries), without
    branches so that the loops run on SIMD lanes (``pre``, ``post``, ``fixed``: scratch).

    Every case of :func:`_quadrant` and :func:`_core` is evaluated with the same operations in the
    same order and the one that applies is selected, so each value is bitwise ``_overlap``'s. Two
    loops — up to the arc's ``s``, then its series and the sum — so that more pixels are in
    flight along the long chain of dependent operations. Left to the caller (``redo``): 1, the
    arc needs sep's ``asin`` formula (``s > 0.25``, radii below 2.83 px) or the pixel straddles
    both axes — recompute it with :func:`_overlap`; 2 (3), the pixel straddles the x (y) axis
    and ``out`` holds its lower (left) part — add the other.
    """
    for j in range(n):
        rr = r[j]
        xmin0 = dx[j] - 0.5
        xmax0 = dx[j] + 0.5
        ymin0 = dy[j] - 0.5
        ymax0 = dy[j] + 0.5
        x_split = not (0.0 <= xmin0 or 0.0 >= xmax0)
        y_split = not (0.0 <= ymin0 or 0.0 >= ymax0)
        x1 = 0.0 if x_split else xmax0  # _overlap's first piece of a split pixel
        y1 = 0.0 if y_split else ymax0
        # _quadrant's reflections (the (+, −) quadrant also swaps x and y)
        xpos = 0.0 <= xmin0
        ypos = 0.0 <= ymin0
        swap = xpos and not ypos
        ax0 = xmin0 if xpos else -x1
        ax1 = x1 if xpos else -xmin0
        ay0 = ymin0 if ypos else -y1
        ay1 = y1 if ypos else -ymin0
        xmin = ay0 if swap else ax0
        ymin = ax0 if swap else ay0
        xmax = ay1 if swap else ax1
        ymax = ax1 if swap else ay1
        # _core: every case, then the one that applies
        xmin2 = xmin * xmin
        ymin2 = ymin * ymin
        r2 = rr * rr
        xmax2 = xmax * xmax
        ymax2 = ymax * ymax
        outside = xmin2 + ymin2 > r2
        inside = xmax2 + ymax2 < r2
        full = (xmax - xmin) * (ymax - ymin)
        ca = xmax2 + ymin2 < r2
        cb = xmin2 + ymax2 < r2
        c2 = ca and cb
        c3 = ca and not cb
        c4 = cb and not ca
        # the chord (cx1, cy1)–(cx2, cy2): two square roots, their arguments chosen by case
        sa = math.sqrt(r2 - ymax2 if c2 else (r2 - xmin2 if c3 else r2 - ymin2))
        sb = math.sqrt(r2 - xmax2 if ca else (r2 - ymax2 if c4 else r2 - xmin2))
        cx1 = xmin if c3 else sa
        cy1 = ymax if c2 else (sa if c3 else ymin)
        cx2 = xmax if ca else (sb if c4 else xmin)
        cy2 = ymax if c4 else sb
        # triangles (cx1, cy1), (px, py), (qx, qy) and (cx1, cy1), (px2, py2), (cx2, cy2)
        px = cx1 if c3 else (xmin if c4 else cx2)
        py = ymin if c3 else (cy1 if c4 else cy2)
        qx = xmax if (c2 or c3) else xmin
        qy = ymax if (c2 or c4) else ymin
        t1 = 0.5 * abs(cx1 * (py - qy) + px * (qy - cy1) + qx * (cy1 - py))
        px2 = cx2 if c3 else xmin
        py2 = ymin if c3 else cy2
        t2 = 0.5 * abs(cx1 * (py2 - cy2) + px2 * (cy2 - cy1) + cx2 * (cy1 - py2))
        # _area_arc, series branch: its argument here, the series below
        a = math.sqrt((cx2 - cx1) * (cx2 - cx1) + (cy2 - cy1) * (cy2 - cy1))
        s = 0.5 * a / rr
        out[j] = s
        # the overlap: (arc + pre) + post, or pre where fixed; post = +0.0 adds nothing (the arc
        # is never −0.0)
        pre[j] = 0.0 if outside else (full if inside else (full - t1 if c2 else t1))
        post[j] = t2 if (c3 or c4) else 0.0
        fixed[j] = outside or inside
        asin = s > 0.25 and not (outside or inside)
        split = 2 if y_split else (3 if x_split else 0)
        redo[j] = 1 if (asin or (x_split and y_split)) else split
    for j in range(n):
        rr = r[j]
        arc = rr * rr * _segment(out[j])
        out[j] = pre[j] if fixed[j] else (arc + pre[j]) + post[j]


@_njit
def _rank_table(inner: np.ndarray, outer: np.ndarray, top: float) -> tuple[np.ndarray, float, bool]:
    """For ``0 ≤ v < top``, ``t = table[int(v · scale)]``: ``t & 0xFFFFFFFF`` and ``t >> 32`` are
    lower bounds of the numbers of ``inner`` and ``outer`` thresholds (each ascending) below
    ``v``, short by at most one when ``one`` (distinct thresholds at least ``4 / scale`` apart):
    one lookup instead of data-dependent loops per pixel."""
    gap = top
    one = True
    for thresholds in (inner, outer):
        for k in range(1, thresholds.size):
            d = thresholds[k] - thresholds[k - 1]
            if d > 0.0:
                gap = min(gap, d)
            else:
                one = False
    width = gap / 4.0
    if width < top / 65536.0:
        width = top / 65536.0
        one = False
    scale = 1.0 / width
    nbins = np.int64(top * scale) + 2
    table = np.empty(nbins, np.int64)
    ki = 0
    ko = 0
    for b in range(nbins):
        # (b − 1)·width ≤ v for every v with int(v · scale) = b (width ≫ rounding of v · scale):
        # a threshold missed is within 2·width below v
        edge = (b - 1) * width
        while ki < inner.size and inner[ki] < edge:
            ki += 1
        while ko < outer.size and outer[ko] < edge:
            ko += 1
        table[b] = ki | ko << 32
    return table, scale, one


@_njit
def _drain(
    n_e: int,
    e_code: np.ndarray,
    e_dx: np.ndarray,
    e_dy: np.ndarray,
    e_r: np.ndarray,
    e_ov: np.ndarray,
    e_redo: np.ndarray,
    e_pre: np.ndarray,
    e_post: np.ndarray,
    e_fixed: np.ndarray,
    q_pix: np.ndarray,
    q_var: np.ndarray,
    q_state: np.ndarray,
    radii: np.ndarray,
    p_sum: np.ndarray,
    p_var: np.ndarray,
    p_area: np.ndarray,
    p_marea: np.ndarray,
    p_nmask: np.ndarray,
    p_nsat: np.ndarray,
    p_sep: np.ndarray,
) -> None:
    """Overlaps of the first ``n_e`` queued (pixel, radius) pairs (:func:`_partial`), then their
    terms added to the partial-band sums of their radius, in the queue's order."""
    _partial(e_dx, e_dy, e_r, n_e, e_ov, e_redo, e_pre, e_post, e_fixed)
    for m in range(n_e):
        q = np.uint64(e_code[m] >> 16)
        k = np.uint64(e_code[m] & 0xFFFF)
        ov = e_ov[m]
        redo = e_redo[m]
        if redo != 0:
            dx = e_dx[m]
            dy = e_dy[m]
            if redo == 1:
                ov = _overlap(dx - 0.5, dy - 0.5, dx + 0.5, dy + 0.5, radii[k])
            elif redo == 2:
                ov = ov + _quadrant(dx - 0.5, 0.0, dx + 0.5, dy + 0.5, radii[k])
            else:
                ov = ov + _quadrant(0.0, dy - 0.5, dx + 0.5, dy + 0.5, radii[k])
        state = q_state[q]
        if state & 1:
            p_sep[k] = True
            p_marea[k] += ov
            if ov > 0.0:
                p_nmask[k] += 1
                if state & 2:
                    p_nsat[k] += 1
        else:
            p_sum[k] += q_pix[q] * ov
            p_var[k] += q_var[q] * ov
        p_area[k] += ov


@_njit
def _queue_pair(e_code: np.ndarray, e_dx: np.ndarray, e_dy: np.ndarray, e_r: np.ndarray,
                n_e: int, n_q: int, k: int, dx: float, dy: float, radii: np.ndarray) -> None:
    """Entry ``n_e`` of the partial-overlap queue: queued pixel ``n_q`` against radius ``k``
    (the caller counts it in or not: the two largest radii are written without a branch)."""
    ue = np.uint64(n_e)
    uk = np.uint64(k)
    e_code[ue] = n_q << 16 | np.int64(k)
    e_dx[ue] = dx
    e_dy[ue] = dy
    e_r[ue] = radii[uk]


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
    queue: int,
    out_sum: np.ndarray,
    out_var: np.ndarray,
    out_area: np.ndarray,
    out_marea: np.ndarray,
    out_nmask: np.ndarray,
    out_nsat: np.ndarray,
    out_sepflag: np.ndarray,
) -> None:
    """One pass per star over the pixels within ``r_max + 0.7072`` of it; ``radii`` ascending.

    Stars are visited in the order ``visit`` (by row: neighbouring stamps share cached rows);
    each row is walked over the columns of that disk only. A pixel whose centre is within
    ``r_k − 0.7072`` of the star is wholly inside every radius from ``k`` on: it is counted once
    in bucket ``k`` and the buckets are summed cumulatively at the end. A pixel in the partial
    band of radius ``k`` is queued; the star's queue gets its overlaps from :func:`_partial`
    (SIMD) and is then added in order (per radius: rows, then columns, ascending, as before).
    """
    ny, nx = data.shape
    nk = radii.size
    r_in2 = np.empty(nk + 1)  # + ∞ sentinels
    r_out2 = np.empty(nk + 1)
    for k in range(nk):
        rin = radii[k] - _BAND
        r_in2[k] = rin * rin if rin > 0.0 else 0.0
        rout = radii[k] + _BAND
        r_out2[k] = rout * rout
    r_in2[nk] = r_out2[nk] = math.inf
    r_out2_max = r_out2[nk - 1]
    # kf = #(r_in2 < rpix2): the first radius that holds the whole pixel (nk: none);
    # kp = #(r_out2 ≤ rpix2): the first radius whose band or disk reaches it
    table, scale, one = _rank_table(r_in2[:nk], r_out2[:nk], r_out2_max)
    bx0 = np.empty(nk, np.int64)
    bx1 = np.empty(nk, np.int64)
    by0 = np.empty(nk, np.int64)
    by1 = np.empty(nk, np.int64)
    # sep's boxes grow with the radius (nested): the first radius whose box holds a column
    # (a row) holds it for every larger radius
    side = np.int64(2.0 * radii[nk - 1] + 3.0)
    col_k = np.empty(side + 2, np.int64)
    # per radius: partial-band sums (exact overlap); full-pixel buckets (+ one for none)
    p_sum = np.empty(nk)
    p_var = np.empty(nk)
    p_area = np.empty(nk)
    p_marea = np.empty(nk)
    p_nmask = np.empty(nk, np.int64)
    p_nsat = np.empty(nk, np.int64)
    p_sep = np.empty(nk, np.bool_)
    f_sum = np.empty(nk + 1)
    f_var = np.empty(nk + 1)
    f_n = np.empty(nk + 1, np.int64)
    f_nmask = np.empty(nk + 1, np.int64)
    f_nsat = np.empty(nk + 1, np.int64)
    # the queue holds ``queue`` pairs, a star's usually; drained early if a row could overflow
    # it (a row queues at most nk pairs per pixel, + 2 written past the end before they are kept
    # or not)
    cap = max(nk * side, queue) + 2
    # the star's pixels (within r_max + 0.7072) and its queue of partial (pixel, radius) pairs
    q_pix = np.empty(side * side, np.float32)
    q_var = np.empty(side * side, np.float32)
    q_state = np.empty(side * side, np.uint8)  # 1 masked, 2 masked and saturated
    e_code = np.empty(cap, np.int64)  # pixel << 16 | radius index
    e_dx = np.empty(cap)
    e_dy = np.empty(cap)
    e_r = np.empty(cap)
    e_ov = np.empty(cap)
    e_redo = np.empty(cap, np.int64)
    e_pre = np.empty(cap)  # _partial's scratch
    e_post = np.empty(cap)
    e_fixed = np.empty(cap, np.bool_)
    var_const = err_value * err_value  # float32, as sep
    reach = radii[nk - 1] + 1.5  # px: the stamp, generously
    for j in range(visit.size):
        i = visit[j]
        xi = x[i]
        yi = y[i]
        if j + 1 < visit.size:  # the next stamp's pixels, while this one is measured
            xn = x[visit[j + 1]]
            yn = y[visit[j + 1]]
            if -reach < xn < nx + reach and -reach < yn < ny + reach:
                px0 = max(np.int64(xn - reach), 0)
                px1 = min(np.int64(xn + reach) + 1, nx)
                py0 = max(np.int64(yn - reach), 0)
                py1 = min(np.int64(yn + reach) + 1, ny)
                if px0 < px1 and py0 < py1:
                    _prefetch_stamp(data, px0, px1, py0, py1)
                    if has_back:
                        _prefetch_stamp(back, px0, px1, py0, py1)
                    if has_err:
                        _prefetch_stamp(err, px0, px1, py0, py1)
                    if has_mask:
                        _prefetch_stamp(mask, px0, px1, py0, py1)
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
            p_nmask[k] = p_nsat[k] = 0
            p_sep[k] = False
        for k in range(nk + 1):
            f_sum[k] = f_var[k] = 0.0
            f_n[k] = f_nmask[k] = f_nsat[k] = 0
        n_e = 0
        n_q = 0
        # the largest radius has the largest box
        xa = bx0[nk - 1]
        xb = bx1[nk - 1]
        for ix in range(xa, xb):
            k = 0
            while not (bx0[k] <= ix < bx1[k]):
                k += 1
            col_k[ix - xa] = k
        for iy in range(by0[nk - 1], by1[nk - 1]):
            dy = iy - yi
            dy2 = dy * dy
            h2 = r_out2_max - dy2
            if not h2 > 0.0:
                continue  # no pixel of the row has dx² + dy² < r_out2_max
            # the columns with dx² + dy² < r_out2_max (a run: dx² + dy² grows with |dx|)
            h = math.sqrt(h2)
            c0 = max(np.int64(math.floor(xi - h)) - 1, xa)
            c1 = min(np.int64(math.floor(xi + h)) + 2, xb)
            while c0 < c1 and not (c0 - xi) * (c0 - xi) + dy2 < r_out2_max:
                c0 += 1
            while c1 > c0 and not (c1 - 1 - xi) * (c1 - 1 - xi) + dy2 < r_out2_max:
                c1 -= 1
            row_k = 0
            while not (by0[row_k] <= iy < by1[row_k]):
                row_k += 1
            if n_e + (c1 - c0) * nk + 2 > cap:
                _drain(n_e, e_code, e_dx, e_dy, e_r, e_ov, e_redo, e_pre, e_post, e_fixed, q_pix,
                       q_var, q_state, radii, p_sum, p_var, p_area, p_marea, p_nmask, p_nsat,
                       p_sep)  # fmt: skip
                n_e = 0
            uy = np.uint64(iy)
            for ix in range(c0, c1):
                # (indices cast to unsigned: no negative-index wrap-around code in this loop)
                ux = np.uint64(ix)
                dx = ix - xi
                rpix2 = dx * dx + dy2
                raw = data[uy, ux]
                pix = raw - back[uy, ux] if has_back else raw
                varpix = var_const
                if has_err:
                    e = err[uy, ux]
                    varpix = e * e
                bitsval = np.int64(mask[uy, ux]) if has_mask else np.int64(0)
                above = raw > saturate
                saturated = ((bitsval & sat_bits) != 0) | above
                masked = ((bitsval & bits) != 0) | above | (not np.isfinite(pix))
                t = table[np.uint64(rpix2 * scale)]
                kf = t & 0xFFFFFFFF
                kp = t >> 32
                kf += rpix2 > r_in2[np.uint64(kf)]
                kp += rpix2 >= r_out2[np.uint64(kp)]
                if not one:
                    while rpix2 > r_in2[kf]:
                        kf += 1
                    while rpix2 >= r_out2[kp]:
                        kp += 1
                # whole pixel: bucket kf (nk: none)
                uf = np.uint64(kf)
                f_sum[uf] += 0.0 if masked else pix
                f_var[uf] += 0.0 if masked else varpix
                f_n[uf] += 1
                if masked:
                    f_nmask[uf] += 1
                    f_nsat[uf] += saturated
                # partial pixel of radii kp … kf − 1 (within their boxes): queued; the
                # two largest without a branch (more only where radii are < 0.71 px apart)
                uq = np.uint64(n_q)
                q_pix[uq] = pix
                q_var[uq] = varpix
                q_state[uq] = np.uint8(masked) + np.uint8(2) * np.uint8(masked & saturated)
                klo = max(kp, row_k, col_k[np.uint64(ix - xa)])
                k1 = np.uint64(max(kf - 1, 0))
                k2 = np.uint64(max(kf - 2, 0))
                _queue_pair(e_code, e_dx, e_dy, e_r, n_e, n_q, k1, dx, dy, radii)
                n_e += kf - 1 >= klo
                _queue_pair(e_code, e_dx, e_dy, e_r, n_e, n_q, k2, dx, dy, radii)
                n_e += kf - 2 >= klo
                for k in range(klo, kf - 2):
                    _queue_pair(e_code, e_dx, e_dy, e_r, n_e, n_q, k, dx, dy, radii)
                    n_e += 1
                n_q += 1
        _drain(n_e, e_code, e_dx, e_dy, e_r, e_ov, e_redo, e_pre, e_post, e_fixed, q_pix,
               q_var, q_state, radii, p_sum, p_var, p_area, p_marea, p_nmask, p_nsat,
               p_sep)  # fmt: skip
        c_sum = c_var = c_area = c_marea = 0.0
        c_nmask = c_nsat = 0
        for k in range(nk):
            # counts of whole pixels: their float sums of 1.0 are exact
            c_sum += f_sum[k]
            c_var += f_var[k]
            c_area += np.float64(f_n[k])
            c_marea += np.float64(f_nmask[k])
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
    if r.size > 0xFFFF:  # the kernel packs a radius index in 16 bits
        raise ValueError(f"at most 65535 radii, not {r.size}")
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
        _QUEUE, out.sum, out.var, out.area, out.masked_area, out.n_masked, out.n_saturated,
        out.sep_flag,
    )  # fmt: skip
    if np.any(order != np.arange(r.size)):
        inverse = np.argsort(order)
        out = ApertureSums(*(getattr(out, f)[inverse] for f in ApertureSums.__dataclass_fields__))
    return out


# ------------------------------------------------------------------------------------------
# Disks (the star mask of the background)
# ------------------------------------------------------------------------------------------


@_njit
def _count_cells(out: np.ndarray, cw: np.int64, ch: np.int64) -> np.ndarray:
    """Number of True pixels of ``out`` (bool, C-contiguous) per cell of ``cw × ch`` px.

    Where rows and cells are whole 8-byte words, eight pixels are added at once: each byte of a
    uint64 sum of at most 255 words counts its column's True pixels (bool bytes are 0 or 1).
    """
    ny, nx = out.shape
    ncx = (nx + cw - 1) // cw
    ncy = (ny + ch - 1) // ch
    masked = np.zeros((ncy, ncx), np.int64)
    if nx % 8 == 0 and cw % 8 == 0:
        words = out.reshape(ny * nx).view(np.uint64)
        nw = nx // 8
        low = np.uint64(0x00FF00FF00FF00FF)
        for iy in range(ny):
            row = masked[iy // ch]
            for cx in range(ncx):
                lo = iy * nw + cx * (cw // 8)
                hi = min(lo + cw // 8, (iy + 1) * nw)
                total = 0
                while lo < hi:
                    top = min(lo + 255, hi)
                    acc = np.uint64(0)
                    for k in range(lo, top):
                        acc += words[k]
                    # byte counts → four 16-bit sums → their total in the top 16 bits
                    acc = (acc & low) + ((acc >> np.uint64(8)) & low)
                    total += np.int64((acc * np.uint64(0x0001000100010001)) >> np.uint64(48))
                    lo = top
                row[cx] += total
        return masked
    for iy in range(ny):
        row = masked[iy // ch]
        for cx in range(ncx):  # a plain (vectorisable) count per cell and row
            count = 0
            for ix in range(cx * cw, min((cx + 1) * cw, nx)):
                count += out[iy, ix]
            row[cx] += count
    return masked


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
    """Paint the disks into ``out`` (see :func:`disk_mask`); the number painted.

    Each row of a disk is the run of columns with ``dx² + dy² ≤ r²`` (it grows with ``|dx|``),
    found from the circle and checked with that test at its ends; runs are split at cell edges
    so that each piece adds its newly masked pixels to its cell's count at once.
    """
    ny, nx = out.shape
    masked = _count_cells(out, cw, ch)
    ncy, ncx = masked.shape
    limit = np.empty((ncy, ncx))
    for cy in range(ncy):
        for cx in range(ncx):
            h = min(ch, ny - cy * ch)
            w = min(cw, nx - cx * cw)
            limit[cy, cx] = max_fraction * h * w
    painted = 0
    for i in range(x.size):
        ri = r[i]
        xi = x[i]
        yi = y[i]
        if not (ri > 0.0) or not np.isfinite(xi) or not np.isfinite(yi):
            continue
        # the mesh cell of the centre (clamped onto the image for stars beyond the edge)
        cx = min(max(np.int64(math.floor(xi + 0.5)), 0), nx - 1) // cw
        cy = min(max(np.int64(math.floor(yi + 0.5)), 0), ny - 1) // ch
        if masked[cy, cx] > limit[cy, cx]:
            continue
        r2 = ri * ri
        ya = max(np.int64(math.ceil(yi - ri)), 0)
        yb = min(np.int64(math.floor(yi + ri)), ny - 1)
        xa = max(np.int64(math.ceil(xi - ri)), 0)
        xb = min(np.int64(math.floor(xi + ri)), nx - 1)
        for iy in range(ya, yb + 1):
            dy = iy - yi
            dy2 = dy * dy
            h2 = r2 - dy2
            if h2 < 0.0:
                continue  # dx² + dy² ≥ dy² > r²
            h = math.sqrt(h2)
            c0 = max(np.int64(math.floor(xi - h)) - 1, xa)
            c1 = min(np.int64(math.floor(xi + h)) + 1, xb)
            while c0 <= c1 and not (c0 - xi) * (c0 - xi) + dy2 <= r2:
                c0 += 1
            while c1 >= c0 and not (c1 - xi) * (c1 - xi) + dy2 <= r2:
                c1 -= 1
            cells = masked[iy // ch]
            uy = np.uint64(iy)  # unsigned indices: no negative-index wrap-around code
            while c0 <= c1:
                cell = c0 // cw
                end = min(c1, (cell + 1) * cw - 1)
                new = 0
                for ix in range(c0, end + 1):
                    ux = np.uint64(ix)
                    new += not out[uy, ux]
                    out[uy, ux] = True
                cells[cell] += new
                c0 = end + 1
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
    if not (int(cw) > 0 and int(ch) > 0):
        raise ValueError(f"cell must be positive (width, height) in pixels, not {cell!r}")
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
