"""Aperture catalogues: virtual science quadrants → Gaia DR3 aperture photometry → parquet.

Scheduling granularity (DESIGN.md §5): the scheduler sees one :class:`ApertureCatalogUnit` per
night × CCD × filter; its branches are the (raw science file, quadrant) pairs, each with its own
parquet output. A unit is complete when every branch output exists (one listing per exposure
directory) and running it builds only the missing ones. :class:`ApertureCatalog` is the night's
entry point (a wrapper over the units); :class:`QuadrantCatalog` keeps one quadrant addressable.

Calibration nights are matched at run time from the RawIndex products of the surrounding nights,
nearest first (dynamic dependencies), and recorded in every catalogue's metadata.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator

import luigi
import numpy as np
import pyarrow as pa
from astropy.io import fits
from astropy.wcs import WCS

from ztfluigi import calmatch, config, naming, photometry, raw, refcat, science, storage
from ztfluigi.corrections import CorrectionSpec
from ztfluigi.naming import RawName
from ztfluigi.provenance import package_versions
from ztfluigi.tasks import progress
from ztfluigi.tasks.calib import FocalPlaneLevel, MasterBias, MasterFlat, read_focal_plane_level
from ztfluigi.tasks.parameters import (
    FIRST_NIGHT,
    CcdParameter,
    FilterParameter,
    InvalidParameter,
    NightParameter,
    RawFilenameParameter,
)
from ztfluigi.tasks.raw import RawFile, RawFiles, RawIndex, night_index, raw_target, select_raw
from ztfluigi.tasks.sim import SimRefCatalog

logger = logging.getLogger("luigi-interface")
REFCAT_MARGIN_ARCSEC = 30.0  #: catalogue margin around a quadrant (isolation sees beyond edges)


def catalog_target(rawname: RawName, qid: int) -> storage.FsspecTarget:
    """``sci/YYYY/MMDD/ffffff/ztfin2p3_…_o_qQ_apcat.parquet`` under ``catalog_root``."""
    rel = naming.science_quadrant_relpath(rawname, qid, "apcat.parquet", prefix="ztfin2p3")
    return storage.get_target(config.ztfluigi().catalog_url(rel))


def refcat_url(date: dt.date) -> str:
    """The reference catalogue store: the night's synthetic one, or the configured Gaia DR3."""
    setting = config.ztfluigi().refcat
    return SimRefCatalog(date=date).catalog_url() if setting == "sim" else setting


def match_calibration(
    date: dt.date, ccdid: int, filtercode: str
) -> Iterator[list[luigi.Task] | calmatch.CalibrationMatch]:
    """Nearest usable calibration nights, reading the RawIndex of candidate nights nearest first.

    A generator for Luigi's dynamic dependencies: it yields the RawIndex tasks it needs and
    finally the :class:`~ztfluigi.calmatch.CalibrationMatch`.
    """
    window = config.ztfluigi().calib_window
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


class ApertureCatalogUnit(progress.OneLineFailures, luigi.Task):
    """All aperture catalogues of one night, CCD and filter (one parquet per quadrant)."""

    date = NightParameter()
    ccdid = CcdParameter()
    filtercode = FilterParameter()
    field = luigi.IntParameter(default=0, description="only this ZTF field (0 = all)")

    def requires(self) -> dict[str, luigi.Task]:
        reqs = {
            "index": RawIndex(date=self.date),
            "raw": RawFiles(
                date=self.date, ccdid=self.ccdid, imgtype="object", filtercode=self.filtercode
            ),  # fmt: skip
        }
        if config.ztfluigi().refcat == "sim":
            reqs["refcat"] = SimRefCatalog(date=self.date)
        return reqs

    def branches(self) -> list[tuple[RawName, int]]:
        """(raw science file, qid) pairs of this unit (needs the RawIndex)."""
        raws = select_raw(night_index(self.date), self.ccdid, "object", self.filtercode)
        return [(r, q) for r in raws if self.field in (0, r.field) for q in range(1, 5)]

    def output(self) -> list[storage.FsspecTarget]:
        if not self.input()["index"].exists():
            return []
        return [catalog_target(r, q) for r, q in self.branches()]

    def complete(self) -> bool:
        if not self.input()["index"].exists():
            return False
        return all(storage.ListingCache().exists_many([t.path for t in self.output()]))

    def missing_branches(self) -> list[tuple[RawName, int]]:
        listing = storage.ListingCache()
        return [(r, q) for r, q in self.branches() if not listing.exists(catalog_target(r, q).path)]

    def run(self) -> Iterator[list[luigi.Task]]:
        yield from build_catalogues(self, self.date, self.ccdid, self.filtercode,
                                    self.missing_branches())  # fmt: skip


def build_catalogues(
    task: luigi.Task, date: dt.date, ccdid: int, filtercode: str, todo: list[tuple[RawName, int]]
) -> Iterator[list[luigi.Task]]:
    """Match calibrations (dynamic dependencies), then build and write the ``todo`` catalogues."""
    if not todo:
        return
    match = None
    for step in match_calibration(date, ccdid, filtercode):
        if isinstance(step, calmatch.CalibrationMatch):
            match = step
        else:
            yield step
    calib_tasks = [
        MasterBias(date=match.bias_night, ccdid=ccdid),
        MasterFlat(date=match.flat_night, ccdid=ccdid, filtercode=filtercode),
        FocalPlaneLevel(date=match.flat_night, filtercode=filtercode),
    ]
    yield calib_tasks
    calibration = Calibration.load(*calib_tasks, match=match)
    url = refcat_url(date)
    catalogue = refcat.RefCatalog(url)
    by_raw: dict[RawName, list[int]] = {}
    for rawname, qid in todo:
        by_raw.setdefault(rawname, []).append(qid)
    done = 0
    for rawname, qids in by_raw.items():
        ccd = raw.read_raw(storage.read_bytes(raw_target(rawname).path), rawname.filename)
        for qid in qids:
            sci = science_quadrant(ccd, rawname, qid, calibration)
            if config.ztfluigi().store_science:
                store_science_quadrant(sci, rawname, qid)
            table = quadrant_catalogue(sci, rawname, qid, calibration, catalogue, url)
            storage.write_parquet(catalog_target(rawname, qid), table)
            done += 1
            progress.report(task, done, len(todo), "quadrant catalogues")


class Calibration:
    """The calibration arrays and provenance shared by a unit's quadrants."""

    def __init__(self, bias: np.ndarray, flat: np.ndarray, fltnorm: float, fltnorm_fp: float,
                 files: dict[str, str], match: calmatch.CalibrationMatch) -> None:  # fmt: skip
        self.bias, self.flat, self.fltnorm, self.fltnorm_fp = bias, flat, fltnorm, fltnorm_fp
        self.files, self.match = files, match

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
    )  # fmt: skip


def store_science_quadrant(sci: science.ScienceQuadrant, rawname: RawName, qid: int) -> None:
    """Cache a science quadrant as ztfin2p3 ``…_sciimg.fits`` and ``…_mskimg.fits`` (optional)."""
    for suffix, data in (("sciimg.fits", sci.data), ("mskimg.fits", sci.mask)):
        rel = naming.science_quadrant_relpath(rawname, qid, suffix, prefix="ztfin2p3")
        target = storage.get_target(config.ztfluigi().catalog_url(rel))
        storage.write_fits(target, fits.HDUList([fits.PrimaryHDU(data, sci.header)]))


def quadrant_catalogue(
    sci: science.ScienceQuadrant,
    rawname: RawName,
    qid: int,
    calibration: Calibration,
    catalogue: refcat.RefCatalog,
    refcat_name: str = "",
) -> pa.Table:
    """Aperture catalogue of a science quadrant: Gaia cone at the epoch, sep photometry."""
    archive = config.get_archive()
    ra, dec, radius = refcat.footprint_cone(WCS(sci.header), sci.data.shape, REFCAT_MARGIN_ARCSEC)
    obsmjd = float(sci.header["OBSMJD"])
    stars = refcat.at_epoch(catalogue.cone(ra, dec, radius), obsmjd)
    metadata = {
        "ztfluigi.product": "ApertureCatalog",
        "raw_file": rawname.filename, "qid": str(qid), "epoch_mjd": f"{obsmjd:.7f}",
        "bias_file": calibration.files["bias"], "flat_file": calibration.files["flat"],
        "fp_file": calibration.files["fp"], "fltnorm": repr(calibration.fltnorm),
        "fltnorm_fp": repr(calibration.fltnorm_fp),
        "bias_night": calibration.match.bias_night.isoformat(),
        "flat_night": calibration.match.flat_night.isoformat(),
        "refcat": refcat_name,
        "archive": archive.name,
        **{f"version.{k}": v for k, v in package_versions().items()},
    }  # fmt: skip
    return photometry.photometry_catalogue(sci.data, sci.mask, sci.header, stars, metadata=metadata)


class ApertureCatalog(luigi.WrapperTask):
    """Every aperture catalogue of a night (narrowed by CCD, filter, field): the entry point.

    Besides the catalogue units it requires the night's own stored inputs — raw-file units and,
    where the night has a usable calibration sequence, its master calibrations — so that a re-run
    after deleting any of them rebuilds exactly what was deleted.
    """

    date = NightParameter()
    ccdid = luigi.IntParameter(default=0, description="only this CCD (0 = all 16)")
    filtercode = FilterParameter(default="", allow_all=True)
    field = luigi.IntParameter(default=0, description="only this ZTF field (0 = all)")

    def requires(self) -> list[luigi.Task]:
        if self.ccdid:
            CcdParameter().normalize(self.ccdid)
        ccds = [self.ccdid] if self.ccdid else range(1, 17)
        filters = [self.filtercode] if self.filtercode else naming.SCIENCE_FILTERS
        reqs: list[luigi.Task] = [
            ApertureCatalogUnit(date=self.date, ccdid=c, filtercode=f, field=self.field)
            for c in ccds for f in filters
        ]  # fmt: skip
        if RawIndex(date=self.date).output().exists():
            reqs += self.night_inputs(ccds, filters)
        return reqs

    def night_inputs(self, ccds: list[int] | range, filters: list[str] | tuple[str, ...]) -> list:
        """The night's raw-file units and its own usable master calibrations."""
        index = night_index(self.date)
        reqs: list[luigi.Task] = []
        for c in ccds:
            reqs += [RawFiles(date=self.date, ccdid=c, imgtype="object", filtercode=f)
                     for f in filters]  # fmt: skip
            if calmatch.usable_bias(index, c):
                reqs.append(MasterBias(date=self.date, ccdid=c))
            reqs += [MasterFlat(date=self.date, ccdid=c, filtercode=f)
                     for f in filters if calmatch.usable_flat(index, c, f)]  # fmt: skip
        if not self.ccdid:
            reqs += [FocalPlaneLevel(date=self.date, filtercode=f)
                     for f in filters if calmatch.usable_focal_plane(index, f)]  # fmt: skip
        return reqs


class QuadrantCatalog(progress.OneLineFailures, luigi.Task):
    """The aperture catalogue of one science quadrant, addressable on its own."""

    filename = RawFilenameParameter()
    qid = luigi.IntParameter(description="quadrant 1-4")

    @property
    def rawname(self) -> RawName:
        return naming.parse_raw_filename(self.filename)

    def requires(self) -> list[luigi.Task]:
        if self.qid not in (1, 2, 3, 4):
            raise InvalidParameter(f"qid {self.qid} is not a ZTF quadrant id (1-4)")
        if self.rawname.imgtype != "object":
            raise InvalidParameter(f"{self.filename} is not a science exposure")
        reqs = [RawIndex(date=self.rawname.date), RawFile(filename=self.filename)]
        if config.ztfluigi().refcat == "sim":
            reqs.append(SimRefCatalog(date=self.rawname.date))
        return reqs

    def output(self) -> storage.FsspecTarget:
        return catalog_target(self.rawname, self.qid)

    def run(self) -> Iterator[list[luigi.Task]]:
        r = self.rawname
        yield from build_catalogues(self, r.date, r.ccdid, r.filtercode, [(r, self.qid)])
