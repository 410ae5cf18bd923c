"""The IRSA client against the IRSA-compatible server, over real HTTP on loopback."""

import base64
import configparser
import contextlib
import csv
import http.client
import io
import logging
import os
import re
import select
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from astropy.io import fits

from tests.helpers import DEMO_DATE, luigi_settings
from ztfluigi.archive import RAW_METADATA_COLUMNS, ArchiveError, get_archive
from ztfluigi.archive.irsa import (
    IRSA_URL,
    MAX_CONNECTIONS,
    IrsaArchive,
    default_credentials,
    parse_metadata_csv,
    read_ztfquery_credentials,
)
from ztfluigi.archive.server import DATA_PREFIX, LOGIN_PATH, SEARCH_PREFIX, Faults, IrsaServer
from ztfluigi.archive.sim import SimArchive
from ztfluigi.naming import RawName, parse_raw_filename, science_quadrant_relpath
from ztfluigi.sim.schedule import SimConfig
from ztfluigi.tasks.raw import fetch_raw, raw_target

REPO = Path(__file__).resolve().parents[1]
SIM = SimConfig(seed=0, scale=32, n_fields=1)
USER, PASSWORD = "alice@example.org", "Pw-7f3c9e/ZTF!&x"
NO_FILE = "/nonexistent/.ztfquery"


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch):
    """Tests decide which credentials exist (none from the machine running them)."""
    for key in ("IRSA_USERNAME", "IRSA_PASSWORD", "ZTFLUIGI_IRSA_ATTEMPTS",
                "ZTFLUIGI_IRSA_BACKOFF", "ZTFLUIGI_IRSA_TIMEOUT"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")


class RenderOnce(SimArchive):
    """The synthetic archive, each raw file rendered once for the module (servers come and go)."""

    def __init__(self, config):
        super().__init__(config)
        self.rendered = {}

    def fetch_raw(self, raw):
        if raw not in self.rendered:
            self.rendered[raw] = super().fetch_raw(raw)
        return self.rendered[raw]


@pytest.fixture(scope="module")
def sim():
    return RenderOnce(SIM)


@pytest.fixture(scope="module")
def server(sim):
    with IrsaServer(sim) as srv:
        yield srv


@pytest.fixture(scope="module")
def locked(sim):
    """A server that wants a login."""
    with IrsaServer(sim, credentials=(USER, PASSWORD)) as srv:
        yield srv


def client(url, **kwargs):
    """A client with test-sized retries (fast back-off, short timeout)."""
    options = {"attempts": 3, "backoff": 0.01, "timeout": 5.0, "ztfquery_file": NO_FILE}
    return IrsaArchive(url, **{**options, **kwargs})


def pick(sim, imgtype, ccdid=5, index=0) -> RawName:
    table = sim.night_metadata(DEMO_DATE)
    mask = pc.and_(pc.equal(table["imgtype"], imgtype), pc.equal(table["ccdid"], ccdid))
    return parse_raw_filename(table.filter(mask)["filename"][index].as_py())


def request(url, path, headers=None, method="GET"):
    """(status, headers, body) of one raw HTTP exchange."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def search(url, where, **params):
    query = urllib.parse.urlencode({"WHERE": where, "ct": "csv", **params})
    return request(url, f"{SEARCH_PREFIX}raw?{query}")


# -- metadata and files ---------------------------------------------------------------------


def test_metadata_equals_the_synthetic_archive(sim, server):
    start = len(server.requests)
    t0 = time.monotonic()
    table = client(server.url).night_metadata(DEMO_DATE)
    elapsed = time.monotonic() - t0
    expected = sim.night_metadata(DEMO_DATE)
    assert table.schema == expected.schema
    assert table.equals(expected)
    flats = expected.filter(pc.equal(expected["imgtype"], "flat"))
    assert set(flats["ledid"].to_pylist()) == {2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13}
    reqs = server.requests[start:]
    searches = [r for r in reqs if r.path.startswith(SEARCH_PREFIX)]
    reads = [r for r in reqs if r.path.startswith(DATA_PREFIX)]
    assert len(searches) == 1 and searches[0].status == 200
    # the LED comes from one ranged read of the first blocks per flat exposure (not per file)
    exposures = set(flats["filefracday"].to_pylist())
    assert len(reads) == len(exposures) == 55
    size = len(sim.fetch_raw(parse_raw_filename(reads[0].path)))
    for r in reads:
        assert (r.range, r.status, r.sent) == ("bytes=0-28799", 206, 28800)
    assert 28800 < size
    print(f"metadata: {table.num_rows} rows, 1 search + {len(reads)} ranged reads of "
          f"28800 of {size} bytes, {elapsed:.2f} s")  # fmt: skip


def test_leds_without_range_support(sim):
    """A server that ignores Range answers 200: the client stops reading after the header."""
    with IrsaServer(sim, ranges=False) as srv:
        table = client(srv.url).night_metadata(DEMO_DATE)
        reads = [r for r in srv.requests if r.path.startswith(DATA_PREFIX)]
    assert table.equals(sim.night_metadata(DEMO_DATE))
    assert len(reads) == 55 and {(r.range, r.status) for r in reads} == {("bytes=0-28799", 200)}


def test_a_long_header_is_read_in_growing_ranges(sim, server):
    raw = pick(sim, "flat")
    content = sim.fetch_raw(raw)
    expected = fits.Header.fromstring(content[:11520])  # 4 blocks: the synthetic raw header
    assert "END" not in expected and expected["ILUM_LED"] in (2, 3, 4, 5)
    start = len(server.requests)
    header = client(server.url).primary_header(raw.relpath, raw.filename, probe=2880)
    assert header.tostring() == expected.tostring()
    ranges = [r.range for r in server.requests[start:]]
    assert ranges == ["bytes=0-2879", "bytes=2880-5759", "bytes=5760-11519"]


def test_concurrent_reads_are_bounded(sim):
    """LED reads run in parallel, never more than MAX_CONNECTIONS at once per server."""
    with IrsaServer(sim, faults=Faults(stall_first=10**6, stall_seconds=0.05)) as srv:
        client(srv.url).night_metadata(DEMO_DATE)
        assert 1 < srv.max_in_flight <= MAX_CONNECTIONS == 4


@pytest.mark.parametrize("imgtype", ["bias", "flat", "object"])
def test_raw_files_are_byte_identical(sim, server, imgtype):
    raw = pick(sim, imgtype, index=3 if imgtype != "object" else 0)
    assert client(server.url).fetch_raw(raw) == sim.fetch_raw(raw)


def test_science_header_and_mask(sim, server):
    raw = pick(sim, "object")
    archive = client(server.url)
    for qid in (1, 4):
        expected = sim.science_header(raw, qid)
        assert archive.science_header(raw, qid).tostring() == expected.tostring()
        header, mask = archive.science_mask(raw, qid)
        ref_header, ref_mask = sim.science_mask(raw, qid)
        assert header.tostring() == ref_header.tostring()
        assert mask.dtype == np.int16
        np.testing.assert_array_equal(mask, ref_mask)
    # the header came from a ranged read; the whole sciimg is served too, with NaN pixels
    path = DATA_PREFIX + science_quadrant_relpath(raw, 1, "sciimg.fits")
    assert [r.status for r in server.requests if r.path == path] == [206]
    status, _, body = request(server.url, path)
    assert status == 200
    with fits.open(io.BytesIO(body)) as hdul:
        assert hdul[0].data.shape == ref_mask.shape and np.isnan(hdul[0].data).all()
    with pytest.raises(ArchiveError, match="not found") as err:
        archive.science_header(pick(sim, "bias"), 1)  # IPAC has no science products of a bias
    assert "\n" not in str(err.value)


def test_range_requests(sim, server):
    raw = pick(sim, "bias")
    content = sim.fetch_raw(raw)
    path = DATA_PREFIX + raw.relpath
    size = len(content)
    status, headers, body = request(server.url, path, {"Range": "bytes=100-199"})
    assert (status, headers["Content-Range"], body) == (206, f"bytes 100-199/{size}",
                                                        content[100:200])  # fmt: skip
    status, _, body = request(server.url, path, {"Range": "bytes=-2880"})
    assert status == 206 and body == content[-2880:]
    status, headers, _ = request(server.url, path, {"Range": f"bytes={size}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    status, _, body = request(server.url, path, {"Range": "bytes=0-1,5-6"})  # multi: whole file
    assert status == 200 and body == content
    status, headers, body = request(server.url, path, method="HEAD")
    assert status == 200 and int(headers["Content-Length"]) == size and body == b""
    assert headers["Accept-Ranges"] == "bytes"
    status, _, body = request(server.url, DATA_PREFIX + raw.relpath.replace("_c05_", "_c17_"))
    assert status == 404 and body.startswith(b"<?xml")
    wrong_dir = DATA_PREFIX + raw.relpath.replace("/0331/", "/0401/")
    assert request(server.url, wrong_dir)[0] == 404


def test_search_answers_the_irsa_raw_columns(sim, server):
    where = "obsjd BETWEEN 2458573.5 AND 2458574.5 AND ccdid IN (1,2) AND imgtype='bias'"
    status, headers, body = search(server.url, where)
    assert status == 200 and headers["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert list(rows[0]) == list(RAW_METADATA_COLUMNS)  # IRSA's columns: no ledid
    expected = sim.night_metadata(DEMO_DATE)
    in_ccds = pc.is_in(expected["ccdid"], value_set=pa.array([1, 2]))
    mask = pc.and_(pc.equal(expected["imgtype"], "bias"), in_ccds)
    assert len(rows) == expected.filter(mask).num_rows == 40
    assert [float(r["obsjd"]) for r in rows] == expected.filter(mask)["obsjd"].to_pylist()
    table = parse_metadata_csv(body)
    assert table.column_names == list(RAW_METADATA_COLUMNS) and table.num_rows == 40
    status, _, body = search(server.url, "nid = 819 AND imgtype LIKE 'fl%' AND ccdid = 3",
                             COLUMNS="ccdid,obsjd")  # fmt: skip
    lines = body.decode().splitlines()
    assert status == 200 and lines[0] == "ccdid,obsjd" and len(lines) == 1 + 55


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"WHERE": "ccdid = 1"}, 400, "WHERE must bound the date"),
        ({"WHERE": "nid BETWEEN 800 AND 830"}, 400, "at most 7"),
        ({"WHERE": "nid = 819 AND ledid = 2"}, 400, "unknown column"),
        ({"WHERE": "nid = 819", "COLUMNS": "ccdid,ledid"}, 400, "unknown column(s) ledid"),
        ({"WHERE": "nid = 819", "ct": "votable"}, 400, "ct=csv"),
        ({"WHERE": "nid = 819 AND (ccdid = 1"}, 400, "expected )"),
        ({}, 400, "WHERE clause"),
    ],
)
def test_bad_searches_are_irsa_like_errors(server, params, status, message):
    query = urllib.parse.urlencode({"ct": "csv", **params})
    got, headers, body = request(server.url, f"{SEARCH_PREFIX}raw?{query}")
    assert got == status and headers["Content-Type"] == "text/xml"
    assert body.startswith(b"<?xml") and message in body.decode()
    with pytest.raises(ArchiveError, match="the server answered an error"):
        parse_metadata_csv(body)


def test_only_the_raw_table_is_searchable(server):
    query = urllib.parse.urlencode({"WHERE": "nid = 819", "ct": "csv"})
    assert request(server.url, f"{SEARCH_PREFIX}sci?{query}")[0] == 404


# -- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("faults", "requests", "kind"),
    [
        (Faults(fail_first=2), [503, 503, 200], "error"),
        (Faults(truncate_first=1), [200, 200], "truncate"),
        (Faults(short_first=1), [200, 200], "short"),
        (Faults(corrupt_first=2), [200, 200, 200], "corrupt"),
    ],
    ids=["5xx", "truncated", "short-content-length", "flipped-byte"],
)
def test_transient_faults_are_retried(sim, caplog, faults, requests, kind):
    raw = pick(sim, "bias")
    path = DATA_PREFIX + raw.relpath
    with IrsaServer(sim, faults=faults) as srv, caplog.at_level(logging.WARNING):
        assert client(srv.url).fetch_raw(raw) == sim.fetch_raw(raw)
        records = [r for r in srv.requests if r.path == path]
    assert [r.status for r in records] == requests
    assert records[0].fault == kind and records[-1].fault == ""
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == len(requests) - 1 and raw.filename in retries[0]


def test_fault_draws_are_reproducible():
    draws = [Faults(fail_rate=0.5, seed=3).error_for("/ibe/x", k) for k in range(64)]
    assert draws == [Faults(fail_rate=0.5, seed=3).error_for("/ibe/x", k) for k in range(64)]
    assert 16 < sum(draws) < 48
    assert draws != [Faults(fail_rate=0.5, seed=4).error_for("/ibe/x", k) for k in range(64)]
    assert Faults(fail_first=2).error_for("/p", 1) and not Faults(fail_first=2).error_for("/p", 2)


def test_rendered_files_are_cached_within_a_bound(sim):
    raws = [pick(sim, "bias", index=i) for i in range(3)]
    size = len(sim.fetch_raw(raws[0]))
    with IrsaServer(sim, cache_bytes=int(2.5 * size)) as srv:
        archive = client(srv.url)
        for raw in [*raws, raws[2], raws[0]]:
            assert archive.fetch_raw(raw) == sim.fetch_raw(raw)
        # room for two files: the third evicts the first, which is rendered again
        assert srv.cache.renders == 4


def test_a_stall_beyond_the_timeout_is_retried(sim):
    raw = pick(sim, "flat")
    with IrsaServer(sim, faults=Faults(stall_first=1, stall_seconds=3.0)) as srv:
        t0 = time.monotonic()
        assert client(srv.url, timeout=0.3).fetch_raw(raw) == sim.fetch_raw(raw)
        elapsed = time.monotonic() - t0
        assert srv.request_count(DATA_PREFIX + raw.relpath) == 2
    assert elapsed < 2.5  # did not wait for the stalled body
    print(f"stall: recovered in {elapsed:.2f} s (timeout 0.3 s, stall 3 s)")


@pytest.mark.parametrize(
    ("faults", "timeout", "reason"),
    [
        (Faults(fail_first=10**6, fail_status=502), 5.0, "HTTP 502 Bad Gateway"),
        (Faults(fail_rate=1.0, seed=7), 5.0, "HTTP 503 Service Unavailable"),
        (Faults(truncate_first=10**6), 5.0, "truncated body"),
        (Faults(short_first=10**6), 5.0, "is truncated"),
        (Faults(corrupt_first=10**6), 5.0, "DATASUM mismatch"),
        (Faults(stall_first=10**6, stall_seconds=1.0), 0.2, "timed out"),
    ],
    ids=["502", "rate", "truncated", "short", "corrupt", "stall"],
)
def test_persistent_faults_become_one_line_errors(sim, faults, timeout, reason):
    raw = pick(sim, "object")
    with IrsaServer(sim, faults=faults) as srv:
        with pytest.raises(ArchiveError) as err:
            client(srv.url, timeout=timeout).fetch_raw(raw)
        assert srv.request_count(DATA_PREFIX + raw.relpath) == 3
    message = str(err.value)
    assert message.startswith(f"{raw.filename}: failed after 3 attempts from {srv.url}")
    assert reason in message and "\n" not in message


def test_a_failed_download_leaves_no_file(sim, tmp_path, monkeypatch):
    """Through the task layer's fetch: the archive from luigi.cfg, retries from the environment."""
    raw = pick(sim, "bias")
    faults = Faults(fail_first=10**6, prefix=DATA_PREFIX + raw.relpath)
    monkeypatch.setenv("ZTFLUIGI_IRSA_ATTEMPTS", "4")
    monkeypatch.setenv("ZTFLUIGI_IRSA_BACKOFF", "0.01")
    store = tmp_path / "store"
    with IrsaServer(sim, faults=faults) as srv, luigi_settings(
        {"ztfluigi": {"root": str(store), "archive": srv.url}}
    ):  # fmt: skip
        with pytest.raises(ArchiveError) as err:
            fetch_raw(raw, raw_target(raw))
        assert not raw_target(raw).exists()
        assert srv.request_count(DATA_PREFIX + raw.relpath) == 4
        other = pick(sim, "bias", index=1)  # a path without faults goes through
        fetch_raw(other, raw_target(other))
    assert raw.filename in str(err.value) and "4 attempts" in str(err.value)
    assert [p.name for p in store.rglob("*") if p.is_file()] == [other.filename]


# -- login ----------------------------------------------------------------------------------


def test_anonymous_requests_get_401(sim, locked):
    raw = pick(sim, "bias")
    status, headers, _ = request(locked.url, DATA_PREFIX + raw.relpath)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    assert search(locked.url, "nid = 819")[0] == 401
    with pytest.raises(ArchiveError) as err:
        client(locked.url).fetch_raw(raw)
    message = str(err.value)
    assert message.startswith(raw.filename) and "HTTP 401" in message and "\n" not in message
    assert "IRSA_USERNAME" in message  # says how to log in


@pytest.mark.parametrize("auth", ["cookie", "basic"])
def test_login(sim, locked, auth):
    raw = pick(sim, "object")
    start = len(locked.requests)
    archive = client(locked.url, username=USER, password=PASSWORD, auth=auth)
    assert archive.fetch_raw(raw) == sim.fetch_raw(raw)
    assert archive.science_header(raw, 2)["QID"] == 2
    logins = [r for r in locked.requests[start:] if r.path == LOGIN_PATH]
    assert len(logins) == (1 if auth == "cookie" else 0)
    if auth == "cookie":  # the session expires: one new login, then the download goes through
        locked.expire_sessions()
        assert archive.fetch_raw(raw) == sim.fetch_raw(raw)
        assert len([r for r in locked.requests[start:] if r.path == LOGIN_PATH]) == 2


@pytest.mark.parametrize(("auth", "message"), [("cookie", "login to"), ("basic", "refused")])
def test_wrong_password_is_refused(sim, locked, auth, message):
    archive = client(locked.url, username=USER, password="not-it", auth=auth)
    with pytest.raises(ArchiveError, match=message) as err:
        archive.fetch_raw(pick(sim, "bias"))
    assert "HTTP 401" in str(err.value) and "not-it" not in str(err.value)


def test_ztfquery_credentials_file(sim, locked, tmp_path):
    """~/.ztfquery as ztfquery.io.set_account writes it: [irsa] with str(base64 bytes)."""
    config = configparser.ConfigParser()
    config["irsa"] = {"username": USER, "password": base64.b64encode(PASSWORD.encode())}
    path = tmp_path / ".ztfquery"
    with open(path, "w") as f:
        config.write(f)
    assert "password = b'" in path.read_text()
    creds = read_ztfquery_credentials(str(path))
    assert (creds.username, creds.password) == (USER, PASSWORD)
    raw = pick(sim, "flat")
    assert client(locked.url, ztfquery_file=str(path)).fetch_raw(raw) == sim.fetch_raw(raw)


def test_environment_credentials_go_to_irsa_and_loopback_only(monkeypatch):
    monkeypatch.setenv("IRSA_USERNAME", USER)
    monkeypatch.setenv("IRSA_PASSWORD", PASSWORD)
    for host in ("irsa.ipac.caltech.edu", "127.0.0.1", "localhost", "::1"):
        assert default_credentials(host, NO_FILE).password == PASSWORD
    assert default_credentials("mirror.example.org", NO_FILE) is None


def test_credentials_never_appear_in_logs_errors_or_repr(sim, locked, caplog, capfd,
                                                         monkeypatch):  # fmt: skip
    monkeypatch.setenv("IRSA_USERNAME", USER)
    monkeypatch.setenv("IRSA_PASSWORD", PASSWORD)
    caplog.set_level(logging.DEBUG)
    texts, raw = [], pick(sim, "object")
    archive = IrsaArchive(locked.url, attempts=2, backoff=0.01, timeout=5)
    assert archive.fetch_raw(raw) == sim.fetch_raw(raw)
    archive.science_mask(raw, 3)
    failing = [
        lambda: archive.fetch_raw(RawName("20190331999999", 0, "bi", 1, "b")),  # 404
        lambda: client(locked.url, username=USER, password=PASSWORD + "x").fetch_raw(raw),
        lambda: client(locked.url, username=USER, password=PASSWORD + "x", auth="basic")
        .fetch_raw(raw),
    ]  # fmt: skip
    with IrsaServer(sim, credentials=(USER, PASSWORD), faults=Faults(fail_first=10**6)) as bad:
        failing.append(lambda: IrsaArchive(bad.url, attempts=2, backoff=0.01).fetch_raw(raw))
        failing.append(lambda: IrsaArchive(bad.url, attempts=2, backoff=0.01,
                                           auth="basic").fetch_raw(raw))  # fmt: skip
        for action in failing:
            with pytest.raises(ArchiveError) as err:
                action()
            texts += [str(err.value), repr(err.value)]
        texts.append(repr(bad.requests))
    texts += [repr(archive), archive.name, str(archive._credentials), repr(vars(archive))]
    texts += [repr(locked.requests), caplog.text, *capfd.readouterr()]
    assert "login to" in caplog.text and "retrying" in caplog.text  # DEBUG and WARNING captured
    secrets = {
        PASSWORD, PASSWORD + "x", urllib.parse.quote(PASSWORD), urllib.parse.quote_plus(PASSWORD),
        base64.b64encode(PASSWORD.encode()).decode(),
        base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    }  # fmt: skip
    for secret in secrets:
        for text in texts:
            assert secret not in text


# -- configuration and command line ---------------------------------------------------------


def test_get_archive(server):
    archive = get_archive(server.url)
    assert isinstance(archive, IrsaArchive) and archive.name == server.url
    assert get_archive("irsa").name == IRSA_URL == "https://irsa.ipac.caltech.edu"
    port = urllib.parse.urlsplit(server.url).port
    with_user = get_archive(f"http://bob:hunter2@127.0.0.1:{port}/")
    assert with_user.name == server.url and "hunter2" not in repr(with_user) + with_user.name
    with pytest.raises(ArchiveError, match="unknown archive"):
        get_archive("ftp://example.org")


def test_cli_serves_the_synthetic_archive():
    cmd = [sys.executable, "-m", "ztfluigi.cli", "archive", "serve", "--port", "0",
           "--scale", "32", "--n-fields", "1", "--fail-first", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True) as proc:
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready, "the server did not start within 60 s"
            line = proc.stdout.readline()
            url = re.search(r"http://127\.0\.0\.1:\d+", line)[0]
            assert "seed=0, scale=32, n_fields=1" in line
            where = "nid = 819 AND imgtype = 'bias' AND ccdid = 1"
            assert search(url, where)[0] == 503  # --fail-first 1: the first request per path
            status, _, body = search(url, where)
            assert status == 200 and len(body.decode().splitlines()) == 1 + 20
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
