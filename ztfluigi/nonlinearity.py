"""IPAC per-amplifier non-linearity model of the ZTF camera.

The camera team's model (tables formatted by F. Masci, shipped by ztfimg) relates the measured
signal ``x`` (DN) of an amplifier to the true, linear signal (DN)::

    DN_true = x / (A x**2 + B x + 1)

with one ``(A, B)`` pair per amplifier, i.e. per ``(ccdid, qid)``. The table in use depends on the
UT date of the exposure (reference_pipeline.md §2.3, trap 6). In our pipeline ``x`` is the signal
*after* overscan (pedestal) subtraction (reference_pipeline.md §2.1, trap 1).

:func:`correct` maps measured → true (the calibration step); :func:`distort` is its exact inverse
(true → measured), used by the synthetic instrument.

All shipped tables have ``A < 0`` and ``B > 0``. Then the denominator ``A x² + B x + 1`` is
positive on an open interval ``(x_lo, x_hi)`` around 0 (about ``(-2.4e5, +2.9e5)`` DN, far beyond
the 16-bit range), :func:`correct` is strictly increasing there and maps it onto the whole real
line, so :func:`distort` is defined for every real input.
"""

from __future__ import annotations

import datetime
import functools
import importlib.resources

import numpy as np

__all__ = [
    "AMP_NAMES",
    "SWITCH_DATES",
    "TABLE_FILES",
    "coefficients",
    "correct",
    "distort",
    "load_table",
    "table_name_for_date",
]

#: Table name → file in ``ztfluigi/data``. ``ccd_amp_coeff_v2`` is the single table of
#: ztfimg ≤ 0.20 (byte-identical to ``201910``), kept for compatibility comparisons.
TABLE_FILES: dict[str, str] = {
    "201803": "linearity_coeffs_201803.txt",
    "201910": "linearity_coeffs_201910.txt",
    "202004": "linearity_coeffs_202004.txt",
    "ccd_amp_coeff_v2": "ccd_amp_coeff_v2.txt",
}

#: First UT date of validity of each date-dependent table (ztfimg ≥ 0.21 / HEAD).
SWITCH_DATES: tuple[tuple[datetime.date, str], ...] = (
    (datetime.date(2019, 10, 23), "201910"),
    (datetime.date(2020, 4, 28), "202004"),
)
_FIRST_TABLE = "201803"

#: Amplifier name of each AMP_ID (= qid - 1) in the tables.
AMP_NAMES: dict[int, str] = {0: "h", 1: "g", 2: "f", 3: "e"}

# Elements per float64 block in correct()/distort(): bounds the temporary memory (~2 MB per
# temporary) whatever the frame size.
_BLOCK = 1 << 18


def table_name_for_date(date: datetime.date) -> str:
    """Name of the non-linearity table valid on a UT date.

    ``date < 2019-10-23`` → ``"201803"``, ``2019-10-23 ≤ date < 2020-04-28`` → ``"201910"``,
    ``date ≥ 2020-04-28`` → ``"202004"``. A ``datetime`` is reduced to its UT calendar date
    (aware datetimes are converted to UTC first, naive ones are taken as UT).
    """
    date = _ut_date(date)
    name = _FIRST_TABLE
    for start, table in SWITCH_DATES:
        if date >= start:
            name = table
    return name


def load_table(name: str) -> dict[tuple[int, int], tuple[float, float]]:
    """Load a shipped non-linearity table.

    Parameters
    ----------
    name : str
        One of :data:`TABLE_FILES` (``"201803"``, ``"201910"``, ``"202004"``,
        ``"ccd_amp_coeff_v2"``).

    Returns
    -------
    dict
        ``(ccdid, qid) → (A, B)`` for all 64 amplifiers (A in DN⁻², B in DN⁻¹). The file is parsed
        once (cached); each call returns a fresh dict.

    Raises
    ------
    ValueError
        Unknown name, or a malformed table (bad line, duplicate or missing amplifier).
    """
    return dict(_cached_table(name))


def coefficients(
    ccdid: int, qid: int, date: datetime.date, table: str | None = None
) -> tuple[float, float]:
    """``(A, B)`` of amplifier ``(ccdid, qid)`` for a UT date, or from an explicit ``table``."""
    if table is None:
        table = table_name_for_date(date)
    coeffs = _cached_table(table)
    try:
        return coeffs[(int(ccdid), int(qid))]
    except KeyError:
        raise ValueError(
            f"no non-linearity coefficients for ccdid={ccdid!r}, qid={qid!r} "
            "(expected ccdid 1..16, qid 1..4)"
        ) from None


def correct(measured: np.ndarray, a: float, b: float) -> np.ndarray:
    """Measured → true signal: ``x / (a x² + b x + 1)`` (DN).

    The arithmetic is done in float64 (block by block, so memory stays bounded) and the result is
    rounded once to the output dtype: the input dtype for floating inputs (float32 in → float32
    out), float64 otherwise. Precision: float64 output agrees with the exact formula to ~1e-11 DN
    at 60 000 DN; float32 output is the correctly rounded float64 value, i.e. within half a
    float32 ulp (≤ 0.002 DN at 60 000 DN, ≤ 0.001 DN below 32 768 DN).

    Raises
    ------
    ValueError
        If a finite input lies outside the interval where the denominator is positive (outside
        about ±2.4e5 DN for the shipped tables), where the model is meaningless.
    """
    x = np.asarray(measured)
    out = np.empty(x.shape, dtype=_out_dtype(x))
    flat_in = x.reshape(-1)
    flat_out = out.reshape(-1)
    a = float(a)
    b = float(b)
    for start in range(0, flat_in.size, _BLOCK):
        xb = flat_in[start : start + _BLOCK].astype(np.float64)
        den = (a * xb + b) * xb + 1.0
        if np.any(den <= 0.0):
            bad = xb[den <= 0.0][0]
            raise ValueError(
                f"measured value {bad!r} DN is outside the domain of the non-linearity model "
                f"(A={a!r}, B={b!r}: A x² + B x + 1 must be > 0)"
            )
        flat_out[start : start + _BLOCK] = xb / den
    return out


def distort(true: np.ndarray, a: float, b: float) -> np.ndarray:
    """True → measured signal: the exact inverse of :func:`correct` (DN).

    Solves ``a y x² + (b y − 1) x + y = 0`` for ``x`` with the cancellation-free root
    ``x = 2y / ((1 − b y) + sqrt((1 − b y)² − 4 a y²))`` (``x = y`` at ``y = 0``; negative ``y``
    are fine). The root exists where the discriminant is ≥ 0 and the denominator is > 0. For
    ``a < 0`` (all shipped tables) that is every real ``y``, and the result lies in the domain of
    :func:`correct`. For ``a > 0`` it is only the range of :func:`correct`, which is bounded by
    its extrema at ``x = ±1/sqrt(a)`` (e.g. ``y ≤ 1 / (2 sqrt(a) + b)``). float64 arithmetic,
    output dtype as in :func:`correct`; float64 round trips agree to ~1e-10 DN.

    Raises
    ------
    ValueError
        If a finite value has no root (only possible for ``a > 0``).
    """
    y = np.asarray(true)
    out = np.empty(y.shape, dtype=_out_dtype(y))
    flat_in = y.reshape(-1)
    flat_out = out.reshape(-1)
    a = float(a)
    b = float(b)
    for start in range(0, flat_in.size, _BLOCK):
        yb = flat_in[start : start + _BLOCK].astype(np.float64)
        u = 1.0 - b * yb
        disc = yb * yb
        disc *= -4.0 * a
        disc += u * u
        if disc.min(initial=0.0) < 0.0:
            bad = yb[disc < 0.0][0]
            raise ValueError(
                f"true value {bad!r} DN cannot be produced by the non-linearity model "
                f"(A={a!r}, B={b!r})"
            )
        np.sqrt(disc, out=disc)
        disc += u  # the denominator
        if disc.min(initial=1.0) <= 0.0:
            bad = yb[disc <= 0.0][0]
            raise ValueError(
                f"true value {bad!r} DN cannot be produced by the non-linearity model "
                f"(A={a!r}, B={b!r})"
            )
        yb *= 2.0
        yb /= disc
        flat_out[start : start + _BLOCK] = yb
    return out


def _out_dtype(arr: np.ndarray) -> np.dtype:
    return arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.dtype(np.float64)


def _ut_date(date: datetime.date) -> datetime.date:
    if isinstance(date, datetime.datetime):
        if date.tzinfo is not None:
            date = date.astimezone(datetime.UTC)
        return date.date()
    return date


@functools.cache
def _cached_table(name: str) -> dict[tuple[int, int], tuple[float, float]]:
    try:
        filename = TABLE_FILES[name]
    except KeyError:
        raise ValueError(
            f"unknown non-linearity table {name!r}; expected one of {sorted(TABLE_FILES)}"
        ) from None
    resource = importlib.resources.files("ztfluigi") / "data" / filename
    return _parse_table(resource.read_text(encoding="utf-8"), source=filename)


def _parse_table(text: str, source: str = "<text>") -> dict[tuple[int, int], tuple[float, float]]:
    """Parse ``CCDID AMP_NAME AMP_ID A B`` lines (``#`` comments) and check completeness."""
    table: dict[tuple[int, int], tuple[float, float]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        where = f"{source}:{lineno}"
        if len(fields) != 5:
            raise ValueError(f"{where}: expected 5 columns CCDID AMP_NAME AMP_ID A B, got {line!r}")
        try:
            ccdid, amp_id = int(fields[0]), int(fields[2])
            a, b = float(fields[3]), float(fields[4])
        except ValueError:
            raise ValueError(f"{where}: cannot parse {line!r}") from None
        if not 1 <= ccdid <= 16 or amp_id not in AMP_NAMES:
            raise ValueError(f"{where}: ccdid {ccdid} / AMP_ID {amp_id} out of range")
        if fields[1] != AMP_NAMES[amp_id]:
            raise ValueError(
                f"{where}: AMP_NAME {fields[1]!r} does not match AMP_ID {amp_id} "
                f"(expected {AMP_NAMES[amp_id]!r})"
            )
        if not (np.isfinite(a) and np.isfinite(b)):
            raise ValueError(f"{where}: non-finite coefficient in {line!r}")
        key = (ccdid, amp_id + 1)
        if key in table:
            raise ValueError(f"{where}: duplicate entry for ccdid={ccdid}, qid={amp_id + 1}")
        table[key] = (a, b)
    missing = [(c, q) for c in range(1, 17) for q in range(1, 5) if (c, q) not in table]
    if missing:
        raise ValueError(
            f"{source}: non-linearity table incomplete, {len(missing)} of 64 amplifiers missing "
            f"(ccdid, qid): {missing[:8]}{' ...' if len(missing) > 8 else ''}"
        )
    return table
