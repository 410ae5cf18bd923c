"""Date ranges: every night's aperture catalogues between two dates (the toy-sample style).

:class:`ApertureCatalogRange` is a wrapper over one :class:`ApertureCatalog` per night. Both
``start`` and ``stop`` are included (unlike Luigi's ``RangeDaily``, whose ``stop`` is excluded:
``--start 2019-03-01 --stop 2019-03-31`` is March). A night whose RawIndex shows no science
exposure (dome closed, engineering) is skipped; a night not indexed yet gets its RawIndex built
and, if it turns out empty, completes with no catalogue. ``--region`` narrows every night to the
quadrants overlapping a sky region (``RegionNight``). The range puts all its nights into one
scheduler graph: for long ranges use ``ApertureCatalogCampaign``, which schedules them in windows.
"""

from __future__ import annotations

import datetime as dt
import logging

import luigi

from ztfluigi import region
from ztfluigi.tasks.catalog import ApertureCatalog
from ztfluigi.tasks.parameters import FilterParameter, InvalidParameter, NightParameter
from ztfluigi.tasks.raw import RawIndex, night_index

logger = logging.getLogger("luigi-interface")


class RegionParameter(luigi.Parameter):
    """A sky region: '' (whole sky), a preset (``toy``) or ``ra_min,ra_max,dec_min,dec_max``."""

    def normalize(self, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parsed = region.parse_region(str(value))
        except ValueError as exc:
            raise InvalidParameter(str(exc)) from None
        return parsed.spec() if parsed else ""


def nights(start: dt.date, stop: dt.date) -> list[dt.date]:
    """The UT dates from ``start`` to ``stop``, both included."""
    if stop < start:
        raise InvalidParameter(f"empty date range: stop {stop} is before start {start}")
    return [start + dt.timedelta(days=i) for i in range((stop - start).days + 1)]


def has_science(date: dt.date, filtercode: str = "") -> bool | None:
    """Whether the night has science exposures (in the filter); None before its RawIndex exists."""
    if not RawIndex(date=date).output().exists():
        return None
    index = night_index(date)
    rows = zip(index["imgtype"].to_pylist(), index["filtercode"].to_pylist(), strict=True)
    return any(t == "object" and filtercode in ("", f) for t, f in rows)


class ApertureCatalogRange(luigi.WrapperTask):
    """Every aperture catalogue of the nights from ``start`` to ``stop`` (both included)."""

    start = NightParameter(description="first UT night (YYYY-MM-DD)")
    stop = NightParameter(description="last UT night, included (YYYY-MM-DD)")
    ccdid = luigi.IntParameter(default=0, description="only this CCD (0 = all 16)")
    filtercode = FilterParameter(default="", allow_all=True)
    field = luigi.IntParameter(default=0, description="only this ZTF field (0 = all)")
    region = RegionParameter(default="", description="only quadrants overlapping this sky region "
                             "(toy, or ra_min,ra_max,dec_min,dec_max in degrees)")  # fmt: skip

    def requires(self) -> list[ApertureCatalog]:
        from ztfluigi.tasks.campaign import RegionNight  # campaign imports this module

        reqs = []
        for night in nights(self.start, self.stop):
            if has_science(night, self.filtercode) is False:
                logger.info("%s: no science exposure, skipped", night)
                continue
            params = dict(date=night, ccdid=self.ccdid, filtercode=self.filtercode,
                          field=self.field)  # fmt: skip
            reqs.append(RegionNight(region=self.region, **params) if self.region
                        else ApertureCatalog(**params))  # fmt: skip
        return reqs
