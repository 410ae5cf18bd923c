"""Nearest calibration night: distance, ties, window, year boundary, usability from RawIndex."""

import datetime as dt
import itertools

import numpy as np
import pyarrow as pa
import pytest

from ztfluigi import calmatch
from ztfluigi.calmatch import NoCalibrationError

D = dt.date


def days(base, *offsets):
    return [base + dt.timedelta(days=k) for k in offsets]


# --- nearest night ---------------------------------------------------------------------------


def test_same_night_wins():
    assert calmatch.nearest_night(D(2019, 3, 31), days(D(2019, 3, 31), -1, 0, 1)) == D(2019, 3, 31)


def test_nearest_of_several():
    nights = days(D(2019, 3, 31), -7, -3, 5, 9)
    assert calmatch.nearest_night(D(2019, 3, 31), nights) == D(2019, 3, 28)


def test_tie_goes_to_the_later_night():
    nights = days(D(2019, 3, 31), -2, 2)
    assert calmatch.nearest_night(D(2019, 3, 31), nights) == D(2019, 4, 2)
    assert calmatch.nearest_night(D(2019, 3, 31), reversed(nights)) == D(2019, 4, 2)


def test_window_edges_are_inclusive():
    d = D(2019, 3, 31)
    assert calmatch.nearest_night(d, days(d, 10)) == D(2019, 4, 10)
    assert calmatch.nearest_night(d, days(d, -10)) == D(2019, 3, 21)
    for k in (11, -11):
        with pytest.raises(NoCalibrationError):
            calmatch.nearest_night(d, days(d, k))
    # configurable window
    assert calmatch.nearest_night(d, days(d, -3), window=3) == D(2019, 3, 28)
    with pytest.raises(NoCalibrationError, match="±2 days"):
        calmatch.nearest_night(d, days(d, -3), window=2)
    assert calmatch.nearest_night(d, days(d, 0), window=0) == d
    with pytest.raises(ValueError, match="window"):
        calmatch.nearest_night(d, days(d, 0), window=-1)


def test_year_boundary():
    # The reference only looks in the exposure's calendar year and fails here.
    assert calmatch.nearest_night(D(2019, 1, 3), [D(2018, 12, 30)]) == D(2018, 12, 30)
    assert calmatch.nearest_night("2018-12-29", ["20190105", "2018-12-20"]) == D(2019, 1, 5)
    assert D(2018, 12, 30) in calmatch.candidate_nights(D(2019, 1, 3))


def test_no_calibration_is_a_clear_error():
    with pytest.raises(NoCalibrationError) as err:
        calmatch.nearest_night(
            D(2019, 3, 31), days(D(2019, 3, 31), 15), kind="flat", ccdid=5, filtercode="zr"
        )
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    for part in ("flat", "CCD 05", "zr", "±10 days", "2019-03-31", "nearest: 2019-04-15"):
        assert part in msg, (part, msg)
    with pytest.raises(NoCalibrationError, match="no usable bias of CCD 16 within ±10 days"):
        calmatch.nearest_night(D(2019, 3, 31), [], kind="bias", ccdid=16)


def test_candidate_nights_nearest_first():
    d = D(2019, 3, 31)
    nights = calmatch.candidate_nights(d, 3)
    assert nights == days(d, 0, 1, -1, 2, -2, 3, -3)
    assert len(calmatch.candidate_nights(d)) == 21
    assert calmatch.candidate_nights(dt.datetime(2019, 3, 31, 23, 59), 0) == [d]


def test_first_usable_candidate_is_the_nearest_night():
    rng = np.random.default_rng(0)
    d = D(2019, 3, 31)
    for _ in range(300):
        offsets = rng.choice(np.arange(-14, 15), size=rng.integers(0, 6), replace=False)
        nights = set(days(d, *map(int, offsets)))
        first = next((n for n in calmatch.candidate_nights(d, 10) if n in nights), None)
        try:
            nearest = calmatch.nearest_night(d, nights, window=10)
        except NoCalibrationError:
            nearest = None
        assert first == nearest


# --- usability from RawIndex tables --------------------------------------------------------


def index(rows):
    """A RawIndex-like table from (imgtype, ccdid, filtercode, ledid) rows (obsjd increasing)."""
    n = len(rows)
    imgtype, ccdid, filt, led = zip(*rows, strict=True) if rows else ((), (), (), ())
    return pa.table({
        "imgtype": pa.array(imgtype, pa.string()), "ccdid": pa.array(ccdid, pa.int64()),
        "filtercode": pa.array(filt, pa.string()),
        "obsjd": pa.array(2458574.5 + np.arange(n) * 1e-4, pa.float64()),
        "ledid": pa.array(led, pa.int64()),
        "filename": pa.array([f"f{i}" for i in range(n)], pa.string()),
    })  # fmt: skip


def biases(ccdid, n):
    return [("bias", ccdid, "bi", -1)] * n


def flats(ccdid, filt, per_led):
    return [("flat", ccdid, filt, led) for led, n in per_led.items() for _ in range(n)]


ZR_FULL = {7: 5, 8: 5, 9: 5, 10: 5}


def full_night(filters=("zr",), skip_ccd=None):
    rows = []
    for c in range(1, 17):
        rows += biases(c, 20)
        if c != skip_ccd:
            for f in filters:
                rows += flats(c, f, {led: 5 for led in calmatch.FILTER_LEDS[f]})
    rows += [("object", 5, "zr", -1)] * 3
    return index(rows)


def test_bias_needs_three_after_the_first_ten():
    assert calmatch.bias_frames(index(biases(5, 20)), 5) == 10
    assert calmatch.usable_bias(index(biases(5, 13)), 5)
    assert not calmatch.usable_bias(index(biases(5, 12)), 5)
    assert not calmatch.usable_bias(index(biases(4, 20)), 5)  # another CCD's biases
    assert not calmatch.usable_bias(index([]), 5) and not calmatch.usable_bias(None, 5)


def test_flat_needs_three_frames_for_every_led_present():
    bias = biases(5, 20)
    assert calmatch.usable_flat(index(bias + flats(5, "zr", ZR_FULL)), 5, "zr")
    assert calmatch.usable_flat(index(bias + flats(5, "zr", {8: 3})), 5, "zr")  # one LED is enough
    assert not calmatch.usable_flat(index(bias + flats(5, "zr", {7: 5, 8: 2})), 5, "zr")
    assert not calmatch.usable_flat(index(bias + flats(5, "zg", {2: 5})), 5, "zr")
    # Unknown LEDs and LEDs of other filters are left out, as MasterFlat does.
    table = index(bias + flats(5, "zr", {7: 5, -1: 2, 3: 1}))
    assert calmatch.flat_frames_per_led(table, 5, "zr") == {7: 5}
    assert calmatch.usable_flat(table, 5, "zr")
    assert not calmatch.usable_flat(index(bias + flats(5, "zr", {-1: 9})), 5, "zr")
    # The flat is bias-subtracted with the same night's master bias.
    no_bias = index(biases(5, 12) + flats(5, "zr", ZR_FULL))
    assert not calmatch.usable_flat(no_bias, 5, "zr")
    assert calmatch.usable_flat(no_bias, 5, "zr", require_bias=False)
    with pytest.raises(ValueError, match="filter"):
        calmatch.usable_flat(no_bias, 5, "bi")


def test_flat_without_led_information_counts_frames():
    table = index(biases(5, 20) + flats(5, "zr", {7: 2, 8: 1})).drop_columns(["ledid"])
    assert calmatch.usable_flat(table, 5, "zr")
    table = index(biases(5, 20) + flats(5, "zr", {7: 2})).drop_columns(["ledid"])
    assert not calmatch.usable_flat(table, 5, "zr")


def test_usable_calibrations_and_the_focal_plane():
    assert calmatch.usable_calibrations(full_night(), 5, "zr") == {"bias", "flat"}
    assert calmatch.usable_calibrations(full_night(), 5, "zg") == {"bias"}
    assert calmatch.usable_calibrations(full_night(), 5) == {"bias"}
    assert calmatch.usable_focal_plane(full_night(), "zr")
    # CCD 11 has no zr flats: no FLTNORM_FP that night, so CCD 5 cannot use its flat either.
    partial = full_night(skip_ccd=11)
    assert not calmatch.usable_focal_plane(partial, "zr")
    assert calmatch.usable_calibrations(partial, 5, "zr") == {"bias"}
    assert calmatch.usable_calibrations(partial, 5, "zr", focal_plane=False) == {"bias", "flat"}
    assert calmatch.usable_calibrations(None, 5, "zr") == frozenset()
    with pytest.raises(ValueError, match="lacks column"):
        calmatch.usable_calibrations(full_night().drop_columns(["imgtype"]), 5, "zr")


def test_match_calibrations_chooses_bias_and_flat_independently():
    d = D(2019, 1, 3)
    bias_only = index([r for c in range(1, 17) for r in biases(c, 20)])
    indexes = {n: None for n in calmatch.candidate_nights(d)}
    indexes[D(2019, 1, 2)] = bias_only  # bias one night before
    indexes[D(2018, 12, 30)] = full_night()  # flats four nights before, previous year
    indexes[D(2019, 1, 7)] = full_night(skip_ccd=3)  # nearer-or-equal but no focal plane
    match = calmatch.match_calibrations(d, indexes, 5, "zr")
    assert (match.bias_night, match.flat_night) == (D(2019, 1, 2), D(2018, 12, 30))
    assert (match.bias_delta, match.flat_delta) == (-1, -4)
    cards = match.header_cards()
    assert cards["CALNIGHT"][0] == "20181230" and cards["CALDELTA"][0] == -4
    assert cards["BIASNGHT"][0] == "20190102" and cards["FLATDELT"][0] == -4
    assert cards["CALWIN"][0] == 10 and all(len(k) <= 8 for k in cards)
    with pytest.raises(NoCalibrationError, match=r"flat of CCD 05 \(zg\)"):
        calmatch.match_calibrations(d, indexes, 5, "zg")
    few_biases = {d: index(biases(5, 12) + flats(5, "zr", ZR_FULL))}
    with pytest.raises(NoCalibrationError, match="bias of CCD 05"):
        calmatch.match_calibrations(d, few_biases, 5, "zr")
    # Ties between the bias and flat distances report the flat night.
    same = calmatch.CalibrationMatch(d, D(2019, 1, 5), D(2019, 1, 1))
    assert same.header_cards()["CALNIGHT"][0] == "20190101"


def test_usable_nights_agree_with_the_synthetic_calibration_plan():
    """On the synthetic archive with calibration gaps, the index tells which nights can work."""
    from ztfluigi.archive.sim import SimArchive
    from ztfluigi.sim.schedule import SimConfig, calibration_plan

    cfg = SimConfig(seed=0, scale=16, n_fields=1, calib_gaps=True)
    archive = SimArchive(cfg)
    seen = set()
    for night in itertools.islice(calmatch.candidate_nights(D(2019, 3, 31), 4), 9):
        plan = calibration_plan(cfg, night)
        kinds = calmatch.usable_calibrations(archive.night_metadata(night), 5, "zr")
        expected = ({"bias"} if plan.bias else set()) | (
            {"flat"} if plan.bias and "zr" in plan.flat_filters else set()
        )
        assert kinds == expected, night
        seen.add(frozenset(kinds))
    assert len(seen) >= 2  # the gaps actually vary over these nights
