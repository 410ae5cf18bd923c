"""The synthetic night log follows the real camera's calibration and science sequence."""

import collections
import datetime as dt

import numpy as np

from tests.helpers import DEMO_DATE
from ztfluigi.sim import schedule
from ztfluigi.sim.schedule import SimConfig, night_log


def test_night_sequence_matches_the_real_camera():
    log = night_log(SimConfig(), DEMO_DATE)
    kinds = collections.Counter(e.imgtype for e in log)
    assert kinds["bias"] == 20
    assert kinds["flat"] == 5 * 11
    leds = collections.Counter((e.led, e.filtercode) for e in log if e.imgtype == "flat")
    assert set(leds) == set(schedule.LED_FILTERS.items()) and set(leds.values()) == {5}
    science = [e for e in log if e.imgtype == "object"]
    assert len(science) == 3 * 3 and {e.filtercode for e in science} == {"zg", "zr", "zi"}
    assert all(e.exptime == 30.0 and e.field > 0 for e in science)
    jd = np.array([e.obsjd for e in log])
    assert np.all(np.diff(jd) > 0)
    gaps = np.diff([e.obsjd for e in science[:3]]) * 86400
    assert np.allclose(gaps, 40.0)
    assert len({e.filefracday for e in log}) == len(log)
    assert all(e.filefracday.startswith("20190331") for e in log)
    # Biases ~ at sunset (≈02:06 UT on 2019-03-31), science in the dark.
    assert 1.5 < (log[0].obsjd - 2458573.5) * 24 < 2.5
    assert all(e.seeing > 1.0 for e in science)


def test_night_log_is_a_pure_function_of_seed_and_date():
    a = night_log(SimConfig(seed=1), DEMO_DATE)
    assert a == night_log(SimConfig(seed=1), DEMO_DATE)
    assert a != night_log(SimConfig(seed=2), DEMO_DATE)
    assert night_log(SimConfig(), dt.date(2020, 9, 24))[0].filefracday.startswith("20200924")


def test_calibration_gaps_option():
    plans = [
        schedule.calibration_plan(SimConfig(calib_gaps=True), DEMO_DATE + dt.timedelta(days=i))
        for i in range(30)
    ]
    assert any(not p.bias for p in plans)
    assert any(p.bias and len(p.flat_filters) == 2 for p in plans)
    assert any(p.bias and len(p.flat_filters) == 3 for p in plans)
    assert schedule.calibration_plan(SimConfig(), DEMO_DATE).bias
    no_cal = next(DEMO_DATE + dt.timedelta(days=i) for i, p in enumerate(plans) if not p.bias)
    log = night_log(SimConfig(calib_gaps=True), no_cal)
    assert {e.imgtype for e in log} == {"object"}


def test_weather_closes_some_nights_but_leaves_the_others_unchanged():
    cfg = SimConfig(weather_losses=0.3)
    nights = [dt.date(2019, 3, 1) + dt.timedelta(days=i) for i in range(60)]
    closed = [d for d in nights if schedule.dome_closed(cfg, d)]
    assert 0.15 < len(closed) / len(nights) < 0.45
    for d in nights[:12]:
        log = night_log(cfg, d)
        if d in closed:  # calibrations are taken, no science
            assert log and {e.imgtype for e in log} == {"bias", "flat"}
        else:
            assert log == night_log(SimConfig(), d)
    assert not any(schedule.dome_closed(SimConfig(), d) for d in nights)


def test_starflat_night_replaces_the_science_block_only():
    cfg = SimConfig(starflat_dates=(DEMO_DATE.isoformat(),))
    log, normal = night_log(cfg, DEMO_DATE), night_log(SimConfig(), DEMO_DATE)
    calibrations = [e for e in log if e.imgtype != "object"]
    assert calibrations == [e for e in normal if e.imgtype != "object"]
    science = [e for e in log if e.imgtype == "object"]
    n = len(schedule.starflat_dithers())
    assert n == schedule.STARFLAT_DITHERS >= 20 and len(science) == 3 * n
    assert [e.filtercode for e in science] == ["zg"] * n + ["zr"] * n + ["zi"] * n
    assert len({e.field for e in science}) == 1 and science[0].field in schedule.ztf_fields()["id"]
    assert len({e.filefracday for e in log}) == len(log)
    # Offsets up to a CCD width (1.9°) around the field centre.
    field = schedule.ztf_fields()[schedule.ztf_fields()["id"] == science[0].field][0]
    offsets = np.hypot((np.array([e.ra for e in science]) - field["ra"])
                       * np.cos(np.radians(field["dec"])),
                       np.array([e.dec for e in science]) - field["dec"])  # fmt: skip
    assert 1.85 < offsets.max() < 2.8 and np.sum(offsets > 0.8) >= 18 * 3
    # Another night is unchanged.
    other = DEMO_DATE + dt.timedelta(days=1)
    assert night_log(cfg, other) == night_log(SimConfig(), other)


def test_random_streams_do_not_depend_on_the_integer_type_of_their_keys():
    """``np.int64(6)`` and ``6`` are the same CCD: the same stream (a numpy key once gave
    another instrument, e.g. from a catalogue's ccdid column)."""
    import numpy as np

    from ztfluigi.sim.schedule import rng_for

    a = rng_for(0, "amp", 6, 2).random(3)
    np.testing.assert_array_equal(a, rng_for(np.int64(0), "amp", np.int64(6), np.int8(2)).random(3))
