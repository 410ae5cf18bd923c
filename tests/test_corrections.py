"""Raw corrections: overscan model (exact LSQ, aligned rows, read-order columns), NL, order."""

import datetime as dt

import numpy as np
import pytest

from ztfluigi import camera, corrections, nonlinearity
from ztfluigi.corrections import CorrectionSpec

DATE = dt.date(2019, 4, 4)


def synthetic_quadrant(qid, shape=(200, 64), pedestal=110.0, ramp=20.0, signal=1000.0, seed=0):
    """Raw-oriented data and overscan whose pedestal ramps along the *read* rows."""
    rng = np.random.default_rng(seed)
    read_rows = np.arange(shape[0])
    t = np.linspace(-1, 1, shape[0])
    ped = pedestal + ramp * t + 3.0 * (1.5 * t**2 - 0.5)
    data_read = signal + ped[:, None] + rng.normal(0, 0.5, shape)
    over_read = ped[:, None] + rng.normal(0, 0.5, (shape[0], 30))
    over_read[:, :5] += 50.0 * 0.5 ** np.arange(5)  # charge trailing in the first-read columns
    del read_rows
    return (
        camera.read_to_raw(data_read, qid).astype(np.float32),
        camera.read_to_raw(over_read, qid).astype(np.float32),
    )


@pytest.mark.parametrize("qid", [1, 2, 3, 4])
def test_overscan_subtraction_removes_the_read_row_ramp_with_aligned_rows(qid):
    data, over = synthetic_quadrant(qid)
    sub, _ = corrections.subtract_overscan(data, over, qid)
    # Residual pedestal ≈ 0 at both ends of the quadrant (row reversal would leave ±20 DN).
    read = camera.raw_to_read(sub, qid)
    assert abs(read[:10].mean() - 1000.0) < 0.3
    assert abs(read[-10:].mean() - 1000.0) < 0.3


def test_overscan_model_is_the_exact_least_squares_legendre_fit():
    rng = np.random.default_rng(1)
    x = np.linspace(-1, 1, 500)
    truth = 100 + 5 * x + 2 * (1.5 * x**2 - 0.5)
    profile = truth + rng.normal(0, 0.3, x.size)
    profile[[10, 200, 300]] += 50.0  # outliers are clipped by the raw-MAD cut
    model = corrections.overscan_model(profile)
    assert np.max(np.abs(model - truth)) < 0.1
    keep = np.abs(profile - np.median(profile)) <= 3 * np.median(
        np.abs(profile - np.median(profile))
    )
    coeffs = np.polynomial.legendre.legfit(x[keep], profile[keep], 2)
    assert np.allclose(model, np.polynomial.legendre.legval(x, coeffs), atol=1e-9)


def test_overscan_uses_read_order_columns_25_to_30():
    qid = 2
    data, over = synthetic_quadrant(qid)
    read = camera.raw_to_read(over, qid)
    read[:, 25:30] += 7.0  # only the last-read columns define the level
    over = camera.read_to_raw(read, qid)
    sub, _ = corrections.subtract_overscan(data, over, qid)
    assert abs(sub.mean() - (1000.0 - 7.0)) < 0.2


def test_correction_order_and_nl_table():
    qid, ccdid = 3, 5
    data, over = synthetic_quadrant(qid, signal=30000.0)
    first = corrections.correct_quadrant(data, over, ccdid, qid, DATE)
    a, b = nonlinearity.coefficients(ccdid, qid, DATE)
    sub, _ = corrections.subtract_overscan(data, over, qid)
    assert np.allclose(first, nonlinearity.correct(sub, a, b), atol=2e-3)
    legacy = corrections.correct_quadrant(
        data, over, ccdid, qid, DATE, CorrectionSpec(order="nl-first", nl_table="ccd_amp_coeff_v2")
    )
    a2, b2 = nonlinearity.coefficients(ccdid, qid, DATE, table="ccd_amp_coeff_v2")
    expected = nonlinearity.correct(data, a2, b2) - (
        data - sub  # the same overscan model, subtracted after NL
    )
    assert np.allclose(legacy, expected, atol=5e-3)
    # With the same table, the order matters at the ~1e-4 level at 30 000 DN (§2.1).
    same_table = corrections.correct_quadrant(
        data, over, ccdid, qid, DATE, CorrectionSpec(order="nl-first")
    )
    assert 0.5 < np.abs(np.median(same_table - first)) < 10


def test_ccd_assembly_of_corrected_quadrants():
    data, over = {}, {}
    for q in range(1, 5):
        data[q], over[q] = synthetic_quadrant(q, signal=1000.0 * q, seed=q)
    ccd = corrections.correct_ccd(data, over, 7, DATE)
    assert ccd.shape == (400, 128) and ccd.dtype == np.float32
    for q in range(1, 5):
        rows, cols = camera.quadrant_slice(q, ccd.shape)
        assert np.median(ccd[rows, cols]) == pytest.approx(1000.0 * q, rel=0.02)


def test_spec_header_cards_and_validation():
    cards = dict((k, v) for k, v, _ in CorrectionSpec().header_cards())
    assert cards["CORRORD"] == "overscan-first" and cards["OSCOLS"] == "25:30"
    with pytest.raises(ValueError):
        CorrectionSpec(order="sideways")


@pytest.mark.parametrize("imgtype", ["flat", "object"])
def test_pocket_correction_recovers_the_simulated_truth(imgtype):
    """After 2019-10-22 the simulator applies the pocket effect (CCD 6 is the worst); with the
    switch on, the charge deficit of the first-read columns and the trails disappear."""
    from ztfluigi.sim import detector, rawfile, schedule

    cfg, date, ccdid, qid = schedule.SimConfig(scale=16), dt.date(2020, 1, 15), 6, 1
    exp = next(e for e in schedule.night_log(cfg, date) if e.imgtype == imgtype)
    data, over = rawfile.render_quadrant(cfg, date, exp, ccdid, qid)
    shape = camera.quadrant_shape(16)
    amp = detector.amplifier(0, ccdid, qid, date)
    truth = rawfile.expected_electrons(cfg, exp, ccdid, qid, shape) / amp.gain
    truth += detector.bias_structure(0, ccdid, qid, shape)
    resid = {}
    for switch in ("off", "auto"):
        corrected = corrections.correct_quadrant(data, over, ccdid, qid, date,
                                                 CorrectionSpec(pocket=switch))  # fmt: skip
        resid[switch] = camera.raw_to_read(corrected - truth, qid)
    noise = resid["auto"].std() / np.sqrt(shape[0])  # error of a column mean
    first_off, first_on = resid["off"][:, 0].mean(), resid["auto"][:, 0].mean()
    assert first_off < -20 * noise  # the pocket swallows charge at the start of each row
    assert abs(first_on) < max(10 * noise, 0.02 * abs(first_off))
    assert resid["auto"].std() < 0.9 * resid["off"].std()


def test_pocket_setting_resolution_and_header():
    """auto = on from 2019-10-22 (where the effect exists), the default; bools still accepted."""
    before, start = dt.date(2019, 10, 21), dt.date(2019, 10, 22)
    assert CorrectionSpec().pocket == "auto"
    assert not CorrectionSpec().pocket_applies(before) and CorrectionSpec().pocket_applies(start)
    assert CorrectionSpec(pocket="on").pocket_applies(before)
    assert not CorrectionSpec(pocket="off").pocket_applies(start)
    assert CorrectionSpec(pocket=True).pocket == "auto"  # what pocket=True did: by date
    assert CorrectionSpec(pocket=False).pocket == "off"
    with pytest.raises(ValueError, match="pocket"):
        CorrectionSpec(pocket="maybe")
    for date, ran in ((before, "off"), (start, "on")):
        resolved = CorrectionSpec().resolved(date)
        assert resolved.pocket == ran
        assert dict((k, v) for k, v, _ in resolved.header_cards())["POCKET"] == ran
        assert resolved.resolved(date) == resolved


def float32_ulps(a, b):
    """Distance in float32 ulps (signed-magnitude order)."""

    def key(x):
        i = np.asarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)

    return np.abs(key(a) - key(b))


@pytest.mark.parametrize("qid", [1, 2, 3, 4])
def test_fused_pass_equals_the_step_by_step_numpy_corrections(qid):
    """One compiled pass (overscan + NL + pocket) == the numpy steps: bitwise without the
    pocket, ≤ 1 float32 ulp with it; every orientation, both orders, pocket on/off, a flat at
    high level and a science frame of the pocket era on CCD 6."""
    from ztfluigi.sim import rawfile, schedule

    cfg, date, ccdid = schedule.SimConfig(scale=16), dt.date(2020, 1, 15), 6
    for imgtype in ("flat", "object"):
        exp = next(e for e in schedule.night_log(cfg, date) if e.imgtype == imgtype)
        data, over = rawfile.render_quadrant(cfg, date, exp, ccdid, qid)
        for spec in (CorrectionSpec(), CorrectionSpec(pocket="off"),
                     CorrectionSpec(order="nl-first", nl_table="ccd_amp_coeff_v2")):  # fmt: skip
            ref = corrections.correct_quadrant(data, over, ccdid, qid, date, spec, engine="numpy")
            new = corrections.correct_quadrant(data, over, ccdid, qid, date, spec)
            assert new.dtype == np.float32 and new.flags.c_contiguous
            if spec.pocket_applies(date):
                assert float32_ulps(new, ref)[np.abs(ref) >= 1e-3].max() <= 1
                assert np.abs(new.astype(float) - ref)[np.abs(ref) < 1e-3].max(initial=0) < 1e-9
            else:
                np.testing.assert_array_equal(new, ref)
    # float64 input (as the differential test passes it) and a CCD: same results
    data, over = synthetic_quadrant(qid, signal=30000.0)
    for spec in (CorrectionSpec(), CorrectionSpec(order="nl-first")):
        np.testing.assert_array_equal(
            corrections.correct_quadrant(data.astype(np.float64), over, 5, qid, DATE, spec),
            corrections.correct_quadrant(data, over, 5, qid, DATE, spec, engine="numpy"),
        )


def test_fused_pass_errors_like_the_numpy_steps():
    data, over = synthetic_quadrant(1)
    bad = data.copy()
    bad[3, 4] = 1e7  # outside the NL model's domain
    for engine in ("numba", "numpy"):
        with pytest.raises(ValueError, match="domain of the non-linearity"):
            corrections.correct_quadrant(bad, over, 5, 1, DATE, engine=engine)
    nan = data.copy()
    nan[3, 4] = np.nan
    for engine in ("numba", "numpy"):
        with pytest.raises(ValueError, match="non-finite"):
            corrections.correct_quadrant(nan, over, 5, 1, DATE, CorrectionSpec(pocket="on"),
                                         engine=engine)  # fmt: skip
    with pytest.raises(ValueError, match="engine"):
        corrections.correct_quadrant(data, over, 5, 1, DATE, engine="cuda")


def test_ccd_engines_agree():
    data, over = {}, {}
    for q in range(1, 5):
        data[q], over[q] = synthetic_quadrant(q, signal=1000.0 * q, seed=q)
    np.testing.assert_array_equal(corrections.correct_ccd(data, over, 7, DATE),
                                  corrections.correct_ccd(data, over, 7, DATE, engine="numpy"))


def test_detrend_quadrant_equals_science_detrend():
    """The compiled (R − B)/F × k is bitwise science.detrend, bad flats included, on views."""
    from ztfluigi import science

    rng = np.random.default_rng(5)
    shape = (64, 48)
    r = rng.normal(3000, 300, shape).astype(np.float32)
    bias = rng.normal(5, 2, shape).astype(np.float32)
    flat = rng.normal(1, 0.05, shape).astype(np.float32)
    flat[0, :4] = [0.0, -1.0, np.nan, np.inf]
    ref, nbad = science.detrend(r, bias, flat, 3.1e4, 3.3e4)
    new, nbad_new = corrections.detrend_quadrant(r, bias, flat, 3.3e4 / 3.1e4)
    assert nbad == nbad_new == 4 and new.dtype == np.float32
    np.testing.assert_array_equal(new, ref)  # NaN where ref is NaN, equal elsewhere
    sky = np.zeros((128, 96), np.float32)
    view = sky[64:, 48:][::-1, ::-1]  # a raw-oriented view of a sky-oriented master
    view[...] = bias
    np.testing.assert_array_equal(corrections.detrend_quadrant(r, view, flat, 3.3e4 / 3.1e4)[0],
                                  ref)  # fmt: skip
    with pytest.raises(ValueError, match="shape"):
        corrections.detrend_quadrant(r, bias[1:], flat, 1.0)


@pytest.mark.parametrize("qid", [1, 2, 3, 4])
@pytest.mark.parametrize("spec", [CorrectionSpec(), CorrectionSpec(order="nl-first"),
                                  CorrectionSpec(pocket="on")], ids=["os-first", "nl-first",
                                                                     "pocket"])  # fmt: skip
def test_correct_and_detrend_is_bitwise_the_two_steps(qid, spec):
    """The fused pass (masters read in place from the sky-oriented CCD) equals correct_quadrant
    then detrend_quadrant on the quadrant's raw-oriented views, with its counts."""
    data, over = synthetic_quadrant(qid, shape=(60, 40), seed=qid)
    data[3, 5] = np.nan  # a non-finite raw pixel
    rng = np.random.default_rng(qid)
    bias = rng.normal(5, 2, (120, 80)).astype(np.float32)
    flat = rng.normal(1, 0.05, (120, 80)).astype(np.float32)
    rows, cols = camera.quadrant_slice(qid, flat.shape)
    flat_q = camera.sky_to_raw(flat[rows, cols])  # a view: writes land in the CCD
    flat_q[0, :3] = [0.0, np.nan, -2.0]  # three bad flat pixels of this quadrant
    if spec.pocket == "on":
        data[3, 5] = 1000.0  # the pocket pass refuses non-finite input (tested elsewhere)
    factor = np.float32(3.3e4 / 3.1e4)
    step = corrections.correct_quadrant(data, over, 7, qid, DATE, spec)
    ref, nbad = corrections.detrend_quadrant(step, camera.sky_to_raw(bias[rows, cols]), flat_q,
                                             factor)  # fmt: skip
    out, nbad_fused, nonfinite = corrections.correct_and_detrend_quadrant(
        data, over, 7, qid, DATE, bias, flat, factor, spec)
    assert nbad_fused == nbad == 3
    assert nonfinite == int(np.count_nonzero(~np.isfinite(ref))) == 3 + (spec.pocket != "on")
    np.testing.assert_array_equal(out.view(np.uint32), ref.view(np.uint32))
    with pytest.raises(ValueError, match="CCD masters"):
        corrections.correct_and_detrend_quadrant(data, over, 7, qid, DATE, bias[:, 1:], flat,
                                                 factor, spec)  # fmt: skip


@pytest.mark.parametrize("spec", [CorrectionSpec(), CorrectionSpec(pocket="on")],
                         ids=["no-pocket", "pocket"])  # fmt: skip
def test_correct_ccd_in_place_minus_a_master_is_bitwise_the_steps(spec):
    """Quadrants written into their CCD places, a master subtracted in the same pass: equal to
    assembling the corrected quadrants and subtracting in float32 (numpy engine: the steps)."""
    data, over = {}, {}
    for q in range(1, 5):
        data[q], over[q] = synthetic_quadrant(q, shape=(40, 24), signal=900.0 * q, seed=10 + q)
    bias = np.random.default_rng(3).normal(5, 2, (80, 48)).astype(np.float32)
    steps = corrections.correct_ccd(data, over, 7, DATE, spec, engine="numpy")
    ccd = corrections.correct_ccd(data, over, 7, DATE, spec)
    np.testing.assert_array_equal(ccd.view(np.uint32), steps.view(np.uint32))
    minus = corrections.correct_ccd(data, over, 7, DATE, spec, minus=bias)
    np.testing.assert_array_equal(minus.view(np.uint32), (steps - bias).view(np.uint32))
    np.testing.assert_array_equal(
        corrections.correct_ccd(data, over, 7, DATE, spec, engine="numpy", minus=bias), minus)
    with pytest.raises(ValueError, match="shape mismatch"):
        corrections.correct_ccd(data, over, 7, DATE, spec, minus=bias[1:])
