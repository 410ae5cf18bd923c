"""FITS headers of the synthetic archive, built from the real ZTF header fixtures.

The real IPAC science header (``data/ztf_…_sciimg.header.txt``) is the raw primary header, the raw
quadrant-extension header and IPAC's keys, in that order (``ztf_formats.md`` §2.2–2.4). Its cards
(names, order, comments) are the templates; the simulator only replaces values.
"""

from __future__ import annotations

import datetime as dt
import functools
from importlib import resources

import numpy as np
from astropy.io import fits
from astropy.time import Time

from ztfluigi import camera, naming
from ztfluigi.sim import ephemeris
from ztfluigi.sim.detector import Amplifier
from ztfluigi.sim.schedule import LED_WAVELENGTH_NM, Exposure, rng_for

SCIENCE_HEADER = "ztf_20200924431759_000655_zr_c13_o_q3_sciimg.header.txt"
MASK_HEADER = "ztf_20200924431759_000655_zr_c13_o_q3_mskimg.header.txt"
_STRUCTURAL = ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT", "EXTEND")
FILTER_NAMES = {"zg": "ZTF_g", "zr": "ZTF_r", "zi": "ZTF_i"}
MASK_BITS = {  # IPAC mskimg bit → meaning (ztf_formats.md §2.4)
    0: "AIRCRAFT/SATELLITE TRACK", 1: "CONTAINS SEXTRACTOR DETECTION", 2: "LOW RESPONSIVITY",
    3: "HIGH RESPONSIVITY", 4: "NOISY", 5: "GHOST FROM BRIGHT SOURCE",
    6: "POSSIBLE GHOST FROM CHARGE SPILLAGE", 7: "PIXEL SPIKE (POSSIBLE RAD HIT)", 8: "SATURATED",
    9: "DEAD (UNRESPONSIVE)", 10: "NAN (not a number)",
    11: "CONTAINS PSF-EXTRACTED SOURCE POSITION",
    12: "HALO FROM BRIGHT SOURCE",
}  # fmt: skip


def _read_header(name: str) -> fits.Header:
    text = (resources.files("ztfluigi") / "data" / name).read_text()
    return fits.Header.fromstring(text, sep="\n")


@functools.cache
def real_science_header() -> fits.Header:
    """The header of the real IPAC science quadrant shipped in ``ztfluigi/data``."""
    return _read_header(SCIENCE_HEADER)


@functools.cache
def real_mask_header() -> fits.Header:
    """The header of its mask."""
    return _read_header(MASK_HEADER)


def _section(first: str, last: str) -> list[fits.Card]:
    cards = list(real_science_header().cards)
    keys = [c.keyword for c in cards]
    return [c for c in cards[keys.index(first) : keys.index(last) + 1]]


@functools.cache
def raw_primary_keywords() -> tuple[str, ...]:
    """Keywords of a real raw primary header (ORIGIN … NFRAMES of the real merged header)."""
    return tuple(c.keyword for c in _section("ORIGIN", "NFRAMES"))


@functools.cache
def raw_extension_keywords() -> tuple[str, ...]:
    """Keywords of a real raw quadrant extension (EXTNAME … CD2_2, CCD_ROT)."""
    keys = [c.keyword for c in _section("EXTNAME", "CD2_2") if c.keyword not in ("HISTORY",)]
    return tuple(keys + ["CCD_ROT"])


def _sexagesimal(deg: float, hours: bool) -> str:
    value = deg / 15.0 if hours else deg
    sign = "-" if value < 0 else "+"
    value = abs(value)
    d = int(value)
    m = int((value - d) * 60)
    s = ((value - d) * 60 - m) * 60
    if hours:
        return f"{sign}{d:02d}h{m:02d}m{s:05.2f}s"
    return f"{sign}{d:02d}d{m:02d}m{s:02.0f}s"


def _colon(deg: float, hours: bool) -> str:
    value = deg / 15.0 if hours else deg
    sign = "-" if value < 0 else "+"
    value = abs(value)
    d, m = int(value), int((abs(value) - int(value)) * 60)
    s = ((value - d) * 60 - m) * 60
    return f"{sign}{d:02d}:{m:02d}:{s:05.2f}" if hours else f"{sign}{d:02d}:{m:02d}:{s:04.1f}"


def raw_primary_header(exp: Exposure, ccdid: int) -> fits.Header:
    """The primary header of one raw CCD file: every real raw keyword, values of this exposure."""
    raw = exp.raw_name(ccdid)
    t_open = Time(exp.obsjd, format="jd", scale="utc")
    alt, az = ephemeris.altaz(exp.ra, exp.dec, exp.obsjd)
    ha = float(ephemeris.hour_angle_deg(exp.ra, exp.obsjd))
    sun_alt, sun_az = ephemeris.altaz(*ephemeris.sun_radec(exp.obsjd), exp.obsjd)
    moon_ra, moon_dec = ephemeris.moon_radec(exp.obsjd)
    moon_alt, _ = ephemeris.altaz(moon_ra, moon_dec, exp.obsjd)
    illum = float(ephemeris.moon_illuminated_fraction(exp.obsjd))
    night = rng_for(0, "weather", raw.filefracday[:8])  # weather: one value set per night
    exp_rng = rng_for(0, "exposure-header", raw.filefracday)
    wheel = exp.wheel_filter
    values: dict[str, object] = {
        "IMGTYPE": exp.imgtype, "EXPOSURE": exp.exptime, "EXPTIME": exp.exptime,
        "FILENAME": raw.filename.removesuffix(".fz"), "ORIGNAME": raw.filename.removesuffix(".fz"),
        "FRAMENUM": exp.framenum, "HEADTEMP": round(168.0 + night.normal(0, 0.05), 3),
        "DEWPRESS": 6.5e-05, "FIELDID": exp.field,
        "OBJRA": _sexagesimal(exp.ra, True), "OBJDEC": _sexagesimal(exp.dec, False),
        "OBJRAD": round(exp.ra, 4), "OBJDECD": round(exp.dec, 4),
        "REQUSTID": int(exp_rng.integers(1, 400)),
        "QCOMMENT": "all_sky" if exp.imgtype == "object" else "calibration",
        "TEMPTURE": round(night.normal(12, 4), 1), "WINDSPD": round(abs(night.normal(3, 2)), 1),
        "WINDDIR": round(night.uniform(0, 360), 0), "DEWPOINT": round(night.normal(0, 4), 1),
        "HUMIDITY": round(night.uniform(10, 60), 0),
        "SUNAZ": round(float(sun_az), 4), "SUNALT": round(float(sun_alt), 4),
        "MOONRA": round(float(moon_ra), 3), "MOONDEC": round(float(moon_dec), 3),
        "MOONALT": round(float(moon_alt), 4), "MOONILLF": round(illum, 6),
        "MOONPHAS": round(float(np.degrees(np.arccos(1 - 2 * illum))), 4),
        "MOONESB": 0.0, "PROGRMID": 1 if exp.imgtype == "object" else 0,
        "FILTERID": naming.FILTER_IDS[wheel], "FILTER": FILTER_NAMES[wheel],
        "FILTPOS": naming.FILTER_IDS[wheel],
        "OBSJD": round(exp.obsjd, 7), "OBSMJD": round(exp.obsjd - 2400000.5, 7),
        "HJD": round(exp.obsjd, 7),
        "OBLST": _colon(float(ephemeris.lst_deg(exp.obsjd)), True),
        "HOURANG": _colon(ha, True), "HOURANGD": round(ha, 6),
        "RA": _colon(exp.ra, True), "DEC": _colon(exp.dec, False),
        "RAD": round(exp.ra, 4), "DECD": round(exp.dec, 4),
        "TELRA": _colon(exp.ra, True), "TELDEC": _colon(exp.dec, False),
        "TELRAD": round(exp.ra, 4), "TELDECD": round(exp.dec, 4),
        "AZIMUTH": round(float(az), 2), "ELVATION": round(float(alt), 2),
        "AIRMASS": round(float(ephemeris.airmass(alt)), 3) if alt > 10 else 10.156,
        "DOME_AZ": round(float(az), 1),
        "DOMESTAT": "Open" if exp.imgtype == "object" else "Closed",
        "SHUTOPEN": t_open.isot,
        "SHUTCLSD": Time(exp.obsjd + exp.exptime / 86400.0, format="jd", scale="utc").isot,
    }  # fmt: skip
    for i in range(1, 17):
        values[f"CCDTMP{i:02d}"] = round(172.0 + rng_for(0, "ccdtemp", i).normal(0, 2), 3)
    values["CCDTMP05"] = -7.12424  # the broken sensor of the real camera
    h = fits.Header()
    for card in _section("ORIGIN", "NFRAMES"):
        if card.keyword in values:
            h.append((card.keyword, values[card.keyword], card.comment))
        else:
            h.append(card)
        if card.keyword == "FILENAME":
            h.append(("CCD_ID", ccdid, "ID value of CCD detector"))
        if card.keyword == "FILTPOS" and exp.imgtype == "flat":
            h.append(("ILUM_LED", exp.led, "Illuminator LED ID"))
            h.append(("ILUMWAVE", LED_WAVELENGTH_NM[exp.led], "Illuminator LED wavelength (nm)"))
            h.append(("ILUMPOWR", 100.0, "Illuminator LED power (%)"))
    return h


def raw_extension_header(amp: Amplifier, wcs: fits.Header) -> fits.Header:
    """A raw quadrant extension header: amplifier keys and the camera's nominal (linear) WCS."""
    h = fits.Header()
    h.append(("EXTNAME", str(amp.qid)))
    h.append(("HDUVERS", 1))
    h.append(("CCD_ID", amp.ccdid, "ID value of CCD detector"))
    h.append(("CCDNAME", f"S{amp.ccdid:02d}", "Detector name or serial number"))
    h.append(("AMP_ID", amp.qid - 1, "ID value of CCD amplifier"))
    h.append(("AMP_NAME", camera.AMP_NAMES[amp.qid], "Name of CCD amplifier"))
    h.append(("GAIN", round(amp.gain, 3), "Gain e-/adu"))
    h.append(("READNOI", round(amp.read_noise, 2), "Read noise e-"))
    h.append(("DARKCUR", 1.0, "Dark current e-/s @ 150 K"))
    for card in wcs.cards:
        if card.keyword.startswith("PV"):
            continue
        value = card.value.replace("TPV", "TAN") if card.keyword.startswith("CTYPE") else card.value
        h.append((card.keyword, value, card.comment))
    h.append(("CCD_ROT", 0.0, "CCD rotation angle"))
    return h


def ipac_science_header(
    primary: fits.Header, extension: fits.Header, wcs: fits.Header, ipac: dict[str, object]
) -> fits.Header:
    """An IPAC-like ``sciimg`` header: the real card list, values from this quadrant.

    ``ipac`` carries the IPAC keys the simulator knows (MAGZP, SATURATE, SEEING, ids, …).
    """
    return _merged(real_science_header(), primary, extension, wcs, ipac)


def ipac_mask_header(
    primary: fits.Header, extension: fits.Header, wcs: fits.Header, ipac: dict[str, object]
) -> fits.Header:
    """An IPAC-like ``mskimg`` header (mask bit definitions BIT00…BIT15)."""
    return _merged(real_mask_header(), primary, extension, wcs, ipac)


def _merged(
    template: fits.Header,
    primary: fits.Header,
    extension: fits.Header,
    wcs: fits.Header,
    ipac: dict[str, object],
) -> fits.Header:
    sources = [primary, extension, wcs]
    out = fits.Header()
    extra_primary = [k for k in primary if k not in template]  # CCD_ID, ILUM_*
    for card in template.cards:
        key = card.keyword
        if key in _STRUCTURAL or key in ("HISTORY", "COMMENT"):
            continue
        value = card.value
        for src in sources:
            if key in src:
                value = src[key]
        if key in ipac:
            value = ipac[key]
        out.append((key, value, card.comment))
        if key == "NFRAMES":
            for k in extra_primary:
                out.append((k, primary[k], primary.comments[k]))
    return out


def ipac_created(obsjd: float) -> str:
    """IPAC's CREATED stamp (Pacific time, a few minutes after the exposure)."""
    t = Time(obsjd, format="jd").to_datetime() - dt.timedelta(hours=8) + dt.timedelta(minutes=4)
    return t.strftime("%Y-%m-%dT%H:%M:%S")
