"""Per-pixel σ-clipped median of a stack of frames: what a "clipped median" means, in one place.

Master biases (N≈10 frames of 6160×6144 float32) and per-LED flat stacks (N≈5) are combined by
the reference pipeline (reference_pipeline.md §3, §4.2) as::

    np.nanmedian(astropy.stats.sigma_clip(stack, sigma=3, axis=0, maxiters=1, cenfunc="median",
                                          stdfunc="std", masked=False), axis=0)

:func:`clipped_median` computes exactly that (``method="reference"``), bitwise identically, much
faster (see ``bench/bench_stacking.py``) and in bounded memory. Definition, per pixel, on the N
values ``v`` along axis 0:

1. Non-finite values (NaN, ±inf) are ignored — astropy masks them before computing the bounds and
   they become NaN in its output. ``n`` = number of finite values; ``n = 0`` → result NaN.
2. ``c`` = median of the finite values, in float64 (mean of the two middle ones if ``n`` is even).
3. ``s`` = spread, in float64:

   * ``"reference"``: ``std`` with ``ddof=0`` (mean and sum of squares over the finite values);
   * ``"mad"``: ``1.482602218505602 × median(|v − c|)`` (astropy's ``mad_std``, 1/Φ⁻¹(3/4)).

4. Bounds ``lo = c − σ·s``, ``hi = c + σ·s``; a value is **kept iff lo ≤ v ≤ hi** (astropy rejects
   ``v < lo`` or ``v > hi``: the comparison is strict, in float64). With ``s = 0`` (all finite
   values identical for the std; more than half of them identical for the MAD) the bounds collapse
   onto ``c`` and exactly the values equal to ``c`` are kept: the result is ``c``, never NaN.
5. ``iterations = k > 1`` follows astropy's ``maxiters``: steps 2–4 are repeated on the values kept
   by the previous bounds, stopping early when nothing changes or nothing would survive; the
   **last** bounds are then applied to all finite values (a value rejected earlier comes back if
   it lies within the final bounds).
6. Result = ``np.nanmedian`` of the kept values, in float32 arithmetic exactly as numpy does it:
   ``(a + b) * 0.5`` on the two middle float32 values (``a = b`` if the count is odd); NaN if no
   value is kept (no finite value; or, only with σ < 1, an even count whose two middle values
   are both rejected).

``"mad"`` is astropy's ``stdfunc="mad_std"`` path and is likewise bitwise identical to it. It is
the robust variant: with ``std``, one outlier among N values deviates by at most N/√(N−1) standard
deviations, so 3σ clipping never rejects it when N ≤ 7 (trap 8: flats have 5 frames per LED); the
MAD is not inflated by the outlier.

Exactness. The float64 centre, MAD and bounds of the ``"mad"`` method do not depend on the order
of the values. The ``std`` does: astropy sums in the order left by its Wirth selection, we sum in
sorted order (numba) or use a shifted one-pass formula (numpy), which differ by a few ulps. Where a
finite value lies within ``1e-11·(|c| + σ·s)`` of a bound computed that way (essentially never on
real data; e.g. quantised data exactly on a bound), the pixel is recomputed by an exact emulation
of astropy's C routine (``astropy/stats/src/compute_bounds.c``). So results are bitwise identical
to astropy + ``np.nanmedian`` for float32 input (the only conceivable difference is the sign of a
zero result), and so are the kept-value counts.

Algorithm: per block of rows, sort each pixel's values with a sorting network (non-finite values
→ +inf, last); the centre is then an index pick, the kept values are a contiguous run of the
sorted values found by two counts, and the clipped median is another index pick.
Engines: ``"numpy"`` (vectorised over the pixels of a block) and ``"numba"`` (optional
accelerator: the same algorithm compiled and fused per chunk of 256 pixels, releasing the GIL).
``"auto"`` uses numba when it can be imported. Both give identical results. Row blocks are shared
among at most 2 threads by default (the production nodes have 2 cores); the extra memory is the
output plus a few block-sized buffers per thread.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import types
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_SPEC",
    "MAD_TO_STD",
    "ClipSpec",
    "ClipStats",
    "clipped_median",
    "clipped_median_stats",
    "numba_available",
]

#: astropy's ``mad_std`` factor, 1/Φ⁻¹(3/4) (``astropy/stats/src/compute_bounds.c``).
MAD_TO_STD = 1.482602218505602

METHODS = ("reference", "mad")
ENGINES = ("auto", "numpy", "numba")

# Relative distance to a bound below which a value's keep/reject decision could depend on the
# summation order of the std (ours: sorted; astropy's: Wirth-selection order). Those pixels are
# recomputed exactly. The order-induced difference is a few N·2⁻⁵² relative.
_TIE_RTOL = 1e-11
# Sorting networks are used up to this many frames; beyond, np.sort (numpy engine only).
_MAX_NETWORK = 64
# Pixels per numpy block: its 1-D float64 temporaries stay below glibc's default 128 KiB mmap
# threshold (fresh mmaps page-fault on every block, which costs more than the arithmetic).
_NUMPY_BLOCK_PIXELS = 24576
# Rows per numba block.
_NUMBA_BLOCK_ROWS = 32
# Pixels per chunk inside the numba kernel (the (N, W) working set stays in L1/L2).
_NUMBA_CHUNK = 256


@dataclass(frozen=True)
class ClipSpec:
    """Definition of the clipped median; recorded in product headers by :meth:`header_cards`.

    Parameters
    ----------
    sigma
        Clip threshold in units of the spread (symmetric), > 0.
    iterations
        astropy's ``maxiters`` (≥ 1); the reference pipeline uses 1.
    method
        ``"reference"`` (centre = median, spread = std with ddof 0: the reference pipeline) or
        ``"mad"`` (spread = 1.482602218505602 × MAD: rejects single outliers even for N ≤ 7).
    """

    sigma: float = 3.0
    iterations: int = 1
    method: str = "reference"

    def __post_init__(self) -> None:
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, int | float | np.floating):
            raise TypeError(f"sigma must be a real number, got {self.sigma!r}")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be finite and > 0, got {self.sigma!r}")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int | np.integer):
            raise TypeError(f"iterations must be an integer, got {self.iterations!r}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        # Normalise numpy scalars so that equality, hashing and FITS cards are plain Python.
        object.__setattr__(self, "sigma", float(self.sigma))
        object.__setattr__(self, "iterations", int(self.iterations))

    @property
    def use_mad(self) -> bool:
        """Whether the spread is the scaled MAD (else the std)."""
        return self.method == "mad"

    def header_cards(self) -> list[tuple[str, object, str]]:
        """FITS cards ``(keyword, value, comment)`` recording this definition."""
        spread = "MAD*1.4826" if self.use_mad else "std ddof=0"
        return [
            ("CLIPMETH", self.method, f"sigma clip: centre=median, {spread}"),
            ("CLIPSIG", self.sigma, "clip threshold [sigma], keep lo<=v<=hi"),
            ("CLIPITER", self.iterations, "clip iterations (astropy maxiters)"),
            ("CLIPCOMB", "nanmedian", "combination of the kept values"),
        ]


DEFAULT_SPEC = ClipSpec()


@dataclass(frozen=True)
class ClipStats:
    """Counts over a whole stack, for headers (cheap by-products of :func:`clipped_median`)."""

    n_frames: int
    n_pixels: int
    n_nonfinite: int  #: input values that were NaN/±inf (ignored)
    n_clipped: int  #: finite input values rejected by the clip
    n_empty: int  #: output pixels with no kept value (NaN)

    def header_cards(self) -> list[tuple[str, object, str]]:
        """FITS cards ``(keyword, value, comment)`` with the counts."""
        return [
            ("NCLIPPED", self.n_clipped, "finite input values rejected by the clip"),
            ("NNONFIN", self.n_nonfinite, "non-finite input values (ignored)"),
            ("NEMPTY", self.n_empty, "output pixels without kept value (NaN)"),
        ]


# --------------------------------------------------------------------------------------------
# Exact emulation of astropy's C routine. Written once, run as Python (numpy engine, rare
# pixels) or compiled by numba (numba engine), see _numba_namespace().
# --------------------------------------------------------------------------------------------


def _kth_smallest(a: np.ndarray, n: int, k: int) -> float:
    """Wirth's selection, as astropy's ``wirth_select.c`` (same swaps, so same final order)."""
    lo = 0
    hi = n - 1
    while lo < hi:
        x = a[k]
        i = lo
        j = hi
        while True:
            while a[i] < x:
                i += 1
            while x < a[j]:
                j -= 1
            if i <= j:
                t = a[i]
                a[i] = a[j]
                a[j] = t
                i += 1
                j -= 1
            if i > j:
                break
        if j < k:
            lo = i
        if k < i:
            hi = j
    return a[k]


def _wirth_median(a: np.ndarray, n: int) -> float:
    """astropy's ``wirth_median``: upper then lower middle element, reordering ``a`` in place."""
    if n % 2 == 0:
        return 0.5 * (_kth_smallest(a, n, n // 2) + _kth_smallest(a, n, n // 2 - 1))
    return _kth_smallest(a, n, (n - 1) // 2)


def _astropy_bounds(
    buf: np.ndarray, count: int, sigma: float, maxiters: int, use_mad: bool, mbuf: np.ndarray
) -> tuple[float, float]:
    """``compute_sigma_clipped_bounds`` (cenfunc median) on ``buf[:count]`` (float64, modified)."""
    iteration = 0
    while True:
        median = _wirth_median(buf, count)
        if use_mad:
            for i in range(count):
                mbuf[i] = abs(buf[i] - median)
            std = _wirth_median(mbuf, count) * 1.482602218505602
        else:
            mean = 0.0
            for i in range(count):
                mean += buf[i]
            mean /= count
            std = 0.0
            for i in range(count):
                std += (buf[i] - mean) * (buf[i] - mean)
            std = math.sqrt(std / count)
        lower = median - sigma * std
        upper = median + sigma * std
        new_count = 0
        for i in range(count):
            if buf[i] >= lower and buf[i] <= upper:
                buf[new_count] = buf[i]
                new_count += 1
        if new_count == count or new_count == 0:
            return lower, upper
        count = new_count
        iteration += 1
        if iteration >= maxiters:
            return lower, upper


def _median_f32(v: np.ndarray, m: int) -> np.float32:
    """``np.nanmedian`` of ``v[:m]`` (float32, sorted in place): ``(a + b) * 0.5`` in float32."""
    for i in range(1, m):
        x = v[i]
        j = i - 1
        while j >= 0 and v[j] > x:
            v[j + 1] = v[j]
            j -= 1
        v[j + 1] = x
    if m == 0:
        return np.float32(np.nan)
    return (v[(m - 1) // 2] + v[m // 2]) * np.float32(0.5)


def _exact_pixel(
    vals: np.ndarray,
    sigma: float,
    maxiters: int,
    use_mad: bool,
    buf: np.ndarray,
    mbuf: np.ndarray,
    surv: np.ndarray,
) -> tuple[np.float32, int, int]:
    """Clipped median of one pixel's values (float32, frame order), exactly as astropy + numpy.

    Returns ``(median, n_kept, n_finite)``; ``buf``/``mbuf`` (float64) and ``surv`` (float32) are
    scratch arrays of at least ``len(vals)`` elements.
    """
    n = 0
    for i in range(vals.shape[0]):
        if math.isfinite(vals[i]):
            buf[n] = float(vals[i])
            n += 1
    if n == 0:
        return np.float32(np.nan), 0, 0
    lower, upper = _astropy_bounds(buf, n, sigma, maxiters, use_mad, mbuf)
    m = 0
    for i in range(vals.shape[0]):
        v = float(vals[i])  # float64 comparison, as numpy's float32-array-vs-float64 one
        if math.isfinite(v) and v >= lower and v <= upper:
            surv[m] = vals[i]
            m += 1
    return _median_f32(surv, m), m, n


# --------------------------------------------------------------------------------------------
# Sorting network (Batcher's odd-even merge sort, any n)
# --------------------------------------------------------------------------------------------


@functools.cache
def _network(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Comparators ``(i[c], j[c])``, ``i < j``, of Batcher's odd–even merge sort for ``n`` inputs.

    Built for the next power of two and pruned of comparators touching indices ≥ n (valid because
    absent inputs behave as +inf). Applied in order, ``min → i, max → j`` sorts ascending.
    """
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k - 1, n - j - k - 1) + 1):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return np.ascontiguousarray(arr[:, 0]), np.ascontiguousarray(arr[:, 1])


def _network_sort_rows(s: np.ndarray, spare: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Sort the rows-as-values of ``s`` (N, P) along axis 0 (``s`` is clobbered).

    Returns the sorted values in ``out`` (N, P), or ``s`` itself for N > 64 (np.sort). ``spare``
    (P,) is scratch: swapping row references saves one pass per comparator.
    """
    n = s.shape[0]
    if n > _MAX_NETWORK:
        s.sort(axis=0)
        return s
    rows = list(s)
    ci, cj = _network(n)
    for i, j in zip(ci.tolist(), cj.tolist(), strict=True):
        np.minimum(rows[i], rows[j], out=spare)
        np.maximum(rows[i], rows[j], out=rows[j])
        rows[i], spare = spare, rows[i]
    for k in range(n):
        out[k] = rows[k]
    return out


class _Scratch:
    """Reusable buffers of one numpy-engine thread.

    Fresh multi-MB temporaries per block cost more in page faults than in arithmetic; reusing
    them halves the numpy engine's time.
    """

    def __init__(self) -> None:
        self._bufs: dict[tuple[str, np.dtype], np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype``, reused across calls per ``name``."""
        size = math.prod(shape)
        key = (name, np.dtype(dtype))
        buf = self._bufs.get(key)
        if buf is None or buf.size < size:
            buf = self._bufs[key] = np.empty(size, dtype)
        return buf[:size].reshape(shape)


# --------------------------------------------------------------------------------------------
# numpy engine
# --------------------------------------------------------------------------------------------


def _pick(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``a[idx[p], p]`` for each column ``p`` of a C-contiguous 2-D array."""
    ncol = a.shape[1]
    return a.reshape(-1).take(idx * ncol + np.arange(ncol))


def _row_or_pick(
    a: np.ndarray,
    row: int,
    cols: np.ndarray | None,
    idx: np.ndarray | None,
    out: np.ndarray,
) -> np.ndarray:
    """``out[p] = a[row, p]``, except ``a[idx[i], cols[i]]`` for the listed columns."""
    np.copyto(out, a[row])
    if cols is not None and cols.size:
        out[cols] = _pick(a[:, cols], idx)
    return out


def _spread(
    x: np.ndarray,
    cen: np.ndarray,
    use_mad: bool,
    partial: tuple[np.ndarray, np.ndarray] | None,
    m: np.ndarray,
    scratch: _Scratch,
    tag: str,
) -> np.ndarray:
    """Spread (std ddof 0, or scaled MAD) of the values of each column of ``x`` (N, P) float64.

    ``x`` is sorted along axis 0; ``partial = (cols, outside)``: in columns ``cols`` only the
    entries where ``outside`` (N, len(cols)) is False count, ``m`` per column (N elsewhere). The
    std uses the shifted one-pass formula about the median ``cen`` (no cancellation, since
    |mean − median| ≤ std): accurate to a few N·2⁻⁵², exactly 0 iff the values are all equal.
    The MAD is exact (order-independent), as astropy's. Buffers: ``scratch``, names ``tag…``.
    """
    nfr, npix = x.shape
    d = np.subtract(x, cen, out=scratch.get(tag + "d", x.shape, np.float64))
    cols = None
    if partial is not None:
        cols, outside = partial
        d[:, cols] = np.where(outside, np.inf if use_mad else 0.0, d[:, cols])
    out = scratch.get(tag + "spread", (npix,), np.float64)
    if use_mad:
        np.abs(d, out=d)
        spare = scratch.get("spare64", (npix,), np.float64)
        d = _network_sort_rows(d, spare, scratch.get(tag + "d2", d.shape, np.float64))
        mc = None if cols is None else m[cols]
        _row_or_pick(d, (nfr - 1) // 2, cols, None if mc is None else (mc - 1) // 2, out)
        hi = scratch.get(tag + "spread2", (npix,), np.float64)
        _row_or_pick(d, nfr // 2, cols, None if mc is None else mc // 2, hi)
        out += hi
        out *= 0.5  # as astropy: (0.5 * (lo + hi)) * K, in this order
        out *= MAD_TO_STD
        return out
    s1 = d.sum(axis=0, out=scratch.get(tag + "s1", (npix,), np.float64))
    np.einsum("ij,ij->j", d, d, out=out)
    s1 /= m
    out /= m
    s1 *= s1
    out -= s1
    np.maximum(out, 0.0, out=out)
    return np.sqrt(out, out=out)


def _bounds_and_counts(
    x: np.ndarray,
    cen: np.ndarray,
    std: np.ndarray,
    nfin: np.ndarray,
    vmax: np.ndarray,
    spec: ClipSpec,
    scratch: _Scratch,
    tag: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bounds, then ``il`` / ``ih`` = numbers of finite values < lower / ≤ upper per column.

    ``x`` (N, P) is sorted, non-finite values (+inf) last; ``vmax`` = largest finite value.
    Only columns whose extreme values are out of bounds need a full count. Returns
    ``(il, ih, tie_columns)``: the latter have a value within ``_TIE_RTOL·(|c| + σ·s)`` of a
    bound (and s > 0), where astropy's summation order of the std could decide differently.
    """
    npix = x.shape[1]
    sig_std = np.multiply(std, spec.sigma, out=scratch.get(tag + "sigstd", (npix,), np.float64))
    lower = np.subtract(cen, sig_std, out=scratch.get(tag + "lower", (npix,), np.float64))
    upper = np.add(cen, sig_std, out=scratch.get(tag + "upper", (npix,), np.float64))
    vmin = x[0]
    il = scratch.get(tag + "il", (npix,), np.intp)
    il.fill(0)
    ih = scratch.get(tag + "ih", (npix,), np.intp)
    np.copyto(ih, nfin)
    lowc = np.flatnonzero(vmin < lower)
    if lowc.size:
        il[lowc] = np.count_nonzero(x[:, lowc] < lower[lowc], axis=0)
    highc = np.flatnonzero(vmax > upper)
    if highc.size:
        ih[highc] = np.count_nonzero(x[:, highc] <= upper[highc], axis=0)
    if spec.use_mad:  # the MAD bounds are exact
        return il, ih, np.zeros(0, np.intp)

    # Nearest values to the bounds: vmin / vmax where nothing is clipped, else around il / ih.
    tol = np.abs(cen, out=scratch.get(tag + "tol", (npix,), np.float64))
    tol += sig_std
    tol *= _TIE_RTOL
    dist = np.subtract(vmin, lower, out=scratch.get(tag + "dist", (npix,), np.float64))
    near = np.abs(dist, out=dist) <= tol
    np.subtract(vmax, upper, out=dist)
    near |= np.abs(dist, out=dist) <= tol
    clipped = np.union1d(lowc, highc)
    if clipped.size:
        nfr = x.shape[0]
        xs, ts = x[:, clipped], tol[clipped]
        ilc, ihc, loc, upc = il[clipped], ih[clipped], lower[clipped], upper[clipped]
        for idx, bound in ((ilc - 1, loc), (ilc, loc), (ihc - 1, upc), (ihc, upc)):
            v = _pick(xs, np.clip(idx, 0, nfr - 1))
            near[clipped] |= (idx >= 0) & (idx < nfr) & (np.abs(v - bound) <= ts)
    return il, ih, np.flatnonzero(near & (std > 0))


def _numpy_block(
    block: np.ndarray, spec: ClipSpec, fetch: Callable[[int], np.ndarray], scratch: _Scratch
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clipped median of the columns of ``block`` (N, P) float32 (overwritten).

    ``fetch(p)`` returns the original values of column ``p`` (for the exact fallback). Returns
    ``(median float32 (P,), n_kept (P,), n_finite (P,))``, views of ``scratch`` buffers, valid
    until its next use. Temporaries come from ``scratch`` too: fresh multi-100-kB arrays per
    block cost more in page faults than the arithmetic.
    """
    nfr, npix = block.shape
    get = scratch.get
    finite = np.isfinite(block, out=get("finite", block.shape, np.bool_))
    nfin = finite.sum(axis=0, dtype=np.intp, out=get("nfin", (npix,), np.intp))
    bad = np.flatnonzero(nfin < nfr)  # columns with non-finite values (usually few)
    if bad.size:  # non-finite values → +inf: sorted last, never counted
        block[:, bad] = np.where(finite[:, bad], block[:, bad], np.float32(np.inf))
    spare = get("spare32", (npix,), np.float32)
    x = get("x", block.shape, np.float64)
    x[...] = _network_sort_rows(block, spare, get("sorted", block.shape, np.float32))
    krow = np.arange(nfr)[:, np.newaxis]

    # First iteration, all columns: index picks are plain rows except in the `bad` columns.
    m = np.maximum(nfin, 1, out=get("m", (npix,), np.intp))
    mb = m[bad]
    p1 = _row_or_pick(x, (nfr - 1) // 2, bad, (mb - 1) // 2, get("p1", (npix,), np.float64))
    p2 = _row_or_pick(x, nfr // 2, bad, mb // 2, get("p2", (npix,), np.float64))
    vmax = _row_or_pick(x, nfr - 1, bad, mb - 1, get("vmax", (npix,), np.float64))
    if bad.size:
        empty = bad[nfin[bad] == 0]
        p1[empty] = p2[empty] = vmax[empty] = 0.0
    cen = np.add(p1, p2, out=get("cen", (npix,), np.float64))
    cen *= 0.5
    med = get("med", (npix,), np.float32)
    med[...] = p1
    p2f = get("p2f", (npix,), np.float32)
    p2f[...] = p2
    med += p2f  # numpy's median: float32 (a + b) * 0.5
    med *= np.float32(0.5)
    partial = (bad, krow >= nfin[bad]) if bad.size else None
    std = _spread(x, cen, spec.use_mad, partial, m, scratch, "")
    ilo, ihi, ties = _bounds_and_counts(x, cen, std, nfin, vmax, spec, scratch, "")
    exact = ties.tolist()

    # Further iterations, on the columns whose kept run [a, b) changed (astropy's buffer).
    nkept = np.subtract(ihi, ilo, out=get("nkept", (npix,), np.intp))
    act = np.flatnonzero((nkept != nfin) & (nkept > 0)) if spec.iterations > 1 else []
    if len(act):
        a, b = ilo.copy(), ihi.copy()
    for _ in range(spec.iterations - 1):
        if len(act) == 0:
            break
        xa, aa, bb = np.ascontiguousarray(x[:, act]), a[act], b[act]
        mm = bb - aa
        cen = 0.5 * (_pick(xa, aa + (mm - 1) // 2) + _pick(xa, aa + mm // 2))
        partial = (np.arange(act.size), (krow < aa) | (krow >= bb))
        std = _spread(xa, cen, spec.use_mad, partial, mm, scratch, "it_")
        nf = nfin[act]
        il, ih, ties = _bounds_and_counts(xa, cen, std, nf, _pick(xa, nf - 1), spec, scratch, "it_")
        exact += act[ties].tolist()
        ilo[act], ihi[act] = il, ih
        na, nb = np.maximum(aa, il), np.minimum(bb, ih)
        n_run = np.maximum(nb - na, 0)
        a[act], b[act] = na, nb
        act = act[(n_run != mm) & (n_run != 0)]

    np.subtract(ihi, ilo, out=nkept)
    moved = np.flatnonzero((nkept != nfin) & (nkept > 0))  # clipped: median of the kept run
    if moved.size:
        xs, lo_m, nk = x[:, moved], ilo[moved], nkept[moved]
        q1 = _pick(xs, lo_m + (nk - 1) // 2).astype(np.float32)
        q2 = _pick(xs, lo_m + nk // 2).astype(np.float32)
        med[moved] = (q1 + q2) * np.float32(0.5)
    med[nkept == 0] = np.nan
    if exact:
        buf, mbuf, surv = np.empty(nfr), np.empty(nfr), np.empty(nfr, np.float32)
        for p in set(exact):
            med[p], nkept[p], _ = _exact_pixel(
                fetch(p), spec.sigma, spec.iterations, spec.use_mad, buf, mbuf, surv
            )
    return med, nkept, nfin


# --------------------------------------------------------------------------------------------
# numba engine (optional)
# --------------------------------------------------------------------------------------------


def _sort_columns(values: np.ndarray, ci: np.ndarray, cj: np.ndarray, w: int) -> None:
    """Sort columns ``0 … w`` of ``values`` (N, chunk) in place with the compare-exchange
    network ``(ci[c], cj[c])`` (vectorised across the chunk's pixels)."""
    for c in range(ci.shape[0]):
        i = ci[c]
        j = cj[c]
        for x in range(w):
            p = values[i, x]
            q = values[j, x]
            values[i, x] = min(p, q)
            values[j, x] = max(p, q)


def _numba_rows(
    stack: np.ndarray,
    r0: int,
    nrows: int,
    ci: np.ndarray,
    cj: np.ndarray,
    sigma: float,
    maxiters: int,
    use_mad: bool,
    tie_rtol: float,
    chunk: int,
    out: np.ndarray,
    nkept: np.ndarray,
    nfinite: np.ndarray,
) -> None:
    """numba kernel: rows ``r0 … r0+nrows`` of ``stack`` (N, ny, nx) → rows 0… of the outputs.

    Same algorithm as :func:`_numpy_block` for the first iteration, vectorised across a chunk of
    pixels; pixels that need more iterations or lie on a bound go through :func:`_exact_pixel`.
    """
    nfr = stack.shape[0]
    nx = out.shape[1]
    inf32 = np.float32(np.inf)
    for row in range(nrows):
        y = r0 + row
        s = np.empty((nfr, chunk), np.float32)
        dev = np.empty((nfr, chunk), np.float64)
        cnt = np.empty(chunk, np.int64)
        acc = np.empty(chunk, np.float64)
        cen = np.empty(chunk, np.float64)
        std = np.empty(chunk, np.float64)
        lower = np.empty(chunk, np.float64)
        upper = np.empty(chunk, np.float64)
        il = np.empty(chunk, np.int64)
        ih = np.empty(chunk, np.int64)
        vals = np.empty(nfr, np.float32)
        buf = np.empty(nfr, np.float64)
        mbuf = np.empty(nfr, np.float64)
        surv = np.empty(nfr, np.float32)
        for x0 in range(0, nx, chunk):
            w = min(chunk, nx - x0)
            for x in range(w):
                cnt[x] = 0
            for k in range(nfr):
                for x in range(w):
                    v = stack[k, y, x0 + x]
                    ok = math.isfinite(v)
                    s[k, x] = v if ok else inf32
                    cnt[x] += ok
            _sort_columns(s, ci, cj, w)
            for x in range(w):
                n = cnt[x]
                if n > 0:
                    cen[x] = 0.5 * (np.float64(s[(n - 1) // 2, x]) + np.float64(s[n // 2, x]))
                else:
                    cen[x] = 0.0
                acc[x] = 0.0
            if use_mad:
                for k in range(nfr):
                    for x in range(w):
                        d = abs(np.float64(s[k, x]) - cen[x])
                        dev[k, x] = d if k < cnt[x] else np.inf
                _sort_columns(dev, ci, cj, w)
                for x in range(w):
                    n = max(cnt[x], 1)
                    mad = 0.5 * (dev[(n - 1) // 2, x] + dev[n // 2, x])
                    std[x] = mad * 1.482602218505602
            else:
                for k in range(nfr):
                    for x in range(w):
                        acc[x] += np.float64(s[k, x]) if k < cnt[x] else 0.0
                for x in range(w):
                    cen_mean = acc[x] / max(cnt[x], 1)
                    lower[x] = cen_mean  # temporarily the mean
                    acc[x] = 0.0
                for k in range(nfr):
                    for x in range(w):
                        d = np.float64(s[k, x]) - lower[x]
                        acc[x] += d * d if k < cnt[x] else 0.0
                for x in range(w):
                    std[x] = math.sqrt(acc[x] / max(cnt[x], 1))
            for x in range(w):
                lower[x] = cen[x] - sigma * std[x]
                upper[x] = cen[x] + sigma * std[x]
                il[x] = 0
                ih[x] = 0
            for k in range(nfr):
                for x in range(w):
                    v = np.float64(s[k, x])
                    il[x] += v < lower[x]
                    ih[x] += v <= upper[x]
            for x in range(w):
                n = cnt[x]
                if n == 0:
                    out[row, x0 + x] = np.float32(np.nan)
                    nkept[row, x0 + x] = 0
                    nfinite[row, x0 + x] = 0
                    continue
                m = ih[x] - il[x]
                redo = maxiters > 1 and m != n and m != 0
                if not use_mad and std[x] > 0 and not redo:
                    tol = tie_rtol * (abs(cen[x]) + sigma * std[x])
                    for t in range(4):
                        idx = il[x] - 1 + t if t < 2 else ih[x] - 3 + t
                        bound = lower[x] if t < 2 else upper[x]
                        if 0 <= idx < nfr and abs(np.float64(s[idx, x]) - bound) <= tol:
                            redo = True
                if redo:
                    for k in range(nfr):
                        vals[k] = stack[k, y, x0 + x]
                    res, mk, nf = _exact_pixel(vals, sigma, maxiters, use_mad, buf, mbuf, surv)
                    out[row, x0 + x] = res
                    nkept[row, x0 + x] = mk
                else:
                    if m > 0:
                        j1 = il[x] + (m - 1) // 2
                        j2 = il[x] + m // 2
                        out[row, x0 + x] = (s[j1, x] + s[j2, x]) * np.float32(0.5)
                    else:
                        out[row, x0 + x] = np.float32(np.nan)
                    nkept[row, x0 + x] = m
                nfinite[row, x0 + x] = n


@functools.lru_cache(maxsize=1)
def _numba_namespace() -> dict | None:
    """Compile (lazily, once; cached on disk) the numba versions of the kernels, or None.

    The plain-Python functions above are re-bound to a namespace in which their callees are the
    compiled versions, so one source serves both engines.
    """
    try:
        import numba
    except ImportError:
        return None
    # "__name__" makes numba treat the namespace as this module's (required by its disk cache).
    ns: dict = {"__name__": __name__, "np": np, "math": math}
    for func in (_kth_smallest, _wirth_median, _astropy_bounds, _median_f32, _exact_pixel,
                 _sort_columns):  # fmt: skip
        ns[func.__name__] = _jit(numba, types.FunctionType(func.__code__, ns, func.__name__))
    ns["_numba_rows"] = _jit(numba, types.FunctionType(_numba_rows.__code__, ns, "_numba_rows"))
    return ns


def _jit(numba: types.ModuleType, func: Callable) -> Callable:
    """``numba.njit(nogil=True)``, cached on disk when a cache location is writable."""
    try:
        return numba.njit(cache=True, nogil=True)(func)
    except RuntimeError:  # "cannot cache function …: no locator available"
        return numba.njit(nogil=True)(func)


def numba_available() -> bool:
    """Whether the numba engine can be used (numba importable)."""
    return _numba_namespace() is not None


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _as_frames(stack: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """The N 2-D frames of a (N, ny, nx) array or a sequence of 2-D arrays (views, no copy)."""
    if isinstance(stack, np.ndarray):
        if stack.ndim != 3:
            raise ValueError(f"stack must be 3-D (N, ny, nx), got shape {stack.shape}")
        frames = list(stack)
    else:
        frames = [np.asarray(f) for f in stack]
        if any(f.ndim != 2 for f in frames):
            raise ValueError("a sequence stack must contain 2-D arrays")
        if len({f.shape for f in frames}) > 1:
            raise ValueError(f"frames differ in shape: {sorted({f.shape for f in frames})}")
    if not frames:
        raise ValueError("empty stack")
    for f in frames:
        if f.dtype.kind not in "fiu":
            raise TypeError(f"frames must be real numbers, got dtype {f.dtype}")
    return frames


def _default_threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _run(
    stack: np.ndarray | Sequence[np.ndarray],
    spec: ClipSpec,
    block_rows: int | None,
    out: np.ndarray | None,
    engine: str,
    threads: int | None,
    nused: np.ndarray | None,
) -> tuple[np.ndarray, ClipStats]:
    if not isinstance(spec, ClipSpec):
        raise TypeError(f"spec must be a ClipSpec, got {type(spec).__name__}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    frames = _as_frames(stack)
    nfr = len(frames)
    ny, nx = frames[0].shape
    if out is None:
        out = np.empty((ny, nx), np.float32)
    elif out.shape != (ny, nx) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape {(ny, nx)}, got {out.dtype} {out.shape}")
    if nused is not None and (nused.shape != (ny, nx) or nused.dtype.kind not in "iu"):
        raise ValueError(f"nused must be an integer array of shape {(ny, nx)}")
    if block_rows is not None and (isinstance(block_rows, bool) or int(block_rows) < 1):
        raise ValueError(f"block_rows must be >= 1, got {block_rows!r}")
    nthreads = _default_threads() if threads is None else int(threads)
    if nthreads < 1:
        raise ValueError(f"threads must be >= 1, got {threads!r}")

    ns = None
    if engine in ("auto", "numba") and nfr <= _MAX_NETWORK:
        ns = _numba_namespace()
    if engine == "numba" and ns is None:
        raise RuntimeError("engine='numba' requested but numba is not usable (or N > 64)")

    totals = np.zeros(3, np.int64)  # finite, kept, empty
    lock = threading.Lock()
    local = threading.local()  # per-thread scratch buffers, freed with this call

    def finish(r0: int, kept: np.ndarray, nfin: np.ndarray) -> None:
        if nused is not None:
            nused[r0 : r0 + kept.shape[0]] = kept
        with lock:
            totals[0] += int(nfin.sum())
            totals[1] += int(kept.sum())
            totals[2] += int(np.count_nonzero(kept == 0))

    if ns is not None:
        rows = int(block_rows) if block_rows else _NUMBA_BLOCK_ROWS
        _numba_drive(ns, stack, frames, spec, rows, out, nthreads, finish)
    else:
        rows = int(block_rows) if block_rows else max(1, _NUMPY_BLOCK_PIXELS // max(nx, 1))

        def work(r0: int) -> None:
            r1 = min(ny, r0 + rows)
            if not hasattr(local, "scratch"):
                local.scratch = _Scratch()
            block = local.scratch.get("block", (nfr, r1 - r0, nx), np.float32)
            for k, f in enumerate(frames):
                block[k] = f[r0:r1]

            def fetch(p: int, r0: int = r0) -> np.ndarray:
                y, x = divmod(p, nx)
                return np.array([f[r0 + y, x] for f in frames], np.float32)

            med, kept, nfin = _numpy_block(block.reshape(nfr, -1), spec, fetch, local.scratch)
            out[r0:r1] = med.reshape(r1 - r0, nx)
            finish(r0, kept.reshape(r1 - r0, nx), nfin)

        _map(work, range(0, ny, rows), nthreads)

    n_finite, n_kept, n_empty = (int(t) for t in totals)
    stats = ClipStats(
        n_frames=nfr,
        n_pixels=ny * nx,
        n_nonfinite=nfr * ny * nx - n_finite,
        n_clipped=n_finite - n_kept,
        n_empty=n_empty,
    )
    return out, stats


def _numba_drive(
    ns: dict,
    stack: np.ndarray | Sequence[np.ndarray],
    frames: list[np.ndarray],
    spec: ClipSpec,
    rows: int,
    out: np.ndarray,
    nthreads: int,
    finish: Callable[[int, np.ndarray, np.ndarray], None],
) -> None:
    """Run the numba kernel (it releases the GIL) over row blocks, on ``nthreads`` threads.

    A float32 C-contiguous (N, ny, nx) array is read in place; anything else (a sequence of
    frames, another dtype or layout) is copied block by block into a float32 (N, rows, nx)
    buffer, so that a single compiled signature serves every N.
    """
    kernel = ns["_numba_rows"]
    nfr = len(frames)
    ny, nx = out.shape
    ci, cj = _network(nfr)
    direct = (
        isinstance(stack, np.ndarray) and stack.dtype == np.float32 and stack.flags.c_contiguous
    )

    local = threading.local()

    def work(r0: int) -> None:
        r1 = min(ny, r0 + rows)
        if not hasattr(local, "scratch"):
            local.scratch = _Scratch()
        scratch = local.scratch
        if direct:
            src, base = stack, r0
        else:
            src, base = scratch.get("block", (nfr, r1 - r0, nx), np.float32), 0
            for k, f in enumerate(frames):
                src[k] = f[r0:r1]
        oblk = out[r0:r1]
        target = oblk if oblk.flags.c_contiguous else scratch.get("out", oblk.shape, np.float32)
        kept = scratch.get("kept", (r1 - r0, nx), np.int32)
        nfin = scratch.get("nfin", (r1 - r0, nx), np.int32)
        kernel(
            src,
            base,
            r1 - r0,
            ci,
            cj,
            spec.sigma,
            spec.iterations,
            spec.use_mad,
            _TIE_RTOL,
            _NUMBA_CHUNK,
            target,
            kept,
            nfin,
        )
        if target is not oblk:
            oblk[...] = target
        finish(r0, kept, nfin)

    _map(work, range(0, ny, rows), nthreads)


def _map(work: Callable[[int], None], starts: range, nthreads: int) -> None:
    """Run ``work(r0)`` for every block start, on up to ``nthreads`` threads."""
    if nthreads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(min(nthreads, len(starts))) as pool:
            list(pool.map(work, starts))
    else:
        for r0 in starts:
            work(r0)


def clipped_median(
    stack: np.ndarray | Sequence[np.ndarray],
    spec: ClipSpec = DEFAULT_SPEC,
    block_rows: int | None = None,
    out: np.ndarray | None = None,
    *,
    engine: str = "auto",
    threads: int | None = None,
    nused: np.ndarray | None = None,
) -> np.ndarray:
    """Per-pixel σ-clipped median along axis 0 (definition in the module docstring).

    Parameters
    ----------
    stack
        (N, ny, nx) array, or a sequence of N (ny, nx) arrays (read in place, never concatenated).
        float32 gives results bitwise identical to astropy + ``np.nanmedian``; other real dtypes
        are converted to float32 block by block first.
    spec
        The clip definition.
    block_rows
        Rows per block (bounds the extra memory); default: ≈16k pixels (numpy engine), 32 rows
        (numba engine). Does not change the result.
    out
        Optional float32 (ny, nx) output array.
    engine
        ``"auto"`` (numba if available, else numpy), ``"numpy"`` or ``"numba"``.
    threads
        Threads to use (default min(2, cores)).
    nused
        Optional integer (ny, nx) array receiving the number of values kept per pixel.

    Returns
    -------
    numpy.ndarray
        (ny, nx) float32; NaN where no value is kept.
    """
    return _run(stack, spec, block_rows, out, engine, threads, nused)[0]


def clipped_median_stats(
    stack: np.ndarray | Sequence[np.ndarray],
    spec: ClipSpec = DEFAULT_SPEC,
    block_rows: int | None = None,
    out: np.ndarray | None = None,
    *,
    engine: str = "auto",
    threads: int | None = None,
    nused: np.ndarray | None = None,
) -> tuple[np.ndarray, ClipStats]:
    """As :func:`clipped_median`, also returning the :class:`ClipStats` counts (for headers)."""
    return _run(stack, spec, block_rows, out, engine, threads, nused)
