"""Where raw files come from: the archive interface and its implementations.

An archive answers the questions the pipeline asks IRSA: the night's raw metadata (the IRSA
``raw`` table columns, plus the LED of each flat, which IRSA lacks and the client reads from the
file's primary header), the bytes of one raw file, and the IPAC header and mask of a science
quadrant. ``archive = sim`` is the synthetic instrument; the IRSA client and an IRSA-compatible
server implement the same interface. ``archive = none`` asks nothing: a ``$ZTFDATA`` mirror's
nights are indexed from its raw files' headers (:mod:`ztfluigi.archive.mirror`), as they are when
an archive cannot be reached (:class:`ArchiveUnreachable`).

A night's metadata has the columns of IRSA's ``raw`` table: :func:`header_columns` are the ones a
raw file's name and primary header determine (IRSA's table and the simulator's agree with the
files), :data:`DATABASE_COLUMNS` the ones only the archive's database assigns.

The IPAC inputs of science quadrants are fetched once and stored (:mod:`ztfluigi.ipac`):
:meth:`Archive.fetch_science_headers` gives the ``sciimg`` headers of many quadrants as one
table, :meth:`Archive.fetch_mask` the verified bytes of one ``mskimg`` file.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Mapping, Sequence
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
#: columns the archive's database assigns (quality bits, ids, seeing measured by IPAC, dates):
#: no raw file carries them, so a night indexed from headers leaves them null
DATABASE_COLUMNS = ("infobits", "itid", "ipac_gid", "seeing", "ccdrot", "ipac_pub_date", "meta_id")
#: pyarrow types of the metadata columns (IRSA's ``raw`` table, then ztfluigi's additions)
RAW_TYPES: dict[str, pa.DataType] = {
    **{c: pa.int64() for c in ("infobits", "field", "ccdid", "fid", "nid", "expid", "itid",
                               "filefracday", "ipac_gid", "meta_id", "ledid")},
    **{c: pa.float64() for c in ("obsjd", "exptime", "seeing", "airmass", "moonillf", "moonesb",
                                 "telra", "teldec", "ccdrot")},
    **{c: pa.string() for c in ("filtercode", "imgtype", "imgtypecode", "obsdate",
                                "ipac_pub_date", "filename")},
}  # fmt: skip


class ArchiveError(Exception):
    """A request the archive cannot serve (unknown file, unreachable server…): one-line message."""


class ArchiveUnreachable(ArchiveError):
    """No archive answered: the server could not be reached (connection refused, timeouts, only
    5xx answers), or ``archive = none``. A night can still be indexed from a mirror's files."""


def header_columns(raw: RawName, header: fits.Header) -> dict[str, object]:
    """The metadata columns a raw file's name and primary header determine (every column but
    :data:`DATABASE_COLUMNS`), as IRSA's ``raw`` table has them.

    Identity columns come from the name (``fid`` 0 for biases and darks, ``expid`` =
    ``nid·100000 + int(100000 × day fraction)``, ztf_formats.md §2.6); times and pointing from
    the header: ``obsjd`` = ``OBSJD``, ``obsdate`` = ``SHUTOPEN`` (exposure start, ISO),
    ``telra``/``teldec`` = ``TELRAD``/``TELDECD`` (deg); ``ledid`` = ``ILUM_LED`` of dome flats,
    −1 otherwise (IRSA has no LED column). Raises ArchiveError when a card is missing.
    """
    nid = naming.night_id(raw.date)
    try:
        led = header.get("ILUM_LED", -1) if raw.imgtype == "flat" else -1
        return {
            "field": raw.field, "ccdid": raw.ccdid, "fid": naming.FILTER_IDS.get(raw.filtercode, 0),
            "filtercode": raw.filtercode, "nid": nid,
            "expid": nid * 100000 + int(raw.filefracday[8:13]), "imgtype": raw.imgtype,
            "imgtypecode": raw.imgtypecode, "filefracday": int(raw.filefracday),
            "obsdate": str(header["SHUTOPEN"]).replace("T", " ") + "+00",
            "obsjd": float(header["OBSJD"]), "exptime": float(header["EXPTIME"]),
            "airmass": float(header["AIRMASS"]), "moonillf": float(header["MOONILLF"]),
            "moonesb": float(header["MOONESB"]), "telra": float(header["TELRAD"]),
            "teldec": float(header["TELDECD"]),
            "ledid": int(led) if isinstance(led, int | float) else -1, "filename": raw.filename,
        }  # fmt: skip
    except KeyError as exc:
        raise ArchiveError(f"{raw.filename}: primary header has no {exc.args[0]} card") from None


def metadata_table(rows: Sequence[Mapping[str, object]]) -> pa.Table:
    """Metadata rows as a typed table of RAW_METADATA_COLUMNS + EXTRA_COLUMNS (missing: null)."""
    return pa.table({c: pa.array([r.get(c) for r in rows], RAW_TYPES[c])
                     for c in RAW_METADATA_COLUMNS + EXTRA_COLUMNS})  # fmt: skip


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
    IRSA itself; ``http(s)://host:port``: an IRSA-compatible server (``ztfluigi archive serve``);
    ``none``: no archive (a ``$ZTFDATA`` mirror's files are all there is).
    """
    if spec == "none":
        from ztfluigi.archive.mirror import NoArchive

        return NoArchive()
    if spec == "sim":
        from ztfluigi.archive.sim import SimArchive
        from ztfluigi.sim.schedule import SimConfig

        return SimArchive(sim or SimConfig())
    if spec == "irsa" or spec.startswith(("http://", "https://")):
        from ztfluigi.archive.irsa import IRSA_URL, IrsaArchive

        return IrsaArchive(IRSA_URL if spec == "irsa" else spec)
    raise ArchiveError(
        f"unknown archive {spec!r}: expected 'sim', 'irsa', 'none' or the http(s)://host:port of "
        "an IRSA-compatible server"
    )
