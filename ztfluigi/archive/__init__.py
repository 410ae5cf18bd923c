"""Where raw files come from: the archive interface and its implementations.

An archive answers the questions the pipeline asks IRSA: the night's raw metadata (the IRSA
``raw`` table columns, plus the LED of each flat, which IRSA lacks and the client reads from the
file's primary header), the bytes of one raw file, and the IPAC header and mask of a science
quadrant. ``archive = sim`` is the synthetic instrument; the IRSA client and an IRSA-compatible
server implement the same interface.
"""

from __future__ import annotations

import abc
import datetime as dt
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from astropy.io import fits

from ztfluigi.naming import RawName

if TYPE_CHECKING:
    from ztfluigi.sim.schedule import SimConfig

#: IRSA ``ztf.ztf_current_meta_raw`` columns (ztf_formats.md §3.2), then ztfluigi's additions.
RAW_METADATA_COLUMNS = (
    "infobits", "field", "ccdid", "fid", "filtercode", "nid", "expid", "itid", "imgtype",
    "imgtypecode", "filefracday", "obsdate", "obsjd", "exptime", "ipac_gid", "seeing", "airmass",
    "moonillf", "moonesb", "telra", "teldec", "ccdrot", "ipac_pub_date", "meta_id",
)  # fmt: skip
EXTRA_COLUMNS = ("ledid", "filename")


class ArchiveError(Exception):
    """A request the archive cannot serve (unknown file, unreachable server…): one-line message."""


class Archive(abc.ABC):
    """The raw-data archive as the pipeline sees it."""

    #: short name recorded in provenance ("sim", "irsa", a server URL)
    name: str = "archive"
    #: True when :meth:`fetch_raw` returns only bytes that passed ``raw.verify_raw`` (the IRSA
    #: client verifies to decide on retries), so the task layer need not verify them again
    verifies_raw: bool = False

    @abc.abstractmethod
    def night_metadata(self, date: dt.date) -> pa.Table:
        """One row per raw CCD file of the UT ``date``: RAW_METADATA_COLUMNS + EXTRA_COLUMNS."""

    @abc.abstractmethod
    def fetch_raw(self, raw: RawName) -> bytes:
        """The raw file's bytes exactly as the archive serves them."""

    @abc.abstractmethod
    def science_header(self, raw: RawName, qid: int) -> fits.Header:
        """The IPAC ``sciimg`` header of a science quadrant (raw + IPAC keywords, WCS)."""

    @abc.abstractmethod
    def science_mask(self, raw: RawName, qid: int) -> tuple[fits.Header, np.ndarray]:
        """The IPAC ``mskimg`` header and int16 bit mask of a science quadrant."""


def get_archive(spec: str, sim: SimConfig | None = None) -> Archive:
    """The archive named by the ``[ztfluigi] archive`` setting.

    ``sim``: the synthetic instrument with the ``[sim]`` settings ``sim``; ``irsa``:
    IRSA itself; ``http(s)://host:port``: an IRSA-compatible server (``ztfluigi archive serve``).
    """
    if spec == "sim":
        from ztfluigi.archive.sim import SimArchive
        from ztfluigi.sim.schedule import SimConfig

        return SimArchive(sim or SimConfig())
    if spec == "irsa" or spec.startswith(("http://", "https://")):
        from ztfluigi.archive.irsa import IRSA_URL, IrsaArchive

        return IrsaArchive(IRSA_URL if spec == "irsa" else spec)
    raise ArchiveError(
        f"unknown archive {spec!r}: expected 'sim', 'irsa' or the http(s)://host:port of an "
        "IRSA-compatible server"
    )
