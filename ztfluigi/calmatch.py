"""Which night's master bias / master flat a science exposure uses (pure, no Luigi).

Rule (DESIGN.md §1, ``reference_pipeline.md`` §5.1, trap 12):

* a science exposure of UT date D uses the calibration of the **nearest night with a usable
  calibration** of that kind within ``±window`` days (default 10, both ends included: a
  calibration exactly ``window`` days away is accepted, as the reference's ``|Δ| > 10d`` test);
* **ties** (D−k and D+k both usable) go to the **later** night, as the reference (pandas
  ``get_indexer(method="nearest")`` picks the later label on ties). Deterministic;
* **not limited to the calendar year**: the reference only searched the exposure's year
  (an exposure of 2019-01-03 could not use 2018-12-30); we search by date arithmetic;
* bias and flat are matched independently (they may come from different nights), as the
  reference; the nights chosen are recorded (:meth:`CalibrationMatch.header_cards`).

"Usable" is decided from a night's RawIndex table (columns ``imgtype``, ``ccdid``,
``filtercode``, ``ledid``, …) so that the chosen night's calibration tasks will succeed:

* **bias** of CCD c: at least ``MIN_FRAMES`` (3) biases of c left after dropping the night's
  first ``BIAS_SKIP`` (10) — what ``MasterBias`` needs;
* **flat** of CCD c, filter f: the night's flats of c and f whose LED belongs to f, grouped by
  LED; usable iff at least one such LED is present and **every LED present has ≥ 3 frames**
  (``calib.master_flat`` raises on any LED with fewer), **and** the same night has a usable bias
  of c (``MasterFlat`` subtracts the same-night master bias). Frames whose ``ledid`` is missing
  (null or −1) or belongs to another filter are ignored, as ``MasterFlat`` leaves them out.
  If the table has no ``ledid`` column at all (an IRSA table without LED information), the LED
  split cannot be checked and ≥ 3 flats of the filter is taken as usable (optimistic; the
  MasterFlat task stays the authority);
* for science, a flat also needs the night's **focal-plane level** ``FLTNORM_FP`` of f, which
  needs usable flats on all 16 CCDs (``focal_plane=True``, the default of the helpers below).
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pyarrow as pa

from ztfluigi.calib import BIAS_SKIP, MIN_FRAMES
from ztfluigi.camera import FILTER_LEDS

DEFAULT_WINDOW = 10  #: days, as the reference's production ``max_timedelta='10d'``
KINDS = ("bias", "flat")
N_CCD = 16
_REQUIRED = ("imgtype", "ccdid", "filtercode")


class NoCalibrationError(ValueError):
    """No usable calibration of a kind within the window around an exposure date."""


def as_date(value: dt.date | str) -> dt.date:
    """A UT date from a ``date``, a ``datetime`` (its date) or ``YYYY-MM-DD`` / ``YYYYMMDD``."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            pass
    raise ValueError(f"not a date: {value!r} (expected YYYY-MM-DD or YYYYMMDD)")


def _check_window(window: int) -> int:
    if isinstance(window, bool) or int(window) != window or window < 0:
        raise ValueError(f"window must be a non-negative number of days, got {window!r}")
    return int(window)


def candidate_nights(date: dt.date | str, window: int = DEFAULT_WINDOW) -> list[dt.date]:
    """The nights whose RawIndex may hold the calibration, nearest first.

    ``D, D+1, D−1, D+2, D−2, …, D+window, D−window`` (2·window + 1 nights): on equal distance
    the later night comes first, so **the first usable night in this order is the match**
    (:func:`nearest_night` gives the same answer).
    """
    d, w = as_date(date), _check_window(window)
    out = [d]
    for k in range(1, w + 1):
        out += [d + dt.timedelta(days=k), d - dt.timedelta(days=k)]
    return out


def _describe(kind: str, ccdid: int | None, filtercode: str | None) -> str:
    what = kind
    if ccdid is not None:
        what += f" of CCD {ccdid:02d}"
    if filtercode:
        what += f" ({filtercode})" if ccdid is not None else f" of filter {filtercode}"
    return what


def nearest_night(
    date: dt.date | str,
    nights: Iterable[dt.date | str],
    *,
    kind: str = "calibration",
    ccdid: int | None = None,
    filtercode: str | None = None,
    window: int = DEFAULT_WINDOW,
) -> dt.date:
    """The usable night nearest to ``date`` within ±``window`` days; ties → the later night.

    ``nights`` are the UT dates that have a usable calibration of ``kind`` (for the CCD/filter).
    Raises :class:`NoCalibrationError` naming the date, kind, CCD/filter and window.
    """
    d, w = as_date(date), _check_window(window)
    available = sorted({as_date(n) for n in nights})
    inside = [n for n in available if abs((n - d).days) <= w]
    if inside:
        # Smallest |Δ|, then the later night (largest Δ) on ties.
        return min(inside, key=lambda n: (abs((n - d).days), -(n - d).days))
    what = _describe(kind, ccdid, filtercode)
    msg = f"no usable {what} within ±{w} days of {d.isoformat()}"
    if available:
        near = min(available, key=lambda n: (abs((n - d).days), -(n - d).days))
        msg += f" (nearest: {near.isoformat()}, {(near - d).days:+d} days)"
    raise NoCalibrationError(msg)


# --- usability from a RawIndex table ---------------------------------------------------------


def _counts(table: pa.Table | None) -> collections.Counter:
    """Frames per (imgtype, ccdid, filtercode, ledid); ``ledid`` None when unknown."""
    if table is None or table.num_rows == 0:
        return collections.Counter()
    missing = [c for c in _REQUIRED if c not in table.column_names]
    if missing:
        raise ValueError(f"RawIndex table lacks column(s) {missing}")
    cols = [table[c].to_pylist() for c in _REQUIRED]
    leds = table["ledid"].to_pylist() if "ledid" in table.column_names else [None] * len(cols[0])
    return collections.Counter(
        (imgtype, int(ccdid), filt, None if led is None or led < 0 else int(led))
        for imgtype, ccdid, filt, led in zip(*cols, leds, strict=True)
        if ccdid is not None
    )


def _has_ledid(table: pa.Table | None) -> bool:
    return table is not None and "ledid" in table.column_names


def _bias_count(counts: collections.Counter, ccdid: int) -> int:
    n = sum(v for (t, c, _, _), v in counts.items() if t == "bias" and c == ccdid)
    return max(n - BIAS_SKIP, 0)


def _flat_leds(counts: collections.Counter, ccdid: int, filtercode: str) -> dict[int | None, int]:
    out: dict[int | None, int] = collections.defaultdict(int)
    for (t, c, f, led), v in counts.items():
        if t == "flat" and c == ccdid and f == filtercode:
            out[led] += v
    return dict(out)


def _flat_ok(counts: collections.Counter, ccdid: int, filtercode: str, has_led: bool) -> bool:
    if filtercode not in FILTER_LEDS:
        raise ValueError(f"filter must be one of {tuple(FILTER_LEDS)}, got {filtercode!r}")
    per_led = _flat_leds(counts, ccdid, filtercode)
    if not has_led:
        return sum(per_led.values()) >= MIN_FRAMES
    leds = {led: n for led, n in per_led.items() if led in FILTER_LEDS[filtercode]}
    return bool(leds) and all(n >= MIN_FRAMES for n in leds.values())


def bias_frames(table: pa.Table | None, ccdid: int) -> int:
    """Biases of ``ccdid`` a MasterBias would stack (after skipping the first ``BIAS_SKIP``)."""
    return _bias_count(_counts(table), ccdid)


def flat_frames_per_led(table: pa.Table | None, ccdid: int, filtercode: str) -> dict[int, int]:
    """Flats of ``ccdid``/``filtercode`` per LED of that filter (other/unknown LEDs left out)."""
    per_led = _flat_leds(_counts(table), ccdid, filtercode)
    return {led: n for led, n in per_led.items() if led in FILTER_LEDS.get(filtercode, ())}


def usable_bias(table: pa.Table | None, ccdid: int) -> bool:
    """The night can make a master bias of ``ccdid`` (≥ 3 biases after the first 10)."""
    return _bias_count(_counts(table), ccdid) >= MIN_FRAMES


def usable_flat(
    table: pa.Table | None, ccdid: int, filtercode: str, *, require_bias: bool = True
) -> bool:
    """The night can make a master flat of ``ccdid``/``filtercode`` (see the module rule)."""
    counts = _counts(table)
    ok = _flat_ok(counts, ccdid, filtercode, _has_ledid(table))
    return ok and (not require_bias or _bias_count(counts, ccdid) >= MIN_FRAMES)


def usable_focal_plane(table: pa.Table | None, filtercode: str) -> bool:
    """The night can make the focal-plane level of ``filtercode`` (usable flats on 16 CCDs)."""
    counts, has_led = _counts(table), _has_ledid(table)
    return all(
        _flat_ok(counts, c, filtercode, has_led) and _bias_count(counts, c) >= MIN_FRAMES
        for c in range(1, N_CCD + 1)
    )


def usable_calibrations(
    table: pa.Table | None,
    ccdid: int,
    filtercode: str | None = None,
    *,
    focal_plane: bool = True,
) -> frozenset[str]:
    """Kinds (``"bias"``, ``"flat"``) of calibration a night offers a science CCD/filter.

    ``"flat"`` requires a usable flat of the CCD/filter with its same-night bias and, with
    ``focal_plane`` (default), usable flats on all 16 CCDs (the science formula needs the
    night's ``FLTNORM_FP``). A ``None`` or empty table offers nothing.
    """
    counts, has_led = _counts(table), _has_ledid(table)
    out = set()
    bias_ok = _bias_count(counts, ccdid) >= MIN_FRAMES
    if bias_ok:
        out.add("bias")
    if filtercode:
        flat_ok = bias_ok and _flat_ok(counts, ccdid, filtercode, has_led)
        if flat_ok and focal_plane:
            flat_ok = all(
                _flat_ok(counts, c, filtercode, has_led) and _bias_count(counts, c) >= MIN_FRAMES
                for c in range(1, N_CCD + 1)
            )
        if flat_ok:
            out.add("flat")
    return frozenset(out)


# --- matching --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationMatch:
    """The calibration nights chosen for an exposure (bias and flat chosen independently)."""

    date: dt.date  #: UT date of the exposure
    bias_night: dt.date
    flat_night: dt.date
    window: int = DEFAULT_WINDOW

    @property
    def bias_delta(self) -> int:
        """Days from the exposure to the bias night (positive: later)."""
        return (self.bias_night - self.date).days

    @property
    def flat_delta(self) -> int:
        """Days from the exposure to the flat night (positive: later)."""
        return (self.flat_night - self.date).days

    def header_cards(self) -> dict[str, tuple[object, str]]:
        """Provenance cards. ``CALNIGHT``/``CALDELTA`` summarise the match by its **farthest**
        calibration (the flat's on equal distance): a quality cut on ``|CALDELTA|`` bounds both.
        """
        far_bias = abs(self.bias_delta) > abs(self.flat_delta)
        night, delta = (
            (self.bias_night, self.bias_delta) if far_bias else (self.flat_night, self.flat_delta)
        )
        return {
            "BIASNGHT": (f"{self.bias_night:%Y%m%d}", "UT night of the master bias"),
            "BIASDELT": (self.bias_delta, "bias night - exposure date (days)"),
            "FLATNGHT": (f"{self.flat_night:%Y%m%d}", "UT night of the master flat and FP level"),
            "FLATDELT": (self.flat_delta, "flat night - exposure date (days)"),
            "CALNIGHT": (f"{night:%Y%m%d}", "farthest calibration night used"),
            "CALDELTA": (delta, "its distance to the exposure date (days)"),
            "CALWIN": (self.window, "calibration search window (+- days)"),
        }


def usable_nights(
    indexes: Mapping[dt.date, pa.Table | None],
    kind: str,
    ccdid: int,
    filtercode: str | None = None,
    *,
    focal_plane: bool = True,
) -> list[dt.date]:
    """The nights of ``indexes`` (night → RawIndex table) offering ``kind`` for the CCD/filter."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "flat" and not filtercode:
        raise ValueError("a flat needs a filter code")
    return sorted(
        as_date(night)
        for night, table in indexes.items()
        if kind
        in usable_calibrations(
            table, ccdid, filtercode if kind == "flat" else None, focal_plane=focal_plane
        )
    )


def match_calibrations(
    date: dt.date | str,
    indexes: Mapping[dt.date, pa.Table | None],
    ccdid: int,
    filtercode: str,
    *,
    window: int = DEFAULT_WINDOW,
    focal_plane: bool = True,
) -> CalibrationMatch:
    """Nearest usable bias night and flat night for a science exposure of CCD/filter.

    ``indexes`` maps nights (normally :func:`candidate_nights`) to their RawIndex tables; a
    night absent from it or mapped to ``None`` has no calibration. Raises
    :class:`NoCalibrationError` when either kind has no usable night within the window.
    """
    d, w = as_date(date), _check_window(window)
    bias = nearest_night(
        d, usable_nights(indexes, "bias", ccdid), kind="bias", ccdid=ccdid, window=w
    )
    flat = nearest_night(
        d, usable_nights(indexes, "flat", ccdid, filtercode, focal_plane=focal_plane),
        kind="flat", ccdid=ccdid, filtercode=filtercode, window=w,
    )  # fmt: skip
    return CalibrationMatch(d, bias, flat, w)


@dataclass(frozen=True)
class NeedIndexes:
    """The RawIndex tables a match still needs before it can be decided (nearest first)."""

    nights: tuple[dt.date, ...]


def resolve(
    date: dt.date | str,
    ccdid: int,
    filtercode: str,
    indexes: Mapping[dt.date, pa.Table | None],
    *,
    window: int = DEFAULT_WINDOW,
    valid: tuple[dt.date, dt.date] | None = None,
) -> CalibrationMatch | NeedIndexes:
    """The calibration match of a science exposure, or the next RawIndex it needs.

    Candidate nights are read nearest first (:func:`candidate_nights`, restricted to the
    ``valid`` range of nights that can exist): the match is decided on the shortest prefix of
    candidates that offers both kinds, so only as many RawIndex tables as needed are read. Every
    caller — the Luigi tasks (each need a dynamic dependency), the synchronous check of a
    virtual quadrant, ``status`` — drives this one function. Raises :class:`NoCalibrationError`
    when every candidate is known and none is usable.
    """
    d = as_date(date)
    candidates = [n for n in candidate_nights(d, window)
                  if valid is None or valid[0] <= n <= valid[1]]  # fmt: skip
    error: NoCalibrationError | None = None
    for i, night in enumerate(candidates):
        if night not in indexes:
            return NeedIndexes((night,))
        try:
            known = {n: indexes[n] for n in candidates[: i + 1]}
            return match_calibrations(d, known, ccdid, filtercode, window=window)
        except NoCalibrationError as exc:
            error = exc
    raise error or NoCalibrationError(f"{d}: no calibration night available")


def own_calibrations(
    table: pa.Table | None, ccds: Iterable[int], filtercodes: Iterable[str], *, focal_plane: bool
) -> list[tuple[str, int | None, str | None]]:
    """The master calibrations a night can make for CCDs × filters, as (kind, ccdid, filter):
    ``("bias", c, None)``, ``("flat", c, f)`` and, with ``focal_plane``, ``("fplevel", None, f)``.
    """
    filtercodes = list(filtercodes)
    out: list[tuple[str, int | None, str | None]] = []
    for c in ccds:
        if usable_bias(table, c):
            out.append(("bias", c, None))
        out += [("flat", c, f) for f in filtercodes if usable_flat(table, c, f)]
    if focal_plane:
        out += [("fplevel", None, f) for f in filtercodes if usable_focal_plane(table, f)]
    return out
