"""Compare two stores product by product: raw bytes, calibration pixels, catalogue values.

Used to show that a change of code leaves the products unchanged, e.g. the demo night built by
two revisions::

    python bench/compare_stores.py OLD_ROOT NEW_ROOT [--rtol 0]

Raw files must be byte-identical; FITS products pixel-identical (every HDU's data; header cards
are compared too, except the ones listed with ``--ignore-card``, and cards present in only one
store are listed, not failed: provenance may grow); parquet products must have the same columns
and rows (values equal within ``--rtol``, NaN equal to NaN), and every key-value metadata entry
of the old product must be present with the same value (the old root replaced by the new one),
except ``version.*`` entries and the digest (its content is what is compared). Prints one
line per kind and exits non-zero on any difference.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from astropy.io import fits


def kind_of(rel: Path) -> str:
    name = rel.name
    if name.endswith(".fits.fz"):
        return "raw"
    if name.endswith("_apcat.parquet"):
        return "catalogue"
    if name.endswith(".fits"):
        return "fits"
    if name.endswith(".parquet"):
        return "parquet"
    return "other"


def compare_fits(a: Path, b: Path, ignore: set[str]) -> list[str]:
    problems: list[str] = []
    with fits.open(a) as ha, fits.open(b) as hb:
        if len(ha) != len(hb):
            return [f"{len(ha)} vs {len(hb)} HDUs"]
        for i, (x, y) in enumerate(zip(ha, hb, strict=True)):
            if x.data is None or y.data is None:
                if (x.data is None) != (y.data is None):
                    problems.append(f"HDU {i}: data present in one only")
            elif isinstance(x, fits.BinTableHDU):
                if x.data.tobytes() != y.data.tobytes():
                    problems.append(f"HDU {i}: table differs")
            elif not np.array_equal(x.data, y.data, equal_nan=True):
                problems.append(f"HDU {i}: max |diff| {np.nanmax(np.abs(x.data - y.data))}")
            for key in set(x.header) & set(y.header):
                if key in ignore or key in ("CHECKSUM", "DATASUM", "COMMENT", "HISTORY", ""):
                    continue
                if x.header[key] != y.header[key]:
                    problems.append(f"HDU {i}: {key} {x.header[key]!r} -> {y.header[key]!r}")
    return problems


def compare_parquet(a: Path, b: Path, rtol: float, roots: tuple[str, str] = ("", "")) -> list[str]:
    ta, tb = pq.read_table(a), pq.read_table(b)
    problems: list[str] = []
    if ta.column_names != tb.column_names:
        return [f"columns {ta.column_names} -> {tb.column_names}"]
    if ta.num_rows != tb.num_rows:
        return [f"rows {ta.num_rows} -> {tb.num_rows}"]
    for name in ta.column_names:
        x, y = ta[name].to_numpy(zero_copy_only=False), tb[name].to_numpy(zero_copy_only=False)
        if x.dtype.kind == "f":
            if not np.allclose(x, y, rtol=rtol, atol=0, equal_nan=True):
                problems.append(f"column {name} differs")
        elif not np.array_equal(x, y):
            problems.append(f"column {name} differs")
    meta_a = {k.decode(): v.decode() for k, v in (ta.schema.metadata or {}).items()}
    meta_b = {k.decode(): v.decode() for k, v in (tb.schema.metadata or {}).items()}
    for key, value in meta_a.items():
        if key.startswith("version.") or key in ("ARROW:schema", "ztfluigi.sha256"):
            continue
        if meta_b.get(key) != value.replace(*roots) if roots[0] else meta_b.get(key) != value:
            problems.append(f"metadata {key}: {value!r} -> {meta_b.get(key)!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rtol", type=float, default=0.0, help="catalogue values (0 = equal)")
    parser.add_argument("--ignore-card", action="append", default=[], help="FITS keyword")
    args = parser.parse_args(argv)
    ignore = set(args.ignore_card) | {k for k in ("V_ZTFLUI", "V_NUMPY", "V_ASTROP", "V_FITSI",
                                                  "V_LUIGI")}  # fmt: skip
    files = {
        p.relative_to(root): root
        for root in (args.old, args.new) for p in root.rglob("*") if p.is_file()
    }  # fmt: skip
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failed = False
    for rel in sorted(files):
        kind = kind_of(rel)
        a, b = args.old / rel, args.new / rel
        if not a.exists() or not b.exists():
            counts[kind]["only in " + ("new" if b.exists() else "old")] += 1
            print(f"{rel}: only in {'new' if b.exists() else 'old'}")
            failed |= kind != "other"
            continue
        if kind == "raw" or kind == "other":
            problems = [] if a.read_bytes() == b.read_bytes() else ["bytes differ"]
        elif kind == "fits":
            problems = compare_fits(a, b, ignore)
        else:
            problems = compare_parquet(a, b, args.rtol, (str(args.old), str(args.new)))
        counts[kind]["equal" if not problems else "different"] += 1
        if problems:
            failed = True
            print(f"{rel}: {'; '.join(problems[:4])}")
    for kind, counter in sorted(counts.items()):
        print(f"{kind:10s} " + ", ".join(f"{n} {what}" for what, n in sorted(counter.items())))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
