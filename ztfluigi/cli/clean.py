"""``ztfluigi clean --kind K … TASK …``: remove stored products by kind and night (dry run first).

Nothing is removed without ``--delete``. Raw frames are removed only once what they were taken
for exists (the four catalogues of a science exposure, the master bias or flat of a calibration
frame) unless ``--even-unused``; ``--older-than N`` keeps the nights of the last N days. Products
are immutable, so a removed one is rebuilt, identical, by running the entry task again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections import defaultdict
from typing import TextIO

from ztfluigi.cli.status import progress_bar

#: kinds ``clean`` removes (the RawIndex stays: it is small and tells what the night holds)
CLEANABLE = ("raw", "ipacheader", "mask", "bias", "flat", "focal_plane", "fringe", "catalogue",
             "science")


def _sizes(urls: list[str]) -> dict[str, int]:
    """Sizes in bytes, one detailed listing per directory."""
    from ztfluigi import storage

    by_dir: dict[str, list[str]] = defaultdict(list)
    for url in urls:
        by_dir[url.rpartition("/")[0]].append(url)
    sizes: dict[str, int] = {}
    for directory, members in by_dir.items():
        fs = storage.get_target(members[0]).fs.fsspec
        try:
            listed = {e["name"].rstrip("/").rpartition("/")[2]: e.get("size") or 0
                      for e in fs.ls(fs._strip_protocol(directory), detail=True)}  # fmt: skip
        except FileNotFoundError:
            listed = {}
        sizes.update((u, int(listed.get(u.rpartition("/")[2], 0))) for u in members)
    return sizes


def select(entry_words: list[str], kinds: list[str], older_than_days: int | None,
           even_unused: bool) -> list[tuple[str, str]]:  # fmt: skip
    """(kind, URL) of the existing products that ``clean`` would remove."""
    from ztfluigi import storage
    from ztfluigi.cli.entry import entry_task
    from ztfluigi.tasks import inventory

    inv = inventory.inventory(entry_task(entry_words))
    today = dt.datetime.now(dt.UTC).date()
    listing = storage.ListingCache()
    chosen = []
    for product in progress_bar(inv.products, "selecting"):
        if product.kind not in kinds:
            continue
        if older_than_days is not None and (today - product.night).days <= older_than_days:
            continue
        if not listing.exists(product.url):
            continue
        if product.consumers and not even_unused and not all(
            listing.exists(c) for c in product.consumers
        ):
            continue
        chosen.append((product.kind, product.url))
    return chosen


def clean(entry_words: list[str], kinds: list[str], older_than_days: int | None = None,
          even_unused: bool = False, delete: bool = False, verbose: bool = False,
          out: TextIO | None = None) -> list[str]:  # fmt: skip
    """Report (and with ``delete``, remove) the selected products; return their URLs."""
    out = out or sys.stdout
    from ztfluigi import storage

    chosen = select(entry_words, kinds, older_than_days, even_unused)
    sizes = _sizes([u for _, u in chosen])
    verb = "removed" if delete else "would remove"
    for kind in CLEANABLE:
        urls = [u for k, u in chosen if k == kind]
        if urls:
            gbytes = sum(sizes[u] for u in urls) / 1e9
            print(f"{verb} {len(urls):6d} {kind:<12} {gbytes:8.3f} GB", file=out)
        if verbose:
            for url in urls:
                print(f"  {url}", file=out)
    if not chosen:
        print("nothing to remove", file=out)
    if delete:
        for _, url in progress_bar(chosen, "removing"):
            storage.get_target(url).remove()
    elif chosen:
        print("dry run: add --delete to remove them", file=out)
    return [u for _, u in chosen]


def _clean(args: argparse.Namespace) -> int:
    clean(args.task, args.kind, args.older_than, args.even_unused, args.delete, args.verbose)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``clean``."""
    p = sub.add_parser(
        "clean", help="remove stored products by kind and night (dry run unless --delete)",
        description=__doc__.splitlines()[0] + " Example: ztfluigi clean --kind raw "
        "--older-than 30 ApertureCatalogRange --start 2019-03-01 --stop 2019-03-31",
    )  # fmt: skip
    p.add_argument("--kind", action="append", choices=CLEANABLE, required=True,
                   help="product kind to remove (repeatable)")  # fmt: skip
    p.add_argument("--older-than", type=int, metavar="DAYS",
                   help="only nights more than DAYS days before today")  # fmt: skip
    p.add_argument("--even-unused", action="store_true",
                   help="also raw frames whose catalogues or master calibration do not exist")
    p.add_argument("--delete", action="store_true", help="really remove (default: dry run)")
    p.add_argument("-v", "--verbose", action="store_true", help="list every file")
    p.add_argument("task", nargs=argparse.REMAINDER, help="entry task and its parameters")
    p.set_defaults(func=_clean)
