"""Completeness of a night on S3: one LIST per directory (ListingCache) vs one HEAD per product.

A moto S3 server on loopback (``tests/s3server.py``, real HTTP) is filled with a night's worth of
empty objects at the real paths (``ztfluigi.naming``): every quadrant catalogue of the night's
science exposures, the raw calibration files (biases, flats) and the master calibrations. Their
existence is then checked four ways, counting HTTP requests per S3 operation (botocore hook):

- ``naive``: ``FsspecTarget.exists()`` per product (one HEAD each: luigi's default ``complete``);
- ``bulk``: one ``bulk_exists`` over the whole night (one ListingCache);
- ``per_unit``: as the task classes do now, a fresh ListingCache per coarse unit
  (ApertureCatalogUnit per CCD × filter, RawFiles per CCD × kind) and a HEAD per master product;
- ``bulk_empty``: ``bulk_exists`` on a night not built yet (an empty prefix).

    python bench/bench_s3_completeness.py           # 10 fields: ~1,900 catalogues
    python bench/bench_s3_completeness.py --full    # 83 fields: ~16,000 catalogues (a real night)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the moto server helper lives with the tests

from tests.s3server import RequestCounter, moto_s3  # noqa: E402
from ztfluigi import naming, storage  # noqa: E402
from ztfluigi.archive.sim import SimArchive  # noqa: E402
from ztfluigi.sim.schedule import SimConfig  # noqa: E402

DATE = dt.date(2019, 3, 31)


def night_products(n_fields: int) -> dict[str, list[str]]:
    """Store-relative paths of a night's products, grouped as the task classes check them."""
    index = SimArchive(SimConfig(seed=0, scale=8, n_fields=n_fields)).night_metadata(DATE)
    units: dict[str, list[str]] = {}
    for name in index["filename"].to_pylist():
        raw = naming.parse_raw_filename(name)
        if raw.imgtype == "object":
            key = f"catalogues c{raw.ccdid:02d} {raw.filtercode}"
            units.setdefault(key, []).extend(
                naming.science_quadrant_relpath(raw, q, "apcat.parquet", prefix="ztfin2p3")
                for q in range(1, 5)
            )
        else:
            key = f"raw c{raw.ccdid:02d} {raw.imgtype} {raw.filtercode}"
            units.setdefault(key, []).append(raw.relpath)
    masters = [naming.master_bias_relpath(DATE, c) for c in range(1, 17)]
    for f in naming.SCIENCE_FILTERS:
        masters += [naming.master_flat_relpath(DATE, c, f) for c in range(1, 17)]
        masters.append(naming.focal_plane_relpath(DATE, f, "fp_flatnorm.fits"))
    units["masters"] = masters
    return units


def measure(fs: object, check: Callable[[], list[bool]]) -> dict:
    """Run one existence check; return its requests per operation, time and answers."""
    with RequestCounter(fs) as counter:
        t0 = time.perf_counter()
        answers = check()
        seconds = time.perf_counter() - t0
    return {"requests": counter.total, "by_operation": dict(counter.by_operation),
            "seconds": round(seconds, 2), "found": sum(answers)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="a real-size night (83 fields)")
    parser.add_argument("--fields", type=int, default=None, help="science fields (default 10)")
    args = parser.parse_args()
    n_fields = args.fields or (83 if args.full else 10)
    units = night_products(n_fields)
    relpaths = [p for paths in units.values() for p in paths]
    n_catalogues = sum(len(v) for k, v in units.items() if k.startswith("catalogues"))

    with moto_s3() as server:
        os.environ.update(server.env())
        bucket = server.create_bucket(f"bench-{uuid.uuid4().hex[:8]}")
        root, empty = f"s3://{bucket}/night", f"s3://{bucket}/not-built"
        urls = [storage.url_join(root, p) for p in relpaths]
        fs = storage.get_target(root).fs.fsspec
        t0 = time.perf_counter()
        fs.pipe({u: b"" for u in urls})
        populate_s = time.perf_counter() - t0

        def per_unit() -> list[bool]:
            found = []
            for key, paths in units.items():
                targets = [storage.url_join(root, p) for p in paths]
                if key == "masters":
                    found += [storage.FsspecTarget(u).exists() for u in targets]
                else:
                    found += storage.ListingCache().exists_many(targets)
            return found

        results = {
            "bulk": measure(fs, lambda: storage.bulk_exists(urls)),
            "per_unit": measure(fs, per_unit),
            "naive": measure(fs, lambda: [storage.FsspecTarget(u).exists() for u in urls]),
            "bulk_empty": measure(fs, lambda: storage.bulk_exists(
                [storage.url_join(empty, p) for p in relpaths])),
        }  # fmt: skip
    directories = {u.rsplit("/", 1)[0] for u in urls}
    record = {
        "fields": n_fields, "objects": len(urls), "catalogues": n_catalogues,
        "raw_and_cal": len(urls) - n_catalogues, "directories": len(directories),
        "populate_s": round(populate_s, 1), **results,
        "request_ratio_naive_over_bulk": round(results["naive"]["requests"]
                                               / results["bulk"]["requests"], 1),
        "time_ratio_naive_over_bulk": round(results["naive"]["seconds"]
                                            / max(results["bulk"]["seconds"], 1e-3), 1),
        "server": "moto ThreadedMotoServer on 127.0.0.1 (same process)",
    }  # fmt: skip
    for name in ("bulk", "per_unit", "naive", "bulk_empty"):
        assert results[name]["found"] == (0 if name == "bulk_empty" else len(urls)), name
    print(f"{len(urls)} objects ({n_catalogues} catalogues) in {len(directories)} directories, "
          f"{n_fields} fields; populated in {populate_s:.1f} s")  # fmt: skip
    print(f"{'check':<12}{'requests':>10}{'seconds':>10}  by operation")
    for name, r in results.items():
        print(f"{name:<12}{r['requests']:>10}{r['seconds']:>10.2f}  {r['by_operation']}")
    print(f"naive / bulk: {record['request_ratio_naive_over_bulk']}x requests, "
          f"{record['time_ratio_naive_over_bulk']}x time")  # fmt: skip
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = "s3_completeness_full.json" if n_fields == 83 else "s3_completeness.json"
    (out / name).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
