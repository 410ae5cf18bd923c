"""Raw-data products: the night's index, single raw files, and raw files fetched in coarse units.

A night holds ~5 000 raw files in production, too many for Luigi's scheduler as separate tasks
(DESIGN.md §5): :class:`RawFiles` fetches one CCD's files of one kind as branches of a single
task, complete when every branch output exists (one listing per directory). :class:`RawFile`
keeps a single file addressable from the command line.

A ``$ZTFDATA`` mirror (``raw_root``) needs no archive to be indexed: with ``archive = none``, or
when the archive cannot be reached, :class:`RawIndex` reads the night from its raw files'
headers (:mod:`ztfluigi.archive.mirror`); a read-only mirror's index goes under ``root``
(:func:`rawindex_url`).
"""

from __future__ import annotations

import functools
import logging

import luigi
import pyarrow as pa
import pyarrow.compute as pc

from ztfluigi import config, naming, raw, settings_check, storage
from ztfluigi.archive import ArchiveUnreachable, mirror
from ztfluigi.naming import RawName
from ztfluigi.storage.urls import protocol_of
from ztfluigi.tasks import progress
from ztfluigi.tasks.parameters import (
    CcdParameter,
    FilterParameter,
    ImgTypeParameter,
    NightParameter,
    RawFilenameParameter,
)
from ztfluigi.tasks.workflow import BranchedUnit

logger = logging.getLogger("luigi-interface")


@functools.lru_cache(maxsize=8)
def read_only_mirror(raw_root: str) -> bool:
    """Whether ``raw_root`` is a local tree this process cannot write (a read-only mirror)."""
    local = protocol_of(raw_root) in ("file", "local")
    return local and not settings_check.writable(raw_root.split("://", 1)[-1])


def raw_product_url(relpath: str) -> str:
    """Where a product kept beside the raw files (RawIndex, IPAC header tables and masks) is
    written: the raw store, or ``root`` when the raw store is a read-only local mirror."""
    section = config.settings()
    if section.raw_root and section.raw_root != section.root and read_only_mirror(section.raw_root):
        return storage.url_join(section.root, relpath)
    return section.raw_url(relpath)


def beside_raw_url(relpath: str) -> str:
    """Where such a product is read: a read-only mirror's own copy if it has one, else
    :func:`raw_product_url` (the one place deciding it)."""
    url, in_raw = raw_product_url(relpath), config.settings().raw_url(relpath)
    if url != in_raw and storage.get_target(in_raw).exists():
        return in_raw
    return url


def rawindex_url(date: object) -> str:
    """Where a night's RawIndex lives: next to the raw files, under ``root`` for a read-only
    mirror without its own (the index is a product, not a raw file)."""
    return beside_raw_url(naming.rawindex_relpath(date))


class RawIndex(progress.OneLineFailures, luigi.Task):
    """The night's raw-file metadata (IRSA ``raw`` table columns + LED), stored as parquet."""

    date = NightParameter(description="UT date of the night (YYYY-MM-DD)")

    def output(self) -> storage.FsspecTarget:
        return storage.get_target(rawindex_url(self.date))

    def run(self) -> None:
        config.record_store_identity()
        archive = config.get_archive()
        metadata = {"ztfluigi.product": "RawIndex", "ztfluigi.date": self.date.isoformat(),
                    "ztfluigi.archive": archive.name}  # fmt: skip
        try:
            table = archive.night_metadata(self.date)
            metadata["ztfluigi.source"] = "archive"
        except ArchiveUnreachable as exc:
            raw_root = config.settings().raw_root or config.settings().root
            if archive.name != "none":
                logger.warning("%s; indexing %s from the raw files' headers under %s",
                               exc, self.date, raw_root)  # fmt: skip
            table = mirror.night_metadata_from_headers(raw_root, self.date)
            metadata["ztfluigi.source"] = FROM_HEADERS
        storage.write_parquet(self.output(), table, metadata=metadata)


@functools.lru_cache(maxsize=16)  # a 7-night window + calibration nights (survey nights: ≈ 4 MB)
def _load_index(url: str) -> pa.Table:
    return storage.read_parquet(url)


#: ``ztfluigi.source`` of a RawIndex made from the raw files' headers (not from the archive)
FROM_HEADERS = "raw file headers"


def indexed_from_headers(url: str) -> bool:
    """Whether the stored RawIndex at ``url`` was made from the raw files' headers: by design
    with ``archive = none``, otherwise because the archive was unreachable (then it lists only
    what the mirror held: possibly partial until deleted and asked again)."""
    metadata = _load_index(url).schema.metadata or {}
    return metadata.get(b"ztfluigi.source") == FROM_HEADERS.encode()


def night_index(date: object) -> pa.Table:
    """The stored RawIndex of a night (cached per process: products are immutable)."""
    return _load_index(RawIndex(date=date).output().path)


def select_raw(index: pa.Table, ccdid: int, imgtype: str, filtercode: str = "") -> list[RawName]:
    """Raw files of one CCD and image type (and filter), in ``obsjd`` order."""
    mask = pc.and_(pc.equal(index["ccdid"], ccdid), pc.equal(index["imgtype"], imgtype))
    if filtercode:
        mask = pc.and_(mask, pc.equal(index["filtercode"], filtercode))
    rows = index.filter(mask).sort_by("obsjd")
    return [naming.parse_raw_filename(f) for f in rows["filename"].to_pylist()]


def science_quadrants(date: object, ccdid: int, filtercode: str = "") -> list[tuple[RawName, int]]:
    """(raw science file, qid) of every science quadrant of a night, CCD (and filter)."""
    raws = select_raw(night_index(date), ccdid, "object", filtercode)
    return [(r, q) for r in raws for q in range(1, 5)]


def raw_target(rawname: RawName) -> storage.FsspecTarget:
    """Where a raw file lives in the raw store (the IRSA tree)."""
    return storage.get_target(config.settings().raw_url(rawname.relpath))


def read_stored_raw(rawname: RawName, qids: tuple[int, ...] = (1, 2, 3, 4)) -> raw.RawCCD:
    """A raw file from the raw store (quadrants ``qids``), verified (structure, checksums,
    decompression); :class:`~ztfluigi.storage.DamagedProduct` naming it when it fails."""
    url = raw_target(rawname).path
    try:
        return raw.verify_raw(storage.read_bytes(url), rawname.filename, qids)
    except raw.RawFileError as exc:
        raise storage.DamagedProduct(f"damaged raw file {url}: {exc}", url) from None


def fetch_raw(rawname: RawName, target: storage.FsspecTarget) -> None:
    """Download (or synthesise) one raw file, verify it completely, then commit it atomically."""
    archive = config.get_archive()
    content = archive.fetch_raw(rawname)
    if not archive.verifies_raw:
        raw.verify_raw(content, rawname.filename)
    storage.write_bytes(target, content)


class RawFile(progress.OneLineFailures, luigi.Task):
    """One raw CCD file, byte for byte as the archive serves it, verified before it counts."""

    filename = RawFilenameParameter(description="IRSA raw file name, e.g. ztf_…_c05_b.fits.fz")

    @property
    def rawname(self) -> RawName:
        return naming.parse_raw_filename(self.filename)

    def requires(self) -> RawIndex:
        return RawIndex(date=self.rawname.date)

    def output(self) -> storage.FsspecTarget:
        return raw_target(self.rawname)

    def run(self) -> None:
        if self.filename not in night_index(self.rawname.date)["filename"].to_pylist():
            raise raw.RawFileError(f"{self.filename}: not in the archive's index of its night")
        fetch_raw(self.rawname, self.output())


class RawFiles(BranchedUnit):
    """The raw files of one night, CCD and image type (and filter): one scheduler task, many files.

    Files are taken in ``obsjd`` order from position ``first`` (biases: the reference pipeline
    uses only the last ten of twenty).
    """

    date = NightParameter()
    ccdid = CcdParameter()
    imgtype = ImgTypeParameter()
    filtercode = FilterParameter(default="", allow_all=True)
    first = luigi.IntParameter(default=0, description="skip the first N files in obsjd order")

    def requires(self) -> RawIndex:
        return RawIndex(date=self.date)

    def branches_known(self) -> bool:
        return self.input().exists()

    def branches(self) -> list[RawName]:
        """The raw files this unit covers (needs the RawIndex)."""
        index = night_index(self.date)
        return select_raw(index, self.ccdid, self.imgtype, self.filtercode)[self.first :]

    def branch_output(self, branch: RawName) -> storage.FsspecTarget:
        return raw_target(branch)

    def run_branches(self, todo: list[RawName]) -> None:
        for i, rawname in enumerate(todo):
            fetch_raw(rawname, raw_target(rawname))
            progress.report(self, i + 1, len(todo), "raw files fetched")


class RawNight(progress.OneLineFailures, luigi.WrapperTask):
    """Every raw file of a night, grouped in RawFiles units (CCD × image type)."""

    date = NightParameter()

    def requires(self) -> list[RawFiles]:
        return [
            RawFiles(date=self.date, ccdid=ccdid, imgtype=imgtype)
            for ccdid in range(1, 17)
            for imgtype in ("bias", "flat", "object")
        ]
