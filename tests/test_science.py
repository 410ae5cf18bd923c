"""The virtual science quadrant: formula, orientation, bad flats, header merge (trap 13)."""

import datetime as dt
import io
import logging
import warnings
from importlib import resources

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from ztfluigi import camera, science
from ztfluigi.corrections import CorrectionSpec, correct_ccd
from ztfluigi.naming import RawName
from ztfluigi.raw import RawCCD

DATE = dt.date(2019, 3, 31)
CCDID = 5
QSHAPE = (40, 36)  #: small raw quadrant (rows, cols)
CCDSHAPE = (2 * QSHAPE[0], 2 * QSHAPE[1])
IPAC_FIXTURE = "ztf_20200924431759_000655_zr_c13_o_q3_sciimg.header.txt"


def raw_quadrants(rng, signal=None, os_noise=1.0):
    """Raw-oriented data and overscan of four quadrants with a pedestal and a row ramp."""
    data, over = {}, {}
    ramp = np.linspace(0.0, 20.0, QSHAPE[0])[:, None]
    for q in range(1, 5):
        ped = 100.0 + 10 * q + ramp
        sig = (1000.0 * q + rng.normal(0, 5, QSHAPE)) if signal is None else signal(q)
        data[q] = (sig + ped).astype(np.float32)
        over[q] = (ped + rng.normal(0, os_noise, (QSHAPE[0], camera.OVERSCAN_COLUMNS))).astype(
            np.float32
        )
    return data, over


def masters(rng):
    bias = rng.normal(2.0, 0.5, CCDSHAPE).astype(np.float32)
    flat = rng.normal(1.0, 0.05, CCDSHAPE).astype(np.float32)
    return bias, flat


def test_formula_on_synthetic_arrays():
    rng = np.random.default_rng(1)
    r = rng.normal(5000, 100, CCDSHAPE).astype(np.float32)
    b, f = masters(rng)
    out = science.science_ccd(r, b, f, 31000.0, 33000.0)
    assert out.dtype == np.float32 and out.shape == CCDSHAPE
    expected = (r.astype(np.float64) - b) / f * (33000.0 / 31000.0)
    np.testing.assert_allclose(out, expected, rtol=2e-6)
    # float32 arithmetic, in the reference's order: (R − B) / Fn × (FLTNORM_FP / FLTNORM).
    assert np.array_equal(out, (r - b) / f * np.float32(33000.0 / 31000.0))
    # Forgetting FLTNORM_FP / FLTNORM (trap 10) would leave a CCD-level step.
    assert np.median(out / ((r - b) / f)) == pytest.approx(33000.0 / 31000.0, rel=1e-6)


@pytest.mark.parametrize("norms", [(0.0, 1.0), (1.0, -2.0), (np.nan, 1.0), (1.0, None)])
def test_bad_normalisations_are_refused(norms):
    z = np.ones((4, 4), np.float32)
    with pytest.raises(science.ScienceError, match="FLTNORM"):
        science.science_ccd(z, z, z, *norms)


def test_shape_mismatch_is_refused():
    with pytest.raises(science.ScienceError, match="shape"):
        science.science_ccd(np.ones((4, 4)), np.ones((4, 4)), np.ones((4, 2)), 1.0, 1.0)


def test_quadrant_path_equals_split_ccd_path_exactly():
    rng = np.random.default_rng(2)
    data, over = raw_quadrants(rng)
    bias, flat = masters(rng)
    flat[3, 5] = 0.0  # bad flat pixels: NaN in both paths
    flat[CCDSHAPE[0] - 1, 7] = np.nan
    spec = CorrectionSpec()
    ccd = science.science_ccd(correct_ccd(data, over, CCDID, DATE, spec), bias, flat, 3.1e4, 3.3e4)
    split = camera.split_ccd(ccd)
    for q in range(1, 5):
        quad = science.science_quadrant_data(
            data[q], over[q], CCDID, q, DATE, bias, flat, 3.1e4, 3.3e4, spec
        )
        assert quad.dtype == np.float32 and quad.shape == QSHAPE
        assert np.array_equal(quad, split[q], equal_nan=True)
    assert np.isnan(ccd).sum() == 2


# Where raw pixel (0, 0) of each quadrant (its NE corner) sits in the sky-oriented CCD array.
RAW_ORIGIN_IN_CCD = {
    1: (CCDSHAPE[0] - 1, CCDSHAPE[1] - 1),  # q1: outer corner of the CCD (its amplifier)
    2: (CCDSHAPE[0] - 1, QSHAPE[1] - 1),
    3: (QSHAPE[0] - 1, QSHAPE[1] - 1),  # q3: the CCD centre
    4: (QSHAPE[0] - 1, CCDSHAPE[1] - 1),
}


@pytest.mark.parametrize("qid", [1, 2, 3, 4])
def test_orientation_markers(qid):
    rng = np.random.default_rng(3)
    marker = (7, 3)  # a raw-oriented pixel of quadrant qid
    data, over = raw_quadrants(rng, signal=lambda q: np.full(QSHAPE, 1000.0 * q), os_noise=0)
    data[qid][marker] += 5000.0
    bias = np.zeros(CCDSHAPE, np.float32)
    flat = np.ones(CCDSHAPE, np.float32)
    flat[RAW_ORIGIN_IN_CCD[qid]] = 2.0  # the master flat's pixel seen by raw (0, 0) of qid
    quad = science.science_quadrant_data(data[qid], over[qid], CCDID, qid, DATE, bias, flat,
                                         1.0, 1.0)  # fmt: skip
    level = np.median(quad)
    assert quad[0, 0] == pytest.approx(level / 2, rel=1e-4)
    assert quad[marker] > level + 4000  # the raw marker stays where it was (raw orientation)
    others = np.ones(QSHAPE, bool)
    others[0, 0] = others[marker] = False
    np.testing.assert_allclose(quad[others], level, rtol=1e-4)
    # The CCD path puts the raw marker where the sky orientation says.
    ccd = science.science_ccd(correct_ccd(data, over, CCDID, DATE), bias, flat, 1.0, 1.0)
    rows, cols = camera.quadrant_slice(qid, CCDSHAPE)
    r0 = rows.start + QSHAPE[0] - 1 - marker[0]
    c0 = cols.start + QSHAPE[1] - 1 - marker[1]
    assert np.unravel_index(np.argmax(ccd), CCDSHAPE) == (r0, c0)


def test_bad_flat_pixels_give_nan_not_inf(caplog):
    rng = np.random.default_rng(4)
    r = rng.normal(5000, 100, CCDSHAPE).astype(np.float32)
    b, f = masters(rng)
    bad = [(0, 0), (1, 2), (3, 3), (4, 1), (5, 5)]
    for (i, j), v in zip(bad, [0.0, -0.5, np.nan, np.inf, -np.inf], strict=True):
        f[i, j] = v
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero / invalid-value RuntimeWarning
        with caplog.at_level(logging.WARNING, logger="ztfluigi.science"):
            out = science.science_ccd(r, b, f, 1.0, 1.0)
        out2, nbad = science.detrend(r, b, f, 1.0, 1.0)
    assert nbad == 5 and "5 pixel(s)" in caplog.text
    assert not np.isinf(out).any()
    assert all(np.isnan(out[p]) for p in bad)
    assert np.isfinite(out).sum() == out.size - 5
    assert np.array_equal(out, out2, equal_nan=True)
    mask = science.science_mask(np.full(CCDSHAPE, 2, np.int16), out)
    assert all(mask[p] == 2 | 1024 for p in bad) and (mask == 2).sum() == out.size - 5


def test_saturation_formula():
    # (sat − bias) / flat × FLTNORM_FP / FLTNORM
    assert science.science_saturation(60000.0, 0.95, 30000.0, 33000.0, bias_level=100.0) == (
        pytest.approx((60000.0 - 100.0) / 0.95 * 1.1)
    )
    with pytest.raises(science.ScienceError):
        science.science_saturation(6e4, 0.0, 1.0, 1.0)


# --- header --------------------------------------------------------------------------------


def ipac_header() -> fits.Header:
    text = (resources.files("ztfluigi") / "data" / IPAC_FIXTURE).read_text()
    return fits.Header.fromstring(text, sep="\n")


def raw_headers(ipac: fits.Header) -> tuple[fits.Header, fits.Header]:
    """Raw primary/extension headers as read from a .fits.fz (structural + Z* keys included)."""
    keys = list(ipac.keys())
    primary = fits.Header([("SIMPLE", True), ("BITPIX", 8), ("NAXIS", 0), ("EXTEND", True)])
    primary.add_comment("FITS (Flexible Image Transport System) format is defined in ...")
    for card in ipac.cards[keys.index("ORIGIN") : keys.index("NFRAMES") + 1]:
        primary.append(card)
    primary["SEEING"] = (9.99, "not an IPAC value")  # IPAC must win over raw
    ext = fits.Header([
        ("XTENSION", "BINTABLE"), ("BITPIX", 8), ("NAXIS", 2), ("NAXIS1", 24), ("NAXIS2", 10),
        ("PCOUNT", 100), ("GCOUNT", 1), ("TFIELDS", 1), ("TTYPE1", "COMPRESSED_DATA"),
        ("TFORM1", "1PB(192)"), ("ZIMAGE", True), ("ZBITPIX", -32), ("ZNAXIS", 2),
        ("ZNAXIS1", 3072), ("ZNAXIS2", 3080), ("ZTILE1", 3072), ("ZCMPTYPE", "RICE_1"),
        ("ZQUANTIZ", "SUBTRACTIVE_DITHER_1"), ("ZDITHER0", 1),
    ])  # fmt: skip
    for card in ipac.cards[keys.index("EXTNAME") : keys.index("CD2_2") + 1]:
        ext.append(card)
    ext["CTYPE1"], ext["CTYPE2"] = "RA---TAN", "DEC--TAN"  # the camera's nominal WCS
    ext["CRVAL1"] = 57.5
    ext["GAIN"] = 6.25
    ext.append(("CHECKSUM", "IIG5J995IGG5I995"))
    ext.append(("DATASUM", "1960691430"))
    return primary, ext


PROVENANCE = {
    "PIPELINE": ("ZTFLUIGI", "pipeline"),
    "BIASFILE": "ztfin2p3_20200922_000000_bi_c13_bias.fits",
    "FLATFILE": "ztfin2p3_20200922_000000_zr_c13_l00_flat.fits",
    "FPFILE": "ztfin2p3_20200922_000000_zr_fp_flatnorm.fits",
    "FLTNORM": 31000.5,
    "FLTNORM_FP": (33000.25, "focal-plane level"),
    "CALNIGHT": ("20200922", "farthest calibration night"),
    "CALDELTA": -2,
    "SKIPPED": None,
}


def test_header_merge_keeps_wcs_and_handles_trap_13():
    ipac = ipac_header()
    primary, ext = raw_headers(ipac)
    h = science.science_header(primary, ext, ipac, PROVENANCE | {"SATURATE": (61234.5, "ours")})
    # WCS intact (IPAC's TPV solution wins over the camera's nominal TAN).
    wcs_keys = [k for k in ipac if k.startswith(("CTYPE", "CRPIX", "CRVAL", "CD", "PV", "CUNIT"))]
    assert len([k for k in wcs_keys if k.startswith("PV")]) == 30
    for key in wcs_keys + ["RADESYS", "WCSAXES"]:
        assert h[key] == ipac[key], key
    x, y = np.array([1.0, 1536.5, 3072.0]), np.array([1.0, 1540.5, 3080.0])
    np.testing.assert_allclose(
        WCS(h).all_pix2world(x, y, 1), WCS(ipac).all_pix2world(x, y, 1), rtol=0, atol=1e-10
    )
    # IPAC values override raw ones; raw-only keys survive.
    assert h["SEEING"] == 1.241 and h["QID"] == 3 and h["GAIN"] == 6.0
    assert h["OBSMJD"] == 59116.4317708 and h["AMP_ID"] == 2 and h["CCD_ID"] == 13
    # Structural, compression and reference-dropped keys are gone.
    for key in h:
        assert not key.startswith(("Z", "TTYPE", "TFORM", "XTENSION", "NAXIS", "BITPIX",
                                   "SIMPLE", "PCOUNT", "GCOUNT", "TFIELDS")), key  # fmt: skip
        dropped = key.startswith(science.REFERENCE_DROPPED_PREFIXES)
        assert not dropped or key in PROVENANCE, key
    for key in ("CIDBIAS", "CALNOTE1", "CLRCOEFF", "APCOR1", "FIXAPERS", "NMATCHES", "BIT00",
                "HISTORY", "COMMENT", "CHECKSUM", "DATASUM"):  # fmt: skip
        assert key not in h
    # Trap 13: IPAC's photometric keys renamed (value kept), colour-fit companions dropped.
    for old, new in science.IPAC_RENAMED.items():
        assert old not in h or old == "SATURATE"
        assert h[new] == ipac[old] and "not this one" in h.comments[new], new
    assert h["IPMAGZP"] == 26.285139 and h["IPSATUR"] == 58647.152
    for key in science.IPAC_DROPPED:
        assert key not in h
    assert h["SATURATE"] == 61234.5  # ours, from provenance
    # Provenance (added after the prefix drop, so CAL* keys survive).
    assert h["CALNIGHT"] == "20200922" and h["CALDELTA"] == -2 and "SKIPPED" not in h
    assert h["FLTNORM_FP"] == 33000.25 and h["FLTNORM"] == 31000.5
    assert h["BIASFILE"].endswith("_bias.fits") and h["PIPELINE"] == "ZTFLUIGI"


def test_header_merge_leaves_its_inputs_alone():
    """The raw headers serve four quadrants: merging copies their cards, never updates them."""
    ipac = ipac_header()
    primary, ext = raw_headers(ipac)
    before = [h.tostring() for h in (primary, ext, ipac)]
    h = science.science_header(primary, ext, ipac, PROVENANCE)
    h["SEEING"] = 9.9  # a later change of the science header does not reach the inputs
    assert [x.tostring() for x in (primary, ext, ipac)] == before
    assert ipac["SEEING"] == 1.241


def test_header_without_our_saturation_has_none():
    ipac = ipac_header()
    h = science.science_header(*raw_headers(ipac), ipac, {})
    assert "SATURATE" not in h and h["IPSATUR"] == 58647.152 and "MAGZP" not in h


def test_header_writes_as_a_valid_float32_image():
    ipac = ipac_header()
    prov = science.science_provenance(
        "bias.fits", "flat.fits", "fp.fits", 31000.0, 33000.0,
        calibration={"CALNIGHT": ("20200922", "night")}, spec=CorrectionSpec(), saturate=6e4,
        raw_file="ztf_20200924431759_000655_zr_c13_o.fits.fz",
    )  # fmt: skip
    h = science.science_header(*raw_headers(ipac), ipac, prov)
    data = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fits.PrimaryHDU(data, h).writeto(buf, output_verify="exception")
    buf.seek(0)
    with fits.open(buf) as hdul:
        back = hdul[0]
        assert np.array_equal(back.data, data) and back.data.dtype.kind == "f"
        assert back.header["FLTNORM_FP"] == 33000.0 and back.header["CTYPE1"] == "RA---TPV"
        assert back.header["OSCOLS"] == "25:30" and back.header["SATURATE"] == 60000.0
        assert back.header["RAWFILE"].endswith("_o.fits.fz") and back.header["CALNIGHT"]


def test_build_science_quadrant_on_synthetic_arrays():
    rng = np.random.default_rng(5)
    data, over = raw_quadrants(rng)
    bias, flat = masters(rng)
    flat[camera.quadrant_slice(3, CCDSHAPE)][0, 0] = -1.0  # sky (0,0) = raw (-1,-1) of q3
    ipac = ipac_header()
    primary, ext = raw_headers(ipac)
    raw = RawCCD(primary, {q: ext for q in range(1, 5)}, data, over)
    rawname = RawName("20190331192753", 568, "zr", CCDID, "o")
    ipac_mask = np.zeros(QSHAPE, np.int16)
    ipac_mask[2, 2] = 256
    sq = science.build_science_quadrant(raw, rawname, 3, bias, flat, 3.1e4, 3.3e4, ipac,
                                        ipac_mask, {"CALNIGHT": "20190331"})  # fmt: skip
    assert isinstance(sq, science.ScienceQuadrant)
    expected = science.science_quadrant_data(data[3], over[3], CCDID, 3, DATE, bias, flat,
                                             3.1e4, 3.3e4)  # fmt: skip
    assert np.array_equal(sq.data, expected, equal_nan=True)
    assert np.isnan(sq.data[-1, -1]) and np.isnan(sq.data).sum() == 1
    assert sq.mask.dtype == np.int16 and sq.mask[-1, -1] == 1024 and sq.mask[2, 2] == 256
    assert ipac_mask[-1, -1] == 0  # the input mask is not modified
    assert sq.header["NBADFLAT"] == 1 and sq.header["CALNIGHT"] == "20190331"
    flat_q = science.quadrant_of(flat, 3)
    med = np.median(flat_q[flat_q > 0])
    assert sq.header["SATURATE"] == pytest.approx(58647.152 / med * 3.3 / 3.1, abs=1e-3)
    assert sq.header["SATSRC"] == "IPAC SATURATE rescaled"
    given = science.build_science_quadrant(raw, rawname, 3, bias, flat, 3.1e4, 3.3e4, ipac,
                                           None, saturation=50000.0)  # fmt: skip
    assert given.header["SATURATE"] == pytest.approx(50000.0 / med * 3.3 / 3.1, abs=1e-3)
    assert given.mask.sum() == 1024


def test_science_quadrant_of_the_synthetic_instrument(sim_config):
    """Built from a synthetic raw file and noise-free calibrations, the quadrant is the truth."""
    from ztfluigi.archive.sim import SimArchive
    from ztfluigi.raw import read_raw
    from ztfluigi.sim import detector, rawfile, truth

    archive = SimArchive(sim_config)
    exp = next(e for e in archive.exposures(DATE).values() if e.imgtype == "object")
    ccdid, qid = 5, 3
    rawname = exp.raw_name(ccdid)
    shape = camera.quadrant_shape(sim_config.scale)
    raw = read_raw(archive.fetch_raw(rawname), rawname.filename)
    bias = camera.assemble_ccd(
        {q: detector.bias_structure(sim_config.seed, ccdid, q, shape) for q in range(1, 5)}
    )
    flat, norm = truth.true_master_flat(sim_config, DATE, ccdid, exp.filtercode)
    fp = truth.true_focal_plane_level(sim_config, DATE, exp.filtercode)
    ipac = archive.science_header(rawname, qid)
    _, ipac_mask = archive.science_mask(rawname, qid)
    sq = science.build_science_quadrant(raw, rawname, qid, bias, flat, norm, fp, ipac, ipac_mask)
    # Expected pixels: electrons / gain / flat × FLTNORM_FP / FLTNORM, truth's science units.
    amp = detector.amplifier(sim_config.seed, ccdid, qid, DATE)
    electrons = rawfile.expected_electrons(sim_config, exp, ccdid, qid, shape)
    dn_per_e = truth.science_scale(sim_config, DATE, exp, ccdid, qid) / detector.sky_response(
        sim_config.seed, ccdid, qid, shape
    )
    sigma = np.sqrt(electrons + amp.read_noise**2) * dn_per_e
    z = (sq.data - electrons * dn_per_e) / sigma
    good = (ipac_mask & (1 << 7 | 1 << 8)) == 0  # no cosmic rays, no saturation
    zmed = np.median(z[good])
    assert abs(zmed) < 0.05
    assert 1.4826 * np.median(np.abs(z[good] - zmed)) == pytest.approx(1.0, abs=0.06)
    assert sq.header["QID"] == qid and sq.header["CTYPE1"] == "RA---TPV"
    assert sq.mask.shape == sq.data.shape == shape and "MAGZP" not in sq.header
    assert sq.header["SATURATE"] != sq.header["IPSATUR"]
