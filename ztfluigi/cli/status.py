"""``ztfluigi status TASK …``: how many stored outputs of each kind exist, how many are missing."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


def progress_bar(items: Iterable[T], label: str, stream: TextIO | None = None,
                 after_s: float = 1.0, total: int | None = None) -> Iterator[T]:  # fmt: skip
    """Yield ``items``, drawing a bar on a terminal (stderr) once it took more than ``after_s``;
    ``total``: how many there are, when ``items`` has no length (an iterator)."""
    stream = stream or sys.stderr
    start, shown, width = time.monotonic(), False, 30
    interactive = stream.isatty()
    n = len(items) if total is None else total  # type: ignore[arg-type]
    for i, item in enumerate(items):
        yield item
        if interactive and (shown or time.monotonic() - start > after_s) and i % 200 == 0:
            done = (i + 1) / max(n, 1)
            bar = "#" * int(done * width)
            stream.write(f"\r{label} [{bar:<{width}}] {done:4.0%}")
            stream.flush()
            shown = True
    if shown:
        stream.write("\r" + " " * (len(label) + width + 8) + "\r")


def status_table(entry_words: list[str], out: TextIO | None = None, verify: bool = False) -> int:
    """Print per-kind counts of existing and missing outputs; return the number missing.

    ``verify``: also read every existing output and check its integrity; a damaged one is
    named, set aside (hidden name) and counted as missing, so the next run builds it again.
    """
    out = out or sys.stdout
    from ztfluigi import storage
    from ztfluigi.cli.entry import entry_task
    from ztfluigi.tasks import inventory

    entry = entry_task(entry_words)
    start = time.monotonic()
    inv = inventory.inventory(entry, count_run_calibrations=True)
    listing = storage.ListingCache()
    exists = [listing.exists(p.url) for p in progress_bar(inv.products, "checking")]
    damaged = 0
    if verify:
        present = [i for i, e in enumerate(exists) if e]
        for i in progress_bar(present, "verifying"):
            problem = inventory.damage(inv.products[i])
            if problem:
                aside = storage.quarantine(inv.products[i].url)
                print(f"damaged: {problem} (set aside as {aside})", file=out)
                exists[i], damaged = False, damaged + 1
    elapsed = time.monotonic() - start
    print(f"{entry}", file=out)
    print(f"{'kind':<12} {'exist':>8} {'missing':>8} {'total':>8}", file=out)
    missing = 0
    for kind in inventory.KINDS:
        flags = [e for p, e in zip(inv.products, exists, strict=True) if p.kind == kind]
        n_exist = sum(flags)
        if kind in inventory.OPTIONAL_KINDS and not n_exist:
            continue
        if kind in inventory.CONFIGURED_KINDS and not flags:
            continue
        if kind not in inventory.OPTIONAL_KINDS:
            missing += len(flags) - n_exist
        print(f"{kind:<12} {n_exist:>8} {len(flags) - n_exist:>8} {len(flags):>8}", file=out)
    if inv.unknown:
        print(f"{len(inv.unknown)} units not counted yet: their night has no RawIndex "
              f"(e.g. {inv.unknown[0]})", file=out)  # fmt: skip
    fallback = _fallback_indexes(inv.products, exists)
    if fallback:
        print(f"{len(fallback)} RawIndex made from the mirror's raw files while the archive was "
              f"unreachable (they list only what the mirror held; delete to ask the archive "
              f"again): e.g. {fallback[0]}", file=out)  # fmt: skip
    verified = f", verified: {damaged} damaged" if verify else ""
    print(f"checked {len(inv.products)} outputs in {elapsed:.2f} s "
          f"({listing.n_listings} directory listings{verified})", file=out)  # fmt: skip
    return missing + len(inv.unknown)


def _fallback_indexes(products: list, exists: list[bool]) -> list[str]:
    """URLs of the stored RawIndex made from raw headers although an archive is configured."""
    from ztfluigi import config
    from ztfluigi.tasks.raw import indexed_from_headers

    if config.settings().archive == "none":  # indexed from the headers by design
        return []
    return [p.url for p, e in zip(products, exists, strict=True)
            if e and p.kind == "rawindex" and indexed_from_headers(p.url)]  # fmt: skip


def campaign_status(entry: object, out: TextIO | None = None, threads: int | None = None) -> int:
    """Per-year, per-band counts of a campaign's selected catalogues (one listing per night).

    Nights without a stored RawIndex are counted apart (their catalogues are not known yet).
    Nights are read and listed ``threads`` at a time (default
    :data:`~ztfluigi.tasks.campaign.COUNT_THREADS`). Returns the number of missing catalogues plus
    the nights not indexed.
    """
    out = out or sys.stdout
    from ztfluigi import naming
    from ztfluigi.tasks.campaign import COUNT_THREADS, NightListing, night_counts

    start = time.monotonic()
    filters = [entry.filtercode] if entry.filtercode else list(naming.SCIENCE_FILTERS)
    listing = NightListing()
    rows: dict[tuple[int, str], list[int]] = {}  # (year, band) -> nights, with data, exp., exist
    unknown: list = []
    dates = entry.nights()
    counted = night_counts(dates, entry.region, filters, listing,
                           COUNT_THREADS if threads is None else threads)  # fmt: skip
    for date, counts in progress_bar(counted, "checking", total=len(dates)):
        if counts is None:
            unknown.append(date)
            continue
        for f, (have, expected) in counts.items():
            row = rows.setdefault((date.year, f), [0, 0, 0, 0])
            row[0] += 1
            row[1] += bool(expected)
            row[2] += expected
            row[3] += have
    elapsed = time.monotonic() - start
    print(f"{entry}", file=out)
    print(f"{'year':<6}{'band':<6}{'nights':>8}{'w/ data':>9}{'catalogues':>12}{'exist':>10}"
          f"{'missing':>10}", file=out)  # fmt: skip
    total = [0, 0, 0, 0]
    for (year, band), counts in sorted(rows.items()):
        n, with_data, expected, have = counts
        print(f"{year:<6}{band:<6}{n:>8}{with_data:>9}{expected:>12}{have:>10}"
              f"{expected - have:>10}", file=out)  # fmt: skip
        total = [a + b for a, b in zip(total, counts, strict=True)]
    print(f"{'total':<12}{total[0]:>8}{total[1]:>9}{total[2]:>12}{total[3]:>10}"
          f"{total[2] - total[3]:>10}", file=out)  # fmt: skip
    if unknown:
        print(f"{len(unknown)} of {len(dates)} nights not indexed yet (e.g. {unknown[0]}): their "
              "catalogues are not known", file=out)  # fmt: skip
    print(f"checked {total[2]} catalogues of {len(dates)} nights in {elapsed:.2f} s "
          f"({listing.n_listings} night listings)", file=out)  # fmt: skip
    return total[2] - total[3] + len(unknown)


def _status(args: argparse.Namespace) -> int:
    from ztfluigi.cli.entry import entry_task
    from ztfluigi.tasks.campaign import ApertureCatalogCampaign

    entry = entry_task(args.task)
    if isinstance(entry, ApertureCatalogCampaign):
        missing = campaign_status(entry)
    else:
        missing = status_table(args.task, verify=args.verify)
    return 1 if args.check and missing else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``status``."""
    p = sub.add_parser(
        "status", help="count existing and missing outputs of a task, per product kind",
        description="Count the stored outputs an entry task stands for (bulk existence: one "
        "listing per directory; a campaign: its catalogues per year and band, one listing per "
        "night). Example: ztfluigi status ApertureCatalog --date 2019-03-31",
    )  # fmt: skip
    p.add_argument("--check", action="store_true", help="exit 1 when anything is missing")
    p.add_argument("--verify", action="store_true",
                   help="read every existing output and check its checksums; damaged ones are "
                        "named and set aside, so that the next run builds them again")  # fmt: skip
    p.add_argument("task", nargs=argparse.REMAINDER, help="entry task and its parameters")
    p.set_defaults(func=_status)

