"""The whole demo night on other stores and archives, against the local-disk, ``archive = sim`` run.

Runs ``luigi --module ztfluigi ApertureCatalog --date 2019-03-31`` (2 workers, the repository's
``luigi.cfg``) three times: on local disk with the synthetic archive (the reference run), with
``root = s3://…`` on a loopback moto S3 server, and with raw files downloaded from
``ztfluigi archive serve`` on loopback (``archive = http://127.0.0.1:PORT``). Reports wall times
and whether catalogues are equal, calibration pixels and raw bytes identical.

    python bench/bench_demo_stores.py        # ≈ 15 min on 2 cores
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.parquet as pq
from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.s3server import MotoS3  # noqa: E402 - the tests' loopback S3 server

DATE = "2019-03-31"
CALIBRATIONS = ("_bias.fits", "_flat.fits", "_flatnorm.fits")


def run_night(
    workdir: Path, replacements: dict[str, str], env: dict[str, str] | None = None
) -> float:
    """Run the demo night in ``workdir`` with luigi.cfg lines replaced; return the wall time (s)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = (REPO / "luigi.cfg").read_text()
    for old, new in replacements.items():
        cfg = cfg.replace(old, new)
    (workdir / "luigi.cfg").write_text(cfg)
    luigi = Path(sys.executable).parent / "luigi"
    t0 = time.perf_counter()
    done = subprocess.run([str(luigi), "--module", "ztfluigi", "ApertureCatalog", "--date", DATE,
                           "--local-scheduler", "--workers", "2"], cwd=workdir, env=env,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        raise SystemExit(f"the night failed in {workdir}:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def compare(fs: fsspec.AbstractFileSystem, root: str, reference: Path) -> dict[str, int]:
    """Products under ``root`` (on ``fs``) against the same relative paths under ``reference``."""
    files = [p for p in fs.find(root) if not p.rpartition("/")[2].startswith(".")]
    rel = {p: p[len(root.rstrip("/")) + 1 :] for p in files}
    kinds = ("catalogues", "catalogues_equal", "calibrations", "calibrations_identical", "raw",
             "raw_identical")  # fmt: skip
    counts = dict.fromkeys(kinds, 0)
    for path, relpath in rel.items():
        if path.endswith("apcat.parquet"):
            counts["catalogues"] += 1
            with fs.open(path) as f:
                counts["catalogues_equal"] += pq.read_table(f).equals(
                    pq.read_table(reference / relpath))
        elif path.endswith(CALIBRATIONS):
            counts["calibrations"] += 1
            with fs.open(path) as f:
                data = np.asarray(fits.getdata(f)).tobytes()
            counts["calibrations_identical"] += data == np.asarray(
                fits.getdata(reference / relpath)).tobytes()
        elif path.endswith(".fits.fz"):
            counts["raw"] += 1
            counts["raw_identical"] += fs.cat_file(path) == (reference / relpath).read_bytes()
    return counts


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="ztfluigi-demo-stores-"))
    record: dict[str, object] = {}
    local = scratch / "local"
    record["local_s"] = round(run_night(local, {}), 1)
    reference = local / "ztfdata"

    s3 = MotoS3()
    try:
        s3.create_bucket("ztf")
        env = {**os.environ, **s3.env()}
        record["s3_s"] = round(run_night(scratch / "s3", {"root = ztfdata": "root = s3://ztf/p"},
                                         env), 1)  # fmt: skip
        fs = fsspec.filesystem("s3", endpoint_url=s3.endpoint, key="inspector", secret="inspector")
        record["s3"] = compare(fs, "ztf/p", reference)
    finally:
        s3.stop()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "ztfluigi"), "archive", "serve",
                               "--port", str(port)], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(3)
        refcat = reference / "refcat" / "ztfsim_gaia_dr3_seed0" / DATE.replace("-", "")
        record["http_s"] = round(run_night(scratch / "http", {
            "archive = sim": f"archive = http://127.0.0.1:{port}\nrefcat = {refcat}"}), 1)
        record["http"] = compare(fsspec.filesystem("file"), str(scratch / "http" / "ztfdata"),
                                 reference)  # fmt: skip
    finally:
        server.terminate()
        server.wait()
    print(json.dumps(record, indent=1))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_stores.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
