"""zi fringe models: one product per CCD and period of nights, learnt from its science quadrants.

Periods are fixed blocks of ``window`` nights counted from ZTF first light
(:func:`period_start`), so every zi science night maps to exactly one model. The training
quadrants are built exactly as the virtual science quadrants (``tasks.science.science_quadrant``:
raw file, matched master bias and flat, focal-plane level, IPAC mask), which must stay free of
fringe correction (the correction is applied after it). A period with fewer than
``fringes.MIN_EXPOSURES`` usable zi exposures of the CCD is widened backwards by whole periods
(past nights only, so a rebuild sees the same inputs), at most ``max_widen`` times; then the
task fails with :class:`ztfluigi.fringes.TooFewExposures`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import luigi

from ztfluigi import config, fringes, storage
from ztfluigi.naming import RawName
from ztfluigi.provenance import PIPELINE, package_versions
from ztfluigi.tasks import progress
from ztfluigi.tasks.calib import cal_target
from ztfluigi.tasks.parameters import FIRST_NIGHT, CcdParameter, InvalidParameter, NightParameter
from ztfluigi.tasks.raw import RawIndex, night_index, read_stored_raw, select_raw
from ztfluigi.tasks.science import (
    ScienceQuadrant,
    calibration_tasks,
    load_calibration,
    science_quadrant,
)

#: Default period (nights): 20 × 3 zi exposures per night and CCD (the simulator's default) =
#: 60 training exposures, which leave 8 % (scale 16) / 8–9 % (full size) of the fringe; 20–30
#: exposures leave 11–20 % (``tests/test_fringes.py``, ``bench/bench_fringes.py``).
DEFAULT_WINDOW = fringes.DEFAULT_WINDOW
MAX_WIDEN = 2  #: at most this many earlier periods are added when a period has too few exposures


def period_start(night: dt.date, window: int = DEFAULT_WINDOW) -> dt.date:
    """First night of the fixed ``window``-night period holding ``night``."""
    days = (night - FIRST_NIGHT).days
    return FIRST_NIGHT + dt.timedelta(days=days - days % window)


def fringe_relpath(start: dt.date, ccdid: int, window: int = DEFAULT_WINDOW) -> str:
    """``cal/fringe/YYYY/MMDD/ztfin2p3_YYYYMMDD_NNNd_zi_cCC_fringe.fits`` (period start)."""
    return (
        f"cal/fringe/{start:%Y}/{start:%m%d}/"
        f"ztfin2p3_{start:%Y%m%d}_{window:03d}d_zi_c{ccdid:02d}_fringe.fits"
    )


class FringeModel(progress.OneLineFailures, luigi.Task):
    """zi fringe modes of the four quadrants of one CCD over a period of nights."""

    date = NightParameter(description="first night of the period (see period_start)")
    ccdid = CcdParameter()
    window = luigi.IntParameter(default=DEFAULT_WINDOW, description="period length (nights)")
    max_widen = luigi.IntParameter(
        default=MAX_WIDEN, significant=False, description="earlier periods added if too few"
    )

    @classmethod
    def for_night(cls, night: dt.date, ccdid: int, window: int = DEFAULT_WINDOW) -> FringeModel:
        """The model that corrects the zi science of ``night``."""
        return cls(date=period_start(night, window), ccdid=ccdid, window=window)

    def _check(self) -> None:
        if self.window < 1:
            raise InvalidParameter(f"window must be >= 1 night, got {self.window}")
        if period_start(self.date, self.window) != self.date:
            raise InvalidParameter(
                f"{self.date} does not start a {self.window}-night period "
                f"(use {period_start(self.date, self.window)})"
            )

    def nights(self, widen: int = 0) -> list[dt.date]:
        """Nights of the period, preceded by ``widen`` earlier periods (none before first light)."""
        first = self.date - dt.timedelta(days=widen * self.window)
        days = (self.date - first).days + self.window
        today = dt.datetime.now(dt.UTC).date()
        nights = [first + dt.timedelta(days=i) for i in range(days)]
        return [n for n in nights if FIRST_NIGHT <= n <= today]

    def requires(self) -> list[RawIndex]:
        self._check()
        return [RawIndex(date=n) for n in self.nights()]

    def output(self) -> storage.FsspecTarget:
        return cal_target(fringe_relpath(self.date, self.ccdid, self.window))

    def _rawnames(self, nights: list[dt.date]) -> list[RawName]:
        return [r for n in nights for r in select_raw(night_index(n), self.ccdid, "object", "zi")]

    def run(self) -> Iterator[list[luigi.Task]]:
        self._check()
        widen, nights = 0, self.nights()
        rawnames = self._rawnames(nights)
        while len(rawnames) < fringes.MIN_EXPOSURES and widen < self.max_widen:
            widen += 1
            nights = self.nights(widen)
            yield [RawIndex(date=n) for n in nights]
            rawnames = self._rawnames(nights)
        if len(rawnames) < fringes.MIN_EXPOSURES:
            span = f"{nights[0]}..{nights[-1]}" if nights else "no night yet"
            raise fringes.TooFewExposures(f"FringeModel CCD {self.ccdid}, nights {span}",
                                          len(rawnames), fringes.MIN_EXPOSURES)  # fmt: skip
        rawnames = fringes.select_evenly(rawnames)
        # What a science quadrant needs besides its calibration (raw file, stored IPAC inputs…).
        sciences = [ScienceQuadrant(filename=r.filename, qid=1) for r in rawnames]
        needs = {t for task in sciences for t in task.requires()}
        yield sorted(needs, key=lambda t: t.task_id)
        matched = []
        for r in rawnames:
            matched.append((yield from calibration_tasks(r.date, r.ccdid, r.filtercode)))
        model = self.build(rawnames, matched, nights)
        cards = {"PIPELINE": (PIPELINE, "pipeline that built this product"),
                 "FRNGWIN": (self.window, "period length [nights]"),
                 "FRNGWIDE": (widen, "earlier periods added (too few exposures)")}  # fmt: skip
        for name, version in package_versions().items():
            cards[f"V_{name.upper()[:6]}"] = (version, f"{name} version")
        storage.write_fits(self.output(), fringes.to_hdulist(model, cards))

    def build(self, rawnames: list[RawName], matched: list[tuple], nights: list[dt.date]
              ) -> fringes.FringeModel:  # fmt: skip
        """Training maps of every quadrant (each raw file read once), then the modes."""
        maps: dict[int, list[fringes.FringeMap]] = {q: [] for q in range(1, 5)}
        key, calibration = None, None  # one calibration in memory (≈300 MB at full size)
        for i, (rawname, (match, tasks)) in enumerate(zip(rawnames, matched, strict=True)):
            paths = tuple(t.output().path for t in tasks)
            if paths != key:  # exposures come in time order: calibrations change by night
                key, calibration = paths, load_calibration(match, tasks)
            ccd = read_stored_raw(rawname)
            for qid in range(1, 5):
                sci = science_quadrant(ccd, rawname, qid, calibration)  # uncorrected
                maps[qid].append(fringes.fringe_map(sci.data, sci.mask, rawname.filename))
            progress.report(self, i + 1, len(rawnames), "zi quadrants mapped")
        model = fringes.FringeModel(self.ccdid, nights[0], nights[-1])
        for qid, qmaps in maps.items():
            model.quadrants[qid] = fringes.build_quadrant(qid, qmaps)
        return model


def model_for(night: dt.date, ccdid: int, filtercode: str) -> FringeModel | None:
    """The model correcting a CCD's science of ``filtercode`` on ``night`` (``None``: the
    configuration does not correct that band, ``[ztfluigi] fringe``)."""
    spec = config.processing_specs().fringe
    if not spec.applies(filtercode):
        return None
    return FringeModel.for_night(night, ccdid, spec.window)


def load_fringe_model(target: storage.FsspecTarget) -> fringes.FringeModel:
    """The stored model of a :class:`FringeModel` output."""
    return fringes.from_hdulist(storage.read_fits(target))

