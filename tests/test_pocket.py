"""Tests of ztfluigi.pocket (ztfsensors pocket-effect model: forward model and inversion)."""

import datetime
import math
import warnings

import numpy as np
import pytest

from ztfluigi import pocket

CCD6 = pocket.parameters(6, 1)  # the worst pocket amplifier (largest cmax)
MILD = pocket.parameters(16, 2)  # one of the mildest
N_OVERSCAN = 30


def scalar_apply_row(row, pars):
    """Straightforward per-row, per-pixel reference implementation of the forward model.

    Returns the observed row and the final pocket charge.
    """
    a, cmax, b, nmax = pars.alpha, pars.cmax, pars.beta, pars.nmax
    q = 0.0
    out = []
    for n in row:
        n = float(n)
        x = q / cmax
        frm = min(max(cmax * x**a, 0.0), q)
        npos = max(n, 0.0)
        to = min(max(cmax * max(1.0 - x, 0.0) ** a * (npos / nmax) ** b, 0.0), npos)
        delta = frm - to
        out.append(n + delta)
        q = max(q - delta, 0.0)
    return np.array(out), q


def n_star_max(pars):
    """Largest charge an empty pocket swallows whole (DN)."""
    return (pars.cmax / pars.nmax**pars.beta) ** (1 / (1 - pars.beta))


def synthetic_truth(nrows=40, ncols=400, seed=0):
    """Read-oriented truth: data (levels 100..30000 DN, steps, stars, hot columns) + overscan 0."""
    rng = np.random.default_rng(seed)
    levels = np.geomspace(100, 30000, nrows)
    data = np.repeat(levels[:, None], ncols, axis=1)
    data += rng.normal(0, 3, data.shape)  # small pixel-to-pixel structure
    steps = np.arange(0, nrows, 3)
    steps = steps[levels[steps] > 400]  # stay above n* of CCD 6 (69 DN)
    data[steps, ncols // 2 :] *= 0.3  # bright -> darker steps
    data[1::5, ncols // 4 : ncols // 4 + 40] += 20000  # bright block
    data[:, ncols // 7] += 15000  # hot column
    for r, c in zip(rng.integers(0, nrows, 8), rng.integers(5, ncols - 5, 8), strict=True):
        data[r, c - 2 : c + 3] += np.array([2e3, 1.5e4, 4e4, 1.5e4, 2e3])  # "stars"
    return np.hstack([data, np.zeros((nrows, N_OVERSCAN))])


# --------------------------------------------------------------------------- parameters


def test_parameters_table():
    table = pocket.load_parameters()
    assert set(table) == {(c, q) for c in range(1, 17) for q in range(1, 5)}
    assert max(table, key=lambda k: table[k].cmax)[0] == 6
    first = table[(1, 1)]
    assert first == pocket.PocketParameters(
        alpha=1.4253182756219909,
        cmax=415.29434910004596,
        beta=0.463982458057299,
        nmax=117404.15468860342,
    )
    for p in table.values():
        assert 1.3 < p.alpha < 1.8 and 380 < p.cmax < 1800 and 0.28 < p.beta < 0.55
        assert 6e4 < p.nmax < 2.1e6
    assert pocket.parameters(6, 1) == table[(6, 1)]
    table.clear()
    assert len(pocket.load_parameters()) == 64
    with pytest.raises(ValueError, match="ccdid=17"):
        pocket.parameters(17, 1)


def test_parameter_validation():
    with pytest.raises(ValueError, match="cmax"):
        pocket.PocketParameters(alpha=1.5, cmax=-1.0, beta=0.4, nmax=1e5)
    with pytest.raises(ValueError, match="beta must be < 1"):
        pocket.PocketParameters(alpha=1.5, cmax=100.0, beta=1.0, nmax=1e5)
    assert pocket.PocketParameters(np.float32(1.5), 100, 0.4, 1e5).cmax == 100.0
    entry = {"ccdid": 1, "qid": 1, "pars": {"alpha": 1.5, "cmax": 400.0, "beta": 0.4, "nmax": 1e5}}
    with pytest.raises(ValueError, match="missing"):
        pocket._parse_parameters({"data": [entry]})
    with pytest.raises(ValueError, match="duplicate"):
        pocket._parse_parameters({"data": [entry, entry]})
    with pytest.raises(ValueError, match="bad entry"):
        pocket._parse_parameters({"data": [{"ccdid": 1, "qid": 1, "pars": {"alpha": 1.5}}]})


def test_pocket_start():
    assert pocket.POCKET_START == datetime.date(2019, 10, 22)
    assert not pocket.is_active(datetime.date(2019, 10, 21))
    assert pocket.is_active(datetime.date(2019, 10, 22))
    assert pocket.is_active(datetime.datetime(2019, 10, 22, 3, 0))
    assert not pocket.is_active(datetime.datetime(2019, 10, 21, 23, 59))


# --------------------------------------------------------------------------- forward model


@pytest.mark.parametrize("pars", [CCD6, MILD], ids=["ccd6", "mild"])
def test_apply_matches_scalar_reference(pars):
    rng = np.random.default_rng(1)
    truth = synthetic_truth(nrows=12, ncols=150)
    truth[0] = rng.normal(0, 8, truth.shape[1])  # bias-like row with negative pixels
    truth[1, 20:30] = -40.0
    truth[2, 10:20] = 3e5  # above nmax of the mild amplifier: q > cmax can occur
    obs, q_final = pocket.apply(truth, pars, return_pocket=True)
    for r, row in enumerate(truth):
        ref, q_ref = scalar_apply_row(row, pars)
        np.testing.assert_allclose(obs[r], ref, rtol=1e-13, atol=1e-9)
        assert q_final[r] == pytest.approx(q_ref, rel=1e-12, abs=1e-9)
    assert np.all(np.isfinite(obs))


@pytest.mark.parametrize("pars", [CCD6, MILD], ids=["ccd6", "mild"])
def test_charge_conservation(pars):
    truth = synthetic_truth()
    obs, q_final = pocket.apply(truth, pars, return_pocket=True)
    np.testing.assert_allclose(obs.sum(axis=1) + q_final, truth.sum(axis=1), rtol=1e-12)
    assert np.all(q_final > 0)  # charge is still trailing into the overscan at the end


def test_trailing_after_bright_to_dark_transition():
    row = np.concatenate([np.full(200, 20000.0), np.full(200, 100.0), np.zeros(N_OVERSCAN)])
    obs = pocket.apply(row, CCD6)
    excess = obs - row
    # the pocket fills at the start of the bright run (deficit) ...
    assert excess[0] < -100 and excess[:5].sum() < -500
    # ... and releases a decaying trail after the transition (until the pocket reaches its
    # equilibrium with the 100 DN level) and into the overscan
    trail = excess[200:210]
    assert trail[0] > 100
    assert np.all(np.diff(trail) < 0) and np.all(trail > 0)
    assert abs(excess[399]) < 1e-6
    assert np.all(excess[400:] > 0)
    # the mild amplifier trails much less
    mild = pocket.apply(row, MILD) - row
    assert 0 < mild[200] < trail[0] / 2


def test_no_effect_with_tiny_pocket():
    pars = pocket.PocketParameters(alpha=1.7, cmax=1e-9, beta=0.4, nmax=2e5)
    truth = synthetic_truth()
    np.testing.assert_allclose(pocket.apply(truth, pars), truth, rtol=0, atol=1e-6)
    np.testing.assert_allclose(pocket.correct(truth, pars), truth, rtol=0, atol=1e-6)


def test_dtypes_shapes_and_input_untouched():
    truth = synthetic_truth(nrows=5, ncols=60)
    t32 = truth.astype(np.float32)
    keep = t32.copy()
    obs32 = pocket.apply(t32, CCD6)
    assert obs32.dtype == np.float32 and obs32.shape == t32.shape
    np.testing.assert_array_equal(t32, keep)
    assert pocket.correct(obs32, CCD6).dtype == np.float32
    assert pocket.apply(truth, CCD6).dtype == np.float64
    assert pocket.apply(truth.astype(np.int32), CCD6).dtype == np.float32
    # a single row behaves like a one-row frame
    np.testing.assert_array_equal(pocket.apply(truth[3], CCD6), pocket.apply(truth, CCD6)[3])
    obs = pocket.apply(truth, CCD6)
    np.testing.assert_array_equal(pocket.correct(obs[3], CCD6), pocket.correct(obs, CCD6)[3])
    # non-contiguous input
    np.testing.assert_array_equal(pocket.apply(truth[::2], CCD6), pocket.apply(truth, CCD6)[::2])


def test_non_finite_input_rejected():
    row = np.ones(10)
    row[3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        pocket.apply(row, CCD6)
    with pytest.raises(ValueError, match="non-finite"):
        pocket.correct(row, CCD6)
    with pytest.raises(ValueError, match="1-D or 2-D"):
        pocket.apply(np.ones((2, 2, 2)), CCD6)


# --------------------------------------------------------------------------- inversion


@pytest.mark.parametrize("pars", [CCD6, MILD], ids=["ccd6", "mild"])
def test_correct_recovers_truth(pars):
    truth = synthetic_truth()
    assert truth[:, :-N_OVERSCAN].min() > n_star_max(pars)  # identifiable (see correct())
    obs = pocket.apply(truth, pars)
    assert np.abs(obs - truth).max() > 100  # the effect is large ...
    rec = pocket.correct(obs, pars)
    np.testing.assert_allclose(rec, truth, rtol=0, atol=1e-6)  # ... and exactly undone
    assert np.abs(rec[:, -N_OVERSCAN:]).max() < 1e-12  # overscan: zero charge recovered


@pytest.mark.parametrize("pars", [CCD6, MILD], ids=["ccd6", "mild"])
def test_correct_recovers_truth_float32(pars):
    """float32 frames: limited by float32 rounding of the observed frame (ulp 0.004 DN at 4e4)."""
    truth = synthetic_truth().astype(np.float32)
    rec = pocket.correct(pocket.apply(truth, pars), pars)
    assert rec.dtype == np.float32
    np.testing.assert_allclose(rec, truth, rtol=0, atol=0.01)


def test_correct_negative_pixels():
    """Negative (noise) pixels give nothing to the pocket: they are recovered exactly."""
    truth = np.concatenate([np.full(50, 5000.0), np.full(20, -15.0), np.full(50, 800.0)])
    obs = pocket.apply(truth, CCD6)
    assert np.all(obs[50:70] > truth[50:70])  # flush still lands on them
    np.testing.assert_allclose(pocket.correct(obs, CCD6), truth, rtol=0, atol=1e-6)


def test_correct_is_an_exact_fixed_point_for_any_input():
    """apply(correct(obs)) == obs, also for noisy low-signal data, up to zero_tol."""
    rng = np.random.default_rng(7)
    obs = np.concatenate(
        [
            rng.normal(0, 8, (20, 300)),
            rng.normal(300, 20, (20, 300)),
            rng.normal(2e4, 150, (20, 300)),
        ]
    )
    for pars in (CCD6, MILD):
        rec = pocket.correct(obs, pars)
        assert np.abs(pocket.apply(rec, pars) - obs).max() <= 0.01 + 1e-9  # zero_tol
        bright = slice(20, 60)
        np.testing.assert_allclose(pocket.apply(rec, pars)[bright], obs[bright], atol=1e-6)


def test_swallowed_pixels_are_not_identifiable():
    """A pixel below n* with an empty pocket is absorbed whole: the zero-charge solution is
    returned, it reproduces the observation exactly and the charge reappears downstream."""
    truth = np.concatenate([[20.0], np.full(100, 500.0), np.zeros(N_OVERSCAN)])
    assert truth[0] < n_star_max(CCD6)
    obs = pocket.apply(truth, CCD6)
    assert obs[0] == 0.0
    rec = pocket.correct(obs, CCD6)
    assert rec[0] == 0.0
    np.testing.assert_allclose(pocket.apply(rec, CCD6), obs, atol=1e-9)
    np.testing.assert_allclose(rec.sum(), truth.sum(), rtol=1e-3)
    np.testing.assert_allclose(rec[20:-N_OVERSCAN], truth[20:-N_OVERSCAN], atol=0.05)


def test_literal_fixed_point_iteration_agrees_on_identifiable_data():
    """The reference-style iteration state += observed - apply(state) has the same solution."""
    truth = synthetic_truth(nrows=20, ncols=200)[:, :-N_OVERSCAN]  # no swallowed pixels
    obs = pocket.apply(truth, CCD6)
    state = obs.copy()
    n_iter, max_update = 0, np.inf
    while max_update > 1e-7 and n_iter < 100:
        update = obs - pocket.apply(state, CCD6)
        state += update
        n_iter, max_update = n_iter + 1, np.abs(update).max()
    assert n_iter < 50
    np.testing.assert_allclose(state, pocket.correct(obs, CCD6), atol=1e-6)
    np.testing.assert_allclose(state, truth, atol=1e-6)


def test_newton_warning_when_not_converged():
    obs = pocket.apply(synthetic_truth(nrows=4, ncols=150), CCD6)
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        pocket.correct(obs, CCD6, n_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pocket.correct(obs, CCD6)


def test_scalar_reference_is_finite_on_edge_cases():
    """Sanity of the test's own reference on the edge conventions (q > cmax, n < 0)."""
    ref, q = scalar_apply_row([3e6, 3e6, -5.0, 0.0], MILD)
    assert all(math.isfinite(v) for v in ref) and q >= 0


# --------------------------------------------------------------------------- compiled engine


def float32_ulps(a, b):
    """Distance in float32 ulps (signed-magnitude order)."""

    def key(x):
        i = np.asarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)

    return np.abs(key(a) - key(b))


def assert_float32_close(new, ref):
    """≤ 1 float32 ulp where |ref| ≥ 1e-3 DN; < 1e-9 DN absolute below (rounding near zero)."""
    small = np.abs(ref) < 1e-3
    assert float32_ulps(new, ref)[~small].max(initial=0) <= 1
    assert np.abs(np.asarray(new, float) - ref)[small].max(initial=0.0) < 1e-9


@pytest.mark.parametrize("pars", [CCD6, MILD], ids=["ccd6", "mild"])
def test_compiled_equals_numpy_inversion(pars):
    """correct_compiled == correct to ≤ 1 float32 ulp (≤ 1e-9 DN where |value| < 1e-3 DN), on
    identifiable and noisy low-signal rows, bright runs, q > cmax, rows not a multiple of LANES."""
    rng = np.random.default_rng(3)
    truth = synthetic_truth(nrows=37, ncols=300)
    truth[0] = rng.normal(0, 8, truth.shape[1])  # bias-like: swallowed pixels, noise jumps
    truth[1, 20:30] = -40.0
    truth[2, 10:20] = 3e5  # above nmax of the mild amplifier
    truth[3, :] = rng.normal(300, 20, truth.shape[1])
    obs = pocket.apply(truth, pars)
    ref, new = pocket.correct(obs, pars), pocket.correct_compiled(obs, pars)
    assert new.dtype == ref.dtype == np.float64 and new.shape == ref.shape
    assert_float32_close(new, ref)
    assert np.abs(new - ref).max() < 1e-6  # float64: both converged to the same fixed point
    # float32 in -> float32 out, a single row, and a non-default zero_tol
    obs32 = obs.astype(np.float32)
    assert pocket.correct_compiled(obs32, pars).dtype == np.float32
    # a row alone (Newton steps are shared by a block of rows: float64 rounding differs)
    assert_float32_close(pocket.correct_compiled(obs[5], pars), new[5])
    ref3, new3 = pocket.correct(obs, pars, zero_tol=3.0), pocket.correct_compiled(obs, pars, 3.0)
    assert_float32_close(new3, ref3)


def test_compiled_rejects_non_finite():
    row = np.full(50, 100.0)
    row[10] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        pocket.correct_compiled(row, CCD6)


def test_compiled_equals_numpy_inversion_on_every_amplifier():
    """All 64 amplifiers' parameters: a noisy sky row, a bright run, a bias-like row."""
    rng = np.random.default_rng(11)
    rows = np.stack([rng.normal(300, 20, 230), rng.normal(0, 5, 230),
                     np.r_[np.full(60, 3e4), rng.normal(150, 10, 170)]])  # fmt: skip
    truth = np.hstack([rows, np.zeros((3, N_OVERSCAN))])
    for pars in pocket.load_parameters().values():
        obs = pocket.apply(truth, pars)
        assert_float32_close(pocket.correct_compiled(obs, pars), pocket.correct(obs, pars))
