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
