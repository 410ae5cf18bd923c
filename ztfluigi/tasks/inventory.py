"""What an entry task stands for in the store: its stored products by kind, and which exist.

``ztfluigi status`` and ``ztfluigi clean`` walk an entry task's static requirements (the night's
RawIndex, raw-file units, master calibrations, focal-plane levels, catalogue units) and enumerate
the stored outputs with their kind, night and consumers — the products made from them, so a raw
frame can be removed once what it was for exists. Existence is answered in bulk, one listing per
directory (:class:`ztfluigi.storage.ListingCache`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import luigi

from ztfluigi import fitschecksum, ipac, raw, storage
from ztfluigi.tasks.calib import FocalPlaneLevel, MasterBias, MasterFlat
from ztfluigi.tasks.catalog import ApertureCatalog, ApertureCatalogUnit, catalog_target
from ztfluigi.tasks.fringe import model_for
from ztfluigi.tasks.ipac import IpacHeaders, IpacMasks, mask_targets
from ztfluigi.tasks.raw import RawFiles, RawIndex, raw_target
from ztfluigi.tasks.science import science_cache_targets

T = TypeVar("T")

#: Stored product kinds, in data-flow order (the rows of ``ztfluigi status``).
KINDS = ("rawindex", "raw", "ipacheader", "mask", "bias", "flat", "focal_plane", "fringe",
         "catalogue", "science")
#: Kinds shown only when some exist (science quadrants are virtual unless ``store_science``).
OPTIONAL_KINDS = ("science",)
#: Kinds shown only when the configuration asks for some (fringe models: ``[ztfluigi] fringe``).
CONFIGURED_KINDS = ("fringe",)


@dataclass(frozen=True)
class Product:
    """One stored output: its kind, URL, night, and the URLs of the products made from it."""

    kind: str
    url: str
    night: dt.date
    consumers: tuple[str, ...] = ()


@dataclass
class Inventory:
    """The stored products of an entry task, and the tasks whose outputs are not known yet."""

    products: list[Product]
    unknown: list[str]  #: units whose night has no RawIndex yet (their files are not listed)

    def of_kind(self, kind: str) -> list[Product]:
        return [p for p in self.products if p.kind == kind]


def _raw_products(unit: RawFiles) -> Iterator[Product]:
    rawnames = unit.branches()
    masters: dict[str, tuple[str, ...]] = {}  # filtercode → the master made from the frame
    if unit.imgtype == "bias":
        bias = (MasterBias(date=unit.date, ccdid=unit.ccdid).output().path,)
        masters = {r.filtercode: bias for r in rawnames}
    elif unit.imgtype == "flat":
        for f in {r.filtercode for r in rawnames}:
            flat = MasterFlat(date=unit.date, ccdid=unit.ccdid, filtercode=f)
            masters[f] = (flat.output().path,)
    for rawname in rawnames:
        if unit.imgtype == "object":
            consumers = tuple(catalog_target(rawname, q).path for q in range(1, 5))
        else:
            consumers = masters[rawname.filtercode]
        yield Product("raw", raw_target(rawname).path, unit.date, consumers)


def _mask_products(unit: IpacMasks) -> Iterator[Product]:
    listing = storage.ListingCache()
    for rawname, qid in unit.branches():
        targets = mask_targets(rawname, qid)  # the stored one, else the name a run writes
        stored = next((t for t in targets if listing.exists(t.path)), targets[0])
        consumers = (catalog_target(rawname, qid).path,)
        yield Product("mask", stored.path, unit.date, consumers)


def _unit_products(unit: ApertureCatalogUnit) -> Iterator[Product]:
    model = model_for(unit.date, unit.ccdid, unit.filtercode)
    if model is not None:  # the CCD's model of the period: shared by the period's nights
        yield Product("fringe", model.output().path, model.date)
    for rawname, qid in unit.branches():
        yield Product("catalogue", catalog_target(rawname, qid).path, unit.date)
        for target in science_cache_targets(rawname, qid).values():
            yield Product("science", target.path, unit.date)


_SINGLE_OUTPUT: dict[type, str] = {
    RawIndex: "rawindex", MasterBias: "bias", MasterFlat: "flat", FocalPlaneLevel: "focal_plane",
    IpacHeaders: "ipacheader",
}  # fmt: skip
_BRANCHED: dict[type, Callable[[luigi.Task], Iterator[Product]]] = {
    RawFiles: _raw_products, ApertureCatalogUnit: _unit_products, IpacMasks: _mask_products,
}  # fmt: skip


def _by_class(table: dict[type, T], task: luigi.Task) -> T | None:
    """The entry of the task's class or of its nearest base (region-narrowed units)."""
    return next((table[c] for c in type(task).__mro__ if c in table), None)


def inventory(entry: luigi.Task, count_run_calibrations: bool = False) -> Inventory:
    """Every stored product under ``entry``'s requirements and the night inputs of its nights
    (calibrations of other nights, matched at run time, are not seen). ``count_run_calibrations``
    (``status``): also the focal-plane levels a narrowed night's run builds, with the 16 CCDs'
    masters behind them (``clean`` leaves those out: they are not the narrowed CCD's)."""
    products: dict[str, Product] = {}
    unknown: list[str] = []
    seen: set[str] = set()
    stack = [entry]
    while stack:
        task = stack.pop()
        if task.task_id in seen:
            continue
        seen.add(task.task_id)
        kind = _by_class(_SINGLE_OUTPUT, task)
        if kind:
            products.setdefault(task.output().path,
                                Product(kind, task.output().path, task.date))  # fmt: skip
        branched = _by_class(_BRANCHED, task)
        if branched:
            if RawIndex(date=task.date).output().exists():
                products.update((p.url, p) for p in branched(task))
            else:
                unknown.append(str(task))
        stack.extend(luigi.task.flatten(task.requires()))
        if isinstance(task, ApertureCatalog):
            stack.extend(task.night_inputs())
            if count_run_calibrations:
                stack.extend(task.run_calibrations())
    ordered = sorted(products.values(), key=lambda p: (KINDS.index(p.kind), p.night, p.url))
    return Inventory(ordered, sorted(unknown))


def existing(products: list[Product], listing: storage.ListingCache | None = None) -> list[bool]:
    """Whether each product exists, one listing per directory."""
    listing = listing or storage.ListingCache()
    return listing.exists_many([p.url for p in products])


def damage(product: Product) -> str | None:
    """Why a stored product fails verification (None: it is whole).

    Raw files: FITS structure (9 HDUs) and the archive's CHECKSUM/DATASUM; calibration products:
    their own checksums (required); parquet products: page checksums and their digest; IPAC
    masks: gzip CRC, FITS structure and the IPAC bit range.
    """
    try:
        if product.kind == "raw":
            content = storage.read_bytes(product.url)
            fitschecksum.verify(content, product.url)
            if len(fitschecksum.hdu_spans(content)) != raw.N_HDU:
                return f"{product.url}: not a ZTF raw file of {raw.N_HDU} HDUs"
        elif product.url.endswith(".fits"):
            storage.read_fits(product.url, require_checksum=product.kind != "science")
        elif product.url.endswith(".parquet"):
            storage.read_parquet(product.url, require_digest=True)
        elif product.kind == "mask":
            ipac.read_mask(storage.read_bytes(product.url), product.url)
    except ipac.IpacError as exc:
        return str(exc)
    except fitschecksum.FitsIntegrityError as exc:
        return str(exc)
    except storage.DamagedProduct as exc:
        return str(exc)
    return None
