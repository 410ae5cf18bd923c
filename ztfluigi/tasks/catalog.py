"""Aperture catalogues: virtual science quadrants → Gaia DR3 aperture photometry → parquet.

Scheduling granularity (DESIGN.md §5): the scheduler sees one :class:`ApertureCatalogUnit` per
night × CCD × filter; its branches are the (raw science file, quadrant) pairs, each with its own
parquet output. A unit is complete when every branch output exists (one listing per exposure
directory) and running it builds only the missing ones. :class:`ApertureCatalog` is the night's
entry point (a wrapper over the units); :class:`QuadrantCatalog` keeps one quadrant addressable.

Science quadrants are virtual (:mod:`ztfluigi.tasks.science`): built in memory from the raw file and
the calibrations matched at run time (dynamic dependencies), and recorded in every catalogue's
metadata.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator

import luigi

from ztfluigi import calmatch, catalogue, config, naming, refcat, storage
from ztfluigi.naming import RawName
from ztfluigi.tasks import progress
from ztfluigi.tasks.calib import FocalPlaneLevel, MasterBias, MasterFlat
from ztfluigi.tasks.fringe import model_for
from ztfluigi.tasks.inputs import read_or_rebuild
from ztfluigi.tasks.ipac import IpacHeaders, IpacMasks
from ztfluigi.tasks.parameters import (
    CcdParameter,
    FieldParameter,
    FilterParameter,
    InvalidParameter,
    NightParameter,
)
from ztfluigi.tasks.raw import (
    RawFile,
    RawFiles,
    RawIndex,
    night_index,
    read_stored_raw,
    science_quadrants,
)
from ztfluigi.tasks.science import (
    QuadrantParameters,
    ScienceQuadrant,
    calibration_tasks,
    ipac_inputs,
    read_calibration,
    science_correction,
    science_quadrant,
    store_science_quadrant,
    with_fringe,
)
from ztfluigi.tasks.sim import SimRefCatalog
from ztfluigi.tasks.workflow import BranchedUnit

logger = logging.getLogger("luigi-interface")


def catalog_target(rawname: RawName, qid: int) -> storage.FsspecTarget:
    """``sci/YYYY/MMDD/ffffff/ztfin2p3_…_o_qQ_apcat.parquet`` under ``catalog_root``."""
    rel = naming.science_quadrant_relpath(rawname, qid, "apcat.parquet", prefix="ztfin2p3")
    return storage.get_target(config.settings().catalog_url(rel))


def refcat_url(date: dt.date) -> str:
    """The reference catalogue store: the night's synthetic one, or the configured Gaia DR3."""
    setting = config.settings().refcat
    return SimRefCatalog(date=date).catalog_url() if setting == "sim" else setting


class RefcatChecked:
    """Mixin of the catalogue tasks: the reference catalogue is checked when the task is built
    (before scheduling), not found unusable quadrant after quadrant."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        config.check_refcat()


class ApertureCatalogUnit(RefcatChecked, BranchedUnit):
    """All aperture catalogues of one night, CCD and filter (one parquet per quadrant)."""

    date = NightParameter()
    ccdid = CcdParameter()
    filtercode = FilterParameter()
    field = FieldParameter()

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "index": RawIndex(date=self.date),
            "raw": RawFiles(
                date=self.date, ccdid=self.ccdid, imgtype="object", filtercode=self.filtercode
            ),  # fmt: skip
            "headers": IpacHeaders(date=self.date, ccdid=self.ccdid, filtercode=self.filtercode),
            "masks": IpacMasks(date=self.date, ccdid=self.ccdid, filtercode=self.filtercode),
        }

    def branches_known(self) -> bool:
        return self.input()["index"].exists()

    def branches(self) -> list[tuple[RawName, int]]:
        """(raw science file, qid) pairs of this unit (needs the RawIndex)."""
        quadrants = science_quadrants(self.date, self.ccdid, self.filtercode)
        return [(r, q) for r, q in quadrants if self.field in (0, r.field)]

    def branch_output(self, branch: tuple[RawName, int]) -> storage.FsspecTarget:
        return catalog_target(*branch)

    def run_branches(self, todo: list[tuple[RawName, int]]) -> Iterator[list[luigi.Task]]:
        yield from build_catalogues(self, self.date, self.ccdid, self.filtercode, todo)


def build_catalogues(
    task: luigi.Task, date: dt.date, ccdid: int, filtercode: str, todo: list[tuple[RawName, int]]
) -> Iterator[list[luigi.Task]]:
    """Match calibrations (dynamic dependencies), then build and write the ``todo`` catalogues."""
    if not todo:
        return
    if config.settings().refcat == "sim":  # only nights with science have a synthetic catalogue
        yield [SimRefCatalog(date=date)]
    match, calib_tasks = yield from calibration_tasks(date, ccdid, filtercode)
    fringe = model_for(date, ccdid, filtercode)  # the CCD's model of the period (zi, when on)
    if fringe is not None:
        yield [fringe]
    calibration = with_fringe(read_calibration(match, calib_tasks), fringe)
    url, archive = refcat_url(date), config.get_archive()
    reference = refcat.RefCatalog(url)
    specs = config.processing_specs()
    by_raw: dict[RawName, list[int]] = {}
    for rawname, qid in todo:
        by_raw.setdefault(rawname, []).append(qid)
    done = 0
    for rawname, qids in by_raw.items():
        ccd = read_or_rebuild(lambda r=rawname: read_stored_raw(r),
                                         RawFile(filename=rawname.filename))  # fmt: skip
        for qid in qids:
            sci = read_or_rebuild(
                lambda c=ccd, r=rawname, q=qid: science_quadrant(c, r, q, calibration),
                ipac_inputs(rawname))  # fmt: skip
            if config.settings().store_science:
                store_science_quadrant(sci, rawname, qid)
            table = catalogue.quadrant_catalogue(sci, rawname, qid, calibration, reference, url,
                                                 archive.name, science_correction(rawname),
                                                 specs.photometry)  # fmt: skip
            storage.write_parquet(catalog_target(rawname, qid), table,
                                  **catalogue.parquet_options(table))  # fmt: skip
            done += 1
            progress.report(task, done, len(todo), "quadrant catalogues")


class ApertureCatalog(RefcatChecked, progress.OneLineFailures, luigi.Task):
    """Every aperture catalogue of a night (narrowed by CCD, filter, field): the entry point.

    Requires the catalogue units; complete when they are and so are the night's own stored
    inputs — raw-file units and, where the night has a usable calibration sequence, its master
    calibrations and their raw frames — so that a re-run after deleting any of them rebuilds
    exactly what was deleted. Those inputs are known only from the night's RawIndex, so ``run()``
    asks for them as dynamic dependencies (static requirements must not change between scheduling
    and running, and the RawIndex may appear in between).
    """

    date = NightParameter()
    ccdid = CcdParameter(default=0, allow_all=True)
    filtercode = FilterParameter(default="", allow_all=True)
    field = FieldParameter()

    def _selection(self) -> tuple[list[int] | range, list[str] | tuple[str, ...]]:
        ccds = [self.ccdid] if self.ccdid else range(1, 17)
        return ccds, [self.filtercode] if self.filtercode else naming.SCIENCE_FILTERS

    def requires(self) -> list[ApertureCatalogUnit]:
        ccds, filters = self._selection()
        return [ApertureCatalogUnit(date=self.date, ccdid=c, filtercode=f, field=self.field)
                for c in ccds for f in filters]  # fmt: skip

    def complete(self) -> bool:
        if not all(unit.complete() for unit in self.requires()):
            return False
        if self.field_not_observed():
            return False  # a field the night did not observe is a mistake, not an empty result
        return all(task.complete() for task in self.night_inputs())

    def run(self) -> Iterator[list[luigi.Task]]:
        if self.field_not_observed():
            observed = ", ".join(map(str, self.observed_fields())) or "none"
            raise InvalidParameter(f"field {self.field} has no science exposure on {self.date} "
                                   f"(observed: {observed})")  # fmt: skip
        yield self.night_inputs()

    def observed_fields(self) -> list[int]:
        """The fields of the night's science exposures (needs the RawIndex)."""
        index = night_index(self.date)
        return sorted({f for f, t in zip(index["field"].to_pylist(), index["imgtype"].to_pylist(),
                                         strict=True) if t == "object"})  # fmt: skip

    def field_not_observed(self) -> bool:
        """Whether ``field`` is set and the night, once indexed, has no exposure of it."""
        if not self.field or not RawIndex(date=self.date).output().exists():
            return False
        return self.field not in self.observed_fields()

    def run_calibrations(self) -> list[luigi.Task]:
        """What a narrowed night's run also builds: the focal-plane levels of its own calibration
        night (and so the 16 CCDs' master flats and biases), for ``status`` to count."""
        if not self.ccdid or not RawIndex(date=self.date).output().exists():
            return []
        _, filters = self._selection()
        own = calmatch.own_calibrations(night_index(self.date), [], filters, focal_plane=True)
        return [FocalPlaneLevel(date=self.date, filtercode=f) for _, _, f in own]

    def night_inputs(self) -> list[luigi.Task]:
        """The night's raw-file units, its zi fringe models (when corrected) and its own usable
        master calibrations with their raw frames.

        A complete task's requirements are not checked by Luigi, so the raw frames behind a
        master calibration are listed too: a deleted bias frame is fetched again. Empty until the
        night's RawIndex exists.
        """
        if not RawIndex(date=self.date).output().exists():
            return []
        ccds, filters = self._selection()
        reqs: list[luigi.Task] = [
            task for c in ccds for f in filters
            for task in (RawFiles(date=self.date, ccdid=c, imgtype="object", filtercode=f),
                         IpacHeaders(date=self.date, ccdid=c, filtercode=f),
                         IpacMasks(date=self.date, ccdid=c, filtercode=f))
        ]  # fmt: skip
        reqs += [m for c in ccds for f in filters
                 if (m := model_for(self.date, c, f)) is not None]  # zi fringe models
        own = calmatch.own_calibrations(night_index(self.date), ccds, filters,
                                        focal_plane=not self.ccdid)  # fmt: skip
        for kind, ccdid, filtercode in own:
            if kind == "bias":
                bias = MasterBias(date=self.date, ccdid=ccdid)
                reqs += [bias, bias.requires()]
            elif kind == "flat":
                flat = MasterFlat(date=self.date, ccdid=ccdid, filtercode=filtercode)
                reqs += [flat, flat.requires()["flats"]]
            else:
                reqs.append(FocalPlaneLevel(date=self.date, filtercode=filtercode))
        return reqs


class QuadrantCatalog(RefcatChecked, QuadrantParameters, progress.OneLineFailures, luigi.Task):
    """The aperture catalogue of one science quadrant, addressable on its own."""

    def requires(self) -> list[luigi.Task]:
        reqs = [ScienceQuadrant(filename=self.filename, qid=self.qid)]
        if config.settings().refcat == "sim":
            reqs.append(SimRefCatalog(date=self.rawname.date))
        return reqs

    def output(self) -> storage.FsspecTarget:
        return catalog_target(self.rawname, self.qid)

    def run(self) -> Iterator[list[luigi.Task]]:
        r = self.rawname
        yield from build_catalogues(self, r.date, r.ccdid, r.filtercode, [(r, self.qid)])
