"""Calibration products: master bias, master flat, focal-plane level and its picture."""

from __future__ import annotations

import io
import logging

import luigi
import numpy as np
from astropy.io import fits

from ztfluigi import calib, camera, config, naming, provenance, storage
from ztfluigi.corrections import CorrectionSpec, correct_ccd
from ztfluigi.provenance import Provenance, master_provenance
from ztfluigi.tasks import progress
from ztfluigi.tasks.inputs import read_or_rebuild
from ztfluigi.tasks.parameters import CcdParameter, FilterParameter, NightParameter
from ztfluigi.tasks.raw import RawFile, RawFiles, read_stored_raw

logger = logging.getLogger("luigi-interface")


def cal_target(relpath: str) -> storage.FsspecTarget:
    """A calibration product under ``cal_root``."""
    return storage.get_target(config.settings().cal_url(relpath))


def corrected_frames(
    task: luigi.Task,
    rawnames: list[naming.RawName],
    spec: CorrectionSpec,
    minus: np.ndarray | None = None,
) -> list[tuple[str, fits.Header, np.ndarray]]:
    """(file name, primary header, corrected sky-oriented CCD ``− minus`` when given) of stored
    raw files, verified (a damaged one is fetched again)."""
    frames = []
    for i, rawname in enumerate(rawnames):
        ccd = read_or_rebuild(lambda r=rawname: read_stored_raw(r),
                                         RawFile(filename=rawname.filename))  # fmt: skip
        progress.report(task, i, len(rawnames), "raw frames corrected")
        frames.append((rawname.filename, ccd.header,
                       correct_ccd(ccd.data, ccd.overscan, rawname.ccdid, rawname.date, spec,
                                   minus=minus)))  # fmt: skip
    return frames


def read_image(target: storage.FsspecTarget) -> fits.HDUList:
    """A calibration product, verified against its checksums."""
    return storage.read_fits(target, require_checksum=True)


def archive_cards() -> list[tuple[str, object, str]]:
    """Where the raw frames came from (the store's identity): ``ARCHIVE``, and for the
    synthetic instrument its ``SIMSEED`` and ``SIMSCALE``, which determine every pixel."""
    identity = config.store_identity()
    cards: list[tuple[str, object, str]] = [
        ("ARCHIVE", identity["archive"], "origin of the raw frames")]
    if identity["archive"] == "sim":
        cards += [("SIMSEED", identity["seed"], "seed of the synthetic instrument"),
                  ("SIMSCALE", identity["scale"], "synthetic quadrants: real size / SIMSCALE")]
    return cards


def write_image(target: storage.FsspecTarget, data: np.ndarray, record: Provenance) -> None:
    """A calibration image product: one primary HDU with its provenance header and origin."""
    record.extend(archive_cards())
    storage.write_fits(target, fits.HDUList([fits.PrimaryHDU(data, record.header())]))


class MasterBias(progress.OneLineFailures, luigi.Task):
    """Daily master bias of one CCD: the night's biases after the first ten, corrected, stacked.

    Stacking is the per-pixel clipped median of the bias clip spec (the reference definition).
    """

    date = NightParameter()
    ccdid = CcdParameter()

    def requires(self) -> RawFiles:
        return RawFiles(date=self.date, ccdid=self.ccdid, imgtype="bias", first=calib.BIAS_SKIP)

    def output(self) -> storage.FsspecTarget:
        return cal_target(naming.master_bias_relpath(self.date, self.ccdid))

    def run(self) -> None:
        rawnames = self.requires().branches()
        if len(rawnames) < calib.MIN_FRAMES:
            raise calib.CalibrationError(
                f"{self.date} CCD {self.ccdid}: {len(rawnames)} biases after skipping the first "
                f"{calib.BIAS_SKIP}, at least {calib.MIN_FRAMES} needed"
            )
        specs = config.processing_specs()
        correction = specs.correction.for_imgtype("bias").resolved(self.date)
        frames = [f for _, _, f in corrected_frames(self, rawnames, correction)]
        bias, stats = calib.master_bias_stats(frames, specs.bias_clip)
        record = master_provenance("bias", self.date, self.ccdid, [r.filename for r in rawnames],
                                   [correction, specs.bias_clip, stats])  # fmt: skip
        write_image(self.output(), bias, record)


class MasterFlat(progress.OneLineFailures, luigi.Task):
    """Daily master flat of one CCD and filter (all its LEDs, ``l00``).

    Per-LED robust clipped medians of bias-subtracted flats, each divided by its CCD median,
    averaged over LEDs; ``FLTNORM`` = mean of the LED medians. A flat whose LED is unreadable
    or not of this filter is left out and named in the header and the log.
    """

    date = NightParameter()
    ccdid = CcdParameter()
    filtercode = FilterParameter()

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "bias": MasterBias(date=self.date, ccdid=self.ccdid),
            "flats": RawFiles(
                date=self.date, ccdid=self.ccdid, imgtype="flat", filtercode=self.filtercode
            ),  # fmt: skip
        }

    def output(self) -> storage.FsspecTarget:
        return cal_target(naming.master_flat_relpath(self.date, self.ccdid, self.filtercode))

    def run(self) -> None:
        bias_target = self.input()["bias"]
        bias_hdul = read_or_rebuild(lambda: read_image(bias_target),
                                               self.requires()["bias"])  # fmt: skip
        bias = np.asarray(bias_hdul[0].data, dtype=np.float32)
        rawnames = self.requires()["flats"].branches()
        specs = config.processing_specs()
        correction = specs.correction.for_imgtype("flat").resolved(self.date)
        frames = corrected_frames(self, rawnames, correction, minus=bias)  # bias-subtracted
        selection = calib.select_flats_by_led(frames, camera.FILTER_LEDS[self.filtercode])
        if selection.rejected:
            logger.warning("%s: flats without a usable LED left out: %s", self,
                           "; ".join(selection.rejected))  # fmt: skip
        result = calib.master_flat(selection.by_led, None, specs.flat_clip)
        record = master_provenance("flat", self.date, self.ccdid, selection.used,
                                   [correction, specs.flat_clip, result.stats])  # fmt: skip
        record.extend(calib.flat_cards(result, self.filtercode, bias_target.path.rsplit("/", 1)[-1],
                                       selection.rejected))  # fmt: skip
        write_image(self.output(), result.flat, record)


class FocalPlaneLevel(progress.OneLineFailures, luigi.Task):
    """FLTNORM_FP of a night and filter: the global pixel median of the 16 de-normalised flats."""

    date = NightParameter()
    filtercode = FilterParameter()

    def requires(self) -> dict[int, MasterFlat]:
        return {
            c: MasterFlat(date=self.date, ccdid=c, filtercode=self.filtercode) for c in range(1, 17)
        }

    def output(self) -> storage.FsspecTarget:
        return cal_target(
            naming.focal_plane_relpath(self.date, self.filtercode, "fp_flatnorm.fits")
        )

    def run(self) -> None:
        flats = {}
        for ccdid, target in self.input().items():
            hdul = read_or_rebuild(lambda t=target: read_image(t),
                                              self.requires()[ccdid])  # fmt: skip
            flats[ccdid] = (np.asarray(hdul[0].data, np.float32), float(hdul[0].header["FLTNORM"]))
        level = calib.focal_plane_level(flats)
        table = calib.focal_plane_columns(
            {c: norm for c, (_, norm) in flats.items()},
            {c: t.path.rsplit("/", 1)[-1] for c, t in self.input().items()},
        )
        record = master_provenance("fplevel", self.date, None, [])
        record.add("FILTRKEY", self.filtercode, "filter")
        record.add("FLTNORM_FP", level, "focal-plane median of Fn x FLTNORM (DN)")
        record.add("NFLATS_FP", len(flats), "CCD flats used")
        record.extend(archive_cards())
        storage.write_fits(self.output(), fits.HDUList([fits.PrimaryHDU(header=record.header()),
                                                        table]))  # fmt: skip


def read_focal_plane_level(target: storage.FsspecTarget) -> tuple[float, dict[int, float]]:
    """(FLTNORM_FP, {ccdid: FLTNORM}) from a stored FocalPlaneLevel product."""
    return calib.read_focal_plane_level(read_image(target))


class FocalPlaneFlatImage(progress.OneLineFailures, luigi.Task):
    """PNG of the 16 master flats of a night and filter, in their real focal-plane positions."""

    date = NightParameter()
    filtercode = FilterParameter()

    def requires(self) -> dict[str, luigi.Task]:
        level = FocalPlaneLevel(date=self.date, filtercode=self.filtercode)
        return {"level": level, "flats": level.requires()}

    def output(self) -> storage.FsspecTarget:
        return cal_target(naming.focal_plane_relpath(self.date, self.filtercode, "fp_flat.png"))

    def run(self) -> None:
        from ztfluigi import plots  # matplotlib is an optional extra

        level, norms = read_focal_plane_level(self.input()["level"])
        flats = {c: np.asarray(read_image(t)[0].data, np.float32)
                 for c, t in self.input()["flats"].items()}  # fmt: skip
        buf = io.BytesIO()
        plots.focal_plane_flat(
            calib.denormalised_flats(flats, norms, level),
            f"{self.date} {self.filtercode} master flats x FLTNORM / FLTNORM_FP "
            f"(FLTNORM_FP = {level:.1f} DN)", buf, self.png_metadata(level),
        )  # fmt: skip
        storage.write_bytes(self.output(), buf.getvalue())

    def png_metadata(self, level: float) -> dict[str, str]:
        """The picture's provenance (PNG text chunks): product, inputs, FLTNORM_FP, versions,
        where the raw frames came from; no date, so a rebuilt picture is byte-identical."""
        import matplotlib

        versions = {**provenance.package_versions(), "matplotlib": matplotlib.__version__}
        inputs = [self.input()["level"].path.rsplit("/", 1)[-1]]
        inputs += [t.path.rsplit("/", 1)[-1] for _, t in sorted(self.input()["flats"].items())]
        return {
            "Title": f"{self.date} {self.filtercode} focal-plane flat",
            "Software": f"ztfluigi {versions['ztfluigi']} (matplotlib {matplotlib.__version__})",
            "ztfluigi.product": "FocalPlaneFlatImage",
            "ztfluigi.date": self.date.isoformat(),
            "ztfluigi.filtercode": self.filtercode,
            "FLTNORM_FP": repr(level),
            "ztfluigi.inputs": ", ".join(inputs),
            "ztfluigi.versions": ", ".join(f"{k}={v}" for k, v in versions.items()),
            **{f"ztfluigi.{key}": str(value) for key, value, _ in archive_cards()},
        }
