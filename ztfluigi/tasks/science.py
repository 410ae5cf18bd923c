"""Virtual science quadrants: built on the fly from the stored raw file and calibrations.

A science quadrant is never stored by default (DESIGN.md §1): :class:`ScienceQuadrant` is complete
when its inputs are (raw file, the matched master bias, master flat and focal-plane level), and its
output's :meth:`ScienceQuadrantTarget.load` computes ``S = (R − B)/F × FLTNORM_FP/FLTNORM`` for the
quadrant. With ``[ztfluigi] store_science = true`` the quadrant is also written as ztfin2p3's
``…_sciimg.fits``/``…_mskimg.fits``, and ``load()`` then reads that cache.

Calibration nights are matched from the RawIndex products of the surrounding nights, nearest first,
as Luigi dynamic dependencies (:func:`calibration_tasks`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator, Iterator
from typing import Any

import luigi
import numpy as np
import pyarrow as pa
from astropy.io import fits

from ztfluigi import calmatch, config, naming, raw, science, storage
from ztfluigi.corrections import CorrectionSpec
from ztfluigi.naming import RawName
from ztfluigi.tasks import progress
from ztfluigi.tasks.calib import FocalPlaneLevel, MasterBias, MasterFlat, read_focal_plane_level
from ztfluigi.tasks.parameters import (
    FIRST_NIGHT,
    InvalidParameter,
    QidParameter,
    RawFilenameParameter,
)
from ztfluigi.tasks.raw import RawFile, RawIndex, night_index, raw_target

CalibrationTasks = tuple[MasterBias, MasterFlat, FocalPlaneLevel]


def match_calibration(
    date: dt.date, ccdid: int, filtercode: str
) -> Iterator[list[luigi.Task] | calmatch.CalibrationMatch]:
    """Nearest usable calibration nights, reading the RawIndex of candidate nights nearest first.

    A generator for Luigi's dynamic dependencies: it yields the RawIndex tasks it needs and
    finally the :class:`~ztfluigi.calmatch.CalibrationMatch`.
    """
    window = config.settings().calib_window
    today = dt.datetime.now(dt.UTC).date()
    indexes: dict[dt.date, pa.Table] = {}
    error: calmatch.NoCalibrationError | None = None
    for night in calmatch.candidate_nights(date, window):
        if not FIRST_NIGHT <= night <= today:
            continue
        yield [RawIndex(date=night)]
        indexes[night] = night_index(night)
        try:
            yield calmatch.match_calibrations(date, indexes, ccdid, filtercode, window=window)
            return
        except calmatch.NoCalibrationError as exc:
            error = exc
    raise error or calmatch.NoCalibrationError(f"{date}: no calibration night available")


def calibration_tasks(
    date: dt.date, ccdid: int, filtercode: str
) -> Generator[list[luigi.Task], Any, tuple[calmatch.CalibrationMatch, CalibrationTasks]]:
    """Dynamic dependencies of a science quadrant's calibration: RawIndexes, then the products.

    ``yield from`` it in a ``run()``; it returns the match and the (bias, flat, focal-plane) tasks.
    """
    match = None
    for step in match_calibration(date, ccdid, filtercode):
        if isinstance(step, calmatch.CalibrationMatch):
            match = step
        else:
            yield step
    tasks = (
        MasterBias(date=match.bias_night, ccdid=ccdid),
        MasterFlat(date=match.flat_night, ccdid=ccdid, filtercode=filtercode),
        FocalPlaneLevel(date=match.flat_night, filtercode=filtercode),
    )
    yield list(tasks)
    return match, tasks


class MissingInput(storage.ProductError):
    """A virtual product was asked for before one of its stored inputs exists."""


def resolve_built(
    steps: Generator[list[luigi.Task], Any, Any],
) -> Any:
    """Drive a dynamic-dependency generator over inputs that must already be built.

    Returns the generator's value; raises :class:`MissingInput` naming the first missing task.
    """
    try:
        step = next(steps)
        while True:
            missing = [t for t in step if not t.complete()]
            if missing:
                raise MissingInput(f"{missing[0]} is not built yet")
            step = steps.send(None)
    except StopIteration as stop:
        return stop.value


class Calibration:
    """The calibration arrays and provenance shared by the quadrants of one CCD and filter."""

    def __init__(self, bias: np.ndarray, flat: np.ndarray, fltnorm: float, fltnorm_fp: float,
                 files: dict[str, str], match: calmatch.CalibrationMatch) -> None:  # fmt: skip
        self.bias, self.flat, self.fltnorm, self.fltnorm_fp = bias, flat, fltnorm, fltnorm_fp
        self.files, self.match = files, match
        #: per-quadrant median flat (SATURATE), computed once for all the exposures it serves
        self.flat_medians = {q: science.quadrant_flat_median(flat, q) for q in range(1, 5)}

    @classmethod
    def load(cls, bias_task: MasterBias, flat_task: MasterFlat, fp_task: FocalPlaneLevel,
             match: calmatch.CalibrationMatch) -> Calibration:  # fmt: skip
        bias = np.asarray(storage.read_fits(bias_task.output())[0].data, np.float32)
        flat_hdu = storage.read_fits(flat_task.output())[0]
        fltnorm_fp, _ = read_focal_plane_level(fp_task.output())
        tasks = {"bias": bias_task, "flat": flat_task, "fp": fp_task}
        files = {k: t.output().path.rsplit("/", 1)[-1] for k, t in tasks.items()}
        return cls(bias, np.asarray(flat_hdu.data, np.float32), float(flat_hdu.header["FLTNORM"]),
                   fltnorm_fp, files, match)  # fmt: skip


def science_quadrant(
    ccd: raw.RawCCD, rawname: RawName, qid: int, calibration: Calibration
) -> science.ScienceQuadrant:
    """The virtual science quadrant: built in memory from the raw file and the calibrations."""
    archive = config.get_archive()
    spec = CorrectionSpec()
    ipac_header = archive.science_header(rawname, qid)
    _, ipac_mask = archive.science_mask(rawname, qid)
    prov = science.science_provenance(
        calibration.files["bias"], calibration.files["flat"], calibration.files["fp"],
        calibration.fltnorm, calibration.fltnorm_fp, calibration.match.header_cards(), spec,
        raw_file=rawname.filename,
    )  # fmt: skip
    return science.build_science_quadrant(
        ccd, rawname, qid, calibration.bias, calibration.flat, calibration.fltnorm,
        calibration.fltnorm_fp, ipac_header, ipac_mask, prov, spec,
        flat_median=calibration.flat_medians[qid],
    )  # fmt: skip


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

    def _calibration_tasks(self) -> tuple[calmatch.CalibrationMatch, CalibrationTasks]:
        r = self.rawname
        if not RawFile(filename=r.filename).complete():
            raise MissingInput(f"{r.filename} is not in the raw store yet")
        return resolve_built(calibration_tasks(r.date, r.ccdid, r.filtercode))

    def exists(self) -> bool:
        if self.cached():
            return True
        try:
            self._calibration_tasks()
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
        match, tasks = self._calibration_tasks()
        calibration = Calibration.load(*tasks, match=match)
        name = self.rawname.filename
        ccd = raw.read_raw(storage.read_bytes(raw_target(self.rawname).path), name)
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
        return [RawIndex(date=self.rawname.date), RawFile(filename=self.filename)]

    def output(self) -> ScienceQuadrantTarget:
        return ScienceQuadrantTarget(self.rawname, self.qid)

    def run(self) -> Iterator[list[luigi.Task]]:
        r = self.rawname
        yield from calibration_tasks(r.date, r.ccdid, r.filtercode)
        if config.settings().store_science:
            store_science_quadrant(self.output().load(), r, self.qid)
