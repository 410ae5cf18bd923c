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


def test_mask_equals_reference_with_fringes():
    """zi science with ``[sim] fringes`` on: the sky the stars are added to carries fringes."""
    archive = SimArchive(SimConfig(seed=0, scale=8, fringes=True))
    exps = {k: e for k, e in archive.exposures(DATE).items() if e.imgtype == "object"}
    saturated = 0
    for ffd, ccdid, qid in SCALE8_QUADRANTS[:3]:
        exp = dataclasses.replace(exps[ffd], filtercode="zi")
        ref = ipac.mask_reference(archive.config, DATE, exp, ccdid, qid)
        np.testing.assert_array_equal(ipac.mask(archive.config, DATE, exp, ccdid, qid), ref)
        saturated += int(np.count_nonzero(ref & SATURATED))
    assert saturated > 0


def test_saturated_pixels_follow_the_fringes():
    """With a saturation level put inside the sky's range, which pixels saturate depends on
    the fringe pattern: the fast path still equals the definition on the full image."""
    from ztfluigi import camera
    from ztfluigi.sim import detector, rawfile, sky

    cfg = SimConfig(seed=0, scale=8, fringes=True)
    archive = SimArchive(cfg)
    exp = dataclasses.replace(archive.exposures(DATE)[SCALE8_QUADRANTS[0][0]], filtercode="zi")
    ccdid, qid = SCALE8_QUADRANTS[0][1:]
    shape = camera.quadrant_shape(cfg.scale)
    cond = rawfile.conditions(exp)
    stars = sky.quadrant_stars(cfg.seed, exp, ccdid, qid, shape, cond.airmass)
    sky_e = sky.sky_electrons(exp, cond.airmass, cond.moon_illumination)
    bias = detector.bias_structure(cfg.seed, ccdid, qid, shape)
    amp0 = detector.amplifier(cfg.seed, ccdid, qid, DATE)

    def definition(config: SimConfig, amp: detector.Amplifier) -> set:
        level = rawfile.expected_electrons(config, exp, ccdid, qid, shape) / amp.gain + bias
        return set(zip(*np.nonzero(level + amp.pedestal + 5.0 >= amp.saturation), strict=True))

    electrons = rawfile.expected_electrons(cfg, exp, ccdid, qid, shape)
    # gain 1 and a pedestal putting the ADC limit at the median level: half the pixels saturate,
    # and the fringes (±40 e⁻) decide for many of them
    pedestal = detector.ADC_MAX - 5.0 - float(np.median(electrons + bias))
    amp = dataclasses.replace(amp0, gain=1.0, pedestal=pedestal)
    assert amp.saturation == detector.ADC_MAX
    want = definition(cfg, amp)
    assert 0.1 < len(want) / (shape[0] * shape[1]) < 0.9
    assert want != definition(dataclasses.replace(cfg, fringes=False), amp)
    got = ipac.saturated_pixels(cfg, exp, ccdid, qid, amp, stars, sky_e, cond.fwhm_pix,
                                cond.airmass)  # fmt: skip
    assert set(zip(*got, strict=True)) == want
