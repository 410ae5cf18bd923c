"""Virtual science quadrants: built on the fly from the stored raw file and calibrations.

A science quadrant is never stored by default (DESIGN.md §1): :class:`ScienceQuadrant` is complete
when its inputs are (raw file, the matched master bias, master flat and focal-plane level), and its
output's :meth:`ScienceQuadrantTarget.load` computes ``S = (R − B)/F × FLTNORM_FP/FLTNORM`` for the
quadrant (:func:`ztfluigi.science.calibrated_quadrant`), minus the fitted fringe in zi when the
correction is on (the CCD's :class:`~ztfluigi.tasks.fringe.FringeModel` of the night's period).
With ``[ztfluigi] store_science = true`` the quadrant is also written as ztfin2p3's
``…_sciimg.fits``/``…_mskimg.fits``, and ``load()`` then reads that cache.

Calibration nights are matched by :func:`ztfluigi.calmatch.resolve` over the RawIndex products
of the surrounding nights, nearest first: :func:`calibration_tasks` asks for the indexes it needs
as Luigi dynamic dependencies, :func:`stored_calibration` only reads those already stored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator, Iterator
from typing import Any

import luigi
import numpy as np
from astropy.io import fits

from ztfluigi import calib, calmatch, config, naming, raw, science, storage
from ztfluigi import provenance as prov
from ztfluigi.corrections import CorrectionSpec
from ztfluigi.naming import RawName
from ztfluigi.tasks import progress
from ztfluigi.tasks.calib import FocalPlaneLevel, MasterBias, MasterFlat, read_image
from ztfluigi.tasks.inputs import read_or_rebuild
from ztfluigi.tasks.ipac import IpacHeaders, IpacMasks, stored_header, stored_mask
from ztfluigi.tasks.parameters import (
    FIRST_NIGHT,
    InvalidParameter,
    QidParameter,
    RawFilenameParameter,
)
from ztfluigi.tasks.raw import RawFile, RawIndex, night_index, read_stored_raw

CalibrationTasks = tuple[MasterBias, MasterFlat, FocalPlaneLevel]


class MissingInput(storage.ProductError):
    """A virtual product was asked for before one of its stored inputs exists."""


def _resolve(date: dt.date, ccdid: int, filtercode: str,
             indexes: dict) -> calmatch.CalibrationMatch | calmatch.NeedIndexes:  # fmt: skip
    today = dt.datetime.now(dt.UTC).date()
    window = config.settings().calib_window
    return calmatch.resolve(date, ccdid, filtercode, indexes, window=window,
                            valid=(FIRST_NIGHT, today))  # fmt: skip


def match_tasks(match: calmatch.CalibrationMatch, ccdid: int, filtercode: str) -> CalibrationTasks:
    """The (bias, flat, focal-plane level) products a match stands for."""
    return (
        MasterBias(date=match.bias_night, ccdid=ccdid),
        MasterFlat(date=match.flat_night, ccdid=ccdid, filtercode=filtercode),
        FocalPlaneLevel(date=match.flat_night, filtercode=filtercode),
    )


def calibration_tasks(
    date: dt.date, ccdid: int, filtercode: str
) -> Generator[list[luigi.Task], Any, tuple[calmatch.CalibrationMatch, CalibrationTasks]]:
    """Dynamic dependencies of a science quadrant's calibration: RawIndexes, then the products.

    ``yield from`` it in a ``run()``; it returns the match and the (bias, flat, focal-plane) tasks.
    """
    indexes: dict = {}
    while isinstance(step := _resolve(date, ccdid, filtercode, indexes), calmatch.NeedIndexes):
        yield [RawIndex(date=n) for n in step.nights]
        indexes.update((n, night_index(n)) for n in step.nights)
    tasks = match_tasks(step, ccdid, filtercode)
    yield list(tasks)
    return step, tasks


def stored_calibration(
    date: dt.date, ccdid: int, filtercode: str
) -> tuple[calmatch.CalibrationMatch, CalibrationTasks]:
    """The calibration match from stored RawIndexes only, its products already built.

    Raises :class:`MissingInput` naming the first index or product not built yet.
    """
    indexes: dict = {}
    while isinstance(step := _resolve(date, ccdid, filtercode, indexes), calmatch.NeedIndexes):
        for night in step.nights:
            if not RawIndex(date=night).output().exists():
                raise MissingInput(f"{RawIndex(date=night)} is not built yet")
            indexes[night] = night_index(night)
    tasks = match_tasks(step, ccdid, filtercode)
    missing = [t for t in tasks if not t.complete()]
    if missing:
        raise MissingInput(f"{missing[0]} is not built yet")
    return step, tasks


def _calibration(match: calmatch.CalibrationMatch, tasks: CalibrationTasks,
                 hduls: list[fits.HDUList]) -> science.Calibration:  # fmt: skip
    bias, flat, fp = hduls
    fltnorm_fp, _ = calib.read_focal_plane_level(fp)
    files = {k: t.output().path.rsplit("/", 1)[-1]
             for k, t in zip(("bias", "flat", "fp"), tasks, strict=True)}  # fmt: skip
    calibration = science.Calibration.from_products(
        bias, flat, fltnorm_fp, files, match, config.processing_specs().recorded_keywords())
    calibration.recorded["fp"] = prov.recorded_cards(fp[0].header, ("DATASUM",))
    return calibration


def load_calibration(
    match: calmatch.CalibrationMatch, tasks: CalibrationTasks
) -> science.Calibration:
    """Read the matched master bias, flat and focal-plane level from the store (verified)."""
    return _calibration(match, tasks, [read_image(t.output()) for t in tasks])


def read_calibration(
    match: calmatch.CalibrationMatch, tasks: CalibrationTasks
) -> science.Calibration:
    """As :func:`load_calibration` in a ``run()``: a damaged product is built again."""
    hduls = [read_or_rebuild(lambda t=task: read_image(t.output()), task) for task in tasks]
    return _calibration(match, tasks, hduls)


def science_quadrant(
    ccd: raw.RawCCD, rawname: RawName, qid: int, calibration: science.Calibration
) -> science.ScienceQuadrant:
    """The virtual science quadrant: the raw CCD, its calibration and the stored IPAC header and
    mask (never the archive: a quadrant rebuilds from the stores alone)."""
    ipac_header = stored_header(rawname, qid)
    ipac_mask = stored_mask(rawname, qid, ccd.data[qid].shape)
    return science.calibrated_quadrant(ccd, rawname, qid, calibration, ipac_header, ipac_mask,
                                       science_correction(rawname))  # fmt: skip


def fringe_task(rawname: RawName) -> luigi.Task | None:
    """The fringe model a science frame's correction needs (``None``: not corrected)."""
    from ztfluigi.tasks.fringe import model_for  # its models train on this module's quadrants

    return model_for(rawname.date, rawname.ccdid, rawname.filtercode)


def with_fringe(calibration: science.Calibration, task: luigi.Task | None) -> science.Calibration:
    """``calibration`` with the stored model of fringe ``task`` (a damaged one is rebuilt)."""
    if task is None:
        return calibration
    from ztfluigi.tasks.fringe import load_fringe_model

    model = read_or_rebuild(lambda: load_fringe_model(task.output()), task)
    return calibration.with_fringe(model, task.output().path.rsplit("/", 1)[-1])


def science_correction(rawname: RawName) -> CorrectionSpec:
    """The raw corrections of a science frame, resolved for its date (what runs, recorded)."""
    return config.processing_specs().correction.for_imgtype("object").resolved(rawname.date)


def ipac_inputs(rawname: RawName) -> list[luigi.Task]:
    """The stored IPAC inputs of a raw science file's quadrants: headers and masks units."""
    r = rawname
    return [IpacHeaders(date=r.date, ccdid=r.ccdid, filtercode=r.filtercode),
            IpacMasks(date=r.date, ccdid=r.ccdid, filtercode=r.filtercode)]  # fmt: skip


def science_cache_targets(rawname: RawName, qid: int) -> dict[str, storage.FsspecTarget]:
    """Where a stored science quadrant lives: ztfin2p3 ``…_sciimg.fits`` and ``…_mskimg.fits``."""
    return {
        kind: storage.get_target(config.settings().catalog_url(
            naming.science_quadrant_relpath(rawname, qid, f"{kind}.fits", prefix="ztfin2p3")))
        for kind in ("sciimg", "mskimg")
    }  # fmt: skip


def store_science_quadrant(sci: science.ScienceQuadrant, rawname: RawName, qid: int) -> None:
    """Cache a science quadrant as FITS (``store_science``); the mask is written last."""
    targets = science_cache_targets(rawname, qid)
    for kind, data in (("sciimg", sci.data), ("mskimg", sci.mask)):
        if not targets[kind].exists():
            storage.write_fits(targets[kind], fits.HDUList([fits.PrimaryHDU(data, sci.header)]))


def science_rawname(filename: str) -> RawName:
    """The parsed name of a raw science file; InvalidParameter for other image types."""
    rawname = naming.parse_raw_filename(filename)
    if rawname.imgtype != "object":
        raise InvalidParameter(f"{filename} is not a science exposure")
    return rawname


class ScienceQuadrantTarget(luigi.Target):
    """A science quadrant that exists when its inputs do; :meth:`load` builds it on the fly."""

    def __init__(self, rawname: RawName, qid: int) -> None:
        self.rawname, self.qid = rawname, qid

    def __repr__(self) -> str:
        return f"ScienceQuadrantTarget({self.rawname.filename}, q{self.qid})"

    def cached(self) -> bool:
        """True when a stored copy (``store_science``) exists."""
        return all(t.exists() for t in science_cache_targets(self.rawname, self.qid).values())

    def _stored_calibration(self) -> tuple[calmatch.CalibrationMatch, CalibrationTasks]:
        r = self.rawname
        if not RawFile(filename=r.filename).complete():
            raise MissingInput(f"{r.filename} is not in the raw store yet")
        for task in ipac_inputs(r):
            if not task.complete():
                raise MissingInput(f"{task} is not built yet")
        fringe = fringe_task(r)
        if fringe is not None and not fringe.complete():
            raise MissingInput(f"{fringe} is not built yet")
        return stored_calibration(r.date, r.ccdid, r.filtercode)

    def exists(self) -> bool:
        if self.cached():
            return True
        try:
            self._stored_calibration()
        except (MissingInput, calmatch.NoCalibrationError):
            return False
        return True

    def load(self) -> science.ScienceQuadrant:
        """Data (float32, NaN where undefined), header and IPAC bit mask, raw/IPAC orientation."""
        if self.cached():
            targets = science_cache_targets(self.rawname, self.qid)
            sci = storage.read_fits(targets["sciimg"])[0]
            mask = storage.read_fits(targets["mskimg"])[0]
            return science.ScienceQuadrant(np.asarray(sci.data), sci.header,
                                           np.asarray(mask.data))  # fmt: skip
        calibration = load_calibration(*self._stored_calibration())
        calibration = with_fringe(calibration, fringe_task(self.rawname))
        ccd = read_stored_raw(self.rawname, (self.qid,))
        return science_quadrant(ccd, self.rawname, self.qid, calibration)


class QuadrantParameters:
    """The address of one science quadrant: raw file name and quadrant id (a task mixin)."""

    filename = RawFilenameParameter(description="raw science file, e.g. ztf_…_c05_o.fits.fz")
    qid = QidParameter(description="quadrant 1-4")

    @property
    def rawname(self) -> RawName:
        return science_rawname(self.filename)


class ScienceQuadrant(QuadrantParameters, progress.OneLineFailures, luigi.Task):
    """One virtual science quadrant: run() builds its inputs, ``output().load()`` the image."""

    def requires(self) -> list[luigi.Task]:
        return [RawIndex(date=self.rawname.date), RawFile(filename=self.filename),
                *ipac_inputs(self.rawname)]  # fmt: skip

    def output(self) -> ScienceQuadrantTarget:
        return ScienceQuadrantTarget(self.rawname, self.qid)

    def run(self) -> Iterator[list[luigi.Task]]:
        r = self.rawname
        yield from calibration_tasks(r.date, r.ccdid, r.filtercode)
        fringe = fringe_task(r)
        if fringe is not None:
            yield [fringe]
        if config.settings().store_science:
            store_science_quadrant(self.output().load(), r, self.qid)
