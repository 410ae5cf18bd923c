"""Where raw files come from: the archive interface and its implementations.

An archive answers the questions the pipeline asks IRSA: the night's raw metadata (the IRSA
``raw`` table columns, plus the LED of each flat, which IRSA lacks and the client reads from the
file's primary header), the bytes of one raw file, and the IPAC header and mask of a science
quadrant. ``archive = sim`` is the synthetic instrument; the IRSA client and an IRSA-compatible
server implement the same interface.

The IPAC inputs of science quadrants are fetched once and stored (:mod:`ztfluigi.ipac`):
:meth:`Archive.fetch_science_headers` gives the ``sciimg`` headers of many quadrants as one
table, :meth:`Archive.fetch_mask` the verified bytes of one ``mskimg`` file.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa
from astropy.io import fits

from ztfluigi import ipac, naming
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


class MaskFile(NamedTuple):
    """An IPAC mask file as the archive serves it, verified (:func:`ztfluigi.ipac.read_mask`)."""

    relpath: str  #: path in the IRSA tree: ``sci/YYYY/MMDD/ffffff/ztf_…_qQ_mskimg.fits[.gz]``
    content: bytes  #: the file's bytes (gzip-compressed when ``relpath`` ends with ``.gz``)

    @property
    def name(self) -> str:
        """The file name."""
        return self.relpath.rsplit("/", 1)[-1]


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

    def fetch_science_headers(self, quadrants: Sequence[tuple[RawName, int]]) -> pa.Table:
        """The IPAC ``sciimg`` headers of science quadrants (raw science file, qid) as one
        header table (:mod:`ztfluigi.ipac`), each header verified and checked to be the
        quadrant's. This default encodes :meth:`science_header`; archives that serve files
        return every card of the file's primary header."""
        headers = []
        for raw, qid in quadrants:
            header = self.science_header(raw, qid)
            name = naming.science_quadrant_name(raw, qid, "sciimg.fits")
            ipac.check_identity(header, ipac.QuadrantKey.of(raw, qid), name)
            headers.append(header)
        return ipac.encode_headers(headers, list(quadrants))

    def fetch_mask(self, raw: RawName, qid: int, shape: tuple[int, int] | None = None) -> MaskFile:
        """The IPAC mask file of a science quadrant, verified (structure, ``shape`` if given,
        IPAC bit range). This default renders :meth:`science_mask` as IRSA's ``mskimg.fits``."""
        header, mask = self.science_mask(raw, qid)
        relpath = naming.science_quadrant_relpath(raw, qid, "mskimg.fits")
        content = ipac.image_bytes(header, mask)
        ipac.read_mask(content, relpath.rsplit("/", 1)[-1], shape)
        return MaskFile(relpath, content)


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
