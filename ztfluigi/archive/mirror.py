"""A ``$ZTFDATA`` mirror as the source of a night's index: no archive asked.

A mirror holding the raw files (the IRSA tree ``raw/YYYY/MMDD/ffffff/…``, as ztfquery downloads
it) knows its nights without IRSA: :func:`night_metadata_from_headers` lists the night's
directory and reads each file's primary header only (a few FITS blocks, not the pixels), giving
the archive's table for the files the mirror holds, in the archive's order (``obsjd``, then
``ccdid``). The columns only the archive's database assigns (:data:`DATABASE_COLUMNS`) are null.

``archive = none`` (:class:`NoArchive`) says there is no archive at all: nights are indexed that
way, and a raw file or IPAC input missing from the mirror is a one-line error, never a fetch.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt

import numpy as np
import pyarrow as pa
from astropy.io import fits

from ztfluigi import naming, raw, storage
from ztfluigi.archive import (
    Archive,
    ArchiveError,
    ArchiveUnreachable,
    header_columns,
    metadata_table,
)
from ztfluigi.naming import RawName
from ztfluigi.storage.urls import url_join

#: header reads in flight on a remote store (S3, HTTP); local disks are read one by one
REMOTE_READERS = 8


def night_dir(raw_root: str, date: dt.date) -> str:
    """URL of a night's directory of raw files in the IRSA tree under ``raw_root``."""
    return url_join(raw_root, f"raw/{date:%Y}/{date:%m%d}")


def mirror_raw_names(raw_root: str, date: dt.date) -> list[tuple[RawName, str]]:
    """(raw name, URL) of every raw file of the night under ``raw_root``; other names (hidden
    temporaries, set-aside damaged copies, IPAC products) are left out."""
    found = storage.files_under(night_dir(raw_root, date))
    files = []
    for found_path in sorted(found):
        try:
            name = naming.parse_raw_filename(found_path)
        except naming.InvalidName:
            continue
        if name.date == date and found_path.endswith(name.relpath):
            files.append((name, url_join(raw_root, name.relpath)))
    return files


def read_raw_header(url: str, name: str) -> fits.Header:
    """The primary header of a stored raw file, read with ranged reads of its first blocks."""
    target = storage.get_target(url)
    fs, path = target.fs.fsspec, target.fs.fsspec._strip_protocol(url)

    def read(start: int, end: int) -> bytes:
        return fs.cat_file(path, start=start, end=end)

    try:
        return raw.read_primary_header(read, name)
    except OSError as exc:
        raise raw.RawFileError(f"{url}: unreadable ({exc})") from None


def check_header(rawname: RawName, header: fits.Header, url: str) -> None:
    """Refuse a file whose primary header describes another file (renamed or misplaced)."""
    stated = str(header.get("FILENAME", header.get("ORIGNAME", ""))).strip()
    if stated and stated.removesuffix(".fz") != rawname.filename.removesuffix(".fz"):
        raise raw.RawFileError(f"{url}: its header names another file ({stated})")
    imgtype = str(header.get("IMGTYPE", rawname.imgtype)).strip().lower()
    if imgtype != rawname.imgtype:
        raise raw.RawFileError(f"{url}: header IMGTYPE {imgtype!r}, its name says "
                               f"{rawname.imgtype!r}")  # fmt: skip


def night_metadata_from_headers(raw_root: str, date: dt.date) -> pa.Table:
    """The night's metadata table from the raw files under ``raw_root``: the archive's
    columns and order, :data:`~ztfluigi.archive.DATABASE_COLUMNS` null. ArchiveError (one line)
    when the mirror holds no raw file of the night; RawFileError naming a damaged one."""
    files = mirror_raw_names(raw_root, date)
    if not files:
        raise ArchiveError(
            f"no raw file of {date} under {night_dir(raw_root, date)}: without an archive "
            "(archive = none, or unreachable) a night is indexed from its raw files' headers"
        )
    is_local = storage.get_target(files[0][1]).fs.is_local

    def row(item: tuple[RawName, str]) -> dict[str, object]:
        rawname, url = item
        header = read_raw_header(url, rawname.filename)
        check_header(rawname, header, url)
        return header_columns(rawname, header)

    if is_local:
        rows = [row(item) for item in files]
    else:
        with concurrent.futures.ThreadPoolExecutor(REMOTE_READERS, "mirror-hdr") as pool:
            rows = list(pool.map(row, files))
    order = np.lexsort(([r["ccdid"] for r in rows], [r["obsjd"] for r in rows]))
    return metadata_table([rows[i] for i in order])


class NoArchive(Archive):
    """``archive = none``: the raw store (a ``$ZTFDATA`` mirror) is all there is."""

    name = "none"

    def night_metadata(self, date: dt.date) -> pa.Table:
        raise ArchiveUnreachable(f"archive = none: {date} is indexed from the raw files' headers")

    def _missing(self, what: str) -> ArchiveError:
        return ArchiveError(f"{what}: not in the raw store, and archive = none fetches nothing "
                            "(set [ztfluigi] archive to irsa to download it)")  # fmt: skip

    def fetch_raw(self, raw: RawName) -> bytes:
        raise self._missing(raw.filename)

    def science_header(self, raw: RawName, qid: int) -> fits.Header:
        raise self._missing(naming.science_quadrant_name(raw, qid, "sciimg.fits") + " header")

    def science_mask(self, raw: RawName, qid: int) -> tuple[fits.Header, np.ndarray]:
        raise self._missing(naming.science_quadrant_name(raw, qid, "mskimg.fits"))
