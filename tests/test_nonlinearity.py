"""Tests of ztfluigi.nonlinearity (IPAC per-amplifier non-linearity model)."""

import datetime
from fractions import Fraction

import numpy as np
import pytest

from ztfluigi import nonlinearity as nl

DATED_TABLES = ("201803", "201910", "202004")
# A few real amplifiers of each table, including the extreme coefficients.
AMPS = [(1, 1), (3, 3), (4, 3), (6, 2), (10, 4), (16, 1)]


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        (datetime.date(2018, 3, 1), "201803"),
        (datetime.date(2019, 10, 22), "201803"),
        (datetime.date(2019, 10, 23), "201910"),
        (datetime.date(2020, 4, 27), "201910"),
        (datetime.date(2020, 4, 28), "202004"),
        (datetime.date(2024, 6, 1), "202004"),
        (datetime.datetime(2019, 10, 23, 0, 0, 1), "201910"),
        (datetime.datetime(2020, 4, 27, 23, 59, 59), "201910"),
    ],
)
def test_table_name_for_date(date, expected):
    assert nl.table_name_for_date(date) == expected


def test_table_name_for_aware_datetime_uses_ut():
    cest = datetime.timezone(datetime.timedelta(hours=2))
    # 2019-10-23 01:00 CEST is 2019-10-22 23:00 UT: still the 2018 table.
    assert nl.table_name_for_date(datetime.datetime(2019, 10, 23, 1, tzinfo=cest)) == "201803"


@pytest.mark.parametrize("name", [*DATED_TABLES, "ccd_amp_coeff_v2"])
def test_tables_load_with_64_amps(name):
    table = nl.load_table(name)
    assert set(table) == {(c, q) for c in range(1, 17) for q in range(1, 5)}
    a, b = np.array(list(table.values())).T
    assert np.all(a < 0) and np.all(a > -1e-10)
    assert np.all(b > 0) and np.all(b < 2e-6)


def test_table_values_and_odd_spacing():
    t18 = nl.load_table("201803")
    # "3\tf  2\t-1.32E-11\t8.07E-07": AMP_ID 2 -> qid 3
    assert t18[(3, 3)] == (-1.32e-11, 8.07e-07)
    # "4\tf  2 \t-1.29E-11\t7.74E-07" (trailing blank before the tab)
    assert t18[(4, 3)] == (-1.29e-11, 7.74e-07)
    assert t18[(3, 1)] == (-1.14e-11, 6.94e-07)  # "3 h 0"


def test_v2_table_is_the_201910_table():
    assert nl.load_table("ccd_amp_coeff_v2") == nl.load_table("201910")


def test_load_table_returns_a_fresh_dict():
    table = nl.load_table("201803")
    table[(1, 1)] = (0.0, 0.0)
    table.clear()
    assert len(nl.load_table("201803")) == 64
    assert nl.coefficients(1, 1, datetime.date(2018, 5, 1)) != (0.0, 0.0)


def test_unknown_table_and_amplifier():
    with pytest.raises(ValueError, match="unknown non-linearity table"):
        nl.load_table("201701")
    with pytest.raises(ValueError, match="ccdid=17"):
        nl.coefficients(17, 1, datetime.date(2020, 1, 1))
    with pytest.raises(ValueError, match="qid=0"):
        nl.coefficients(1, 0, datetime.date(2020, 1, 1))


def test_coefficients_follow_the_date():
    for date, name in [
        (datetime.date(2019, 10, 22), "201803"),
        (datetime.date(2019, 10, 23), "201910"),
        (datetime.date(2020, 4, 28), "202004"),
    ]:
        assert nl.coefficients(6, 2, date) == nl.load_table(name)[(6, 2)]
    # explicit table overrides the date
    assert (
        nl.coefficients(6, 2, datetime.date(2025, 1, 1), table="201803")
        == nl.load_table("201803")[(6, 2)]
    )


def _table_text(skip=None, extra=""):
    lines = ["# CCDID, AMP_NAME, AMP_ID, A, B"]
    for c in range(1, 17):
        for amp_id, name in nl.AMP_NAMES.items():
            if (c, amp_id + 1) != skip:
                lines.append(f"{c}\t{name}  {amp_id}\t-1.2E-11\t7.0E-07  # comment")
    return "\n".join(lines) + "\n" + extra


def test_parse_table_validation():
    assert len(nl._parse_table(_table_text())) == 64
    with pytest.raises(ValueError, match=r"1 of 64 amplifiers missing.*\(5, 2\)"):
        nl._parse_table(_table_text(skip=(5, 2)))
    with pytest.raises(ValueError, match="duplicate"):
        nl._parse_table(_table_text(extra="5 g 1 -1E-11 7E-7\n"))
    with pytest.raises(ValueError, match="AMP_NAME 'e' does not match AMP_ID 1"):
        nl._parse_table(_table_text(skip=(5, 2), extra="5 e 1 -1E-11 7E-7\n"))
    with pytest.raises(ValueError, match="expected 5 columns"):
        nl._parse_table(_table_text(extra="5 g 1 -1E-11\n"))
    with pytest.raises(ValueError, match="cannot parse"):
        nl._parse_table(_table_text(skip=(5, 2), extra="5 g 1 x 7E-7\n"))


def _exact_correct(x, a, b):
    x, a, b = Fraction(x), Fraction(a), Fraction(b)
    return float(x / (a * x * x + b * x + 1))


@pytest.mark.parametrize("ccdid, qid", AMPS)
def test_correct_matches_the_formula(ccdid, qid):
    a, b = nl.load_table("201803")[(ccdid, qid)]
    x = np.array([-500.0, 0.0, 1.0, 1000.0, 30000.0, 60000.0, 65535.0])
    exact = np.array([_exact_correct(v, a, b) for v in x])
    got = nl.correct(x, a, b)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-9)
    # float32: float64 result rounded once, i.e. within half a float32 ulp (<= 0.002 DN at 6e4)
    got32 = nl.correct(x.astype(np.float32), a, b)
    assert got32.dtype == np.float32
    half_ulp = np.spacing(np.abs(exact).astype(np.float32)) / 2
    assert np.all(np.abs(got32.astype(np.float64) - exact) <= half_ulp * 1.000001)
    assert abs(float(got32[5]) - exact[5]) < 2e-3


@pytest.mark.parametrize("name", DATED_TABLES)
@pytest.mark.parametrize("ccdid, qid", AMPS)
def test_round_trips(name, ccdid, qid):
    a, b = nl.load_table(name)[(ccdid, qid)]
    y = np.linspace(-500.0, 65000.0, 200_001)
    x = nl.distort(y, a, b)
    assert np.all(np.diff(x) > 0)
    np.testing.assert_allclose(nl.correct(x, a, b), y, rtol=0, atol=1e-6)
    np.testing.assert_allclose(nl.distort(nl.correct(y, a, b), a, b), y, rtol=0, atol=1e-6)
    assert nl.distort(np.array(0.0), a, b) == 0.0
    # float32 in, float32 out; error limited by float32 rounding (ulp 0.004 DN at 6.5e4)
    y32 = y.astype(np.float32)
    x32 = nl.distort(y32, a, b)
    assert x32.dtype == np.float32
    back = nl.correct(x32, a, b)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, y32, rtol=0, atol=8e-3)


def test_correction_magnitude_2018():
    """≈1 % at 30 000 DN in the 2018 table (0.84 % for typical A=-1.4e-11, B=7e-7)."""
    frac = np.array(
        [
            1 - nl.correct(np.array(30000.0), a, b) / 30000
            for a, b in nl.load_table("201803").values()
        ]
    )
    assert np.all((frac > 0.005) & (frac < 0.015))
    assert 0.008 < np.median(frac) < 0.012
    assert 1 - nl.correct(np.array(30000.0), -1.4e-11, 7e-7) / 30000 == pytest.approx(
        0.0084, abs=2e-4
    )
    # measured > true for these amplifiers: the detector is super-linear
    a, b = nl.load_table("201803")[(3, 3)]
    assert nl.correct(np.array(30000.0), a, b) < 30000 < nl.distort(np.array(30000.0), a, b)


def test_shapes_dtypes_blocks_and_strides():
    a, b = -1.3e-11, 7.5e-7
    rng = np.random.default_rng(3)
    frame = rng.uniform(-500, 65000, size=(700, 800)).astype(np.float32)  # > one block
    view = frame.T[::2]  # non-contiguous
    out = nl.correct(view, a, b)
    assert out.shape == view.shape and out.dtype == np.float32
    x64 = view.astype(np.float64)
    np.testing.assert_array_equal(out, (x64 / ((a * x64 + b) * x64 + 1)).astype(np.float32))
    assert nl.correct(np.arange(5), a, b).dtype == np.float64
    assert nl.correct(np.float32(100.0), a, b).shape == ()
    # the input is not modified
    copy = frame.copy()
    nl.correct(frame, a, b)
    nl.distort(frame, a, b)
    np.testing.assert_array_equal(frame, copy)


def test_domain_errors():
    a, b = -1.4e-11, 7e-7
    with pytest.raises(ValueError, match="outside the domain"):
        nl.correct(np.array([0.0, 1e6]), a, b)
    # a < 0: distort is defined everywhere and stays inside the domain of correct
    x = nl.distort(np.array([-1e12, -1e6, 1e6, 1e12]), a, b)
    assert np.all(np.isfinite(nl.correct(x, a, b)))
    # a > 0 (no shipped table): outside the range of correct there is no root
    with pytest.raises(ValueError, match="cannot be produced"):
        nl.distort(np.array([1e6]), 1e-11, 7e-7)
    np.testing.assert_allclose(
        nl.correct(nl.distort(np.array([3e4]), 1e-11, 7e-7), 1e-11, 7e-7), [3e4], atol=1e-8
    )
