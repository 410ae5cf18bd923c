"""Provenance: what built a product, recorded once and written as FITS cards or parquet metadata.

Like ccdproc's ``log_to_metadata``: each processing step is described by the spec object it ran
with (``CorrectionSpec``, ``ClipSpec``, ``ClipStats``…), whose ``header_cards()`` are the record,
so it comes from the code that ran, not from a hand-kept list. A :class:`Provenance` is an
ordered list of ``(keyword, value, comment)`` cards; :meth:`Provenance.header` writes it into a
FITS header, :meth:`Provenance.metadata` into parquet key-value metadata (``prefix.KEYWORD``).
No wall-clock time is ever written: rebuilding a deleted product gives identical bytes.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata

import numpy as np
from astropy.io import fits

PIPELINE = "ZTFLUIGI"
PACKAGES = ("ztfluigi", "numpy", "astropy", "fitsio", "luigi", "sep", "numba", "scipy", "pyarrow")

Card = tuple[str, object, str]


@functools.cache
def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the pixels (read once per process)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def version_cards() -> list[Card]:
    """``PIPELINE`` and one ``V_xxxxxx`` card per package of :data:`PACKAGES`."""
    cards: list[Card] = [("PIPELINE", PIPELINE, "pipeline that built this product")]
    cards += [(f"V_{name.upper()[:6]}", version, f"{name} version")
              for name, version in package_versions().items()]  # fmt: skip
    return cards


def step_cards(steps: Iterable[object]) -> list[Card]:
    """The cards of the specs (and statistics) of the steps that ran, in order."""
    return [card for step in steps for card in step.header_cards()]


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


@dataclass
class Provenance:
    """An ordered record of cards: versions, inputs, the steps' specs, product-specific values."""

    cards: list[Card] = field(default_factory=list)

    def add(self, keyword: str, value: object, comment: str = "") -> Provenance:
        """Append (or replace) one card; returns self for chaining."""
        self.cards = [c for c in self.cards if c[0] != keyword]
        self.cards.append((keyword, _plain(value), comment))
        return self

    def extend(self, cards: Iterable[Card]) -> Provenance:
        for keyword, value, comment in cards:
            self.add(keyword, value, comment)
        return self

    def __contains__(self, keyword: str) -> bool:
        return any(c[0] == keyword for c in self.cards)

    def header(self, into: fits.Header | None = None) -> fits.Header:
        """The cards as a FITS header (keywords over 8 characters as HIERARCH cards)."""
        h = fits.Header() if into is None else into
        for keyword, value, comment in self.cards:
            if value is None:
                continue
            key = keyword if len(keyword) <= 8 else f"HIERARCH {keyword}"
            h[key] = (value, comment) if comment else value
        return h

    def mapping(self) -> dict[str, tuple[object, str]]:
        """``{keyword: (value, comment)}``, e.g. for :func:`ztfluigi.science.science_header`."""
        return {k: (v, c) for k, v, c in self.cards}

    def metadata(self, prefix: str) -> dict[str, str]:
        """The cards as parquet key-value metadata: ``{prefix.KEYWORD: str(value)}``."""
        return {f"{prefix}.{k}": str(v) for k, v, _ in self.cards if v is not None}


def recorded_cards(
    header: fits.Header | Mapping[str, object], keywords: Iterable[str]
) -> list[Card]:
    """The cards of ``keywords`` present in a product's header (what ran when it was built)."""
    out: list[Card] = []
    for key in keywords:
        if key in header:
            comment = header.comments[key] if isinstance(header, fits.Header) else ""
            out.append((key, _plain(header[key]), comment))
    return out


def master_provenance(
    imgtype: str,
    date: dt.date,
    ccdid: int | None,
    inputs: Sequence[str],
    steps: Iterable[object] = (),
    input_key: str = "INPUT",
) -> Provenance:
    """Provenance of a master calibration: ztfin2p3's keys, versions, steps, input files."""
    record = Provenance()
    record.add("IMGTYPE", imgtype, "product type")
    record.add("NFRAMES", len(inputs), "number of input raw frames")
    record.add("NDAYS", 1, "number of nights combined")
    record.add("PTYPE", "daily", "period type")
    record.add("PERIOD", f"{date:%Y%m%d}", "UT date of the calibration night")
    if ccdid is not None:
        record.add("CCDID", ccdid, "CCD id")
    record.extend(version_cards())
    record.extend(step_cards(steps))
    for i, name in enumerate(inputs, start=1):
        record.add(f"{input_key}{i:03d}"[:8], name, "input file")
    return record
