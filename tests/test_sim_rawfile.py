"""Synthetic raw files: IRSA layout, real header keywords, orientation, determinism, physics."""

import io

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from tests.helpers import DEMO_DATE
from ztfluigi import camera, nonlinearity
from ztfluigi.archive.sim import SimArchive
from ztfluigi.raw import verify_raw
from ztfluigi.sim import detector, headers, rawfile, sky
from ztfluigi.sim.schedule import SimConfig, night_log


@pytest.fixture(scope="module")
def archive():
    return SimArchive(SimConfig(seed=0, scale=16, n_fields=1))


@pytest.fixture(scope="module")
def log(archive):
    return list(archive.exposures(DEMO_DATE).values())


def first(log, imgtype):
    return next(e for e in log if e.imgtype == imgtype)


@pytest.mark.parametrize("imgtype", ["bias", "flat", "object"])
def test_raw_file_layout_and_keywords(archive, log, imgtype):
    exp = first(log, imgtype)
    raw = exp.raw_name(7)
    content = archive.fetch_raw(raw)
    verify_raw(content, raw.filename)  # structure, checksums, decompression
    with fits.open(io.BytesIO(content), checksum=True) as hdul:
        assert len(hdul) == 9
        shape = camera.quadrant_shape(16)
        for q in range(1, 5):
            assert hdul[q].data.shape == shape and hdul[q].data.dtype.kind == "f"
            assert hdul[q].header["EXTNAME"] == str(q)
            assert isinstance(hdul[q], fits.CompImageHDU)
            assert hdul[q].compression_type == "RICE_1"
            assert hdul[q + 4].data.shape == (shape[0], 30)
            for key in headers.raw_extension_keywords():
                assert key in hdul[q].header, key
            assert hdul[q].header["AMP_ID"] == q - 1
            assert hdul[q].header["AMP_NAME"] == camera.AMP_NAMES[q]
        h0 = hdul[0].header
        real = headers.real_science_header()
        for key in headers.raw_primary_keywords():
            assert key in h0, key
            assert type(h0[key]) is type(real[key]) or isinstance(real[key], float), key
        assert h0["IMGTYPE"] == imgtype and h0["CCD_ID"] == 7
        assert h0["FILENAME"] == raw.filename.removesuffix(".fz")
        assert h0["OBSJD"] - h0["OBSMJD"] == pytest.approx(2400000.5)
        assert h0["FILTER"] == {"zg": "ZTF_g", "zr": "ZTF_r", "zi": "ZTF_i"}[exp.wheel_filter]
        assert h0["FILTERID"] in (1, 2, 3)
        assert abs(h0["OBSJD"] - exp.obsjd) < 1e-6
        if imgtype == "flat":
            assert h0["ILUM_LED"] == exp.led and "ILUMWAVE" in h0 and "ILUMPOWR" in h0
        else:
            assert "ILUM_LED" not in h0
        if imgtype == "object":
            assert 1.0 <= h0["AIRMASS"] < 3.0 and h0["EXPTIME"] == 30.0


def test_every_flat_has_its_led(archive, log):
    for exp in [e for e in log if e.imgtype == "flat"][::5]:
        h0 = fits.getheader(io.BytesIO(archive.fetch_raw(exp.raw_name(3))), 0)
        assert h0["ILUM_LED"] == exp.led


def test_same_seed_same_bytes_other_seed_other_sky():
    a, b = SimArchive(SimConfig(seed=0, scale=16)), SimArchive(SimConfig(seed=0, scale=16))
    c = SimArchive(SimConfig(seed=1, scale=16))
    exp = first(night_log(a.config, DEMO_DATE), "object")
    raw = exp.raw_name(2)
    assert a.fetch_raw(raw) == b.fetch_raw(raw)
    other = first(night_log(c.config, DEMO_DATE), "object").raw_name(2)
    assert other != raw or a.fetch_raw(raw) != c.fetch_raw(raw)
    stars_a = sky.quadrant_stars(0, exp, 2, 1, (192, 192), 1.0)
    stars_c = sky.quadrant_stars(1, exp, 2, 1, (192, 192), 1.0)
    assert not np.array_equal(stars_a.source_id, stars_c.source_id)


@pytest.mark.parametrize("qid", [1, 2, 3, 4])
def test_overscan_trailing_follows_read_order(archive, log, qid):
    """Charge trailing lifts the first-read overscan column: stored 0 for q1/q4, 29 for q2/q3."""
    exp = first(log, "flat")
    data, over = rawfile.render_quadrant(archive.config, DEMO_DATE, exp, 4, qid)
    first_read = 0 if qid in (1, 4) else 29
    last_read = 29 - first_read
    assert over[:, first_read].mean() > over[:, last_read].mean() + 1000
    # The last data column read (adjacent to the overscan) is the one whose charge trails.
    read = camera.raw_to_read(data, qid)
    ped = over[:, last_read].mean()
    ratio = (camera.raw_to_read(over, qid)[:, 0] - ped) / (read[:, -1] - ped)
    assert np.median(ratio) == pytest.approx(rawfile.TRAIL_FRACTION, rel=0.05)


def test_bias_level_and_structure(archive, log):
    """Bias frame minus overscan = the true bias structure, with read noise (NL is negligible)."""
    exps = [e for e in log if e.imgtype == "bias"][10:]
    ccdid, qid = 9, 3
    amp = detector.amplifier(0, ccdid, qid, DEMO_DATE)
    shape = camera.quadrant_shape(16)
    stack = []
    for exp in exps:
        data, over = rawfile.render_quadrant(archive.config, DEMO_DATE, exp, ccdid, qid)
        level = np.median(camera.raw_to_read(over, qid)[:, 25:30], axis=1)
        stack.append(camera.raw_to_read(data, qid) - level[:, None])
    mean = camera.read_to_raw(np.mean(stack, axis=0), qid)
    truth = detector.bias_structure(0, ccdid, qid, shape)
    sigma = amp.read_noise / amp.gain / np.sqrt(len(exps))
    resid = mean - truth
    assert abs(resid.mean()) < 0.2
    assert resid.std() == pytest.approx(sigma, rel=0.15)


def test_flat_signal_is_the_distorted_truth(archive, log):
    """Overscan-subtracted, NL-corrected flat ≈ expected electrons / gain + bias structure."""
    exp = first(log, "flat")
    ccdid, qid = 6, 2
    cfg = archive.config
    shape = camera.quadrant_shape(16)
    amp = detector.amplifier(0, ccdid, qid, DEMO_DATE)
    data, over = rawfile.render_quadrant(cfg, DEMO_DATE, exp, ccdid, qid)
    level = np.median(camera.raw_to_read(over, qid)[:, 25:30], axis=1)
    signal = camera.read_to_raw(camera.raw_to_read(data, qid) - level[:, None], qid)
    corrected = nonlinearity.correct(signal, amp.nl_a, amp.nl_b)
    expected = rawfile.expected_electrons(cfg, exp, ccdid, qid, shape) / amp.gain
    expected += detector.bias_structure(0, ccdid, qid, shape)
    good = expected > 1000
    rel = (corrected - expected)[good] / expected[good]
    assert abs(np.median(rel)) < 2e-3  # the NL correction (~1 %) is undone exactly
    noise = np.sqrt(expected[good] * amp.gain + amp.read_noise**2) / amp.gain / expected[good]
    assert np.std(rel) == pytest.approx(np.median(noise), rel=0.25)
    # Without the NL correction the flat reads ≈1 % high (DN_true = x / (A x² + B x + 1), B > 0).
    assert np.median((signal - expected)[good] / expected[good]) > 3e-3


def test_star_lands_where_the_ipac_wcs_says(archive, log):
    """A bright isolated star's centroid in the raw image = the WCS pixel of its sky position."""
    exp = first(log, "object")
    cfg = archive.config
    shape = camera.quadrant_shape(16)
    cond = rawfile.conditions(exp)
    checked = 0
    for ccdid, qid in [(c, q) for c in range(1, 17) for q in range(1, 5)]:
        stars = sky.quadrant_stars(cfg.seed, exp, ccdid, qid, shape, cond.airmass)
        inside = (stars.x > 15) & (stars.x < shape[1] - 15)
        inside &= (stars.y > 15) & (stars.y < shape[0] - 15)
        bright = np.flatnonzero(inside & (stars.electrons > 2e4) & (stars.electrons < 1e6))
        if bright.size == 0:
            continue
        header = archive.science_header(exp.raw_name(ccdid), qid)
        # Raw orientation: +x West (RA decreases), +y South (Dec decreases).
        assert header["CD1_1"] < 0 and header["CD2_2"] < 0
        wcs = WCS(header)
        data, _ = rawfile.render_quadrant(cfg, DEMO_DATE, exp, ccdid, qid)
        for i in bright:
            d = np.hypot(stars.x - stars.x[i], stars.y - stars.y[i])
            if np.sum((d < 12) & (stars.electrons > 0.005 * stars.electrons[i])) > 1:
                continue
            x, y = wcs.all_world2pix(stars.ra[i], stars.dec[i], 0)
            x0, y0 = int(round(float(x))), int(round(float(y)))
            box = data[y0 - 6 : y0 + 7, x0 - 6 : x0 + 7].astype(float)
            box -= np.median(data)
            yy, xx = np.mgrid[y0 - 6 : y0 + 7, x0 - 6 : x0 + 7]
            cx, cy = (box * xx).sum() / box.sum(), (box * yy).sum() / box.sum()
            # Centroid noise from the sky in the box (Σ (x - x̄)² = 2366 px² for 13×13).
            sky_e = float(np.median(data) - np.median(_[:, :])) * 6.0
            tol = 0.03 + 4 * np.sqrt(max(sky_e, 500.0) * 2366) / stars.electrons[i]
            assert abs(cx - x) < tol and abs(cy - y) < tol, (ccdid, qid, cx - x, cy - y, tol)
            checked += 1
        if checked >= 5:
            break
    assert checked >= 5
