"""Configuration sections of luigi.cfg, as Luigi ``Config`` classes (``[ztfluigi]``, ``[sim]``)."""

from __future__ import annotations

import functools

import luigi

from ztfluigi import archive
from ztfluigi.archive import Archive
from ztfluigi.storage import url_join


class ztfluigi(luigi.Config):  # noqa: N801 - the class name is the luigi.cfg section name
    """Where products live and where raw data come from."""

    root = luigi.Parameter(
        default="ztfdata", description="fsspec URL or local path under which every product lives"
    )
    archive = luigi.Parameter(
        default="sim", description="sim | irsa | http(s)://host:port of an IRSA-compatible server"
    )
    raw_root = luigi.Parameter(default="", description="raw files and RawIndex (default: root)")
    cal_root = luigi.Parameter(default="", description="calibration products (default: root)")
    catalog_root = luigi.Parameter(default="", description="aperture catalogues (default: root)")
    refcat = luigi.Parameter(
        default="sim", description="Gaia DR3 HATS store URL, or 'sim' for the synthetic one"
    )
    store_science = luigi.BoolParameter(
        default=False, description="also store science quadrants (FITS) next to their catalogues"
    )
    calib_window = luigi.IntParameter(
        default=10, description="calibration nights are searched within ±N days"
    )

    def raw_url(self, relpath: str) -> str:
        """URL of a raw-store path."""
        return url_join(self.raw_root or self.root, relpath)

    def catalog_url(self, relpath: str) -> str:
        """URL of a catalogue-store path."""
        return url_join(self.catalog_root or self.root, relpath)

    def cal_url(self, relpath: str) -> str:
        """URL of a calibration-store path."""
        return url_join(self.cal_root or self.root, relpath)


class sim(luigi.Config):  # noqa: N801
    """The synthetic instrument: a pure function of (seed, date)."""

    seed = luigi.IntParameter(default=0, description="seed of the synthetic sky and detector")
    scale = luigi.IntParameter(
        default=8, description="quadrants are (3080/scale, 3072/scale) windows; 1 = real size"
    )
    n_fields = luigi.IntParameter(default=3, description="science fields observed per night")
    calib_gaps = luigi.BoolParameter(
        default=False, description="some nights lack calibrations or one filter's flats"
    )


def get_archive() -> Archive:
    """The configured archive (one instance per process and configuration)."""
    s = sim()
    return _archive(ztfluigi().archive, s.seed, s.scale, s.n_fields, s.calib_gaps)


@functools.cache
def _archive(spec: str, seed: int, scale: int, n_fields: int, calib_gaps: bool) -> Archive:
    return archive.get_archive(spec, seed=seed, scale=scale, n_fields=n_fields,
                               calib_gaps=calib_gaps)  # fmt: skip
