"""Products of the synthetic instrument itself: its reference catalogue and its truth."""

from __future__ import annotations

import luigi
import pyarrow as pa
from astropy.io import fits

from ztfluigi import config, storage
from ztfluigi.archive.sim import SimArchive
from ztfluigi.sim import fringes as simfringes
from ztfluigi.sim import gaia, truth
from ztfluigi.tasks import progress
from ztfluigi.tasks.parameters import NightParameter


def sim_archive() -> SimArchive:
    """The configured archive, which must be the synthetic one."""
    archive = config.get_archive()
    if not isinstance(archive, SimArchive):
        raise ValueError(f"this product exists only for archive = sim (configured: {archive.name})")
    return archive


class SimRefCatalog(progress.OneLineFailures, luigi.Task):
    """The synthetic Gaia-DR3-like catalogue the night's stars were drawn from (HATS layout).

    It covers every science quadrant of the night with a margin; complete when its HATS
    ``properties`` file exists (written last).
    """

    date = NightParameter()

    def output(self) -> storage.FsspecTarget:
        return storage.get_target(storage.url_join(self.catalog_url(), "properties"))

    def catalog_url(self) -> str:
        seed = config.sim().seed
        return config.settings().cal_url(
            f"refcat/{gaia.CATALOG_NAME}_seed{seed}/{self.date:%Y%m%d}"
        )

    def run(self) -> None:
        archive = sim_archive()
        exposures = list(archive.exposures(self.date).values())
        pixels = truth.refcat_pixels(archive.config, exposures)
        gaia.write_sim_catalog(self.catalog_url(), archive.config.seed, sorted(pixels),
                               creation_date=f"{self.date:%Y-%m-%d}T00:00UTC")  # fmt: skip


class SimTruth(progress.OneLineFailures, luigi.Task):
    """What the pipeline must recover for a night: detector, stars, noise-free flats and (with
    ``[sim] fringes``) the fringe mixture of every zi quadrant."""

    date = NightParameter()

    def output(self) -> dict[str, storage.FsspecTarget]:
        base = f"sim/truth/{self.date:%Y}/{self.date:%m%d}/ztfsim_{self.date:%Y%m%d}"
        root = config.settings()
        return {
            "detector": storage.get_target(root.cal_url(f"{base}_detector.parquet")),
            "stars": storage.get_target(root.cal_url(f"{base}_stars.parquet")),
            "flats": storage.get_target(root.cal_url(f"{base}_flats.fits")),
            **({"fringes": storage.get_target(root.cal_url(f"{base}_fringes.parquet"))}
               if config.sim().fringes else {}),  # the zi fringe mixture of each quadrant
        }  # fmt: skip

    def run(self) -> None:
        archive = sim_archive()
        cfg, out = archive.config, self.output()
        science = [e for e in archive.exposures(self.date).values() if e.imgtype == "object"]
        tables = [truth.star_table(cfg, self.date, e, c, q) for e in science
                  for c in range(1, 17) for q in range(1, 5)]  # fmt: skip
        stars = pa.concat_tables(tables) if tables else truth.STAR_SCHEMA.empty_table()
        meta = {"ztfluigi.product": "SimTruth", "ztfluigi.date": self.date.isoformat(),
                "ztfluigi.sim": repr(cfg)}  # fmt: skip
        storage.write_parquet(out["detector"], truth.detector_table(cfg, self.date), meta)
        storage.write_parquet(out["stars"], stars, meta)
        if "fringes" in out:
            storage.write_parquet(out["fringes"], simfringes.truth_table(cfg, science), meta)
        hdus = [fits.PrimaryHDU()]
        for filt in ("zg", "zr", "zi"):
            hdus[0].header[f"FPLVL_{filt.upper()}"] = (
                truth.true_focal_plane_level(cfg, self.date, filt),
                f"true FLTNORM_FP {filt}",
            )
            for c in range(1, 17):
                flat, norm = truth.true_master_flat(cfg, self.date, c, filt)
                hdu = fits.ImageHDU(flat.astype("float32"), name=f"{filt}_c{c:02d}".upper())
                hdu.header["FLTNORM"] = (norm, "true FLTNORM (DN)")
                hdus.append(hdu)
        storage.write_fits(out["flats"], fits.HDUList(hdus))
