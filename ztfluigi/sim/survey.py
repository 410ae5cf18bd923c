"""A survey-like synthetic night: the fields of the real grid that are up, ZTF's visit pattern.

ZTF's public survey observes, hour after hour, the primary-grid fields near the meridian, each
twice a night (zr then zg, ≈ 30 min apart) with a share of zi visits (partnership time). This
module gives the science visits of a night as a pure function of (seed, date): the night from
the end of nautical twilight to dawn is cut into one-hour blocks; each block observes fields of
the primary-grid fields due that night (every :data:`CADENCE_NIGHTS`-th night per field) within
:data:`HOUR_ANGLE_DEG` of the meridian at the block's middle and above :data:`MIN_ALTITUDE_DEG`,
as a zr pass then a zg pass then zi visits; the block's remaining time revisits Galactic-plane
fields (high-cadence programme) in zr and zg. One exposure per
:data:`~ztfluigi.sim.schedule.SCIENCE_CADENCE`, :data:`EFFICIENCY` of the time on sky: a night
gets ≈ 500–750 science exposures (each reads 16 CCDs), and a region such as the toy sample is
observed in its season, each field every third night or so.
Weather losses stay those of :func:`ztfluigi.sim.schedule.dome_closed`.

Hook (in :func:`ztfluigi.sim.schedule.night_log`, with ``SimConfig.survey``):
:func:`science_sequence` gives the exposures of :func:`night_fields`' visits, which
``night_log`` adds after its calibrations (as it does for a starflat sequence).
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import numpy as np

from ztfluigi.sim import ephemeris

BLOCK_S = 3600.0  #: s, length of an observing block
EFFICIENCY = 0.85  #: share of a block's time spent exposing (slews, focus, filter changes)
HOUR_ANGLE_DEG = 20.0  #: fields are taken within this hour angle of the block's middle
MIN_ALTITUDE_DEG = 30.0  #: airmass below 2
MIN_DEC_DEG = -30.0  #: the survey's southern limit
I_BAND_SHARE = 0.15  #: share of a block's fields also observed in zi
MAX_PRIMARY_ID = 880  #: primary-grid field ids are below this (secondary grid: 1000+)
CADENCE_NIGHTS = 3  #: a field of the wide survey is due every third night (ZTF: 2–3 nights)
PLANE_B_DEG = 10.0  #: the remaining time goes to high-cadence Galactic-plane fields (|b| < 10°)


class Visit(NamedTuple):
    """One science exposure of the survey: when, which field (grid row) and in which filter."""

    jd: float
    field: np.void
    filtercode: str


def night_fields(
    cfg: object, date: dt.date, dusk: float, dawn: float, rng: np.random.Generator
) -> list[Visit]:
    """The night's science visits in time order (JD from ``dusk`` to ``dawn``).

    ``cfg`` is the :class:`~ztfluigi.sim.schedule.SimConfig` (its ``seed`` only through ``rng``);
    ``rng`` the night's generator, so the night stays a pure function of (seed, date).
    """
    from ztfluigi.sim.schedule import SCIENCE_CADENCE, ztf_fields

    fields = ztf_fields()
    nid = (date - dt.date(2017, 1, 1)).days
    base = (fields["id"] < MAX_PRIMARY_ID) & (fields["dec"] >= MIN_DEC_DEG)
    due = base & ((fields["id"] + nid) % CADENCE_NIGHTS == 0)
    plane = base & (np.abs(fields["gal_b"]) < PLANE_B_DEG)
    cadence = SCIENCE_CADENCE / 86400.0
    block = BLOCK_S / 86400.0
    slots = int(BLOCK_S * EFFICIENCY / SCIENCE_CADENCE)
    per_field = 2.0 + I_BAND_SHARE
    seen = np.zeros(fields.size, dtype=bool)
    visits: list[Visit] = []
    t_block = dusk
    while t_block + 10 * cadence < dawn:
        end = min(t_block + block, dawn)
        n_slots = int(slots * (end - t_block) / block)
        mid = 0.5 * (t_block + end)
        alt, _ = ephemeris.altaz(fields["ra"], fields["dec"], mid)
        up = (np.abs(ephemeris.hour_angle_deg(fields["ra"], mid)) < HOUR_ANGLE_DEG)
        up &= alt > MIN_ALTITUDE_DEG
        candidates = np.flatnonzero(due & up & ~seen)
        take = np.sort(candidates[rng.permutation(candidates.size)][: int(n_slots / per_field)])
        seen[take] = True
        n_i = int(round(I_BAND_SHARE * take.size))
        by_ra = np.argsort(fields["ra"][take], kind="stable")
        take = take[by_ra]
        plan = [(row, "zr") for row in take] + [(row, "zg") for row in take]
        plan += [(row, "zi") for row in np.sort(take[rng.permutation(take.size)[:n_i]])]
        extra = np.flatnonzero(plane & up)
        if extra.size:
            for k in range(max(n_slots - len(plan), 0)):
                plan.append((extra[k % extra.size], ("zr", "zg")[(k // extra.size) % 2]))
        t = t_block
        for row, filt in plan[:n_slots]:
            visits.append(Visit(t, fields[row], filt))
            t += cadence
        t_block = end
    return visits


def science_sequence(
    cfg: object, date: dt.date, start_jd: float, dawn: float, rng: np.random.Generator
) -> list[dict[str, object]]:
    """Keyword arguments of the night's survey exposures (``Exposure(**kw)``), as ``night_log``
    writes its science block: a few arcsec of pointing scatter, seeing growing with airmass.

    Visits falling before ``start_jd`` (the end of the calibrations) are moved after it, keeping
    the camera cadence. Vectorised over the night (≈ 1 ms for 800 exposures): a five-year plan
    computes some 2,000 nights.
    """
    from ztfluigi.sim.schedule import SCIENCE_CADENCE, SCIENCE_EXPTIME

    visits = night_fields(cfg, date, start_jd, dawn, rng)
    if not visits:
        return []
    n = len(visits)
    fields = np.array([v.field for v in visits], dtype=visits[0].field.dtype)
    # t_i = max(visit_i, t_{i-1} + cadence), t_{-1} + cadence = start_jd: a running maximum
    step = np.arange(n) * (SCIENCE_CADENCE / 86400.0)
    jd = np.array([v.jd for v in visits])
    t = np.maximum.accumulate(np.maximum(jd - step, start_jd)) + step
    scatter = rng.normal(0, 2.0, (2, n)) / 3600.0
    ra = fields["ra"] + scatter[0] / np.cos(np.radians(fields["dec"]))
    dec = fields["dec"] + scatter[1]
    alt, _ = ephemeris.altaz(ra, dec, t)
    seeing = 2.0 * ephemeris.airmass(alt) ** 0.6 * rng.uniform(0.85, 1.15, n)
    columns = zip(t.tolist(), fields["id"].tolist(), ra.tolist(), dec.tolist(), seeing.tolist(),
                  [v.filtercode for v in visits], strict=True)  # fmt: skip
    return [dict(obsjd=t_i, imgtype="object", filtercode=f, field=fid, exptime=SCIENCE_EXPTIME,
                 ra=ra_i, dec=dec_i, seeing=s_i)
            for t_i, fid, ra_i, dec_i, s_i, f in columns]  # fmt: skip
