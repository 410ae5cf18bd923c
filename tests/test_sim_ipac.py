"""The simulated IPAC mask: the fast path equals the full-render definition bit for bit."""

from __future__ import annotations

import dataclasses
import datetime as dt

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord

from ztfluigi.archive.server import _fits_bytes
from ztfluigi.archive.sim import SimArchive
from ztfluigi.sim import ipac
from ztfluigi.sim.schedule import SimConfig

DATE = dt.date(2019, 3, 31)
SATURATED = 1 << ipac.BIT["saturated"]


def science_exposures(scale: int) -> tuple[SimArchive, dict]:
    archive = SimArchive(SimConfig(seed=0, scale=scale))
    exps = {k: e for k, e in archive.exposures(DATE).items() if e.imgtype == "object"}
    return archive, exps


def in_plane(exp, b_deg: float):
    """The same exposure pointed at galactic latitude ``b_deg`` (crowded, many saturated stars)."""
    c = SkyCoord(l=60 * u.deg, b=b_deg * u.deg, frame="galactic").icrs
    return dataclasses.replace(exp, ra=float(c.ra.deg), dec=float(c.dec.deg))


# (filefracday, ccdid, qid) of the demo night at scale 8: with and without saturated stars.
SCALE8_QUADRANTS = [
    ("20190331193216", 5, 1),
    ("20190331193679", 13, 2),
    ("20190331327908", 4, 1),
    ("20190331192753", 10, 3),
    ("20190331462136", 16, 4),
    ("20190331328371", 1, 2),
]


def test_mask_equals_reference_scale8():
    archive, exps = science_exposures(8)
    saturated = 0
    for ffd, ccdid, qid in SCALE8_QUADRANTS:
        ref = ipac.mask_reference(archive.config, DATE, exps[ffd], ccdid, qid)
        new = ipac.mask(archive.config, DATE, exps[ffd], ccdid, qid)
        assert new.dtype == ref.dtype == np.int16
        np.testing.assert_array_equal(new, ref, err_msg=f"{ffd} c{ccdid} q{qid}")
        saturated += int(np.count_nonzero(ref & SATURATED))
    assert saturated > 0  # the exact evaluation around bright stars was exercised


def test_mask_equals_reference_crowded_field():
    archive, exps = science_exposures(8)
    exp = in_plane(next(iter(exps.values())), 1.0)
    found = 0
    for ccdid, qid in ((5, 1), (9, 2)):
        ref = ipac.mask_reference(archive.config, DATE, exp, ccdid, qid)
        np.testing.assert_array_equal(ipac.mask(archive.config, DATE, exp, ccdid, qid), ref)
        found += int(np.count_nonzero(ref & SATURATED))
    assert found > 0


def test_served_mask_file_unchanged():
    """What the archive serves (header + mask as a FITS file) is byte-identical."""
    archive, exps = science_exposures(8)
    ffd, ccdid, qid = SCALE8_QUADRANTS[0]
    exp = exps[ffd]
    header, data = archive.science_mask(exp.raw_name(ccdid), qid)
    ref = ipac.mask_reference(archive.config, DATE, exp, ccdid, qid)
    assert _fits_bytes(header, data) == _fits_bytes(header, ref)


def test_mask_equals_reference_scale1():
    """One real-size quadrant (≈2 s: the reference renders the whole image)."""
    archive, exps = science_exposures(1)
    exp = exps["20190331192753"]
    ref = ipac.mask_reference(archive.config, DATE, exp, 5, 1)
    new = ipac.mask(archive.config, DATE, exp, 5, 1)
    np.testing.assert_array_equal(new, ref)
    assert np.count_nonzero(ref & SATURATED) > 0


def test_headers_built_once_and_unchanged():
    """The cached science header equals a fresh build; callers get independent copies."""
    archive, exps = science_exposures(8)
    ffd, ccdid, qid = SCALE8_QUADRANTS[1]
    exp = exps[ffd]
    fresh = ipac._science_header.__wrapped__(archive.config, DATE, exp, ccdid, qid)
    served = archive.science_header(exp.raw_name(ccdid), qid)
    assert served.tostring() == fresh.tostring()
    served["MAGZP"] = -1.0
    again = ipac.science_header(archive.config, DATE, exp, ccdid, qid)
    assert again["MAGZP"] == fresh["MAGZP"] != -1.0
    mask_header, _ = archive.science_mask(exp.raw_name(ccdid), qid)
    shared = [k for k in mask_header if k in fresh and not k.startswith("BIT") and k != "COMMENT"]
    assert "CRVAL1" in shared and len(shared) > 20
    assert all(mask_header[k] == fresh[k] for k in shared)
