"""Raw-image corrections, one function per step: overscan, non-linearity, pocket effect.

The reference pipeline (``reference_pipeline.md`` §2) and where we deliberately differ:

* overscan model: the per-row median of read-order overscan columns 25–29, rows beyond
  median ± 3 × raw MAD rejected, Legendre P0–P2 ("degree 3") fitted by **exact linear least
  squares** (ztfimg uses Nelder–Mead; same model to < 1e-3 DN), **rows aligned with the data**
  (ztfimg ≥ 0.20.1 subtracts the row-reversed model, trap 2);
* order **overscan → non-linearity** (ztfimg HEAD; ≤ 0.19 did NL first): the NL coefficients
  apply to pedestal-free DN. ``order="nl-first"`` reproduces ztfimg ≤ 0.19 for comparisons;
* non-linearity table chosen by the UT date of the file (switches 2019-10-23 and 2020-04-28);
* pocket-effect correction (ztfsensors model, :mod:`ztfluigi.pocket`) on the read-oriented
  [data | overscan] frame after overscan and NL, **on by default where the effect exists**
  (``pocket="auto"``: UT dates ≥ 2019-10-22); production ztfin2p3 runs with it off.

:func:`correct_quadrant` runs the three steps in **one compiled pass** (numba,
``engine="numba"``, the default): float32 results bitwise equal to the step-by-step numpy
implementation (``engine="numpy"``, kept as the reference) for overscan + NL, and within 1
float32 ulp with the pocket correction (:func:`ztfluigi.pocket.correct_compiled`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import warnings
from dataclasses import dataclass

import numpy as np

from ztfluigi import camera, nonlinearity, pocket
from ztfluigi.jit import compiled

ORDERS = ("overscan-first", "nl-first")
POCKET_SETTINGS = ("auto", "on", "off")  #: auto = on for UT dates >= pocket.POCKET_START
ENGINES = ("numba", "numpy")


@dataclass(frozen=True)
class CorrectionSpec:
    """Which corrections a raw frame receives, recorded in product headers."""

    overscan_columns: tuple[int, int] = (25, 30)  #: read-order overscan columns [start, stop)
    overscan_terms: int = 3  #: Legendre terms P0…P(n−1) of the row model
    overscan_clip: float = 3.0  #: rows beyond median ± clip × raw MAD are not fitted
    order: str = "overscan-first"
    nl_table: str | None = None  #: None = the table valid on the file's date
    #: pocket-effect correction: "auto" (on for UT dates ≥ 2019-10-22, where the effect exists),
    #: "on" (every date), "off". Booleans are accepted for compatibility: True → "auto" (what
    #: ``pocket=True`` did before: correct on the dates it exists), False → "off".
    pocket: str = "auto"

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if isinstance(self.pocket, (bool, np.bool_)):
            object.__setattr__(self, "pocket", "auto" if self.pocket else "off")
        if self.pocket not in POCKET_SETTINGS:
            raise ValueError(f"pocket must be one of {POCKET_SETTINGS}, got {self.pocket!r}")

    def pocket_applies(self, date: dt.date) -> bool:
        """Whether the pocket correction runs on a frame of this UT date (decided only here)."""
        if self.pocket == "auto":
            return pocket.is_active(date)
        return self.pocket == "on"

    def for_imgtype(self, imgtype: str) -> CorrectionSpec:
        """The spec a frame of this IMGTYPE gets: bias frames never get the pocket correction.

        On zero-signal frames the inversion is ill-conditioned (every positive noise pixel
        jumps to ``n*`` ≈ 50–70 DN on CCD 6): single bias frames get ×10 the noise and a
        master bias of 9 frames a −1 DN offset (``tests/test_pocket_truth.py``); ztfin2p3
        does not correct biases either. Flats and science frames keep the setting.
        """
        return dataclasses.replace(self, pocket="off") if imgtype == "bias" else self

    def resolved(self, date: dt.date) -> CorrectionSpec:
        """This spec with ``pocket`` resolved for a UT date ("on"/"off"): what runs, for headers."""
        return dataclasses.replace(self, pocket="on" if self.pocket_applies(date) else "off")

    def header_cards(self) -> list[tuple[str, object, str]]:
        """FITS cards describing the corrections (provenance of every product built from raws)."""
        c0, c1 = self.overscan_columns
        return [
            ("OSCOLS", f"{c0}:{c1}", "overscan read-order columns used [start:stop)"),
            ("OSMODEL", f"legendre{self.overscan_terms - 1}", "overscan row model, exact LSQ"),
            ("OSCLIP", self.overscan_clip, "overscan rows clipped at median +- N raw MAD"),
            ("CORRORD", self.order, "order of overscan and non-linearity corrections"),
            ("NLTABLE", self.nl_table or "by-date", "non-linearity table"),
            ("POCKET", self.pocket, "pocket correction (on, off; auto: by date)"),
        ]


def overscan_profile(overscan: np.ndarray, qid: int, columns: tuple[int, int]) -> np.ndarray:
    """Per-row median (DN) of the read-order overscan ``columns``, rows in raw storage order."""
    read = camera.raw_to_read(overscan, qid)[:, columns[0] : columns[1]]
    profile = np.nanmedian(read, axis=1)
    return profile[::-1] if qid in (3, 4) else profile  # back to raw row order


def overscan_model(profile: np.ndarray, n_terms: int = 3, clip: float = 3.0) -> np.ndarray:
    """Smooth row model of an overscan profile: clipped, Legendre-fitted by linear least squares."""
    med = np.median(profile)
    mad = np.median(np.abs(profile - med))
    good = np.isfinite(profile) & (np.abs(profile - med) <= clip * mad)
    x = np.linspace(-1.0, 1.0, profile.size)
    basis = np.polynomial.legendre.legvander(x, n_terms - 1)
    coeffs, *_ = np.linalg.lstsq(basis[good], profile[good].astype(np.float64), rcond=None)
    return basis @ coeffs


def subtract_overscan(
    data: np.ndarray, overscan: np.ndarray, qid: int, spec: CorrectionSpec = CorrectionSpec()
) -> tuple[np.ndarray, np.ndarray]:
    """Data and overscan (raw orientation) minus the overscan row model (float64)."""
    model = overscan_model(
        overscan_profile(overscan, qid, spec.overscan_columns), spec.overscan_terms,
        spec.overscan_clip,
    )[:, None]  # fmt: skip
    return data - model, overscan - model


_NOTHING = np.zeros((1, 1), np.float32)  #: ``minus`` of a kernel told there is none


def correct_quadrant(
    data: np.ndarray,
    overscan: np.ndarray,
    ccdid: int,
    qid: int,
    date: dt.date,
    spec: CorrectionSpec = CorrectionSpec(),
    *,
    engine: str = "numba",
) -> np.ndarray:
    """Overscan, non-linearity (and pocket, see :meth:`CorrectionSpec.pocket_applies`)
    corrected quadrant, raw orientation, float32.

    Arithmetic stays in float64 and is rounded to float32 once, at the end. ``engine="numba"``
    does it in one compiled pass (bitwise equal to ``"numpy"`` without pocket, ≤ 1 float32 ulp
    with it); ``"numpy"`` is the step-by-step reference.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "numpy":
        return _correct_quadrant_numpy(data, overscan, ccdid, qid, date, spec)
    a, b, model = _nl_and_overscan(overscan, ccdid, qid, date, spec)
    data = np.asarray(data)
    out = np.empty(data.shape, dtype=np.float32)
    nl_first = spec.order == "nl-first"
    if spec.pocket_applies(date):
        bad = _pocket_pass(data, overscan, model, a, b, nl_first, ccdid, qid, out)
    else:
        bad = _fused(data, model, a, b, nl_first, _NOTHING, False, out)
    _check_nl_domain(bad, a, b)
    return out


def correct_and_detrend_quadrant(
    data: np.ndarray,
    overscan: np.ndarray,
    ccdid: int,
    qid: int,
    date: dt.date,
    bias: np.ndarray,
    flat: np.ndarray,
    factor: float,
    spec: CorrectionSpec = CorrectionSpec(),
) -> tuple[np.ndarray, int, int]:
    """Science pixels of one quadrant (raw orientation, float32): :func:`correct_quadrant` then
    ``(R − B) / F × factor`` (:func:`detrend_quadrant`) with ``bias``/``flat`` the sky-oriented
    **CCD** masters, and the numbers of bad-flat and of non-finite output pixels.

    Without the pocket correction the two steps run as one compiled pass over the quadrant,
    reading the masters' quadrant in place (no raw-oriented copies, no intermediate image):
    bitwise equal to the two steps. The pocket pass needs whole rows first, so with it the
    detrending is its own pass.
    """
    data = np.asarray(data)
    rows, cols = camera.quadrant_slice(qid, np.shape(bias))
    expected = (2 * data.shape[0], 2 * data.shape[1])
    if np.shape(bias) != expected or np.shape(flat) != expected:
        raise ValueError(
            f"shape mismatch: quadrant {data.shape}, bias {np.shape(bias)}, flat {np.shape(flat)}"
            f" (CCD masters of {expected} expected)"
        )
    if spec.pocket_applies(date):
        corrected = correct_quadrant(data, overscan, ccdid, qid, date, spec)
        bias_q = camera.sky_to_raw(np.asarray(bias)[rows, cols])
        flat_q = camera.sky_to_raw(np.asarray(flat)[rows, cols])
        out, nbad = detrend_quadrant(corrected, bias_q, flat_q, factor)
        return out, nbad, int(np.count_nonzero(~np.isfinite(out)))
    a, b, model = _nl_and_overscan(overscan, ccdid, qid, date, spec)
    out = np.empty(data.shape, dtype=np.float32)
    bad, nbad, nonfinite = _fused_detrend(
        data, model, a, b, spec.order == "nl-first",
        np.ascontiguousarray(bias, np.float32), np.ascontiguousarray(flat, np.float32),
        rows.start, cols.start, np.float32(factor), out,
    )  # fmt: skip
    _check_nl_domain(bad, a, b)
    return out, int(nbad), int(nonfinite)


def _nl_and_overscan(
    overscan: np.ndarray, ccdid: int, qid: int, date: dt.date, spec: CorrectionSpec
) -> tuple[float, float, np.ndarray]:
    """The NL coefficients (A, B) of the quadrant's table and its overscan row model (DN)."""
    a, b = nonlinearity.coefficients(ccdid, qid, date, table=spec.nl_table)
    model = overscan_model(
        overscan_profile(np.asarray(overscan), qid, spec.overscan_columns), spec.overscan_terms,
        spec.overscan_clip,
    )  # fmt: skip
    return float(a), float(b), model


def _pocket_pass(
    data: np.ndarray,
    overscan: np.ndarray,
    model: np.ndarray,
    a: float,
    b: float,
    nl_first: bool,
    ccdid: int,
    qid: int,
    out: np.ndarray,
) -> int:
    """Overscan + NL + pocket into ``out``; the number of values outside the NL domain."""
    pars = pocket.parameters(ccdid, qid)
    bad, nonfinite, unconverged = pocket.fused_overscan_nl_pocket(
        data, np.asarray(overscan), model, a, b, nl_first, qid in (2, 3),
        pars.alpha, pars.cmax, pars.beta, pars.nmax, out,
    )  # fmt: skip
    if nonfinite:
        raise ValueError(
            f"pocket model input contains {nonfinite} non-finite value(s) (they would "
            "propagate along the rest of the row)"
        )
    if unconverged:
        warnings.warn(
            f"pocket correction c{ccdid:02d} q{qid}: Newton did not converge in "
            f"{unconverged} block column(s)",
            RuntimeWarning,
            stacklevel=3,
        )
    return bad


def _check_nl_domain(bad: int, a: float, b: float) -> None:
    if bad:
        raise ValueError(
            f"{bad} measured value(s) outside the domain of the non-linearity model "
            f"(A={a!r}, B={b!r}: A x² + B x + 1 must be > 0)"
        )


def _correct_quadrant_numpy(
    data: np.ndarray,
    overscan: np.ndarray,
    ccdid: int,
    qid: int,
    date: dt.date,
    spec: CorrectionSpec,
) -> np.ndarray:
    """The step-by-step numpy implementation (reference of the compiled pass)."""
    a, b = nonlinearity.coefficients(ccdid, qid, date, table=spec.nl_table)
    data, overscan = data.astype(np.float64), overscan.astype(np.float64)
    if spec.order == "nl-first":
        data = nonlinearity.correct(data, a, b)
        data, overscan = subtract_overscan(data, overscan, qid, spec)
    else:
        data, overscan = subtract_overscan(data, overscan, qid, spec)
        data = nonlinearity.correct(data, a, b)
        overscan = nonlinearity.correct(overscan, a, b)
    if spec.pocket_applies(date):
        frame = np.hstack([camera.raw_to_read(data, qid), camera.raw_to_read(overscan, qid)])
        frame = pocket.correct(frame, pocket.parameters(ccdid, qid))
        data = camera.read_to_raw(frame[:, : data.shape[1]], qid)
    return np.ascontiguousarray(data, dtype=np.float32)


def correct_ccd(
    data: dict[int, np.ndarray],
    overscan: dict[int, np.ndarray],
    ccdid: int,
    date: dt.date,
    spec: CorrectionSpec = CorrectionSpec(),
    *,
    engine: str = "numba",
    minus: np.ndarray | None = None,
) -> np.ndarray:
    """All four quadrants corrected and assembled into a sky-oriented CCD array (float32), minus
    ``minus`` (a sky-oriented CCD, e.g. the master bias of flats) when given.

    The compiled engine writes each quadrant into its place of one CCD array, subtracting
    ``minus`` in the same pass (a real-size CCD is 151 MB: no quadrant copies, no assembling,
    no second array); bitwise equal to assembling :func:`correct_quadrant` results and
    subtracting in float32.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    shape = (2 * np.shape(data[1])[0], 2 * np.shape(data[1])[1])
    if minus is not None and np.shape(minus) != shape:
        raise ValueError(f"shape mismatch: CCD {shape}, minus {np.shape(minus)}")
    if engine == "numpy":
        quads = {q: correct_quadrant(data[q], overscan[q], ccdid, q, date, spec, engine=engine)
                 for q in range(1, 5)}  # fmt: skip
        ccd = camera.assemble_ccd(quads)
        return ccd if minus is None else np.subtract(ccd, minus, dtype=np.float32)
    out = np.empty(shape, np.float32)
    sub = _NOTHING if minus is None else np.asarray(minus, np.float32)
    for q in range(1, 5):
        where = camera.quadrant_slice(q, shape)
        place = camera.sky_to_raw(out[where])  # the quadrant's place, raw-oriented view
        sub_q = sub if minus is None else camera.sky_to_raw(sub[where])
        if spec.pocket_applies(date):  # the pocket pass needs whole rows: its own array first
            corrected = correct_quadrant(data[q], overscan[q], ccdid, q, date, spec)
            if minus is None:
                place[...] = corrected
            else:
                np.subtract(corrected, sub_q, out=place)
            continue
        a, b, model = _nl_and_overscan(overscan[q], ccdid, q, date, spec)
        bad = _fused(np.asarray(data[q]), model, a, b, spec.order == "nl-first", sub_q,
                     minus is not None, place)  # fmt: skip
        _check_nl_domain(bad, a, b)
    return out


def detrend_quadrant(
    raw_corrected: np.ndarray, bias: np.ndarray, flat: np.ndarray, factor: float
) -> tuple[np.ndarray, int]:
    """``(R − B) / F × factor`` in one compiled pass (float32), and the number of bad flat pixels.

    ``factor`` is ``FLTNORM_FP / FLTNORM``. Bitwise equal to :func:`ztfluigi.science.detrend`
    (the same float32 operations in the same order, ``factor`` rounded to float32 first; flat
    pixels ≤ 0 or non-finite give NaN) without its five temporaries. Any orientation, as long
    as the three arrays share it: the raw-oriented views of sky-oriented masters are fine.
    """
    r = np.asarray(raw_corrected)
    if np.shape(bias) != r.shape or np.shape(flat) != r.shape:
        raise ValueError(
            f"shape mismatch: raw {r.shape}, bias {np.shape(bias)}, flat {np.shape(flat)}"
        )
    out = np.empty(r.shape, dtype=np.float32)
    nbad = _detrend(r, np.asarray(bias), np.asarray(flat), np.float32(factor), out)
    return out, int(nbad)


# --- compiled kernels ------------------------------------------------------------------------
#
# The float64 operations are those of the numpy path, in the same order (LLVM does not contract
# them into FMAs without fastmath), hence the bitwise equality without pocket. The pass with the
# pocket correction is pocket.fused_overscan_nl_pocket: numba's disk cache is invalidated per
# source file, so a kernel calling pocket's kernels must live in pocket.py.


@compiled
def _overscan_nl(raw, m, a, b, nl_first):  # noqa: ANN001, ANN202
    """One pixel's overscan + NL (float64) and whether it is outside the NL domain."""
    x = np.float64(raw)
    if not nl_first:
        x = x - m
    den = (a * x + b) * x + 1.0
    v = x / den
    if nl_first:
        v = v - m
    return v, den <= 0.0


@compiled
def _detrended(r, bias, flat, factor):  # noqa: ANN001, ANN202
    """One pixel of science.detrend's float32 operations, and whether its flat is usable."""
    f = np.float32(flat)
    good = np.isfinite(f) and f > np.float32(0.0)
    v = (np.float32(r) - np.float32(bias)) / f
    return (v * factor if good else np.float32(np.nan)), good


@compiled
def _fused(data, model, a, b, nl_first, minus, has_minus, out):  # noqa: ANN001, ANN202
    """Overscan + NL into ``out`` (any layout, e.g. a quadrant's place in a CCD), minus
    ``minus`` (same layout) in float32 when ``has_minus``; the number of values outside the NL
    domain."""
    nrows, ncols = data.shape
    bad = 0
    for i in range(nrows):
        m = model[i]
        for j in range(ncols):
            v, outside = _overscan_nl(data[i, j], m, a, b, nl_first)
            bad += 1 if outside else 0
            out[i, j] = np.float32(v) - minus[i, j] if has_minus else np.float32(v)
    return bad


@compiled
def _detrend(r, bias, flat, factor, out):  # noqa: ANN001, ANN202
    """science.detrend's float32 operations, pixel by pixel; returns the bad-flat count."""
    nrows, ncols = r.shape
    nbad = 0
    for i in range(nrows):
        for j in range(ncols):
            out[i, j], good = _detrended(r[i, j], bias[i, j], flat[i, j], factor)
            nbad += 0 if good else 1
    return nbad


@compiled
def _fused_detrend(data, model, a, b, nl_first, bias, flat, r0, c0, factor, out):  # noqa: ANN001, ANN202
    """Overscan + NL then detrending against the sky-oriented CCD masters, whose quadrant
    starts at (``r0``, ``c0``): raw pixel (i, j) is master pixel (r0 + n − 1 − i, c0 + m − 1 − j)
    (180°). Returns the NL-domain, bad-flat and non-finite counts."""
    nrows, ncols = data.shape
    last = c0 + ncols - 1
    bad = 0
    nbad = 0
    nonfinite = 0
    for i in range(nrows):
        m = model[i]
        brow = bias[r0 + nrows - 1 - i]
        frow = flat[r0 + nrows - 1 - i]
        for j in range(ncols):
            v, outside = _overscan_nl(data[i, j], m, a, b, nl_first)
            bad += 1 if outside else 0
            w, good = _detrended(np.float32(v), brow[last - j], frow[last - j], factor)
            out[i, j] = w
            nbad += 0 if good else 1
            nonfinite += 0 if np.isfinite(w) else 1
    return bad, nbad, nonfinite
