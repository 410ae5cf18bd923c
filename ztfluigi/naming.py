"""ZTF file names and store-relative paths: the one place that builds and parses them.

Names follow IRSA (``ztf_formats.md`` §2.1, §3.1) and ztfin2p3 (§3.5), so users find products
where their tools look. Paths are relative to a store root and derive from parameters only.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

IMGTYPE_CODES = {"object": "o", "bias": "b", "flat": "f", "dark": "d"}
IMGTYPES = {code: name for name, code in IMGTYPE_CODES.items()}
SCIENCE_FILTERS = ("zg", "zr", "zi")
FILTER_IDS = {"zg": 1, "zr": 2, "zi": 3}

_RAW_RE = re.compile(
    r"^ztf_(?P<filefracday>\d{14})_(?P<field>\d{6})_(?P<filtercode>zg|zr|zi|bi|dk)"
    r"_c(?P<ccdid>\d{2})_(?P<imgtypecode>[obfd])\.fits(?:\.fz)?$"
)


class InvalidName(ValueError):
    """A string that is not a valid ZTF file name."""


@dataclass(frozen=True, order=True)
class RawName:
    """The parts of an IRSA raw file name ``ztf_{filefracday}_{field}_{filter}_cCC_{t}.fits.fz``."""

    filefracday: str
    field: int
    filtercode: str
    ccdid: int
    imgtypecode: str

    @property
    def filename(self) -> str:
        return (
            f"ztf_{self.filefracday}_{self.field:06d}_{self.filtercode}"
            f"_c{self.ccdid:02d}_{self.imgtypecode}.fits.fz"
        )

    @property
    def date(self) -> dt.date:
        """UT date of the exposure start (the night key)."""
        return dt.datetime.strptime(self.filefracday[:8], "%Y%m%d").date()

    @property
    def imgtype(self) -> str:
        return IMGTYPES[self.imgtypecode]

    @property
    def relpath(self) -> str:
        """Path in the IRSA ``products`` tree: ``raw/YYYY/MMDD/ffffff/<name>``."""
        f = self.filefracday
        return f"raw/{f[:4]}/{f[4:8]}/{f[8:]}/{self.filename}"


def parse_raw_filename(name: str) -> RawName:
    """Parse an IRSA raw file name (a bare name or a path ending with it); ValueError if not one."""
    base = name.rsplit("/", 1)[-1]
    m = _RAW_RE.match(base)
    if m is None:
        raise InvalidName(
            f"not a ZTF raw file name: {base!r} "
            "(expected ztf_YYYYMMDDffffff_FFFFFF_{zg|zr|zi|bi}_cCC_{o|b|f|d}.fits.fz)"
        )
    parts = m.groupdict()
    ccdid = int(parts["ccdid"])
    if not 1 <= ccdid <= 16:
        raise InvalidName(f"not a ZTF raw file name: {base!r} (CCD id {ccdid} outside 1-16)")
    try:
        dt.datetime.strptime(parts["filefracday"][:8], "%Y%m%d")
    except ValueError:
        raise InvalidName(f"not a ZTF raw file name: {base!r} (bad date)") from None
    return RawName(
        parts["filefracday"], int(parts["field"]), parts["filtercode"], ccdid, parts["imgtypecode"]
    )


def filefracday(obsjd: float) -> str:
    """``YYYYMMDD`` + the first 6 digits of the UT day fraction of a Julian date (truncated)."""
    # Work in integer microdays to avoid float truncation surprises (JD starts at noon).
    micro = int(round((obsjd - 2440587.5) * 86400e6))  # microseconds since 1970-01-01 UT
    day, rest = divmod(micro, 86400_000_000)
    date = dt.date(1970, 1, 1) + dt.timedelta(days=day)
    return f"{date:%Y%m%d}{rest * 1_000_000 // 86400_000_000:06d}"


def night_id(date: dt.date) -> int:
    """IRSA ``nid``: days since 2017-01-01 of the UT date."""
    return (date - dt.date(2017, 1, 1)).days


def rawindex_relpath(date: dt.date) -> str:
    """Store-relative path of a night's RawIndex parquet."""
    return f"meta/rawindex/{date:%Y}/ztf_{date:%Y%m%d}_rawindex.parquet"


def science_quadrant_name(raw: RawName, qid: int, suffix: str, prefix: str = "ztf") -> str:
    """IPAC (``prefix='ztf'``) or ztfin2p3 (``'ztfin2p3'``) name of a science-quadrant product."""
    return (
        f"{prefix}_{raw.filefracday}_{raw.field:06d}_{raw.filtercode}"
        f"_c{raw.ccdid:02d}_{raw.imgtypecode}_q{qid}_{suffix}"
    )


def science_quadrant_relpath(raw: RawName, qid: int, suffix: str, prefix: str = "ztf") -> str:
    """``sci/YYYY/MMDD/ffffff/<name>``: the IRSA science tree (and ztfin2p3's, with its prefix)."""
    f = raw.filefracday
    return f"sci/{f[:4]}/{f[4:8]}/{f[8:]}/{science_quadrant_name(raw, qid, suffix, prefix)}"


def master_bias_relpath(date: dt.date, ccdid: int) -> str:
    """ztfin2p3 path of a daily master bias: ``cal/bias/YYYY/MMDD/…_bi_cCC_bias.fits``."""
    return f"cal/bias/{date:%Y}/{date:%m%d}/ztfin2p3_{date:%Y%m%d}_000000_bi_c{ccdid:02d}_bias.fits"


def master_flat_relpath(date: dt.date, ccdid: int, filtercode: str) -> str:
    """ztfin2p3 path of a daily master flat (all LEDs of the filter: ``l00``)."""
    return (
        f"cal/flat/{date:%Y}/{date:%m%d}/"
        f"ztfin2p3_{date:%Y%m%d}_000000_{filtercode}_c{ccdid:02d}_l00_flat.fits"
    )


def focal_plane_relpath(date: dt.date, filtercode: str, suffix: str) -> str:
    """Focal-plane products of a night and filter, next to its flats (``fp_flatnorm.fits`` …)."""
    return f"cal/flat/{date:%Y}/{date:%m%d}/ztfin2p3_{date:%Y%m%d}_000000_{filtercode}_{suffix}"


def ipacheader_relpath(date: dt.date, ccdid: int, filtercode: str) -> str:
    """Store-relative path of a night × CCD × filter table of IPAC ``sciimg`` headers."""
    return (f"meta/ipacheader/{date:%Y}/{date:%m%d}/"
            f"ztf_{date:%Y%m%d}_{filtercode}_c{ccdid:02d}_ipacheader.parquet")  # fmt: skip


#: IPAC mask file names in the order the reference reads a ``$ZTFDATA`` mirror
MASK_SUFFIXES = ("mskimg.fits.gz", "mskimg.fits")


def metaheader_relpath(date: dt.date) -> str:
    """The reference pipeline's monthly IPAC header table in a ``$ZTFDATA`` mirror."""
    return f"meta/metaheader/metaheader_{date:%Y%m}.parquet"
