"""Provenance cards for products: pipeline and package versions, inputs, and the specs that ran.

Like ccdproc's ``log_to_metadata``: each processing step is described by the spec object it ran
with (``CorrectionSpec``, ``ClipSpec``…), whose ``header_cards()`` go into the product header,
so the record comes from the code that ran, not from a hand-kept list.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from importlib import metadata

from astropy.io import fits

PIPELINE = "ZTFLUIGI"
PACKAGES = ("ztfluigi", "numpy", "astropy", "fitsio", "luigi")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the pixels."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def provenance_header(
    imgtype: str,
    date: dt.date,
    ccdid: int | None,
    inputs: Sequence[str],
    steps: Iterable[object] = (),
    input_key: str = "INPUT",
) -> fits.Header:
    """Header cards of a master calibration (ztfin2p3's keys + inputs + the steps' specs).

    No wall-clock time is written: rebuilding a deleted product gives identical bytes.
    """
    h = fits.Header()
    h["IMGTYPE"] = (imgtype, "product type")
    h["NFRAMES"] = (len(inputs), "number of input raw frames")
    h["NDAYS"] = (1, "number of nights combined")
    h["PTYPE"] = ("daily", "period type")
    h["PERIOD"] = (f"{date:%Y%m%d}", "UT date of the calibration night")
    if ccdid is not None:
        h["CCDID"] = (ccdid, "CCD id")
    h["PIPELINE"] = (PIPELINE, "pipeline that built this product")
    for name, version in package_versions().items():
        h[f"V_{name.upper()[:6]}"] = (version, f"{name} version")
    for step in steps:
        for card in step.header_cards():
            h.append(card)
    for i, name in enumerate(inputs, start=1):
        h[f"{input_key}{i:03d}"[:8]] = (name, "input file")
    return h
