"""The survey-like synthetic night: real-grid fields that are up, ZTF's visit pattern."""

from __future__ import annotations

import collections
import datetime as dt

import numpy as np

from ztfluigi import region
from ztfluigi.sim import ephemeris, survey
from ztfluigi.sim.schedule import SCIENCE_CADENCE, SimConfig, rng_for


def _visits(date: dt.date, seed: int = 0) -> tuple[list[survey.Visit], float, float]:
    jd0 = (date - dt.date(2000, 1, 1)).days + 2451544.5
    dusk = ephemeris.sun_crossing_jd(jd0, -12.0, rising=False)
    dawn = ephemeris.sun_crossing_jd(dusk, -12.0, rising=True)
    rng = rng_for(seed, "night", date.isoformat())
    return survey.night_fields(SimConfig(seed=seed), date, dusk, dawn, rng), dusk, dawn


def test_a_night_is_a_pure_function_of_seed_and_date():
    a, _, _ = _visits(dt.date(2019, 10, 12))
    b, _, _ = _visits(dt.date(2019, 10, 12))
    c, _, _ = _visits(dt.date(2019, 10, 12), seed=1)
    key = [(v.jd, int(v.field["id"]), v.filtercode) for v in a]
    assert key == [(v.jd, int(v.field["id"]), v.filtercode) for v in b]
    assert key != [(v.jd, int(v.field["id"]), v.filtercode) for v in c]


def test_exposures_fill_the_night_at_the_camera_cadence():
    for date in (dt.date(2019, 6, 20), dt.date(2019, 12, 20)):
        visits, dusk, dawn = _visits(date)
        jd = np.array([v.jd for v in visits])
        hours = (dawn - dusk) * 24
        # ≈ 85 % of the night on sky at one exposure per 40 s, minus blocks short of fields
        assert 0.4 * hours * 3600 / SCIENCE_CADENCE < len(visits) <= hours * 3600 / SCIENCE_CADENCE
        assert jd.min() >= dusk and jd.max() < dawn
        assert np.all(np.diff(jd) >= (SCIENCE_CADENCE - 0.01) / 86400)  # 10 ms: JD rounding
    # longer winter nights hold more exposures than short summer ones
    assert len(_visits(dt.date(2019, 12, 20))[0]) > len(_visits(dt.date(2019, 6, 20))[0])


def test_fields_are_up_and_wide_survey_fields_come_in_zr_and_zg():
    visits, _, _ = _visits(dt.date(2019, 10, 12))
    for v in visits[::25]:
        alt, _ = ephemeris.altaz(v.field["ra"], v.field["dec"], v.jd)
        assert alt > survey.MIN_ALTITUDE_DEG - 5  # up (checked at the block's middle)
    bands = collections.defaultdict(set)
    for v in visits:
        bands[int(v.field["id"])].add(v.filtercode)
    wide = [f for f, b in bands.items() if "zi" in b]
    assert wide and all({"zr", "zg"} <= bands[f] for f in wide)
    assert all(f < survey.MAX_PRIMARY_ID for f in bands)


def test_the_toy_region_is_observed_in_its_season_only():
    sel = region.selection("toy")

    def toy_quadrants(date: dt.date) -> int:
        visits, _, _ = _visits(date)
        return int(sel.quadrants_mask(np.array([int(v.field["id"]) for v in visits])).sum())

    assert toy_quadrants(dt.date(2019, 10, 12)) > 1000  # autumn: the region transits at night
    assert toy_quadrants(dt.date(2019, 4, 15)) == 0  # spring: it is up in daytime
    # every third night per field: consecutive autumn nights see different toy fields
    a, _, _ = _visits(dt.date(2019, 10, 12))
    b, _, _ = _visits(dt.date(2019, 10, 13))
    fa = {int(v.field["id"]) for v in a if sel.quadrants_mask(np.array([v.field["id"]])).any()}
    fb = {int(v.field["id"]) for v in b if sel.quadrants_mask(np.array([v.field["id"]])).any()}
    assert fa and fb and not fa & fb


def test_science_sequence_gives_exposures_after_the_calibrations():
    from ztfluigi import naming
    from ztfluigi.sim.schedule import Exposure

    date = dt.date(2019, 10, 12)
    _, dusk, dawn = _visits(date)
    late = dusk + 0.01  # calibrations running past dusk push the first visits back
    seq = survey.science_sequence(SimConfig(), date, late, dawn, rng_for(0, "night", "x"))
    exposures = [Exposure(framenum=i, **kw) for i, kw in enumerate(seq)]
    assert exposures[0].obsjd >= late and all(e.imgtype == "object" for e in exposures)
    assert all(b.obsjd - a.obsjd >= (SCIENCE_CADENCE - 0.01) / 86400
               for a, b in zip(exposures, exposures[1:], strict=False))  # fmt: skip
    name = exposures[0].raw_name(5).filename
    assert naming.parse_raw_filename(name).field == exposures[0].field
    assert len({e.filefracday for e in exposures}) == len(exposures)  # one file name per exposure
