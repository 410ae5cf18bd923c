"""S3 stores against a real S3 endpoint (moto's server over HTTP on loopback, no mocks).

Atomic commits (single PUT, multipart for large products, nothing visible after a killed
upload), listing-based existence in LIST requests, the ``[s3]`` section, and credentials that
never show up in logs, errors, reprs or products.
"""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import traceback
import uuid
from pathlib import Path

import fsspec
import fsspec.config
import luigi
import numpy as np
import pyarrow as pa
import pytest
from astropy.io import fits

from tests.helpers import DEMO_DATE, build, luigi_settings
from tests.s3server import REGION, RequestCounter, clear_aws_env, moto_s3
from ztfluigi import config, storage
from ztfluigi.storage import (
    FsspecTarget,
    ListingCache,
    ProductError,
    get_target,
    read_bytes,
    read_fits,
    read_parquet,
    url_join,
    write_bytes,
    write_fits,
    write_parquet,
)
from ztfluigi.tasks import MasterBias, RawIndex

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20


@pytest.fixture(scope="module")
def server():
    with moto_s3() as srv:
        yield srv


@pytest.fixture()
def bucket(server, monkeypatch):
    """A fresh bucket, reached through the standard ``AWS_*`` environment."""
    server.use_env(monkeypatch)
    name = server.create_bucket(f"t-{uuid.uuid4().hex[:12]}")
    yield f"s3://{name}"
    storage.set_s3_part_size(None)


@pytest.fixture()
def no_aws_env(monkeypatch):
    """No ``AWS_*`` settings at all: only the ``[s3]`` section can reach the server."""
    clear_aws_env(monkeypatch)


def s3fs_of(url):
    return get_target(url).fs.fsspec



# ------------------------------------------------------------------------------------------
# Products and existence
# ------------------------------------------------------------------------------------------


def test_products_round_trip_and_existence_costs_one_list_per_directory(bucket):
    image = np.arange(64 * 48, dtype=np.float32).reshape(64, 48)
    hdul = fits.HDUList([fits.PrimaryHDU(image)])
    write_fits(get_target(url_join(bucket, "cal/bias.fits")), hdul)
    table = pa.table({"source_id": [1, 2], "f_0": [1.5, 2.5]})
    write_parquet(get_target(url_join(bucket, "sci/cat.parquet")), table, {"radii": "[3]"})
    with get_target(url_join(bucket, "notes/readme.txt")).open("w") as f:
        f.write("héllo")
    assert np.array_equal(read_fits(url_join(bucket, "cal/bias.fits"))[0].data, image)
    back = read_parquet(url_join(bucket, "sci/cat.parquet"))
    assert back.equals(table.replace_schema_metadata(back.schema.metadata))
    assert back.schema.metadata[b"radii"] == b"[3]"
    with get_target(url_join(bucket, "notes/readme.txt")).open("r") as f:
        assert f.read() == "héllo"

    dirs = [url_join(bucket, "night", f"e{i}") for i in range(3)]
    urls = [url_join(dirs[i % 3], f"q{i:03d}.parquet") for i in range(90)]
    present = [i % 3 != 1 or i % 2 == 0 for i in range(90)]
    fs = s3fs_of(bucket)
    fs.pipe({u: b"" for u, p in zip(urls, present, strict=True) if p})
    absent = [url_join(bucket, "night", "e9", f"q{i}.parquet") for i in range(5)]
    with RequestCounter(fs) as listing:
        assert ListingCache().exists_many(urls + absent) == present + [False] * 5
    assert dict(listing.by_operation) == {"ListObjectsV2": 4}  # one per directory, even empty
    with RequestCounter(fs) as heads:
        assert [FsspecTarget(u).exists() for u in urls[:30]] == present[:30]
    assert dict(heads.by_operation) == {"HeadObject": 30}  # the naive way: a HEAD per product

    with pytest.raises(ProductError, match="missing product: s3://"):
        read_bytes(url_join(bucket, "nothing/here.fits"))


def test_large_products_are_committed_as_one_multipart_upload(bucket, server):
    storage.set_s3_part_size(5 * MIB)
    fs = s3fs_of(bucket)
    data = os.urandom(12 * MIB + 12345)
    with RequestCounter(fs) as big:
        write_bytes(get_target(url_join(bucket, "raw/big.fits.fz")), data)
    assert dict(big.by_operation) == {
        "CreateMultipartUpload": 1, "UploadPart": 3, "CompleteMultipartUpload": 1,
    }  # fmt: skip
    head = server.client().head_object(Bucket=bucket[5:], Key="raw/big.fits.fz")
    assert head["ETag"].strip('"').endswith("-3") and head["ContentLength"] == len(data)
    assert read_bytes(url_join(bucket, "raw/big.fits.fz")) == data

    # The temporary_path route (FITS, parquet writers) commits the same way.
    image = np.random.default_rng(1).normal(size=(1900, 1900)).astype(np.float32)  # 13.8 MiB
    with RequestCounter(fs) as fitsput:
        write_fits(get_target(url_join(bucket, "cal/flat.fits")),
                   fits.HDUList([fits.PrimaryHDU(image)]))  # fmt: skip
    assert fitsput.by_operation["UploadPart"] == 3 and fitsput.by_operation["PutObject"] == 0
    assert np.array_equal(read_fits(url_join(bucket, "cal/flat.fits"))[0].data, image)

    with RequestCounter(fs) as small:
        write_bytes(get_target(url_join(bucket, "raw/small.fits.fz")), data[: 9 * MIB])
    assert dict(small.by_operation) == {"PutObject": 1}  # below two parts: one PUT
    assert server.keys(bucket[5:]) == ["cal/flat.fits", "raw/big.fits.fz", "raw/small.fits.fz"]
    with pytest.raises(ValueError, match="at least 5 MiB"):
        storage.set_s3_part_size(MIB)


_KILLED_UPLOAD = textwrap.dedent(
    """
    import sys, time
    from ztfluigi import storage

    storage.set_s3_part_size(5 << 20)
    target = storage.FsspecTarget(sys.argv[1], {"max_concurrency": 1})  # parts one at a time

    def stall(request, **kwargs):
        if "partNumber=2" in request.url:  # part 1 is stored: hang before sending part 2
            print("uploading part 2", flush=True)
            time.sleep(120)

    target.fs.fsspec.s3.meta.events.register("before-send.s3.UploadPart", stall)
    with target.open("wb") as f:
        f.write(b"\\x01" * (16 << 20))
    """
)


def test_killed_multipart_writer_leaves_no_object(bucket, server):
    name = bucket[5:]
    url = url_join(bucket, "cal/bias/2019/0331/big_bias.fits")
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_UPLOAD, url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.strip() == "uploading part 2", proc.stderr.read()
        client = server.client()
        uploads = client.list_multipart_uploads(Bucket=name).get("Uploads", [])
        assert [u["Key"] for u in uploads] == ["cal/bias/2019/0331/big_bias.fits"]
        upload = uploads[0]
        parts = client.list_parts(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        assert [p["Size"] for p in parts["Parts"]] == [5 * MIB]  # mid-upload, one part stored
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert server.keys(name) == []  # nothing under the final key (nor anywhere)
    assert not FsspecTarget(url).exists()
    assert ListingCache().exists(url) is False
    # The orphaned parts are invisible but billed until aborted (moto dates every upload
    # 2010-11-10, so only the prefix filter, not the age filter, is exercised here).
    assert storage.abort_incomplete_uploads(url_join(bucket, "raw"), older_than=0) == 0
    assert storage.abort_incomplete_uploads(url_join(bucket, "cal"), older_than=0) == 1
    assert server.client().list_multipart_uploads(Bucket=name).get("Uploads", []) == []
    with pytest.raises(ValueError, match="only on S3"):
        storage.abort_incomplete_uploads("memory://x")


# ------------------------------------------------------------------------------------------
# The [s3] section
# ------------------------------------------------------------------------------------------


def test_s3_section_reaches_the_server_without_any_aws_environment(server, no_aws_env):
    name = server.create_bucket(f"cfg-{uuid.uuid4().hex[:12]}")
    section = {"endpoint_url": server.endpoint, "region": REGION, "key": "cfg-key",
               "secret": "cfg-secret", "multipart_chunksize": "5"}  # fmt: skip
    settings = {
        "s3": section,
        "ztfluigi": {"root": f"s3://{name}/store", "archive": "sim"},
        "sim": {"seed": "0", "scale": "16", "n_fields": "1"},
    }
    try:
        with luigi_settings(settings):
            assert config.s3().storage_options() == {
                "endpoint_url": server.endpoint, "key": "cfg-key", "secret": "cfg-secret",
                "client_kwargs": {"region_name": REGION},
            }  # fmt: skip
            task = RawIndex(date=DEMO_DATE)
            assert build(task).status == luigi.execution_summary.LuigiStatusCode.SUCCESS
            index_key = task.output().path.split("/", 3)[3]
            assert index_key.startswith("store/meta/rawindex/")
            assert read_parquet(task.output()).num_rows == 16 * (20 + 55 + 3)
            # Code handing URLs to fsspec directly (the HATS reader) gets the same settings.
            fs, path = fsspec.core.url_to_fs(f"s3://{name}/store/meta")
            assert fs.find(path) == [task.output().path[5:]]
            # ... and so does the multipart part size.
            with RequestCounter(s3fs_of(task.output().path)) as put:
                write_bytes(get_target(f"s3://{name}/store/big"), b"\0" * (11 * MIB))
            assert put.by_operation["UploadPart"] == 3
        config.install_store_settings()  # the section is gone: so are its options
        assert "key" not in fsspec.config.conf.get("s3", {})
    finally:
        config.install_store_settings()
    assert sorted(server.keys(name)) == ["store/big", index_key, "store/ztfluigi-store.json"]


# ------------------------------------------------------------------------------------------
# Credentials
# ------------------------------------------------------------------------------------------

KEY = "AKIAZTFLUIGIKEYID0042"
SECRET = "zTfLuIgI/SeCrEt+0123456789abcdefGHIJKLmn"
TOKEN = "FwoGZXIvYXdzEZTFLUIGITOKEN0123456789"


def _error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def test_credentials_never_appear_in_logs_errors_or_products(server, no_aws_env, caplog, capfd):
    name = server.create_bucket(f"creds-{uuid.uuid4().hex[:12]}")
    settings = {
        "s3": {"endpoint_url": server.endpoint, "region": REGION, "key": KEY, "secret": SECRET,
               "token": TOKEN},
        "ztfluigi": {"root": f"s3://{name}/store", "archive": "sim"},
        "sim": {"seed": "0", "scale": "16", "n_fields": "1"},
    }  # fmt: skip
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="luigi-interface")
    errors: list[str] = []
    try:
        with luigi_settings(settings):
            task = MasterBias(date=DEMO_DATE, ccdid=1)
            assert build(task).status == luigi.execution_summary.LuigiStatusCode.SUCCESS
            bias = task.output()
            # Failing operations: a missing bucket, then a server that refuses the key.
            for url in (f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x.fits", bias.path):
                if url == bias.path:
                    server.enforce_auth(True)
                with pytest.raises(ProductError) as failed:
                    read_fits(url)
                errors += [_error_text(failed.value), repr(failed.value)]
            with pytest.raises(PermissionError) as denied:
                bias.exists()
            errors.append(_error_text(denied.value))
            with pytest.raises(PermissionError) as denied:
                write_bytes(get_target(f"s3://{name}/store/denied"), b"x")
            errors.append(_error_text(denied.value))
            failed_run = build(MasterBias(date=DEMO_DATE, ccdid=2))
            assert failed_run.status != luigi.execution_summary.LuigiStatusCode.SUCCESS
            errors.append(failed_run.summary_text)
            server.enforce_auth(False)
            public = [repr(bias), repr(bias.fs), repr(config.s3()), config.s3().task_id,
                      str(config.s3().to_str_params(only_public=True)), repr(task)]  # fmt: skip
            header = read_fits(bias)[0].header.tostring()
            index = read_parquet(RawIndex(date=DEMO_DATE).output())
            metadata = str(index.schema.metadata)
    finally:
        server.enforce_auth(False)
        config.install_store_settings()
    out, err = capfd.readouterr()
    assert "missing product: s3://no-such-bucket" in errors[0]
    assert "access denied to product s3://" in errors[2]
    assert "Forbidden" in errors[4] and "PermissionError" in errors[5]
    client_logs = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("moto", "werkzeug"))
    )  # the server's own logs (moto) are the server's business
    assert "Sending http request" in client_logs and "Credential=***" in client_logs
    objects = [server.client().get_object(Bucket=name, Key=k)["Body"].read()
               for k in server.keys(name)]  # fmt: skip
    assert len(objects) == 13  # store identity, RawIndex, 10 raw biases, the master bias
    texts = {"client logs": client_logs, "all logs": caplog.text, "errors": "\n".join(errors),
             "reprs and parameters": "\n".join(public), "FITS header": header,
             "parquet metadata": metadata, "stdout/stderr": out + err}  # fmt: skip
    for what, text in texts.items():
        assert SECRET not in text, what
        if what != "all logs":  # moto, the server, logs the key id and token it receives
            assert KEY not in text and TOKEN not in text, what
    for blob in objects:
        assert not any(c.encode() in blob for c in (KEY, SECRET, TOKEN))
