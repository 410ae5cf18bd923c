"""The virtual science quadrant: detrended pixels, IPAC-derived header and mask (pure numpy).

Reference behaviour (``reference_pipeline.md`` §5.2–5.3) and where we deliberately differ:

* pixels, per sky-oriented CCD: ``S = (R − B) / Fn × FLTNORM_FP / FLTNORM`` in float32, with R
  the overscan/NL-corrected raw CCD, B the master bias, Fn the normalised master flat (trap 10:
  the focal-plane factor is what removes CCD-to-CCD steps);
* **bad flat pixels** (Fn ≤ 0 or non-finite) give **NaN**, never ±inf, and are counted (the
  reference divides blindly: 0 → inf, 0/0 → NaN, negative → sign flip). The attached mask gets
  IPAC bit 10 (``NAN``) on every non-finite science pixel, so photometry excludes them;
* quadrants are split back to **raw/IPAC orientation** (trap 11), the orientation of IPAC's
  ``sciimg``/``mskimg`` and of their WCS. :func:`science_quadrant_data` corrects and detrends one
  quadrant only; it equals the quadrant of :func:`science_ccd` exactly;
* header: raw primary ← raw quadrant extension ← IPAC ``sciimg`` header, IPAC-only bookkeeping
  removed as the reference does, and **trap 13** handled: IPAC's zero points, magnitude limit and
  ``SATURATE`` describe IPAC's image, not ours. They are kept under ``IP*`` names with a comment
  saying so (:data:`IPAC_RENAMED`), the colour-term companions of the dropped ``CLRCOEFF`` are
  removed (:data:`IPAC_DROPPED`), and ``SATURATE`` is recomputed for our image when a saturation
  level is known (:func:`science_saturation`).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from ztfluigi import camera, fringes
from ztfluigi import provenance as prov
from ztfluigi.calmatch import CalibrationMatch
from ztfluigi.corrections import CorrectionSpec, correct_and_detrend_quadrant
from ztfluigi.naming import RawName
from ztfluigi.raw import RawCCD

logger = logging.getLogger(__name__)

MASK_NAN_BIT = 10  #: IPAC mskimg bit "NAN (not a number)"
DEFAULT_SPEC = CorrectionSpec()  #: raw corrections of science frames (as the masters')

#: Keys dropped by the reference after the merge (``startswith``), ztfin2p3 ``science.py``.
REFERENCE_DROPPED_PREFIXES = (
    "CID", "CAL", "CLRC", "APCOR", "FIXAPERS", "NMATCHES", "BIT", "HISTORY", "COMMENT",
    "CHECKSUM", "DATASUM",
)  # fmt: skip

#: Trap 13: IPAC photometric keys of IPAC's image, kept under another name (≤ 8 characters).
IPAC_RENAMED = {
    "MAGZP": "IPMAGZP",
    "MAGZPUNC": "IPZPUNC",
    "MAGZPRMS": "IPZPRMS",
    "ZPMED": "IPZPMED",
    "ZPAVG": "IPZPAVG",
    "ZPRMSALL": "IPZPRMSA",
    "MAGLIM": "IPMAGLIM",
    "SATURATE": "IPSATUR",
}
IPAC_NOTE = "IPAC's image, not this one"

#: IPAC photometric-fit keys without meaning once MAGZP/CLRCOEFF are gone (and SCAMP's unused
#: photometric zero point / flux scale): removed.
IPAC_DROPPED = ("ZPCLRCOV", "PCOLOR", "CLRMED", "CLRAVG", "CLRRMS", "MAGZEROP", "FLXSCALE")

#: Structural keys of any HDU (and data-scaling keys, which would rescale our float32 pixels).
_STRUCTURAL = re.compile(
    r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|TFIELDS|TTYPE\d+|TFORM\d+|TUNIT\d+"
    r"|TDIM\d+|THEAP|TNULL\d+|TSCAL\d+|TZERO\d+|BSCALE|BZERO|BLANK|GROUPS|END)$"
)
_COMMENTARY = ("HISTORY", "COMMENT", "")


class ScienceError(ValueError):
    """Inputs that cannot make a science image (shapes, normalisations)."""


@dataclass
class ScienceQuadrant:
    """One virtual science quadrant, raw/IPAC orientation."""

    data: np.ndarray  #: float32 (rows, cols), NaN where undefined
    header: fits.Header  #: merged raw + IPAC header, trap-13 keys handled, provenance
    mask: np.ndarray  #: int16 IPAC bit mask, bit 10 set on non-finite data


# --- pixels ----------------------------------------------------------------------------------


def _norm_factor(fltnorm: float, fltnorm_fp: float) -> np.float32:
    for name, value in (("FLTNORM", fltnorm), ("FLTNORM_FP", fltnorm_fp)):
        if value is None or not np.isfinite(value) or value <= 0:
            raise ScienceError(f"{name} must be a positive finite number, got {value!r}")
    return np.float32(float(fltnorm_fp) / float(fltnorm))


def bad_flat(flat: np.ndarray) -> np.ndarray:
    """Boolean map of flat pixels that cannot divide: ≤ 0 or non-finite."""
    flat = np.asarray(flat)
    with np.errstate(invalid="ignore"):
        return ~(np.isfinite(flat) & (flat > 0))


def detrend(
    corrected: np.ndarray,
    bias: np.ndarray,
    flat: np.ndarray,
    fltnorm: float,
    fltnorm_fp: float,
) -> tuple[np.ndarray, int]:
    """``(R − B) / Fn × FLTNORM_FP / FLTNORM`` (float32) and the number of bad-flat pixels.

    Element-wise, so any orientation works as long as the three arrays share it. Bad flat pixels
    (:func:`bad_flat`) are set to NaN instead of the reference's inf/NaN/sign-flipped values.
    """
    shapes = {np.shape(corrected), np.shape(bias), np.shape(flat)}
    if len(shapes) != 1:
        raise ScienceError(
            f"shape mismatch: raw {np.shape(corrected)}, bias {np.shape(bias)}, "
            f"flat {np.shape(flat)}"
        )
    factor = _norm_factor(fltnorm, fltnorm_fp)
    r = np.asarray(corrected, dtype=np.float32)
    b = np.asarray(bias, dtype=np.float32)
    f = np.asarray(flat, dtype=np.float32)
    bad = bad_flat(f)
    out = np.subtract(r, b, dtype=np.float32)
    np.divide(out, f, out=out, where=~bad)
    out[bad] = np.nan
    out *= factor
    return out, int(np.count_nonzero(bad))


def _warn_bad(nbad: int, what: str) -> None:
    if nbad:
        logger.warning("%s: %d pixel(s) with a flat <= 0 or non-finite set to NaN", what, nbad)


def science_ccd(
    raw_ccd_corrected: np.ndarray,
    bias: np.ndarray,
    flat: np.ndarray,
    fltnorm: float,
    fltnorm_fp: float,
) -> np.ndarray:
    """Science CCD (sky orientation, float32) from a corrected raw CCD and the masters.

    Bad-flat pixels become NaN; their number is logged (use :func:`detrend` to get it).
    """
    out, nbad = detrend(raw_ccd_corrected, bias, flat, fltnorm, fltnorm_fp)
    _warn_bad(nbad, "science CCD")
    return out


def quadrant_of(ccd_array: np.ndarray, qid: int) -> np.ndarray:
    """Quadrant ``qid`` of a sky-oriented CCD array (master bias/flat), in raw orientation."""
    if qid not in (1, 2, 3, 4):
        raise ScienceError(f"qid must be 1-4, got {qid}")
    return camera.sky_to_raw(ccd_array[camera.quadrant_slice(qid, ccd_array.shape)])


def _quadrant_detrend(
    data: np.ndarray,
    overscan: np.ndarray,
    ccdid: int,
    qid: int,
    date: dt.date,
    bias: np.ndarray,
    flat: np.ndarray,
    fltnorm: float,
    fltnorm_fp: float,
    spec: CorrectionSpec,
) -> tuple[np.ndarray, int, int]:
    """Science pixels, bad-flat and non-finite pixel counts (one compiled pass, bitwise
    equal to :func:`detrend` of the corrected quadrant)."""
    factor = _norm_factor(fltnorm, fltnorm_fp)  # fail before the (costly) corrections
    try:
        return correct_and_detrend_quadrant(data, overscan, ccdid, qid, date, bias, flat, factor,
                                            spec)  # fmt: skip
    except ValueError as exc:  # master shapes, the NL domain: this quadrant fails in one line
        raise ScienceError(str(exc)) from None


def science_quadrant_data(
    data: np.ndarray,
    overscan: np.ndarray,
    ccdid: int,
    qid: int,
    date: dt.date,
    bias: np.ndarray,
    flat: np.ndarray,
    fltnorm: float,
    fltnorm_fp: float,
    spec: CorrectionSpec = DEFAULT_SPEC,
) -> np.ndarray:
    """One science quadrant in **raw/IPAC orientation**, correcting only that quadrant.

    ``data``/``overscan`` are the raw quadrant and its overscan (raw orientation, as
    :func:`ztfluigi.raw.read_raw` returns them); ``bias``/``flat`` the sky-oriented master CCDs.
    Equal, bit for bit, to ``split_ccd(science_ccd(correct_ccd(...), ...))[qid]``.
    """
    out, nbad, _ = _quadrant_detrend(
        data, overscan, ccdid, qid, date, bias, flat, fltnorm, fltnorm_fp, spec
    )
    _warn_bad(nbad, f"science quadrant c{ccdid:02d} q{qid}")
    return out


def science_saturation(
    level: float,
    flat_median: float,
    fltnorm: float,
    fltnorm_fp: float,
    bias_level: float = 0.0,
) -> float:
    """Saturation level of the science image (DN): ``(level − bias) / flat × FLTNORM_FP/FLTNORM``.

    ``level`` is the saturation in corrected DN (overscan- and NL-corrected); ``bias_level`` the
    master-bias level to remove (0 when ``level`` is already bias-subtracted); ``flat_median``
    the normalised flat the level refers to (the quadrant's median flat). Pixels with a flat
    below that median saturate above the returned value, those above it below.
    """
    factor = float(_norm_factor(fltnorm, fltnorm_fp))
    if not np.isfinite(flat_median) or flat_median <= 0:
        raise ScienceError(f"flat median must be positive, got {flat_median!r}")
    return (float(level) - float(bias_level)) / float(flat_median) * factor


# --- header ----------------------------------------------------------------------------------


def _is_structural(key: str) -> bool:
    return bool(_STRUCTURAL.match(key))


class _CardList:
    """A header being merged, as a list of cards placed by astropy's ``Header.append`` and
    update rules (same order and values), made into one :class:`fits.Header` at the end: an
    astropy header re-indexes itself on every insertion and deletion (≈ 8 ms a quadrant here).
    Source cards are copied, never shared: the raw header serves four quadrants."""

    def __init__(self) -> None:
        self.cards: list[fits.Card] = []
        self.first: dict[str, fits.Card] = {}  #: keyword → its first card (not commentary)

    def append(self, card: fits.Card) -> None:
        """``Header.append(card)``: blank cards at the end; others before the trailing blanks
        (non-commentary ones also before the trailing commentary), one trailing blank used up."""
        key = card.keyword
        if card.is_blank:
            self.cards.append(card)
        else:
            idx = len(self.cards)
            while idx and self.cards[idx - 1].is_blank:
                idx -= 1
            if key not in _COMMENTARY:
                while idx and self.cards[idx - 1].keyword in _COMMENTARY:
                    idx -= 1
            self.cards.insert(idx, card)
            if self.cards[-1].is_blank:  # Header._useblanks
                for _ in range(len(str(card)) // fits.Card.length):
                    if not self.cards[-1].is_blank:
                        break
                    del self.cards[-1]
        if key not in _COMMENTARY and key not in self.first:
            self.first[key] = card

    def replace(self, old: fits.Card, new: fits.Card) -> None:
        """``new`` in the place of ``old`` (an update, a rename)."""
        self.cards[self.cards.index(old)] = new
        del self.first[old.keyword]
        self.first.setdefault(new.keyword, new)

    def update(self, key: str, value: object, comment: str | None) -> None:
        """``header[key] = (value, comment)`` (``comment`` None keeps an existing comment)."""
        old = self.first.get(fits.Card.normalize_keyword(key))
        if old is None:
            self.append(fits.Card(key, value, comment or ""))
        else:
            self.replace(old, fits.Card(key, value, old.comment if comment is None else comment))

    def merge(self, other: fits.Header, skip: Callable[[str], bool]) -> None:
        """``dict.update``-like merge of ``other``'s cards (commentary cards appended)."""
        for card in other.cards:
            key = card.keyword
            if skip(key):
                continue
            old = None if key in _COMMENTARY else self.first.get(key)
            if old is None:
                self.append(copy.copy(card))
            else:  # the value and comment of ``card`` in the place of ``old``
                self.replace(old, copy.copy(card))

    def remove(self, drop: Callable[[str], bool]) -> None:
        """Every card whose keyword ``drop`` names (``del header[key]``: all occurrences)."""
        self.cards = [c for c in self.cards if not drop(c.keyword)]
        for key in [k for k in self.first if drop(k)]:
            del self.first[key]

    def header(self) -> fits.Header:
        return fits.Header(self.cards)


def _card_key(key: str) -> str:
    return key if len(key) <= 8 or key.startswith("HIERARCH ") else f"HIERARCH {key}"


def science_header(
    raw_primary: fits.Header,
    raw_extension: fits.Header,
    ipac_header: fits.Header,
    provenance: Mapping[str, object],
) -> fits.Header:
    """The science quadrant header.

    1. raw primary header without structural keys; updated with
    2. the raw quadrant-extension header without structural and tile-compression (``Z*``) keys;
       updated with
    3. the IPAC ``sciimg`` header (structural keys removed): IPAC values win (TPV WCS, ids);
    4. keys starting with :data:`REFERENCE_DROPPED_PREFIXES` removed, as the reference;
    5. trap 13: :data:`IPAC_RENAMED` keys renamed in place with the comment "… IPAC's image, not
       this one", :data:`IPAC_DROPPED` removed — our image has its own scale, so IPAC's zero
       points and saturation level do not apply to it;
    6. ``provenance`` added last (its keys win, even ``CAL*`` ones): a value or a
       ``(value, comment)`` tuple; ``None`` values are skipped, dates written as ISO strings,
       keys longer than 8 characters as HIERARCH cards. A ``SATURATE`` entry here is the
       saturation level of *our* image (see :func:`science_saturation`); without it the header
       has no ``SATURATE``.
    """
    out = _CardList()
    out.merge(raw_primary, _is_structural)
    out.merge(raw_extension, lambda k: _is_structural(k) or k.startswith("Z"))
    out.merge(ipac_header, _is_structural)
    out.remove(lambda k: k.startswith(REFERENCE_DROPPED_PREFIXES) or k in IPAC_DROPPED)
    for old, new in IPAC_RENAMED.items():
        card = out.first.get(old)
        if card is not None:
            out.remove(lambda k, new=new: k == new)
            out.replace(card, fits.Card(new, card.value, f"IPAC {old} of {IPAC_NOTE}"[:72]))
    for key, item in provenance.items():
        value, comment = item if isinstance(item, tuple) else (item, None)
        if value is None:
            continue
        if isinstance(value, dt.date):
            value = value.isoformat()
        elif isinstance(value, np.generic):
            value = value.item()
        out.update(_card_key(key), value, comment)
    return out.header()


def science_provenance(
    bias_file: str,
    flat_file: str,
    fp_file: str,
    fltnorm: float,
    fltnorm_fp: float,
    calibration: Mapping[str, object] | None = None,
    spec: CorrectionSpec | None = None,
    saturate: float | None = None,
    raw_file: str | None = None,
) -> dict[str, object]:
    """The provenance cards of a science quadrant, for :func:`science_header`.

    ``calibration`` is the matching record (e.g. ``CalibrationMatch.header_cards()`` of
    :mod:`ztfluigi.calmatch`: ``CALNIGHT``, ``CALDELTA``…); ``spec`` the raw corrections.
    No wall-clock time is written (rebuilding gives identical headers).
    """
    record = prov.Provenance().extend(prov.version_cards())
    record.add("RAWFILE", raw_file, "raw CCD file")
    record.add("BIASFILE", bias_file, "master bias used")
    record.add("FLATFILE", flat_file, "master flat used")
    record.add("FPFILE", fp_file, "focal-plane level")
    record.add("FLTNORM", float(fltnorm), "flat level of this CCD (DN)")
    record.add("FLTNORM_FP", float(fltnorm_fp), "focal-plane flat level (DN)")
    record.add("SCIFORM", "(R-B)/Fn*FLTNORM_FP/FLTNORM", "science pixel formula")
    record.extend(prov.step_cards([spec] if spec is not None else []))
    out: dict[str, object] = dict(record.mapping())
    for key, value in (calibration or {}).items():
        out[key] = value
    if saturate is not None:
        out["SATURATE"] = (round(float(saturate), 3), "est. saturation of this image [DN]")
    return out


# --- the whole quadrant ----------------------------------------------------------------------


def science_mask(
    ipac_mask: np.ndarray | None, data: np.ndarray, nonfinite: int | None = None
) -> np.ndarray:
    """IPAC bit mask (int16, copied) with bit 10 (NAN) set where ``data`` is not finite;
    ``nonfinite``: how many pixels of ``data`` are not finite, when the caller counted them (0
    spares the scan)."""
    if ipac_mask is None:
        mask = np.zeros(data.shape, np.int16)
    else:
        if np.shape(ipac_mask) != data.shape:
            raise ScienceError(f"mask shape {np.shape(ipac_mask)} != data shape {data.shape}")
        mask = np.array(ipac_mask, dtype=np.int16, copy=True)
    if nonfinite != 0:
        mask[~np.isfinite(data)] |= np.int16(1 << MASK_NAN_BIT)
    return mask


def quadrant_flat_median(flat: np.ndarray, qid: int) -> float:
    """Median of a quadrant's usable flat pixels (NaN if none): the flat ``SATURATE`` refers to."""
    flat_q = quadrant_of(flat, qid)
    good = flat_q[~bad_flat(flat_q)]
    return float(np.median(good)) if good.size else float("nan")


def build_science_quadrant(
    raw: RawCCD,
    rawname: RawName,
    qid: int,
    bias: np.ndarray,
    flat: np.ndarray,
    fltnorm: float,
    fltnorm_fp: float,
    ipac_header: fits.Header,
    ipac_mask: np.ndarray | None,
    provenance: Mapping[str, object] | None = None,
    spec: CorrectionSpec = DEFAULT_SPEC,
    saturation: float | None = None,
    flat_median: float | None = None,
) -> ScienceQuadrant:
    """Pixels, header and mask of one science quadrant (raw/IPAC orientation).

    ``provenance``: cards from :func:`science_provenance` (or any mapping). ``saturation``: the
    saturation level in bias-subtracted corrected DN at unit flat; when ``None``, IPAC's
    ``SATURATE`` is used as that level (IPAC's image is bias-subtracted DN divided by a
    unit-median flat, so its SATURATE is the same physical level). Our ``SATURATE`` is then
    :func:`science_saturation` at the quadrant's median flat (``flat_median``: that median, from
    :func:`quadrant_flat_median`, when the caller computed it once for many exposures); no level
    → no ``SATURATE``.
    """
    data, nbad, nonfinite = _quadrant_detrend(
        raw.data[qid], raw.overscan[qid], rawname.ccdid, qid, rawname.date,
        bias, flat, fltnorm, fltnorm_fp, spec,
    )  # fmt: skip
    _warn_bad(nbad, f"{rawname.filename} q{qid}")
    cards = dict(provenance or {})
    if "SATURATE" not in cards:
        level, source = saturation, "given level"
        if level is None and "SATURATE" in ipac_header:
            level, source = float(ipac_header["SATURATE"]), "IPAC SATURATE rescaled"
        if flat_median is None and level is not None:
            flat_median = quadrant_flat_median(flat, qid)
        if level is not None and np.isfinite(flat_median):
            sat = science_saturation(level, flat_median, fltnorm, fltnorm_fp)
            cards["SATURATE"] = (round(sat, 3), "est. saturation of this image [DN]")
            cards["SATSRC"] = (source, "origin of SATURATE (at median flat)")
    cards.setdefault("NBADFLAT", (nbad, "pixels NaN: flat <= 0 or not finite"))
    header = science_header(raw.header, raw.quadrant_headers[qid], ipac_header, cards)
    return ScienceQuadrant(data, header, science_mask(ipac_mask, data, nonfinite))


# --- a quadrant from stored products --------------------------------------------------------


@dataclass
class Calibration:
    """The calibration arrays and provenance shared by the quadrants of one CCD and filter.

    ``files`` names the products (``bias``, ``flat``, ``fp``); ``match`` records which nights
    were chosen (:class:`ztfluigi.calmatch.CalibrationMatch`); ``recorded`` holds the cards of
    the steps that built the masters (their correction and clipping specs, read back from their
    headers), so a catalogue can say how its calibrations were made.
    """

    bias: np.ndarray
    flat: np.ndarray
    fltnorm: float
    fltnorm_fp: float
    files: dict[str, str]
    match: CalibrationMatch
    recorded: dict[str, list[prov.Card]]
    #: per-quadrant median flat (SATURATE), computed once for all the exposures it serves
    flat_medians: dict[int, float]
    #: the zi fringe modes subtracted from its science quadrants (``files["fringe"]`` names it)
    fringe: fringes.FringeModel | None = None

    def with_fringe(self, model: fringes.FringeModel, file: str) -> Calibration:
        """This calibration with a fringe model to subtract (the model of the CCD's period)."""
        return dataclasses.replace(self, fringe=model, files={**self.files, "fringe": file})

    @classmethod
    def from_products(
        cls,
        bias_hdul: fits.HDUList,
        flat_hdul: fits.HDUList,
        fltnorm_fp: float,
        files: Mapping[str, str],
        match: CalibrationMatch,
        recorded_keywords: Sequence[str] = (),
    ) -> Calibration:
        """From the master bias and flat FITS products and the focal-plane level."""
        bias = np.asarray(bias_hdul[0].data, np.float32)
        flat = np.asarray(flat_hdul[0].data, np.float32)
        recorded = {
            "bias": prov.recorded_cards(bias_hdul[0].header, recorded_keywords),
            "flat": prov.recorded_cards(flat_hdul[0].header, recorded_keywords),
        }
        medians = {q: quadrant_flat_median(flat, q) for q in range(1, 5)}
        fltnorm = float(flat_hdul[0].header["FLTNORM"])
        return cls(bias, flat, fltnorm, fltnorm_fp, dict(files), match, recorded, medians)


def calibrated_quadrant(
    ccd: RawCCD,
    rawname: RawName,
    qid: int,
    calibration: Calibration,
    ipac_header: fits.Header,
    ipac_mask: np.ndarray | None,
    spec: CorrectionSpec = DEFAULT_SPEC,
) -> ScienceQuadrant:
    """The virtual science quadrant of a raw CCD with its matched calibration and IPAC inputs;
    the calibration's fringe model, if any, is fitted and subtracted (:func:`defringed`)."""
    cards = science_provenance(
        calibration.files["bias"], calibration.files["flat"], calibration.files["fp"],
        calibration.fltnorm, calibration.fltnorm_fp, calibration.match.header_cards(), spec,
        raw_file=rawname.filename,
    )  # fmt: skip
    sci = build_science_quadrant(
        ccd, rawname, qid, calibration.bias, calibration.flat, calibration.fltnorm,
        calibration.fltnorm_fp, ipac_header, ipac_mask, cards, spec,
        flat_median=calibration.flat_medians[qid],
    )  # fmt: skip
    if calibration.fringe is None:
        return sci
    if calibration.fringe.ccdid != rawname.ccdid:
        raise ScienceError(f"fringe model of CCD {calibration.fringe.ccdid} given for "
                           f"{rawname.filename}")  # fmt: skip
    return defringed(sci, calibration.fringe.quadrants[qid].modes, calibration.files["fringe"])


def defringed(sci: ScienceQuadrant, modes: np.ndarray, model_file: str) -> ScienceQuadrant:
    """The quadrant with its fitted fringe subtracted (before background and photometry), the
    fit recorded in its header (``FRNG*``: model, coefficients, subtracted RMS)."""
    fit = fringes.correct(sci.data, sci.mask, modes)
    header = sci.header.copy()
    header.update(fringes.header_cards(fit, model_file))
    return ScienceQuadrant(fit.data, header, sci.mask)
