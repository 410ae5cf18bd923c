"""``ztfluigi status TASK …``: how many stored outputs of each kind exist, how many are missing."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


def progress_bar(items: list[T], label: str, stream: TextIO | None = None,
                 after_s: float = 1.0) -> Iterator[T]:  # fmt: skip
    """Yield ``items``, drawing a bar on a terminal (stderr) once it took more than ``after_s``."""
    stream = stream or sys.stderr
    start, shown, width = time.monotonic(), False, 30
    interactive = stream.isatty()
    for i, item in enumerate(items):
        yield item
        if interactive and (shown or time.monotonic() - start > after_s) and i % 200 == 0:
            done = (i + 1) / len(items)
            bar = "#" * int(done * width)
            stream.write(f"\r{label} [{bar:<{width}}] {done:4.0%}")
            stream.flush()
            shown = True
    if shown:
        stream.write("\r" + " " * (len(label) + width + 8) + "\r")


def status_table(entry_words: list[str], out: TextIO | None = None) -> int:
    """Print per-kind counts of existing and missing outputs; return the number missing."""
    out = out or sys.stdout
    from ztfluigi import storage
    from ztfluigi.cli.entry import entry_task
    from ztfluigi.tasks import inventory

    entry = entry_task(entry_words)
    start = time.monotonic()
    inv = inventory.inventory(entry)
    listing = storage.ListingCache()
    exists = [listing.exists(p.url) for p in progress_bar(inv.products, "checking")]
    elapsed = time.monotonic() - start
    print(f"{entry}", file=out)
    print(f"{'kind':<12} {'exist':>8} {'missing':>8} {'total':>8}", file=out)
    missing = 0
    for kind in inventory.KINDS:
        flags = [e for p, e in zip(inv.products, exists, strict=True) if p.kind == kind]
        n_exist = sum(flags)
        if kind in inventory.OPTIONAL_KINDS and not n_exist:
            continue
        if kind not in inventory.OPTIONAL_KINDS:
            missing += len(flags) - n_exist
        print(f"{kind:<12} {n_exist:>8} {len(flags) - n_exist:>8} {len(flags):>8}", file=out)
    if inv.unknown:
        print(f"{len(inv.unknown)} units not counted yet: their night has no RawIndex "
              f"(e.g. {inv.unknown[0]})", file=out)  # fmt: skip
    print(f"checked {len(inv.products)} outputs in {elapsed:.2f} s "
          f"({listing.n_listings} directory listings)", file=out)  # fmt: skip
    return missing + len(inv.unknown)


def _status(args: argparse.Namespace) -> int:
    missing = status_table(args.task)
    return 1 if args.check and missing else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``status``."""
    p = sub.add_parser(
        "status", help="count existing and missing outputs of a task, per product kind",
        description="Count the stored outputs an entry task stands for (bulk existence: one "
        "listing per directory). Example: ztfluigi status ApertureCatalog --date 2019-03-31",
    )  # fmt: skip
    p.add_argument("--check", action="store_true", help="exit 1 when anything is missing")
    p.add_argument("task", nargs=argparse.REMAINDER, help="entry task and its parameters")
    p.set_defaults(func=_status)

