"""The synthetic instrument as an archive (``archive = sim``)."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from astropy.io import fits
from astropy.time import Time

from ztfluigi import camera, naming
from ztfluigi import ipac as ipac_io
from ztfluigi.archive import Archive, ArchiveError, header_columns, metadata_table
from ztfluigi.naming import RawName
from ztfluigi.sim import ephemeris, ipac, rawfile
from ztfluigi.sim.schedule import Exposure, SimConfig, night_log

#: IRSA image-type ids used in the synthetic metadata (IRSA's real itid values are not documented)
ITID = {"object": 1, "bias": 2, "flat": 3}


def header_values(exp: Exposure) -> dict[str, object]:
    """The primary-header cards of an exposure's raw files that :func:`header_columns` reads,
    with the values and roundings of :func:`ztfluigi.sim.headers.raw_primary_header` (which
    costs ≈15 ms an exposure to build whole; tests hold the two equal)."""
    alt, _ = ephemeris.altaz(exp.ra, exp.dec, exp.obsjd)
    return {
        "OBSJD": round(exp.obsjd, 7), "SHUTOPEN": Time(exp.obsjd, format="jd", scale="utc").isot,
        "EXPTIME": exp.exptime,
        "AIRMASS": round(float(ephemeris.airmass(alt)), 3) if alt > 10 else 10.156,
        "MOONILLF": round(float(ephemeris.moon_illuminated_fraction(exp.obsjd)), 6),
        "MOONESB": 0.0, "TELRAD": round(exp.ra, 4), "TELDECD": round(exp.dec, 4),
        "ILUM_LED": exp.led,
    }  # fmt: skip


class SimArchive(Archive):
    """Serves the synthetic night of any UT date, generated on demand from (seed, date)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.name = f"sim(seed={config.seed}, scale={config.scale})"

    @functools.lru_cache(maxsize=32)  # noqa: B019 - archives live as long as the process
    def exposures(self, date: dt.date) -> dict[str, Exposure]:
        """The night's exposures keyed by filefracday."""
        return {e.filefracday: e for e in night_log(self.config, date)}

    def _exposure(self, raw: RawName) -> Exposure:
        exp = self.exposures(raw.date).get(raw.filefracday)
        if exp is None or exp.raw_name(raw.ccdid) != raw:
            raise ArchiveError(f"{raw.filename}: no such raw file in the synthetic archive")
        return exp

    @functools.lru_cache(maxsize=8)  # noqa: B019 - archives live as long as the process
    def night_metadata(self, date: dt.date) -> pa.Table:
        """IRSA's table of the synthetic night: the columns a file's header determines hold the
        files' own header values (as IRSA's do), the database's are synthesised."""
        rows = []
        nid = naming.night_id(date)
        for i, exp in enumerate(self.exposures(date).values()):
            cards = header_values(exp)
            database = {
                "infobits": 0, "itid": ITID[exp.imgtype],
                "ipac_gid": 1 if exp.imgtype == "object" else 0, "seeing": round(exp.seeing, 3),
                "ccdrot": 0.0, "ipac_pub_date": f"{date + dt.timedelta(days=1)} 00:00:00+00",
            }  # fmt: skip
            for ccdid in range(1, 17):
                rows.append({**header_columns(exp.raw_name(ccdid), cards), **database,
                             "meta_id": (nid * 10000 + i) * 100 + ccdid})  # fmt: skip
        return metadata_table(rows)

    def fetch_raw(self, raw: RawName) -> bytes:
        return rawfile.render_raw_file(self.config, raw.date, self._exposure(raw), raw.ccdid)

    def science_header(self, raw: RawName, qid: int) -> fits.Header:
        return ipac.science_header(self.config, raw.date, self._science(raw), raw.ccdid, qid)

    def science_mask(self, raw: RawName, qid: int) -> tuple[fits.Header, np.ndarray]:
        exp = self._science(raw)
        header = ipac.mask_header(self.config, raw.date, exp, raw.ccdid, qid)
        return header, ipac.mask(self.config, raw.date, exp, raw.ccdid, qid)

    def fetch_science_headers(self, quadrants: Sequence[tuple[RawName, int]]) -> pa.Table:
        """The headers as IRSA serves them: the primary header of the ``sciimg.fits`` the
        IRSA-compatible server renders (layout cards included), parsed strictly."""
        quadrants = list(quadrants)
        shape = camera.quadrant_shape(self.config.scale)
        headers = []
        for raw, qid in quadrants:
            name = naming.science_quadrant_name(raw, qid, "sciimg.fits")
            block = ipac_io.image_header_bytes(self.science_header(raw, qid), -32, shape)
            header = ipac_io.parse_header(block, name)
            ipac_io.check_identity(header, ipac_io.QuadrantKey.of(raw, qid), name)
            headers.append(header)
        return ipac_io.encode_headers(headers, quadrants)

    def _science(self, raw: RawName) -> Exposure:
        exp = self._exposure(raw)
        if exp.imgtype != "object":
            raise ArchiveError(f"{raw.filename}: not a science exposure (no IPAC products)")
        return exp
