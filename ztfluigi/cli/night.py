"""``ztfluigi night DATE``: what the configured archive holds for a night."""

from __future__ import annotations

import argparse
import collections


def _night(args: argparse.Namespace) -> int:
    """Summarise a night's raw files as the configured archive lists them."""
    from ztfluigi import config
    from ztfluigi.tasks.parameters import NightParameter

    date = NightParameter().parse(args.date)
    table = config.get_archive().night_metadata(date)
    counts = collections.Counter(
        zip(table["imgtype"].to_pylist(), table["filtercode"].to_pylist(), strict=True)
    )
    fields = sorted({f for f, t in zip(table["field"].to_pylist(), table["imgtype"].to_pylist(),
                                       strict=True) if t == "object"})  # fmt: skip
    print(f"{date}: {table.num_rows} raw CCD files from {config.get_archive().name}")
    for (imgtype, filtercode), n in sorted(counts.items()):
        print(f"  {imgtype:<7} {filtercode}: {n:5d} files ({n // 16} exposures)")
    print(f"  science fields: {', '.join(str(f) for f in fields) or 'none'}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``night``."""
    night = sub.add_parser("night", help="summarise a night's raw files (from the archive)")
    night.add_argument("date", help="UT date, YYYY-MM-DD")
    night.set_defaults(func=_night)
