"""ztfluigi.stacking: the clipped median is astropy's sigma_clip + np.nanmedian, bitwise."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import sigma_clip

from ztfluigi import stacking
from ztfluigi.stacking import ClipSpec, ClipStats, clipped_median, clipped_median_stats

HAVE_NUMBA = stacking.numba_available()
ENGINES = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba"))]


def astropy_path(stack, sigma=3.0, iterations=1, stdfunc="std"):
    """The reference pipeline's combination (reference_pipeline.md §3), and the kept-value count."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clipped = sigma_clip(
            stack.copy(),
            sigma=sigma,
            axis=0,
            maxiters=iterations,
            cenfunc="median",
            stdfunc=stdfunc,
            masked=False,
        )
        return np.nanmedian(clipped, axis=0), np.count_nonzero(np.isfinite(clipped), axis=0)


def make_stack(n, shape=(23, 41), seed=0, integer=False):
    """Noise + outliers of both signs + NaN/±inf + constant, all-NaN and mostly-equal pixels."""
    rng = np.random.default_rng(seed)
    if integer:  # quantised data: many ties, values exactly on bounds
        stack = np.round(rng.normal(100, 2, (n, *shape))).astype(np.float32)
    else:
        stack = rng.normal(100, 5, (n, *shape)).astype(np.float32)
    hit = rng.random(stack.shape) < 0.06
    stack[hit] += (rng.choice([-1, 1], hit.sum()) * rng.uniform(20, 5000, hit.sum())).astype(
        np.float32
    )
    stack[rng.random(stack.shape) < 0.04] = np.nan
    stack[rng.random(stack.shape) < 0.005] = rng.choice([np.inf, -np.inf])
    stack[:, 0, :5] = 7.25  # constant pixels: std = 0
    stack[:, 1, :3] = np.nan  # no finite value
    stack[: n // 2 + 1, 2, :4] = 3.0  # more than half identical: MAD = 0
    return stack


def assert_same(result, expected):
    assert result.dtype == np.float32 and result.shape == expected.shape
    np.testing.assert_array_equal(result, expected)  # NaN == NaN here, exact otherwise


# ---------------------------------------------------------------------------------------------
# Sorting network
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 10, 13, 20, 33])
def test_network_sorts(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 500))
    zero_one = ((np.arange(2 ** min(n, 12))[:, None] >> np.arange(n)) & 1).T.astype(float)
    for data in (x, zero_one):  # 0-1 principle (exhaustive up to n = 12) + random
        s = data.copy()
        s = stacking._network_sort_rows(s, np.empty(s.shape[1]), np.empty_like(s))
        np.testing.assert_array_equal(s, np.sort(data, axis=0))


# ---------------------------------------------------------------------------------------------
# Equality with astropy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("n", [3, 5, 10, 20])
@pytest.mark.parametrize("integer", [False, True])
def test_reference_is_astropy(engine, n, integer):
    stack = make_stack(n, seed=n, integer=integer)
    expected, kept = astropy_path(stack)
    nused = np.zeros(stack.shape[1:], np.int16)
    assert_same(clipped_median(stack, engine=engine, block_rows=5, nused=nused), expected)
    np.testing.assert_array_equal(nused, kept)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("n", [1, 2, 4, 5, 10])
@pytest.mark.parametrize("iterations", [1, 2, 5])
def test_mad_is_astropy_mad_std(engine, n, iterations):
    stack = make_stack(n, seed=100 + n, integer=n == 10)
    expected, kept = astropy_path(stack, iterations=iterations, stdfunc="mad_std")
    spec = ClipSpec(iterations=iterations, method="mad")
    nused = np.zeros(stack.shape[1:], np.int32)
    assert_same(clipped_median(stack, spec, engine=engine, nused=nused), expected)
    np.testing.assert_array_equal(nused, kept)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("iterations", [2, 3, 10])
@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_iterations_are_astropy_maxiters(engine, iterations, sigma):
    """Bounds re-estimated on the survivors, the last ones applied to all values."""
    stack = make_stack(9, seed=iterations, integer=sigma == 1.0)
    expected, _ = astropy_path(stack, sigma=sigma, iterations=iterations)
    result = clipped_median(stack, ClipSpec(sigma=sigma, iterations=iterations), engine=engine)
    assert_same(result, expected)


@pytest.mark.parametrize("engine", ENGINES)
def test_small_sigma_can_empty_a_pixel(engine):
    """σ < 1 and an even count: both middle values rejected → NaN, as astropy."""
    stack = np.array([1.0, 2.0, 5.0, 6.0], np.float32).reshape(4, 1, 1)
    expected, _ = astropy_path(stack, sigma=0.5)
    assert np.isnan(expected).all()
    assert_same(clipped_median(stack, ClipSpec(sigma=0.5), engine=engine), expected)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("method,stdfunc", [("reference", "std"), ("mad", "mad_std")])
def test_exact_fallback_path_is_astropy(engine, method, stdfunc, monkeypatch):
    """Force every pixel through the emulation of astropy's C routine (used near bounds)."""
    monkeypatch.setattr(stacking, "_TIE_RTOL", 1e30)
    stack = make_stack(6, seed=7, integer=True)
    for iterations in (1, 3):
        expected, _ = astropy_path(stack, iterations=iterations, stdfunc=stdfunc)
        spec = ClipSpec(iterations=iterations, method=method)
        assert_same(clipped_median(stack, spec, engine=engine), expected)


def test_emulated_bounds_are_astropy_bounds():
    """The exact emulation reproduces astropy's float64 bounds bitwise (std and MAD)."""
    rng = np.random.default_rng(3)
    stack = rng.normal(0, 1, (7, 300)).astype(np.float32)
    stack[:, ::2] = rng.integers(0, 4, (7, 150))
    for stdfunc, use_mad in (("std", False), ("mad_std", True)):
        for iterations in (1, 4):
            _, lower, upper = sigma_clip(
                stack, sigma=1.5, axis=0, maxiters=iterations, stdfunc=stdfunc, return_bounds=True
            )
            for p in range(0, 300, 3):
                buf = stack[:, p].astype(np.float64)
                bounds = stacking._astropy_bounds(buf, 7, 1.5, iterations, use_mad, np.empty(7))
                assert bounds == (lower[p], upper[p])


# ---------------------------------------------------------------------------------------------
# Trap 8: std cannot clip one outlier among 5 frames, the MAD can
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_trap8_single_outlier_among_five(engine):
    stack = np.array([100.0, 101.0, 99.0, 100.5, 5100.0], np.float32).reshape(5, 1, 1)
    kept = np.zeros((1, 1), np.int32)
    ref = clipped_median(stack, engine=engine, nused=kept)
    assert kept[0, 0] == 5 and ref[0, 0] == np.float32(100.5)  # outlier kept (median of 5)
    assert_same(ref, astropy_path(stack)[0])
    mad = clipped_median(stack, ClipSpec(method="mad"), engine=engine, nused=kept)
    assert kept[0, 0] == 4 and mad[0, 0] == np.float32(100.25)  # outlier rejected

    # On noise: one +5000 outlier per pixel in a random frame. |v − median| / std ≤ N/√(N−1)
    # = 2.5 < 3 for N = 5, so the reference never clips it; the MAD always does.
    rng = np.random.default_rng(8)
    stack = rng.normal(0, 3, (5, 40, 50)).astype(np.float32)
    frame = rng.integers(0, 5, (40, 50))
    np.put_along_axis(stack, frame[None], np.float32(5000), axis=0)
    _, ref_stats = clipped_median_stats(stack, engine=engine)
    _, mad_stats = clipped_median_stats(stack, ClipSpec(method="mad"), engine=engine)
    assert ref_stats.n_clipped == 0
    assert mad_stats.n_clipped >= 2000  # every outlier (and a few noise values) rejected


# ---------------------------------------------------------------------------------------------
# Engines, blocks, inputs, outputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_block_rows_do_not_change_the_result(engine):
    stack = make_stack(10, shape=(37, 29), seed=11)
    one_block = clipped_median(stack, block_rows=37, engine=engine, threads=1)
    for rows in (1, 4, 36, None):
        for threads in (1, 2):
            result = clipped_median(stack, block_rows=rows, engine=engine, threads=threads)
            assert_same(result, one_block)


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
def test_numpy_and_numba_engines_agree():
    rng = np.random.default_rng(12)
    stack = rng.normal(1000, 30, (12, 48, 300)).astype(np.float32)
    stack[rng.random(stack.shape) < 0.03] *= 3
    stack[rng.random(stack.shape) < 0.01] = np.nan
    for spec in (ClipSpec(), ClipSpec(method="mad"), ClipSpec(sigma=2, iterations=3)):
        a = clipped_median(stack, spec, engine="numpy")
        b = clipped_median(stack, spec, engine="numba")
        assert_same(a, b)


def test_auto_engine_without_numba(monkeypatch):
    """Without numba, "auto" is the numpy engine and "numba" is an explicit error."""
    monkeypatch.setattr(stacking, "_numba_namespace", lambda: None)
    stack = make_stack(5, seed=4)
    assert_same(clipped_median(stack), astropy_path(stack)[0])
    with pytest.raises(RuntimeError, match="numba"):
        clipped_median(stack, engine="numba")


@pytest.mark.parametrize("engine", ENGINES)
def test_sequence_dtypes_layouts_and_out(engine):
    stack = make_stack(6, seed=5)
    expected, _ = astropy_path(stack)
    frames = [np.asfortranarray(f) for f in stack]  # a list of non-C-ordered 2-D frames
    assert_same(clipped_median(frames, engine=engine), expected)
    assert_same(clipped_median(tuple(stack), engine=engine, block_rows=3), expected)
    strided = np.zeros((6, stack.shape[1], 2 * stack.shape[2]), np.float32)
    strided[:, :, ::2] = stack
    assert_same(clipped_median(strided[:, :, ::2], engine=engine), expected)
    # big-endian float32 (what astropy.io.fits returns) and other dtypes are converted first
    assert_same(clipped_median(stack.astype(">f4"), engine=engine), expected)
    as64 = clipped_median(stack.astype(np.float64), engine=engine)
    assert_same(as64, expected)
    ints = np.arange(24, dtype=np.int16).reshape(3, 2, 4)
    assert_same(clipped_median(ints, engine=engine), np.median(ints, 0).astype(np.float32))
    # out= (also non-contiguous) is filled and returned
    out = np.full(expected.shape, -1, np.float32)
    assert clipped_median(stack, out=out, engine=engine) is out
    assert_same(out, expected)
    wide = np.zeros((expected.shape[0], 2 * expected.shape[1]), np.float32)
    clipped_median(stack, out=wide[:, 1::2], engine=engine)
    assert_same(wide[:, 1::2], expected)


@pytest.mark.parametrize("engine", ENGINES)
def test_stats_and_header_cards(engine):
    stack = make_stack(10, seed=9)
    _, kept = astropy_path(stack)
    result, stats = clipped_median_stats(stack, engine=engine)
    assert_same(result, astropy_path(stack)[0])
    finite = np.count_nonzero(np.isfinite(stack))
    assert stats == ClipStats(
        n_frames=10,
        n_pixels=result.size,
        n_nonfinite=stack.size - finite,
        n_clipped=finite - int(kept.sum()),
        n_empty=int(np.count_nonzero(kept == 0)),
    )
    assert stats.n_clipped > 0 and stats.n_empty == 3
    header = fits.Header()
    for card in ClipSpec().header_cards() + stats.header_cards():
        header.append(fits.Card(*card))
    assert header["CLIPMETH"] == "reference"
    assert header["CLIPSIG"] == 3.0 and header["CLIPITER"] == 1
    assert header["NCLIPPED"] == stats.n_clipped
    assert "std ddof=0" in header.comments["CLIPMETH"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no truncated comment / too long card
        header.tostring()
    cards = dict((k, v) for k, v, _ in ClipSpec(2.5, 3, "mad").header_cards())
    assert cards == {"CLIPMETH": "mad", "CLIPSIG": 2.5, "CLIPITER": 3, "CLIPCOMB": "nanmedian"}


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"sigma": 0.0}, ValueError),
        ({"sigma": -1}, ValueError),
        ({"sigma": float("nan")}, ValueError),
        ({"sigma": float("inf")}, ValueError),
        ({"sigma": True}, TypeError),
        ({"sigma": "3"}, TypeError),
        ({"iterations": 0}, ValueError),
        ({"iterations": 1.5}, TypeError),
        ({"iterations": True}, TypeError),
        ({"method": "std"}, ValueError),
    ],
)
def test_clipspec_validation(kwargs, error):
    with pytest.raises(error):
        ClipSpec(**kwargs)


def test_clipspec_normalises_and_is_frozen():
    spec = ClipSpec(np.float32(2.5), np.int64(2), "mad")
    assert spec == ClipSpec(2.5, 2, "mad") and type(spec.sigma) is float
    assert type(spec.iterations) is int and spec.use_mad and hash(spec)
    with pytest.raises(AttributeError):
        spec.sigma = 1.0  # type: ignore[misc]


def test_call_validation():
    good = np.zeros((3, 4, 5), np.float32)
    with pytest.raises(ValueError, match="3-D"):
        clipped_median(good[0])
    with pytest.raises(ValueError, match="empty"):
        clipped_median([])
    with pytest.raises(ValueError, match="differ in shape"):
        clipped_median([good[0], good[0, :3]])
    with pytest.raises(ValueError, match="2-D"):
        clipped_median([good, good])
    with pytest.raises(TypeError, match="real numbers"):
        clipped_median(good.astype(complex))
    with pytest.raises(TypeError, match="ClipSpec"):
        clipped_median(good, spec={"sigma": 3})
    with pytest.raises(ValueError, match="engine"):
        clipped_median(good, engine="cuda")
    with pytest.raises(ValueError, match="out"):
        clipped_median(good, out=np.zeros((4, 5)))
    with pytest.raises(ValueError, match="out"):
        clipped_median(good, out=np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match="nused"):
        clipped_median(good, nused=np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="block_rows"):
        clipped_median(good, block_rows=0)
    with pytest.raises(ValueError, match="threads"):
        clipped_median(good, threads=0)


def test_input_is_not_modified():
    stack = make_stack(5, seed=2)
    before = stack.copy()
    for engine in ["numpy"] + (["numba"] if HAVE_NUMBA else []):
        clipped_median(stack, engine=engine)
        clipped_median(list(stack), ClipSpec(method="mad", iterations=2), engine=engine)
    np.testing.assert_array_equal(stack, before)
