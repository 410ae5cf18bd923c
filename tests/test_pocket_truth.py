"""The pocket correction against the simulator's truth, special cases included (issue 14).

The simulator applies the ztfsensors pocket model to every raw frame from 2019-10-22 on; these
tests correct pocket-era frames with ``correct_quadrant`` (fused numba pass, pocket "auto") and
compare the first read columns, where the pocket swallows charge, with the interior of the
same frame: a uniform offset (the pocket's flush reaches the overscan columns the pedestal is
measured on, ≈ 0.9 DN on CCD 6) is a separate, flat effect that the sky background absorbs.
Worst amplifiers (CCD 6), both read directions (q1/q4 read raw columns left to right, q2/q3
right to left), science and flats at high level, saturated stars and bright columns in the
first read columns, bias frames (why they are not corrected) and a master flat. Scale 16.
"""

import datetime as dt

import numpy as np
import pytest

from ztfluigi import calib, camera, corrections, nonlinearity, pocket
from ztfluigi.corrections import CorrectionSpec
from ztfluigi.sim import detector, rawfile, schedule, truth

DATE, CCDID, SCALE = dt.date(2020, 1, 15), 6, 16
FIRST = 6  #: read columns 0..5: where the pocket's deficit is (tens of DN on CCD 6)


def first_column_offsets(resid_read: np.ndarray) -> tuple[np.ndarray, float]:
    """Median residual of read columns 0..FIRST-1 minus the interior's, and its 1σ error (DN).

    Medians over rows (cosmic rays are in the data, not in the truth); σ of a median of n rows
    is 1.25 σ_pixel / √n.
    """
    interior = resid_read[:, 20:]
    level = np.median(interior)
    sigma_pixel = 1.4826 * np.median(np.abs(interior - level))
    first = np.median(resid_read[:, :FIRST], axis=0) - level
    return first, 1.25 * sigma_pixel / np.sqrt(resid_read.shape[0])


@pytest.fixture(scope="module")
def cfg() -> schedule.SimConfig:
    return schedule.SimConfig(scale=SCALE)


def exposures(cfg, imgtype):
    return [e for e in schedule.night_log(cfg, DATE) if e.imgtype == imgtype]


def defect_read_columns(cfg, qid: int, shape: tuple[int, int]) -> list[int]:
    """Read-order index of the simulator's dead and hot columns of CCD 6 quadrant ``qid``."""
    raw = (detector.dead_columns(cfg.seed, CCDID, qid, shape)
           + detector.hot_columns(cfg.seed, CCDID, qid, shape))  # fmt: skip
    return [shape[1] - 1 - c if qid in (2, 3) else c for c in raw]


def normal_first_columns(cfg, qid: int, shape: tuple[int, int]) -> list[int]:
    """Read columns 0..FIRST-1 that are neither a defect nor among the 7 behind one."""
    behind = {c + k for c in defect_read_columns(cfg, qid, shape) for k in range(8)}
    return [c for c in range(FIRST) if c not in behind]


@pytest.mark.parametrize("qid", [1, 2, 3, 4])
@pytest.mark.parametrize("imgtype", ["object", "flat"])
def test_first_read_columns_recovered_worst_ccd_both_directions(cfg, imgtype, qid):
    """CCD 6, every read direction, a science frame and a flat at high level (≈ 2e4 DN): the
    deficit of the first read columns (−20σ and more without the correction) is within 5σ of
    the interior after it.

    Special case, a dead column among the first read columns (CCD 6 q3: read column 4, 5 % of
    the level): below the pocket's swallowing threshold its charge cannot be told apart, the
    inversion returns ≈ 0 there and the charge reappears in the next few pixels (ztfsensors'
    model, see ``pocket.correct``); the column is masked, and the sum over it and the next
    columns is conserved (checked), where the uncorrected frame lost tens of DN per column.
    """
    exp = exposures(cfg, imgtype)[0]
    data, over = rawfile.render_quadrant(cfg, DATE, exp, CCDID, qid)
    shape = camera.quadrant_shape(SCALE)
    amp = detector.amplifier(cfg.seed, CCDID, qid, DATE)
    expected = rawfile.expected_electrons(cfg, exp, CCDID, qid, shape) / amp.gain
    expected += detector.bias_structure(cfg.seed, CCDID, qid, shape)
    if imgtype == "flat":
        assert np.median(expected) > 1e4  # a flat at high level
    resid = {}
    for setting in ("off", "auto"):
        corrected = corrections.correct_quadrant(data, over, CCDID, qid, DATE,
                                                 CorrectionSpec(pocket=setting))  # fmt: skip
        resid[setting] = camera.raw_to_read(corrected - expected, qid)
    (off, _), (on, sigma) = (first_column_offsets(resid[s]) for s in ("off", "auto"))
    assert off[0] < -20 * sigma  # the effect is there and large
    normal = normal_first_columns(cfg, qid, shape)
    assert np.all(np.abs(on[normal]) < 5 * sigma), (on, sigma)
    for c in (c for c in defect_read_columns(cfg, qid, shape) if c < FIRST):
        level = np.median(resid["auto"][:, 20:])
        block = np.median(resid["auto"][:, c : c + 8], axis=0) - level
        block_off = np.median(resid["off"][:, c : c + 8], axis=0) - np.median(resid["off"][:, 20:])
        assert abs(block.sum()) < 5 * sigma * np.sqrt(8)  # the charge is conserved locally
        assert np.abs(block[1:]).max() < np.abs(block_off[1:]).max()


def instrument(truth_read: np.ndarray, qid: int, rng: np.random.Generator,
               saturation: float = 62000.0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Read-oriented true DN (data + 30 overscan columns) → raw (data, overscan) as the
    simulator makes them: noise, pocket, NL⁻¹, pedestal, saturation clip, raw orientation."""
    a, b = nonlinearity.coefficients(CCDID, qid, DATE)
    frame = truth_read + rng.normal(0, np.sqrt(2.0 + np.maximum(truth_read, 0) / 6.0))
    frame = pocket.apply(frame, pocket.parameters(CCDID, qid))
    frame = nonlinearity.distort(frame, a, b) + 100.0
    frame = np.clip(frame, 0.0, saturation).astype(np.float32)
    ncols = truth_read.shape[1] - camera.OVERSCAN_COLUMNS
    return (np.ascontiguousarray(camera.read_to_raw(frame[:, :ncols], qid)),
            np.ascontiguousarray(camera.read_to_raw(frame[:, ncols:], qid)))  # fmt: skip


@pytest.mark.parametrize("qid", [1, 2])
def test_saturated_star_and_bright_column_in_first_read_columns(qid):
    """A saturated star centred on read column 2 and a 2e4 DN column segment in read column 1:
    the pixels that are not saturated, before and after them along the rows, are recovered to
    the noise (without the correction they are hundreds of DN off).

    Special case: the first two pixels read after a saturated run. The clip at saturation
    hides how full the pocket really is, so the first one comes out ≈ 2 % low (−700 to −900
    DN at 4e4 DN here, ≈ −10σ) and the second slightly high; bounded at 3 % here, and left to
    the saturation flag of the photometry (their star is saturated anyway).
    """
    rng = np.random.default_rng(qid)
    nrows, ncols = 200, 120
    true = np.zeros((nrows, ncols + camera.OVERSCAN_COLUMNS))
    true[:, :ncols] = 300.0
    true[40:60, 1] += 2e4  # bright column in the first read columns
    yy, xx = np.mgrid[:nrows, :ncols]
    true[:, :ncols] += 3e5 * np.exp(-((yy - 120) ** 2 + (xx - 2) ** 2) / 8.0)  # saturates
    data, over = instrument(true, qid, rng)
    saturated = camera.raw_to_read(data, qid) >= 62000.0
    assert 10 < saturated.sum() < 100
    after = np.zeros_like(saturated)  # the two pixels read after a saturated run
    after[:, 1:] |= saturated[:, :-1] & ~saturated[:, 1:]
    after[:, 1:] |= after[:, :-1] & ~saturated[:, 1:]
    quiet = np.r_[0:30, 160:200]
    sigma = np.sqrt(2.0 + true[:, :ncols] / 6.0)  # the injected noise (DN) of each pixel
    pull = {}
    for setting in ("off", "on"):
        corrected = corrections.correct_quadrant(data, over, CCDID, qid, DATE,
                                                 CorrectionSpec(pocket=setting))  # fmt: skip
        r = camera.raw_to_read(corrected, qid) - true[:, :ncols]
        r -= np.median(r[quiet, 20:])
        if setting == "on":
            assert np.all(np.abs(r[after]) < 0.03 * true[:, :ncols][after])
        pull[setting] = np.where(saturated | after, np.nan, r / sigma)
    for rows in (np.r_[40:60], np.r_[110:131]):  # bright column rows, star rows
        off, on = pull["off"][rows, :14], pull["on"][rows, :14]
        assert np.nanmax(np.abs(np.nanmedian(off, axis=0))) > 10  # large without correction
        per_column = np.nanmedian(on, axis=0)  # σ of a median of n ≈ 1.25/√n
        n = np.count_nonzero(np.isfinite(on), axis=0)
        finite = n > 0
        assert np.all(np.abs(per_column[finite]) < 5 * 1.25 / np.sqrt(n[finite])), per_column
        assert np.nanstd(pull["on"][rows]) < 1.2
        assert np.nanmax(np.abs(pull["on"][rows])) < 5.5  # no ringing or blow-up


def test_bias_frames_are_not_pocket_corrected(cfg):
    """Why ``for_imgtype('bias')`` turns the pocket correction off: on zero-signal frames the
    inversion amplifies noise (every positive noise pixel jumps to n* of tens of DN), and the
    master bias moves by about 1 DN; uncorrected, its first read columns are within 1 DN."""
    assert CorrectionSpec().for_imgtype("bias").pocket == "off"
    assert CorrectionSpec().for_imgtype("flat") == CorrectionSpec()
    assert CorrectionSpec(pocket="on").for_imgtype("object").pocket == "on"
    qid, shape = 1, camera.quadrant_shape(SCALE)
    expected = detector.bias_structure(cfg.seed, CCDID, qid, shape)
    frames = {"off": [], "on": []}
    for exp in exposures(cfg, "bias")[:7]:
        data, over = rawfile.render_quadrant(cfg, DATE, exp, CCDID, qid)
        for setting in frames:
            frames[setting].append(corrections.correct_quadrant(
                data, over, CCDID, qid, DATE, CorrectionSpec(pocket=setting)))  # fmt: skip
    single = {s: camera.raw_to_read(f[0] - expected, qid) for s, f in frames.items()}
    master = {s: camera.raw_to_read(np.median(f, axis=0) - expected, qid)
              for s, f in frames.items()}  # fmt: skip
    assert np.std(single["on"]) > 4 * np.std(single["off"])
    assert np.median(master["on"]) < np.median(master["off"]) - 0.5
    assert np.all(np.abs(np.median(master["off"][:, :FIRST], axis=0)) < 1.0)


def test_master_flat_first_read_column_matches_truth(cfg):
    """A master flat of CCD 6 (one LED, 5 flats, a 5-frame master bias), pocket auto: its first
    read columns agree with the noise-free truth as well as the interior does (without the
    correction they are ≈ 1 % low); dead/hot columns and the columns behind them excepted (see
    the first test)."""
    led = 7
    flats = [e for e in exposures(cfg, "flat") if e.led == led][:5]
    biases = exposures(cfg, "bias")[:5]
    assert len(flats) == 5 and len(biases) == 5
    raw = {e.filefracday: {q: rawfile.render_quadrant(cfg, DATE, e, CCDID, q) for q in range(1, 5)}
           for e in flats + biases}  # fmt: skip

    def ccd(exp, spec):
        quads = raw[exp.filefracday]
        return corrections.correct_ccd({q: quads[q][0] for q in quads},
                                       {q: quads[q][1] for q in quads}, CCDID, DATE,
                                       spec.for_imgtype(exp.imgtype))  # fmt: skip

    true_flat = camera.assemble_ccd({
        q: rawfile.expected_electrons(cfg, flats[0], CCDID, q, camera.quadrant_shape(SCALE))
        for q in range(1, 5)})  # fmt: skip
    true_flat = true_flat / np.median(true_flat)
    # a check that the truth is the LED's flat (truth.true_master_flat averages the filter's LEDs)
    assert truth.true_master_flat(cfg, DATE, CCDID, "zr")[0].shape == true_flat.shape
    errors = {}
    for setting in ("off", "auto"):
        spec = CorrectionSpec(pocket=setting)
        bias = calib.master_bias([ccd(e, spec) for e in biases])
        flat = calib.master_flat({led: [ccd(e, spec) for e in flats]}, bias).flat
        ratio = camera.split_ccd(flat / true_flat)
        errors[setting] = [first_column_offsets(camera.raw_to_read(ratio[q], q))
                           for q in range(1, 5)]  # fmt: skip
    shape = camera.quadrant_shape(SCALE)
    for qid, (off, _), (on, sigma) in zip(range(1, 5), errors["off"], errors["auto"],
                                          strict=True):  # fmt: skip
        assert off[0] < -0.005  # ≈ 1 % low in the first read column without the correction
        normal = normal_first_columns(cfg, qid, shape)
        assert np.all(np.abs(on[normal]) < 5 * sigma), (qid, on, sigma)
