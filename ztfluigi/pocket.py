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
ztfin2p3. Pure numpy; for a (3080, 3102) frame :func:`apply` takes ≈ 0.2 s and :func:`correct`
≈ 0.55 s (one core).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.resources
import math
import warnings

import numpy as np
import yaml

__all__ = [
    "POCKET_START",
    "PocketParameters",
    "apply",
    "correct",
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
