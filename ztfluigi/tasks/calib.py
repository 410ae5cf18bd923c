"""Calibration products: master bias, master flat, focal-plane level and its picture."""

from __future__ import annotations

import collections
import io
import logging

import luigi
import numpy as np
from astropy.io import fits

from ztfluigi import calib, camera, config, naming, raw, storage
from ztfluigi.corrections import CorrectionSpec, correct_ccd
from ztfluigi.provenance import provenance_header
from ztfluigi.tasks import progress
from ztfluigi.tasks.parameters import CcdParameter, FilterParameter, NightParameter
from ztfluigi.tasks.raw import RawFiles, raw_target

logger = logging.getLogger("luigi-interface")


def cal_target(relpath: str) -> storage.FsspecTarget:
    """A calibration product under ``cal_root``."""
    return storage.get_target(config.settings().cal_url(relpath))


def corrected_frames(task: luigi.Task, rawnames: list[naming.RawName], spec: CorrectionSpec):  # noqa: ANN201
    """Yield (raw name, primary header, corrected sky-oriented CCD) for stored raw files."""
    for i, rawname in enumerate(rawnames):
        content = storage.read_bytes(raw_target(rawname).path)
        ccd = raw.read_raw(content, rawname.filename)
        progress.report(task, i, len(rawnames), "raw frames corrected")
        yield rawname, ccd.header, correct_ccd(ccd.data, ccd.overscan, rawname.ccdid, rawname.date,
                                               spec)  # fmt: skip


class MasterBias(progress.OneLineFailures, luigi.Task):
    """Daily master bias of one CCD: the night's biases after the first ten, corrected, stacked.

    Stacking is the per-pixel clipped median of ``calib.BIAS_CLIP`` (the reference definition).
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
        spec, clip = CorrectionSpec(), calib.BIAS_CLIP
        frames = [f for _, _, f in corrected_frames(self, rawnames, spec)]
        bias = calib.master_bias(frames, clip)
        header = provenance_header("bias", self.date, self.ccdid,
                                   [r.filename for r in rawnames], [spec, clip])  # fmt: skip
        storage.write_fits(self.output(), fits.HDUList([fits.PrimaryHDU(bias, header)]))


class MasterFlat(progress.OneLineFailures, luigi.Task):
    """Daily master flat of one CCD and filter (all its LEDs, ``l00``).

    Per-LED robust clipped medians of bias-subtracted flats, each divided by its CCD median,
    averaged over LEDs; ``FLTNORM`` = mean of the LED medians. A flat whose LED is unreadable
    or not of this filter fails the product (it is never silently dropped).
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
        bias = np.asarray(storage.read_fits(bias_target)[0].data, dtype=np.float32)
        rawnames = self.requires()["flats"].branches()
        spec, clip = CorrectionSpec(), calib.FLAT_CLIP
        by_led: dict[int, list[np.ndarray]] = collections.defaultdict(list)
        used, unreadable = [], []
        for rawname, header, frame in corrected_frames(self, rawnames, spec):
            led = header.get("ILUM_LED", -1)
            if led not in camera.FILTER_LEDS[self.filtercode]:
                unreadable.append(f"{rawname.filename} (ILUM_LED={led})")
                continue
            by_led[led].append(frame)
            used.append(rawname.filename)
        if unreadable:
            logger.warning(
                "%s: flats without a usable LED left out: %s", self, "; ".join(unreadable)
            )
        result = calib.master_flat(by_led, bias, clip)
        header = provenance_header("flat", self.date, self.ccdid, used, [spec, clip])
        header["FILTRKEY"] = (self.filtercode, "filter")
        header["LEDID"] = (0, "0 = all LEDs of the filter combined")
        header["FLTNORM"] = (result.fltnorm, "mean of the LED medians (DN)")
        for led, level in result.led_levels.items():
            header[f"LEDNRM{led:02d}"] = (level, f"median of the LED {led} stack (DN)")
        header["BIASFILE"] = (bias_target.path.rsplit("/", 1)[-1], "master bias used")
        header["NBADLED"] = (len(unreadable), "flats left out (ILUM_LED missing/wrong)")
        for i, reason in enumerate(unreadable, start=1):
            header[f"BADLED{i:02d}"] = (reason[:68], "")
        storage.write_fits(self.output(), fits.HDUList([fits.PrimaryHDU(result.flat, header)]))


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
            hdu = storage.read_fits(target)[0]
            flats[ccdid] = (np.asarray(hdu.data, np.float32), float(hdu.header["FLTNORM"]))
        level = calib.focal_plane_level(flats)
        table = fits.BinTableHDU.from_columns([
            fits.Column("CCDID", "I", array=np.arange(1, 17)),
            fits.Column("FLTNORM", "D", array=[flats[c][1] for c in range(1, 17)]),
            fits.Column("FLATFILE", "80A",
                        array=[self.input()[c].path.rsplit("/", 1)[-1] for c in range(1, 17)]),
        ])  # fmt: skip
        header = provenance_header("fplevel", self.date, None, [], [])
        header["FILTRKEY"] = (self.filtercode, "filter")
        header["HIERARCH FLTNORM_FP"] = (level, "focal-plane median of Fn x FLTNORM (DN)")
        header["HIERARCH NFLATS_FP"] = (16, "CCD flats used")
        storage.write_fits(self.output(), fits.HDUList([fits.PrimaryHDU(header=header), table]))


def read_focal_plane_level(target: storage.FsspecTarget) -> tuple[float, dict[int, float]]:
    """(FLTNORM_FP, {ccdid: FLTNORM}) from a FocalPlaneLevel product."""
    hdul = storage.read_fits(target)
    rows = hdul[1].data
    return float(hdul[0].header["FLTNORM_FP"]), dict(
        zip(rows["CCDID"].tolist(), rows["FLTNORM"].tolist(), strict=True)
    )


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
        flats = {}
        for ccdid, target in self.input()["flats"].items():
            flats[ccdid] = (
                np.asarray(storage.read_fits(target)[0].data, np.float32) * norms[ccdid] / level
            )
        buf = io.BytesIO()
        plots.focal_plane_flat(
            flats, f"{self.date} {self.filtercode} master flats x FLTNORM / FLTNORM_FP", buf
        )
        storage.write_bytes(self.output(), buf.getvalue())
