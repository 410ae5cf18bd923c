"""The "pocket effect" of the ZTF CCDs: charge trapping in the serial register (ztfsensors model).

A charge "pocket" in the serial register exchanges electrons with every pixel that passes it
during read-out (reference_pipeline.md §2.4). Model of ztfsensors ("default model (v0.1)"),
per amplifier parameters ``alpha, cmax, beta, nmax``; for each row, pixels ``n_j`` (true charge,
DN) are processed in **read order** with a pocket charge ``q`` that starts at 0::

    x      = q / cmax
    from_j = clip(cmax x**alpha, 0, q)                                  # pocket -> pixel
    to_j   = clip(cmax (1-x)**alpha (max(n_j,0)/nmax)**beta, 0, max(n_j,0))  # pixel -> pocket
    delta  = from_j - to_j
    n'_j   = n_j + delta                                                # observed
    q      = max(q - delta, 0)

Two edge conventions differ from a literal transcription (ztfsensors itself returns NaN there):
``(1 - x)`` is floored at 0 (``q > cmax`` can only occur for pixels above ``nmax``), and the upper
clip of ``to`` is ``max(n_j, 0)``, so a non-positive pixel gives nothing to the pocket and passes
through unchanged apart from the flush (``np.clip(0, 0, n)`` would return ``n < 0`` and erase it).
The model conserves charge along a row: ``sum(n') + q_final = sum(n)``.

All functions take **read-oriented** arrays: data + overscan hstacked, read order = increasing
column index, shape ``(nrows, ncols + 30)``; orientation changes live in the camera module. Data
are expected overscan-subtracted and NL-corrected (the overscan columns too), in DN.

The effect is active (simulated / corrected) only for UT dates ≥ :data:`POCKET_START`, as in
ztfin2p3. :func:`apply` and :func:`correct` are numpy (the reference of this module); for a
(3080, 3102) frame they take ≈ 0.2 s and ≈ 0.5 s on one core. :func:`correct_compiled` is the
same inversion compiled with numba (``bench/bench_pocket.py``, CCD 6: 0.17 vs 0.61 CPU-s on a
loaded machine, ×3.5), equal to
:func:`correct` to ≤ 1 float32 ulp (identical in practice; below 1e-3 DN the two differ by
< 1e-12 DN absolute). :func:`ztfluigi.corrections.correct_quadrant` runs the compiled kernel
inside its fused overscan + non-linearity pass.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.resources
import math
import warnings
from collections.abc import Callable

import numba
import numpy as np
import yaml
from numba.core import types as nbtypes
from numba.extending import intrinsic

__all__ = [
    "POCKET_START",
    "PocketParameters",
    "apply",
    "correct",
    "correct_compiled",
    "is_active",
    "load_parameters",
    "parameters",
]

#: First UT date on which the pocket effect is simulated / corrected (ztfin2p3 ``day >= 20191022``;
#: note the NL table switch is one day later, 2019-10-23).
POCKET_START = datetime.date(2019, 10, 22)

_PARAMETER_FILE = "pocket_corrections.yaml"


@dataclasses.dataclass(frozen=True)
class PocketParameters:
    """Pocket model parameters of one amplifier.

    Attributes
    ----------
    alpha : float
        Exponent of the pocket dynamics (flush ∝ x**alpha, fill ∝ (1 - x)**alpha).
    cmax : float
        Pocket capacity (DN).
    beta : float
        Exponent of the pixel-charge dependence of the fill.
    nmax : float
        Pixel charge scale of the fill (DN; not quite the full well).
    """

    alpha: float
    cmax: float
    beta: float
    nmax: float

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"pocket parameter {field.name} must be a number: {value!r}"
                ) from None
            if not (math.isfinite(number) and number > 0):
                raise ValueError(f"pocket parameter {field.name} must be finite and > 0: {value!r}")
            object.__setattr__(self, field.name, number)
        if self.beta >= 1:
            raise ValueError(f"pocket parameter beta must be < 1 (invertibility): {self.beta!r}")


def is_active(date: datetime.date) -> bool:
    """Whether the pocket effect is simulated / corrected on this UT date (≥ POCKET_START)."""
    if isinstance(date, datetime.datetime):
        if date.tzinfo is not None:
            date = date.astimezone(datetime.UTC)
        date = date.date()
    return date >= POCKET_START


def load_parameters() -> dict[tuple[int, int], PocketParameters]:
    """All 64 amplifiers' parameters, ``(ccdid, qid) → PocketParameters``.

    Read once from ``ztfluigi/data/pocket_corrections.yaml`` (cached); each call returns a
    fresh dict. Raises ValueError if the file is malformed or incomplete.
    """
    return dict(_cached_parameters())


def parameters(ccdid: int, qid: int) -> PocketParameters:
    """Pocket parameters of amplifier ``(ccdid, qid)``."""
    try:
        return _cached_parameters()[(int(ccdid), int(qid))]
    except KeyError:
        raise ValueError(
            f"no pocket parameters for ccdid={ccdid!r}, qid={qid!r} "
            "(expected ccdid 1..16, qid 1..4)"
        ) from None


def apply(
    read_frame: np.ndarray, pars: PocketParameters, *, return_pocket: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Forward model: true read-oriented frame → what the amplifier delivers (DN).

    Rows are independent (pocket empty at the start of every row); the loop runs over columns in
    read order with vector operations over all rows. float64 internally.

    Parameters
    ----------
    read_frame : ndarray, shape (nrows, ncols) or (ncols,)
        True charge, read orientation (data + overscan), DN. Must be finite.
    pars : PocketParameters
        Parameters of the amplifier.
    return_pocket : bool
        Also return the pocket charge left after the last pixel of each row.

    Returns
    -------
    ndarray
        Observed frame, same shape; input dtype if floating, float32 otherwise.
    ndarray, optional
        Final pocket charge per row (float64, DN), if ``return_pocket``.
    """
    frame, shape, out_dtype = _prepare(read_frame)
    alpha, cmax = pars.alpha, pars.cmax
    n_cols_t = np.ascontiguousarray(frame.T, dtype=np.float64)  # (ncols, nrows): contiguous columns
    # The pixel factor of the fill, cmax (n+/nmax)**beta, depends only on the input: compute it
    # for the whole frame at once, in the output buffer (column j is overwritten after use).
    out = np.maximum(n_cols_t, 0.0)
    out *= 1.0 / pars.nmax
    np.power(out, pars.beta, out=out)
    out *= cmax
    nrows = n_cols_t.shape[1]
    q = np.zeros(nrows)
    n_pos = np.empty(nrows)
    x = np.empty(nrows)
    flush = np.empty(nrows)
    fill = np.empty(nrows)
    delta = np.empty(nrows)
    for j in range(n_cols_t.shape[0]):
        np.multiply(q, 1.0 / cmax, out=x)
        np.power(x, alpha, out=flush)
        flush *= cmax
        np.minimum(flush, q, out=flush)
        np.subtract(1.0, x, out=fill)
        np.maximum(fill, 0.0, out=fill)
        np.power(fill, alpha, out=fill)
        fill *= out[j]
        np.maximum(n_cols_t[j], 0.0, out=n_pos)
        np.minimum(fill, n_pos, out=fill)
        np.subtract(flush, fill, out=delta)
        np.add(n_cols_t[j], delta, out=out[j])
        q -= delta
        np.maximum(q, 0.0, out=q)
    result = out.T.astype(out_dtype).reshape(shape)
    if return_pocket:
        return result, q.reshape(shape[:-1])
    return result


def correct(
    observed_read_frame: np.ndarray,
    pars: PocketParameters,
    n_iter: int = 20,
    tol: float = 1e-4,
    zero_tol: float = 0.01,
) -> np.ndarray:
    """Invert :func:`apply`: observed read-oriented frame → true frame (DN).

    Solves the fixed-point equation ``state = observed - delta(state)`` (i.e. ``apply(state) ==
    observed``; the reference's CHOLMOD update reduces to this fixed point). Because ``delta_j``
    depends only on pixels ``≤ j`` of the same row, the fixed point is found exactly in **one
    sweep** in read order (Gauss-Seidel), vectorised over rows: with the pocket charge ``q``
    known from the already-corrected pixels, pixel ``j`` solves
    ``n - to(q, n) = t``, ``t = observed_j - from(q)``:

    * ``t > zero_tol``: the unique root ``n > n*`` of ``n - c n**beta = t`` (``c = cmax
      (1 - x)**alpha / nmax**beta``, ``n* = c**(1/(1-beta))``), by Newton's method from an upper
      bound (monotone, quadratic convergence; stops when the largest step of the column is
      < ``tol`` DN or after ``n_iter`` steps, with a RuntimeWarning);
    * ``t ≤ 0``: ``n = t`` — negative pixels (noise) give nothing to the pocket and are only
      corrected for the flush;
    * ``0 < t ≤ zero_tol``: ``n = 0`` (residuals below ``zero_tol`` DN are rounding of the input).

    Identifiability: a pixel with ``0 < n < n*(q)`` is swallowed whole by the pocket (its
    observed value is ``from(q)`` whatever ``n``), so it cannot be recovered; the zero-charge
    solution ``n = 0`` is returned (exact for the overscan and empty pixels) and the charge
    reappears in the following pixels. ``n*`` is largest with an empty pocket: ≤ 3 DN for mild
    amplifiers, ≈ 50–70 DN on CCD 6 (the start of each row, and pixels after long runs of dark
    pixels). Because of this threshold the inverse jumps from ``n ≈ 0`` to ``n ≈ n*`` when a
    noisy ``t`` crosses 0: on noisy low-signal data (e.g. bias frames) the correction amplifies
    noise; this is a property of the model, not of the solver. A literal Jacobi iteration
    ``state += observed - apply(state)`` from ``state = observed`` has the same fixed points but
    needs ~12 full-frame passes and stalls in swallowed pixels (leaves tens of DN in the overscan
    of CCD 6).

    Parameters
    ----------
    observed_read_frame : ndarray, shape (nrows, ncols) or (ncols,)
        Observed frame, read orientation (data + overscan), DN. Must be finite.
    pars : PocketParameters
        Parameters of the amplifier.
    n_iter : int
        Maximum number of Newton steps per column.
    tol : float
        Newton convergence threshold on the largest step of a column (DN).
    zero_tol : float
        Residual charge (DN) below which a pixel is taken as empty. The default only absorbs
        rounding of the input; raising it to ~3x the read noise regularises noisy low-signal
        data (it then acts as a detection threshold for charge in swallowed pixels).

    Returns
    -------
    ndarray
        Corrected frame, same shape; input dtype if floating, float32 otherwise. float64
        results satisfy ``apply(result) == observed`` to ≲ ``tol`` (≈1e-10 DN in practice).
    """
    if n_iter < 1 or not tol > 0 or not zero_tol >= 0:
        raise ValueError(f"need n_iter >= 1, tol > 0, zero_tol >= 0: {n_iter}, {tol}, {zero_tol}")
    frame, shape, out_dtype = _prepare(observed_read_frame)
    alpha, cmax, beta = pars.alpha, pars.cmax, pars.beta
    k = cmax / pars.nmax**beta
    inv_1mb = 1.0 / (1.0 - beta)
    obs_t = np.ascontiguousarray(frame.T, dtype=np.float64)  # (ncols, nrows)
    result = np.empty_like(obs_t)
    q = np.zeros(obs_t.shape[1])
    unconverged = 0
    for j in range(obs_t.shape[0]):
        x = q / cmax
        flush = np.minimum(cmax * x**alpha, q)
        c = k * np.maximum(1.0 - x, 0.0) ** alpha
        t = obs_t[j] - flush
        charged = t > zero_tol
        # Newton on f(n) = n - c n**beta - t (convex, increasing for n > n*), from the upper
        # bound u = t + c (n* + t/(1-beta))**beta (since f' >= 1 - beta beyond n*).
        tp = np.maximum(t, zero_tol)
        n = tp + c * (c**inv_1mb + tp * inv_1mb) ** beta
        for _ in range(n_iter):
            cnb = c * n**beta
            step = (n - cnb - tp) / (1.0 - beta * cnb / n)
            n -= step
            if np.max(np.abs(step), initial=0.0) < tol:
                break
        else:
            unconverged += 1
        n = np.where(charged, n, np.minimum(t, 0.0))
        result[j] = n
        n_pos = np.maximum(n, 0.0)
        fill = np.minimum(c * n_pos**beta, n_pos)
        q = np.maximum(q - flush + fill, 0.0)
    if unconverged:
        warnings.warn(
            f"pocket.correct: Newton did not reach tol={tol} DN in {n_iter} steps "
            f"in {unconverged} column(s)",
            RuntimeWarning,
            stacklevel=2,
        )
    return result.T.astype(out_dtype).reshape(shape)


def correct_compiled(
    observed_read_frame: np.ndarray, pars: PocketParameters, zero_tol: float = 0.01
) -> np.ndarray:
    """:func:`correct` compiled (numba): same inversion, same ``zero_tol`` semantics.

    ``LANES`` rows are corrected together (one SIMD lane each), column by column in read order;
    power functions are a vectorisable exp/log of ≈ 1 float64 ulp, the Newton start is the
    previous pixel's fill (bounded below by ``n*``, where the Newton map is safe) and each column
    of a block iterates until the predicted error ``f''/(2f') step²`` is below 1e-13 of the
    pixel (float64 rounding level). float32 results equal :func:`correct`'s to ≤ 1 ulp. A
    RuntimeWarning is issued if some column does not converge in 60 steps (never seen).

    Parameters and return as :func:`correct` (read-oriented 1-D or 2-D frame, DN; float
    input dtype kept, float32 otherwise).
    """
    if not zero_tol >= 0:
        raise ValueError(f"need zero_tol >= 0: {zero_tol}")
    frame, shape, out_dtype = _prepare(observed_read_frame)
    out = np.empty(frame.shape, dtype=out_dtype)
    unconverged = _correct_frame(
        frame, out, pars.alpha, pars.cmax, pars.beta, pars.nmax, float(zero_tol)
    )
    if unconverged:
        warnings.warn(
            f"pocket.correct_compiled: Newton did not converge in {unconverged} block column(s)",
            RuntimeWarning,
            stacklevel=2,
        )
    return out.reshape(shape)


# --------------------------------------------------------------------------- compiled kernel
#
# Rows are independent: LANES rows are corrected together, column by column in read order, so
# that every step is a loop over the lanes without branches or calls, which LLVM vectorises.
# math.pow/exp/log are library calls (not vectorised); _exp and _log below are, and are accurate
# to ~1 float64 ulp (max relative error 5e-16 and 2.2e-16 over the pocket's range).

LANES = 16  #: rows corrected together by the compiled kernel
WORK_ROWS = 14  #: rows of the scratch array of _correct_block
_MAX_STEPS = 60  #: Halley steps per column before giving up (a warning)
_SERIES_MAX = 1e-2  #: largest relative step after which n**beta is updated by its series
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.4426950408889634
_SQRT2 = 1.4142135623730951
_ROUND = 6755399441055744.0  #: 1.5 * 2**52: (y + _ROUND) - _ROUND rounds y to an integer


@intrinsic
def _as_int64(typingctx, x):  # noqa: ANN001, ANN202 (numba intrinsic)
    """Bits of a float64 as an int64 (no conversion)."""
    sig = nbtypes.int64(nbtypes.float64)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        return builder.bitcast(args[0], context.get_value_type(nbtypes.int64))

    return sig, codegen


@intrinsic
def _as_float64(typingctx, x):  # noqa: ANN001, ANN202 (numba intrinsic)
    """An int64's bits as a float64 (no conversion)."""
    sig = nbtypes.float64(nbtypes.int64)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        return builder.bitcast(args[0], context.get_value_type(nbtypes.float64))

    return sig, codegen


def _jit(**options: object) -> Callable[[Callable], Callable]:
    """``numba.njit`` with numpy's error model (no zero-division branches: vectorisable)."""

    def wrap(func: Callable) -> Callable:
        try:
            return numba.njit(cache=True, error_model="numpy", **options)(func)
        except RuntimeError:  # "cannot cache function …: no locator available"
            return numba.njit(error_model="numpy", **options)(func)

    return wrap


@_jit(inline="always")
def _exp(y: float) -> float:
    """exp(y) for y clamped to [-700, 700]: Cody-Waite reduction, degree-12 Taylor."""
    y = min(max(y, -700.0), 700.0)
    kf = (y * _INV_LN2 + _ROUND) - _ROUND
    r = (y - kf * _LN2_HI) - kf * _LN2_LO
    p = 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _as_float64((np.int64(kf) + 1023) << 52)


@_jit(inline="always")
def _log(x: float) -> float:
    """log(x) for x floored at 1e-300: exponent bits + atanh series on [1/√2, √2)."""
    x = max(x, 1e-300)
    bits = _as_int64(x)
    m = _as_float64((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    e = np.float64((bits >> 52) - 1023 + (1 if big else 0))
    f = m - 1.0
    s = f / (2.0 + f)
    s2 = s * s
    p = 1.0 / 19.0
    p = p * s2 + 1.0 / 17.0
    p = p * s2 + 1.0 / 15.0
    p = p * s2 + 1.0 / 13.0
    p = p * s2 + 1.0 / 11.0
    p = p * s2 + 1.0 / 9.0
    p = p * s2 + 1.0 / 7.0
    p = p * s2 + 1.0 / 5.0
    p = p * s2 + 1.0 / 3.0
    return e * _LN2_HI + (e * _LN2_LO + (2.0 * s + 2.0 * s * s2 * p))


@_jit(nogil=True)
def _correct_block(buf, nlanes, alpha, cmax, beta, nmax, zero_tol, work):  # noqa: ANN001, ANN202
    """Invert the pocket model in place on ``buf`` (ncols, LANES): read-order columns × rows.

    ``work`` is a (WORK_ROWS, LANES) float64 scratch array. Returns the number of columns whose
    iteration did not converge. Semantics of :func:`correct` (one Gauss-Seidel sweep); per
    column: flush and fill coefficient from the pocket charge (``(q/cmax)**alpha`` and
    ``(1 - q/cmax)**alpha`` by exp/log, or updated by their binomial series when the pocket
    changed by < 1 % in every lane), then Halley steps on ``n - c n**beta = t`` for all lanes
    until every charged pixel's step is < 1e-5 of it (the error left is then ~ that cubed);
    after a step < 1 % everywhere, ``n**beta`` is updated by its series instead of exp/log.
    """
    if work.shape[0] < WORK_ROWS or work.shape[1] < nlanes or buf.shape[1] < nlanes:
        raise ValueError("_correct_block: scratch or buffer too small")
    ncols = buf.shape[0]
    inv_cmax = 1.0 / cmax
    curv = beta * (1.0 - beta)
    # (1 - r)**beta = sum_k a_k r**k, |r| <= _SERIES_MAX: the update of n**beta after a step
    a1 = -beta
    a2 = a1 * (beta - 1.0) / -2.0
    a3 = a2 * (beta - 2.0) / -3.0
    a4 = a3 * (beta - 3.0) / -4.0
    a5 = a4 * (beta - 4.0) / -5.0
    a6 = a5 * (beta - 5.0) / -6.0
    a7 = a6 * (beta - 6.0) / -7.0
    a8 = a7 * (beta - 7.0) / -8.0
    q, w, c, t, n, flush, crit, nb, rel = (work[0], work[1], work[2], work[3], work[4], work[5],
                                           work[6], work[7], work[8])
    xa, oa, dq, dc, ns = work[9], work[10], work[11], work[12], work[13]  # (q/cmax)**alpha,
    # (1-q/cmax)**alpha, relative changes of q and cmax - q, n*
    k = cmax / nmax**beta
    # (1 + r)**alpha = sum_k b_k r**k, |r| <= _SERIES_MAX: the update of xa and oa
    b1 = alpha
    b2 = b1 * (alpha - 1.0) / 2.0
    b3 = b2 * (alpha - 2.0) / 3.0
    b4 = b3 * (alpha - 3.0) / 4.0
    b5 = b4 * (alpha - 4.0) / 5.0
    b6 = b5 * (alpha - 5.0) / 6.0
    b7 = b6 * (alpha - 6.0) / 7.0
    b8 = b7 * (alpha - 7.0) / 8.0
    # n* = c**(1/(1-beta)) = k**(1/(1-beta)) (1 - q/cmax)**gamma: the same update, exponent gamma
    gamma = alpha / (1.0 - beta)
    log_nstar0 = (math.log(cmax) - beta * math.log(nmax)) / (1.0 - beta)
    g1 = gamma
    g2 = g1 * (gamma - 1.0) / 2.0
    g3 = g2 * (gamma - 2.0) / 3.0
    g4 = g3 * (gamma - 3.0) / 4.0
    g5 = g4 * (gamma - 4.0) / 5.0
    g6 = g5 * (gamma - 5.0) / 6.0
    g7 = g6 * (gamma - 6.0) / 7.0
    g8 = g7 * (gamma - 7.0) / 8.0
    unconverged = 0
    for lane in range(nlanes):
        q[lane] = 0.0
        w[lane] = 0.0
    series = False  # this column's flush and fill coefficient by series from the last's
    for j in range(ncols):
        if series:
            for lane in range(nlanes):
                rq = dq[lane]
                xa[lane] *= 1.0 + rq * (b1 + rq * (b2 + rq * (b3 + rq * (b4 + rq * (
                    b5 + rq * (b6 + rq * (b7 + rq * b8)))))))
                rc = dc[lane]
                oa[lane] *= 1.0 + rc * (b1 + rc * (b2 + rc * (b3 + rc * (b4 + rc * (
                    b5 + rc * (b6 + rc * (b7 + rc * b8)))))))
                ns[lane] *= 1.0 + rc * (g1 + rc * (g2 + rc * (g3 + rc * (g4 + rc * (
                    g5 + rc * (g6 + rc * (g7 + rc * g8)))))))
        else:
            for lane in range(nlanes):
                x = q[lane] * inv_cmax
                xa[lane] = _exp(alpha * _log(x))
                log_omx = _log(max(1.0 - x, 0.0))
                oa[lane] = _exp(alpha * log_omx)
                ns[lane] = _exp(log_nstar0 + gamma * log_omx)
        for lane in range(nlanes):
            ql = q[lane]
            fl = min(cmax * xa[lane], ql) if ql > 0.0 else 0.0
            cl = k * oa[lane] if ql < cmax else 0.0
            tl = buf[j, lane] - fl
            # Halley start: last pixel's fill, not below n* = c**(1/(1-beta)) (safe there)
            nstar = ns[lane] if ql < cmax else 0.0
            n[lane] = max(max(tl, zero_tol) + w[lane], nstar)
            flush[lane] = fl
            c[lane] = cl
            t[lane] = tl
        exact = True
        converged = False
        for _ in range(_MAX_STEPS):
            if exact:
                for lane in range(nlanes):
                    nb[lane] = _exp(beta * _log(n[lane]))
            else:
                for lane in range(nlanes):
                    r = rel[lane]
                    nb[lane] = nb[lane] * (1.0 + r * (a1 + r * (a2 + r * (a3 + r * (a4 + r * (
                        a5 + r * (a6 + r * (a7 + r * a8))))))))
            for lane in range(nlanes):
                nv = n[lane]
                inv_n = 1.0 / nv
                cnb = c[lane] * nb[lane]
                f = nv - cnb - max(t[lane], zero_tol)
                fp = 1.0 - beta * cnb * inv_n
                fpp = curv * cnb * inv_n * inv_n
                # Halley, 2 f f' / (2 f'^2 - f f''); Newton-like (2 f / f') where that is small
                step = 2.0 * f * fp / max(2.0 * fp * fp - f * fpp, fp * fp)
                n[lane] = nv - step
                rel[lane] = step * inv_n
                crit[lane] = abs(step) * min(inv_n, 1.0) if t[lane] > zero_tol else 0.0
            worst = 0.0
            largest = 0.0
            for lane in range(nlanes):
                worst = max(worst, crit[lane])
                largest = max(largest, abs(rel[lane]))
            if worst < 1e-5:
                converged = True
                break
            exact = largest > _SERIES_MAX
        if not converged:
            unconverged += 1
        largest = 0.0
        for lane in range(nlanes):
            tl = t[lane]
            charged = tl > zero_tol
            nv = n[lane] if charged else min(tl, 0.0)
            fill = nv - tl if charged else 0.0
            buf[j, lane] = nv
            w[lane] = fill
            ql = q[lane]
            qn = max(ql - flush[lane] + fill, 0.0)
            q[lane] = qn
            # relative changes of q and of cmax - q (1 forces exp/log: empty or full pocket)
            dq[lane] = (qn - ql) / ql if ql > 0.0 and qn > 0.0 else 1.0
            dc[lane] = (ql - qn) / (cmax - ql) if qn < cmax and ql < cmax else 1.0
        for lane in range(nlanes):
            largest = max(largest, max(abs(dq[lane]), abs(dc[lane])))
        series = largest <= _SERIES_MAX
    return unconverged


@_jit(nogil=True)
def _correct_frame(obs, out, alpha, cmax, beta, nmax, zero_tol):  # noqa: ANN001, ANN202
    """:func:`_correct_block` over row blocks of a 2-D read-oriented frame; ``out`` same shape."""
    nrows, ncols = obs.shape
    buf = np.empty((ncols, LANES))
    work = np.empty((WORK_ROWS, LANES))
    unconverged = 0
    for i0 in range(0, nrows, LANES):
        nlanes = min(LANES, nrows - i0)
        for j in range(ncols):
            for lane in range(nlanes):
                buf[j, lane] = obs[i0 + lane, j]
        unconverged += _correct_block(buf, nlanes, alpha, cmax, beta, nmax, zero_tol, work)
        for lane in range(nlanes):
            for j in range(ncols):
                out[i0 + lane, j] = buf[j, lane]
    return unconverged


@_jit(nogil=True)
def fused_overscan_nl_pocket(  # noqa: ANN202
    data, overscan, model, a, b, nl_first, flip_cols, alpha, cmax, beta, nmax, out  # noqa: ANN001
):
    """Overscan + NL + pocket of a raw quadrant in one pass (``corrections.correct_quadrant``).

    ``data``/``overscan`` raw orientation, ``model`` the overscan row model (raw rows), ``a, b``
    the NL coefficients (``x / (a x² + b x + 1)``, as ``nonlinearity.correct``), ``nl_first``
    the reference's order, ``flip_cols`` whether read order reverses raw columns (q2, q3).
    Blocks of LANES rows are laid out in read order as float64, pocket-corrected by
    :func:`_correct_block` and written back to ``out`` (float32, raw orientation). Returns
    (values outside the NL domain, non-finite pocket inputs, unconverged columns).
    """
    nrows, ncols = data.shape
    nover = overscan.shape[1]
    lanes = LANES
    buf = np.empty((ncols + nover, lanes))
    work = np.empty((WORK_ROWS, lanes))
    bad = 0
    nonfinite = 0
    unconverged = 0
    for i0 in range(0, nrows, lanes):
        nl = min(lanes, nrows - i0)
        for lane in range(nl):
            i = i0 + lane
            m = model[i]
            for c in range(ncols + nover):
                if c < ncols:
                    x = np.float64(data[i, ncols - 1 - c if flip_cols else c])
                    apply_nl = True
                else:
                    k = c - ncols
                    x = np.float64(overscan[i, nover - 1 - k if flip_cols else k])
                    apply_nl = not nl_first  # nl-first: the overscan is not NL-corrected
                if not nl_first:
                    x = x - m
                if apply_nl:
                    den = (a * x + b) * x + 1.0
                    bad += 1 if den <= 0.0 else 0
                    x = x / den
                if nl_first:
                    x = x - m
                nonfinite += 0 if np.isfinite(x) else 1
                buf[c, lane] = x
        if nonfinite:
            return bad, nonfinite, unconverged
        unconverged += _correct_block(buf, nl, alpha, cmax, beta, nmax, 0.01, work)
        for lane in range(nl):
            i = i0 + lane
            for c in range(ncols):
                out[i, ncols - 1 - c if flip_cols else c] = np.float32(buf[c, lane])
    return bad, nonfinite, unconverged


def _prepare(arr: np.ndarray) -> tuple[np.ndarray, tuple[int, ...], np.dtype]:
    """2-D view of a frame or a single row, its original shape and the output dtype."""
    a = np.asarray(arr)
    if a.ndim not in (1, 2) or a.shape[-1] == 0:
        raise ValueError(f"expected a read-oriented row or frame (1-D or 2-D), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(
            "pocket model input contains non-finite values (they would propagate "
            "along the rest of the row)"
        )
    out_dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.dtype(np.float32)
    return np.atleast_2d(a), a.shape, out_dtype


@functools.cache
def _cached_parameters() -> dict[tuple[int, int], PocketParameters]:
    resource = importlib.resources.files("ztfluigi") / "data" / _PARAMETER_FILE
    return _parse_parameters(yaml.safe_load(resource.read_text(encoding="utf-8")), _PARAMETER_FILE)


def _parse_parameters(
    doc: object, source: str = "<yaml>"
) -> dict[tuple[int, int], PocketParameters]:
    """Validate the ``{title, data: [{ccdid, qid, pars: {...}}]}`` document."""
    entries = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{source}: expected a mapping with a 'data' list")
    table: dict[tuple[int, int], PocketParameters] = {}
    for i, entry in enumerate(entries):
        try:
            key = (int(entry["ccdid"]), int(entry["qid"]))
            p = entry["pars"]
            pars = PocketParameters(
                alpha=float(p["alpha"]),
                cmax=float(p["cmax"]),
                beta=float(p["beta"]),
                nmax=float(p["nmax"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: bad entry #{i}: {exc}") from None
        if key in table:
            raise ValueError(f"{source}: duplicate entry for (ccdid, qid) = {key}")
        table[key] = pars
    expected = {(c, q) for c in range(1, 17) for q in range(1, 5)}
    if set(table) != expected:
        missing = sorted(expected - set(table))
        extra = sorted(set(table) - expected)
        raise ValueError(
            f"{source}: expected the 64 amplifiers; missing {missing}, unexpected {extra}"
        )
    return table
