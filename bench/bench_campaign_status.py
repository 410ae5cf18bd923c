"""``ztfluigi status`` of a five-year campaign on S3: requests and time, nights serial vs threaded.

A moto S3 server on loopback (``tests/s3server.py``, real HTTP) holds a campaign store made from
the survey-like synthetic schedule (``[sim] survey = true``) over ``--start``..``--stop``:

- every night's RawIndex (parquet, as the task writes it), restricted to the exposures whose
  field has a quadrant in the region (all 16 CCDs of each): the rows status reads; a night
  without such exposure gets an index with no row;
- in every ``--built-every``-th night with data, ``--per-exposure`` empty catalogue objects per
  science exposure (its first selected quadrants): each exposure its own directory, as in the
  catalogue store (``sci/YYYY/MMDD/ffffff/``). The five-year toy sample has ≈ 25,000 zr and as
  many zg exposure directories; the default puts one object in each (the store's full 3 million
  catalogues would take hours to create in moto).

``campaign_status`` (all bands) then runs with ``--threads`` 1 (nights one after the other) and
the default (:data:`ztfluigi.tasks.campaign.COUNT_THREADS`), counting HTTP requests per S3
operation. Moto scans the whole bucket on every LIST (its times grow with the store; S3's do not):
requests are the figure of merit, and a projection at S3 latencies is printed beside.

    python bench/bench_campaign_status.py                      # 2018-03-17 .. 2023-12-31
    python bench/bench_campaign_status.py --stop 2018-12-31    # a shorter one
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the moto server helper lives with the tests

import luigi.configuration  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from tests.s3server import RequestCounter, moto_s3  # noqa: E402

S3_LATENCY_S = (0.02, 0.05)  #: a LIST/GET/HEAD round trip to S3 from a computing centre, s


def _configure(root: str) -> None:
    cfg = luigi.configuration.get_config()
    for section, values in {"ztfluigi": {"root": root, "archive": "sim"},
                            "sim": {"survey": "true"}}.items():  # fmt: skip
        if not cfg.has_section(section):
            cfg.add_section(section)
        for k, v in values.items():
            cfg.set(section, k, v)


def night_store(date: dt.date, spec: str, per_exposure: int, built: bool
                ) -> tuple[pa.Table, list[str]]:  # fmt: skip
    """The night's RawIndex rows in the region and the store paths of its built catalogues."""
    from ztfluigi import config
    from ztfluigi.cli.plan import NightRows
    from ztfluigi.tasks.campaign import quadrant_selection, selected_quadrants
    from ztfluigi.tasks.catalog import catalog_target

    exposures = list(config.get_archive().exposures(date).values())
    rows = NightRows.from_exposures(exposures)
    science = np.flatnonzero(rows.imgtype == "object")
    in_region = quadrant_selection(rows.field[science], rows.ccdid[science], spec).any(axis=1)
    keep_exp = np.unique(science[in_region] // 16)
    keep = (keep_exp[:, None] * 16 + np.arange(16)).ravel()
    table = pa.table({
        "imgtype": pa.array(rows.imgtype[keep].tolist(), pa.string()),
        "filtercode": pa.array(rows.filtercode[keep].tolist(), pa.string()),
        "field": pa.array(rows.field[keep], pa.int64()),
        "ccdid": pa.array(rows.ccdid[keep], pa.int64()),
        "obsjd": pa.array(rows.obsjd[keep], pa.float64()),
        "ledid": pa.array(rows.ledid[keep], pa.int64()),
        "filename": pa.array(rows.filenames(keep), pa.string()),
    })  # fmt: skip
    paths: list[str] = []
    if built and table.num_rows:
        per_exp: dict[str, int] = {}
        for raw, q in selected_quadrants(table, spec):
            if per_exp.get(raw.filefracday, 0) < per_exposure:
                per_exp[raw.filefracday] = per_exp.get(raw.filefracday, 0) + 1
                paths.append(catalog_target(raw, q).path)
    return table, paths


def populate(fs: object, dates: list[dt.date], spec: str, per_exposure: int, built_every: int
             ) -> dict[str, int]:  # fmt: skip
    """Write the RawIndexes and catalogue objects; counts of what was written."""
    from ztfluigi import storage
    from ztfluigi.tasks.raw import rawindex_url

    local = Path(tempfile.mkdtemp(prefix="ztfluigi-status-"))
    objects: dict[str, bytes] = {}
    n_cat = n_dirs = n_with = 0
    for i, date in enumerate(dates):
        table, paths = night_store(date, spec, per_exposure, built=False)
        built = bool(table.num_rows) and n_with % built_every == 0
        n_with += bool(table.num_rows)
        if built:
            _, paths = night_store(date, spec, per_exposure, built=True)
        tmp = storage.get_target(str(local / f"{date}.parquet"))
        storage.write_parquet(tmp, table)
        objects[rawindex_url(date)] = Path(tmp.path).read_bytes()
        objects.update(dict.fromkeys(paths, b""))
        n_cat += len(paths)
        n_dirs += len({p.rsplit("/", 1)[0] for p in paths})
        if len(objects) > 5000 or i == len(dates) - 1:
            if fs is None:  # a local store
                for path, data in objects.items():
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                    Path(path).write_bytes(data)
            else:
                fs.pipe(objects)
            objects = {}
    return {"nights": len(dates), "nights_with_region_data": n_with, "catalogue_objects": n_cat,
            "exposure_directories": n_dirs}  # fmt: skip


def measure(fs: object, entry: object, threads: int) -> dict:
    """One ``campaign_status`` run: requests per operation, seconds, its table's total line."""
    from ztfluigi.cli.status import campaign_status
    from ztfluigi.tasks import raw

    raw._load_index.cache_clear()  # each run reads the RawIndexes it needs
    out = io.StringIO()
    with contextlib.nullcontext() if fs is None else RequestCounter(fs) as counter:
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        missing = campaign_status(entry, out, threads=threads)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    lines = out.getvalue().splitlines()
    total = next(line for line in lines if line.startswith("total"))
    requests = {} if counter is None else {"requests": counter.total,
                                           "by_operation": dict(counter.by_operation)}
    return {"threads": threads, "seconds": round(seconds, 1), "process_cpu_s": round(cpu, 1),
            **requests, "missing": missing, "total_line": total, "table": lines}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default="2018-03-17")
    parser.add_argument("--stop", default="2023-12-31")
    parser.add_argument("--region", default="toy")
    parser.add_argument("--per-exposure", type=int, default=1,
                        help="catalogue objects per exposure directory")
    parser.add_argument("--built-every", type=int, default=1,
                        help="build every N-th night with data (1: all)")
    parser.add_argument("--local", action="store_true",
                        help="a store on local disk instead of S3 (no server)")
    args = parser.parse_args()

    from ztfluigi import storage
    from ztfluigi.tasks.campaign import COUNT_THREADS, ApertureCatalogCampaign, nights

    start, stop = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.stop)
    entry_kw = {"start": start, "stop": stop, "region": args.region, "filtercode": ""}
    with contextlib.ExitStack() as stack:
        if args.local:
            root, fs = tempfile.mkdtemp(prefix="ztfluigi-status-store-"), None
            _configure(root)
        else:
            server = stack.enter_context(moto_s3())
            os.environ.update(server.env())
            root = f"s3://{server.create_bucket(f'bench-{uuid.uuid4().hex[:8]}')}/store"
            _configure(root)
            fs = storage.get_target(root).fs.fsspec
        t0 = time.perf_counter()
        written = populate(fs, nights(start, stop), args.region, args.per_exposure,
                           args.built_every)  # fmt: skip
        populate_s = time.perf_counter() - t0
        print(f"populated in {populate_s:.0f} s: {written}", flush=True)
        entry = ApertureCatalogCampaign(**entry_kw)
        runs = [measure(fs, entry, COUNT_THREADS), measure(fs, entry, 1)]
    assert runs[0]["total_line"] == runs[1]["total_line"]
    for r in runs:
        if "requests" in r:
            lo, hi = (r["requests"] / r["threads"] * s for s in S3_LATENCY_S)
            r["projected_s3_s"] = [round(lo, 1), round(hi, 1)]
            where = (f"{r['requests']} requests {r['by_operation']}; "
                     f"at S3 latencies ≈ {lo:.0f}-{hi:.0f} s")
        else:
            where = "local disk"
        print(f"threads {r['threads']:>3}: {r['seconds']:>7.1f} s wall, "
              f"{r['process_cpu_s']} s CPU; {where}", flush=True)  # fmt: skip
    print("\n".join(runs[0]["table"]))
    store = "local disk" if args.local else "moto ThreadedMotoServer on 127.0.0.1 (same process)"
    record = {"start": args.start, "stop": args.stop, "region": args.region, "store": store,
              **written, "populate_s": round(populate_s), "runs": runs}  # fmt: skip
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = "campaign_status_local.json" if args.local else "campaign_status.json"
    (out / name).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
