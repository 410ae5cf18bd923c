"""Gaia DR3 from a remote HATS store: cones read over HTTP with range requests, from a catalogue
root or an LSDB/HATS collection root (``collection.properties``), as from public HATS servers.

The server is a loopback static file server honouring ``Range`` (as data.lsdb.io does); it binds
to 127.0.0.1 on a free port and stops with the test.
"""

from __future__ import annotations

import contextlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ztfluigi import refcat
from ztfluigi.sim import gaia

RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class StaticRanges(BaseHTTPRequestHandler):
    """GET/HEAD of files under the server's ``root``, with single byte ranges."""

    def _file(self) -> Path | None:
        path = (self.server.root / self.path.split("?")[0].lstrip("/")).resolve()
        return path if path.is_file() and path.is_relative_to(self.server.root) else None

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        path = self._file()
        header = self.headers.get("Range")
        self.server.log.append((self.command, self.path, header))
        if path is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = path.read_bytes()
        match = RANGE.fullmatch(header or "")
        if match:
            start = int(match.group(1))
            stop = int(match.group(2)) + 1 if match.group(2) else len(data)
            chunk = data[start:stop]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{start + len(chunk) - 1}/{len(data)}")
        else:
            chunk = data
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if body:
            self.wfile.write(chunk)

    def log_message(self, *args: object) -> None:  # quiet
        pass


@contextlib.contextmanager
def serve(root: Path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), StaticRanges)
    server.root, server.log = root.resolve(), []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.log
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """A synthetic Gaia-DR3-like HATS catalogue inside a collection directory."""
    root = tmp_path_factory.mktemp("hats") / "gaia_dr3"
    pixels = gaia.pixels_for_cone(30.0, 20.0, 0.8)
    gaia.write_sim_catalog(str(root / "gaia"), seed=3, pixels=sorted(int(p) for p in pixels))
    (root / "collection.properties").write_text(
        "obs_collection=gaia_dr3\nhats_primary_table_url=gaia\n")
    return root


@pytest.mark.parametrize("entry", ["gaia", ""])
def test_cones_over_http_equal_local_cones_and_use_range_requests(collection, entry):
    local = refcat.RefCatalog(str(collection / "gaia")).cone(30.0, 20.0, 0.5)
    assert local.num_rows > 100
    with serve(collection.parent) as (base, log):
        url = f"{base}/gaia_dr3/{entry}".rstrip("/")
        remote = refcat.RefCatalog(url).cone(30.0, 20.0, 0.5)
        assert refcat.resolve_catalog_url(url).endswith("/gaia_dr3/gaia")
    assert same_rows(remote, local)
    read = {path for method, path, _ in log if path.endswith(".parquet") and method == "GET"}
    ranged = {path for method, path, header in log if header and path.endswith(".parquet")}
    assert read and ranged == read  # footer and row groups by range requests


def same_rows(a: pa.Table, b: pa.Table) -> bool:
    """Equal schemas and values, NaN equal to NaN (2-parameter Gaia solutions have NaN)."""
    return a.schema.equals(b.schema) and all(
        np.array_equal(x := a[n].to_numpy(zero_copy_only=False),
                       b[n].to_numpy(zero_copy_only=False), equal_nan=x.dtype.kind == "f")
        for n in a.column_names)  # fmt: skip


def test_a_url_without_catalogue_is_named(tmp_path):
    with serve(tmp_path) as (base, _), pytest.raises(FileNotFoundError, match="no HATS catalogue"):
        refcat.resolve_catalog_url(f"{base}/nothing")
