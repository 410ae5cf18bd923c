"""IPAC inputs of the virtual science quadrants, stored once like raw files.

A science quadrant's header merges IPAC's ``sciimg`` header (TPV WCS, ids) and its mask is
IPAC's ``mskimg``: both are inputs, fetched once from the archive, verified, and stored, so
that rebuilding a virtual quadrant needs the stores only, never the archive.

* :class:`IpacHeaders` — one parquet table per night × CCD × filter (the coarseness of the
  raw-file units) with every card of the ``sciimg``
  primary header of each science quadrant (:mod:`ztfluigi.ipac` codec: a header is rebuilt
  exactly), fetched with one ranged read per quadrant;
* :class:`IpacMasks` — the masks of a night × CCD × filter, as branches, each under its IRSA
  name in the IRSA tree (``sci/YYYY/MMDD/ffffff/ztf_…_qQ_mskimg.fits.gz``) of the raw store, so a
  ztfquery ``$ZTFDATA`` mirror serves them as is (``…_mskimg.fits`` counts too).
"""

from __future__ import annotations

import datetime as dt
import functools

import luigi
import numpy as np
import pyarrow as pa
from astropy.io import fits

from ztfluigi import config, ipac, naming, storage
from ztfluigi.naming import RawName
from ztfluigi.tasks import progress
from ztfluigi.tasks.parameters import CcdParameter, FilterParameter, NightParameter
from ztfluigi.tasks.raw import (
    RawIndex,
    beside_raw_url,
    night_index,
    raw_product_url,
    science_quadrants,
)
from ztfluigi.tasks.workflow import BranchedUnit


class IpacHeaders(progress.OneLineFailures, luigi.Task):
    """IPAC ``sciimg`` headers of every science quadrant of a night, CCD and filter."""

    date = NightParameter()
    ccdid = CcdParameter()
    filtercode = FilterParameter()

    def requires(self) -> RawIndex:
        return RawIndex(date=self.date)

    def output(self) -> storage.FsspecTarget:
        return storage.get_target(
            beside_raw_url(naming.ipacheader_relpath(self.date, self.ccdid, self.filtercode)))

    def run(self) -> None:
        archive = config.get_archive()
        quadrants = science_quadrants(self.date, self.ccdid, self.filtercode)
        seeded = mirror_headers(self.date, quadrants)
        rows = ipac.row_index(seeded) if seeded is not None else {}
        missing = [(r, q) for r, q in quadrants
                   if ipac.QuadrantKey.of(r, q).lookup() not in rows]  # fmt: skip
        parts = [seeded] if seeded is not None else []
        if missing or not parts:
            parts.append(archive.fetch_science_headers(missing))
        table = parts[0] if len(parts) == 1 else ipac.concat_tables(parts)
        storage.write_parquet(self.output(), table, metadata={
            "ztfluigi.product": "IpacHeaders", "ztfluigi.archive": archive.name,
            "ztfluigi.from_mirror": str(len(quadrants) - len(missing))})  # fmt: skip


def mirror_headers(date: dt.date, quadrants: list[tuple[RawName, int]]) -> pa.Table | None:
    """The quadrants' IPAC headers from a reference ``metaheader_{YYYYMM}.parquet`` in the raw
    store (a ``$ZTFDATA`` mirror), as a header table; None when the mirror has none of them."""
    url = config.settings().raw_url(naming.metaheader_relpath(date))
    if not quadrants or not storage.get_target(url).exists():
        return None
    # IPAC's FILENAME card names the raw exposure file (``ztf_…_cCC_o.fits``); the reference
    # stores card values as FITS value strings, quotes included
    raws = {r.filename.removesuffix(".fz") for r, _ in quadrants}
    names = sorted(raws | {f"'{n}'" for n in raws})
    try:
        month = storage.read_parquet(url, filters=[("FILENAME", "in", names)])
    except storage.ProductError:
        month = storage.read_parquet(url)  # no FILENAME column: quadrants from the night index
    if month.num_rows == 0:
        return None
    table = ipac.from_metaheader(month, raw_index=night_index(date), name=url)
    wanted = {ipac.QuadrantKey.of(r, q).lookup() for r, q in quadrants}
    rows = [i for key, i in ipac.row_index(table).items() if key in wanted]
    return table.take(sorted(rows)) if rows else None


def mask_targets(rawname: RawName, qid: int) -> list[storage.FsspecTarget]:
    """Where a quadrant's IPAC mask may be stored, in reading order: the one a run writes
    (gzip; under ``root`` for a read-only mirror), then the raw store's (gzip first, as the
    reference reads a mirror)."""
    relpaths = [naming.science_quadrant_relpath(rawname, qid, s) for s in naming.MASK_SUFFIXES]
    urls = [raw_product_url(relpaths[0]), *map(config.settings().raw_url, relpaths)]
    return [storage.get_target(url) for url in dict.fromkeys(urls)]


class IpacMasks(BranchedUnit):
    """IPAC masks of the science quadrants of a night, CCD and filter (one file per quadrant)."""

    date = NightParameter()
    ccdid = CcdParameter()
    filtercode = FilterParameter()

    def requires(self) -> RawIndex:
        return RawIndex(date=self.date)

    def branches_known(self) -> bool:
        return self.input().exists()

    def branches(self) -> list[tuple[RawName, int]]:
        return science_quadrants(self.date, self.ccdid, self.filtercode)

    def branch_output(self, branch: tuple[RawName, int]) -> storage.FsspecTarget:
        return mask_targets(*branch)[0]

    def branch_present(self, branch: tuple[RawName, int], listing: storage.ListingCache) -> bool:
        return any(listing.exists(t.path) for t in mask_targets(*branch))

    def run_branches(self, todo: list[tuple[RawName, int]]) -> None:
        archive = config.get_archive()
        for i, (rawname, qid) in enumerate(todo):
            fetched = archive.fetch_mask(rawname, qid)
            gz = fetched.relpath.endswith(".gz")
            content = fetched.content if gz else ipac.gzip_bytes(fetched.content)
            storage.write_bytes(self.branch_output((rawname, qid)), content)
            progress.report(self, i + 1, len(todo), "IPAC masks fetched")


@functools.lru_cache(maxsize=32)
def _header_table(url: str) -> tuple[pa.Table, dict]:
    table = storage.read_parquet(url, require_digest=True)
    return table, ipac.row_index(table)


def stored_header(rawname: RawName, qid: int) -> fits.Header:
    """A quadrant's IPAC header from the stored night × CCD × filter table (cached)."""
    r = rawname
    target = IpacHeaders(date=r.date, ccdid=r.ccdid, filtercode=r.filtercode).output()
    table, rows = _header_table(target.path)
    row = rows.get(ipac.QuadrantKey.of(rawname, qid).lookup())
    if row is None:  # IpacError naming the quadrant
        return ipac.header_for(table, rawname, qid)
    return ipac.header_from_row(table, row)


def stored_mask(rawname: RawName, qid: int, shape: tuple[int, int]) -> np.ndarray:
    """A quadrant's IPAC mask from the raw store, verified (structure, shape, IPAC bits);
    :class:`~ztfluigi.storage.DamagedProduct` naming the file when it fails."""
    targets = mask_targets(rawname, qid)
    for target in targets:  # read in order; no directory listing per quadrant
        try:
            content = storage.read_bytes(target)
        except storage.MissingProduct:
            continue
        try:
            return ipac.read_mask(content, target.path, shape)
        except ipac.IpacError as exc:
            raise storage.DamagedProduct(f"damaged IPAC mask {exc}", target.path) from None
    raise storage.MissingProduct(f"missing product: {targets[0].path}", targets[0].path)
