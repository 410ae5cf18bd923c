"""An IRSA-compatible HTTP server in front of an :class:`~ztfluigi.archive.Archive` (e.g. the sim).

It speaks the part of IRSA the pipeline (and ztfquery) uses, with IRSA's URL layout
(ztf_formats.md §3):

- ``GET /ibe/search/ztf/products/raw?WHERE=…&ct=csv[&COLUMNS=a,b]``: the raw metadata table
  (``RAW_METADATA_COLUMNS``, no ``ledid``: IRSA has none) as CSV. The synthetic archive makes
  nights on demand, so the WHERE must bound the date through ``obsjd``, ``filefracday``,
  ``obsdate`` or ``nid`` (at most ``max_nights`` UT dates), else the answer is a 400 with an XML
  error body, as IBE answers bad queries.
- ``GET /ibe/data/ztf/products/raw/YYYY/MMDD/ffffff/ztf_….fits.fz``: raw bytes, with
  ``Content-Length`` and single-range ``Range`` requests (206).
- ``GET /ibe/data/ztf/products/sci/YYYY/MMDD/ffffff/ztf_…_qQ_{sciimg,mskimg}.fits``: the IPAC
  science header (its data unit is NaN: the synthetic archive has IPAC's headers, not its pixels)
  and the mask (the archive's :meth:`~ztfluigi.archive.Archive.fetch_mask`), with ranges as for
  raw files. ``gzip_masks=True`` serves masks as ``…_mskimg.fits.gz`` only (as a gzipped mirror
  does; deterministic gzip), the plain name then answering 404.
- ``GET /account/signon/login.do?josso_cmd=login&josso_username=U&josso_password=P`` sets the
  ``JOSSO_SESSIONID`` cookie; HTTP basic auth is accepted too. With ``credentials`` the search and
  data endpoints answer 401 to anonymous requests.

``ranges=False`` makes the server ignore ``Range`` (as some servers do), to test clients' fallback.

Faults for testing clients are deterministic (:class:`Faults`): counted per path, or drawn from a
seeded generator keyed by (path, request number). Besides transport faults they damage content
as IRSA answers could be damaged: a flipped byte in a FITS primary header, a flipped mask pixel.
Rendered files are kept in a byte-bounded LRU.
Query strings of login requests are never logged.
"""

from __future__ import annotations

import base64
import collections
import csv
import datetime as dt
import hashlib
import hmac
import io
import logging
import re
import secrets
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from astropy.io import fits

from ztfluigi import ipac, naming
from ztfluigi.archive import RAW_METADATA_COLUMNS, Archive, ArchiveError, query
from ztfluigi.naming import InvalidName, RawName

logger = logging.getLogger(__name__)

SEARCH_PREFIX = "/ibe/search/ztf/products/"
DATA_PREFIX = "/ibe/data/ztf/products/"
LOGIN_PATH = "/account/signon/login.do"
SESSION_COOKIE = "JOSSO_SESSIONID"
_SCI_RE = re.compile(
    r"^sci/(?P<y>\d{4})/(?P<md>\d{4})/(?P<frac>\d{6})/ztf_(?P<ffd>\d{14})_(?P<field>\d{6})"
    r"_(?P<filt>zg|zr|zi)_c(?P<ccd>\d{2})_(?P<t>o)_q(?P<qid>[1-4])_(?P<suffix>sciimg|mskimg)"
    r"\.fits(?P<gz>\.gz)?$"
)
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_PASSWORD_RE = re.compile(r"(josso_password=)[^&\s'\"]*", re.IGNORECASE)


@dataclass(frozen=True)
class Faults:
    """Deterministic misbehaviour of the server, applied to paths starting with ``prefix``.

    Request ``k`` (0-based, counted per path) gets: an error status if ``k < fail_first`` or,
    after that, with probability ``fail_rate`` (seeded by ``seed``, path and ``k``); a stall of
    ``stall_seconds`` between headers and body if ``k < stall_first``; a body cut at half its
    announced length and the connection closed if ``k < truncate_first``; a ``Content-Length``
    (and body) one FITS block shorter than the file if ``k < short_first``; one flipped byte in
    the middle of a body of the right length if ``k < corrupt_first``. Content damage of FITS
    products (before a range is cut, inside the gzip stream of a ``.gz``): one byte of the primary
    header flipped (XOR 0xFF: no longer ASCII) in the middle card's value if
    ``k < corrupt_header_first``; the high byte of the middle pixel of a mask flipped (bits
    13-15 set: outside IPAC's bits) if ``k < corrupt_pixel_first``.
    """

    fail_first: int = 0
    fail_rate: float = 0.0
    fail_status: int = 503
    stall_first: int = 0
    stall_seconds: float = 0.0
    truncate_first: int = 0
    short_first: int = 0
    corrupt_first: int = 0
    corrupt_header_first: int = 0
    corrupt_pixel_first: int = 0
    seed: int = 0
    prefix: str = "/ibe/"

    def error_for(self, path: str, k: int) -> bool:
        """Whether request ``k`` of ``path`` fails with ``fail_status``."""
        if k < self.fail_first:
            return True
        if self.fail_rate <= 0:
            return False
        digest = hashlib.sha256(f"{self.seed}|{path}|{k}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.fail_rate


@dataclass(frozen=True)
class RequestRecord:
    """One answered request, as tests inspect them (no query string for login requests)."""

    method: str
    path: str
    range: str | None
    status: int
    content_length: int | None
    sent: int  #: body bytes of the answer (recorded before they are written)
    fault: str = ""


class _ByteLRU:
    """A least-recently-used cache of rendered files bounded by their total size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._data: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self.renders = 0

    def get(self, key: str, render: Callable[[], bytes]) -> bytes:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one render per key even when clients ask in parallel
            with self._lock:
                if key in self._data:
                    return self._data[key]
            try:
                content = render()
            except BaseException:
                with self._lock:
                    self._key_locks.pop(key, None)
                raise
            with self._lock:
                self.renders += 1
                self._key_locks.pop(key, None)
                if len(content) <= self.max_bytes:
                    self._data[key] = content
                    self._size += len(content)
                    while self._size > self.max_bytes:
                        _, old = self._data.popitem(last=False)
                        self._size -= len(old)
            return content


def _redact(text: str) -> str:
    """A log line without login passwords (a malformed request line is logged verbatim)."""
    return _PASSWORD_RE.sub(r"\1***", text)


def _xml_error(message: str) -> bytes:
    """An IBE-like XML error document (clients such as ztfquery look for ``<?xml``)."""
    text = message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<error><message>{text}</message></error>\n'
    ).encode()


def _fits_bytes(header: fits.Header, data: np.ndarray) -> bytes:
    """A single-HDU FITS file keeping every card of ``header`` (:func:`ipac.image_bytes`)."""
    return ipac.image_bytes(header, data)


def _damage(content: bytes, kind: str) -> bytes:
    """``content`` (FITS, or gzip of FITS) with its primary header (``kind='header'``) or the
    middle pixel of its integer image (``'pixel'``) damaged as :class:`Faults` describes."""
    if content[:2] == b"\x1f\x8b":
        return ipac.gzip_bytes(_damage(ipac.gunzip_bytes(content, "damaged file"), kind))
    out = bytearray(content)
    end = ipac.header_end(content)
    if end is None:
        return content
    if kind == "header":
        out[(end // ipac.CARD // 2) * ipac.CARD + 20] ^= 0xFF  # value field of the middle card
        return bytes(out)
    header = fits.Header.fromstring(content[: end - ipac.CARD].decode("ascii"))
    if header.get("BITPIX") not in (16, 32) or header.get("NAXIS") != 2:
        return content
    n = header["NAXIS1"] * header["NAXIS2"]
    out[ipac.header_size(end) + abs(header["BITPIX"]) // 8 * (n // 2)] ^= 0xFF  # high byte
    return bytes(out)


def _csv_value(value: object) -> str:
    """A CSV cell: floats as their shortest exact repr, so they parse back to the same value."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


class _HTTPServer(ThreadingHTTPServer):
    """One thread per connection; clients that hang up are logged, not printed as tracebacks."""

    daemon_threads = True
    block_on_close = False  # a stalled response must not delay stop()

    def handle_error(self, request: object, client_address: tuple) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            logger.debug("%s: client went away (%s)", client_address[0], type(exc).__name__)
        else:
            logger.exception("error while serving %s", client_address[0])


class IrsaServer:
    """Serve ``archive`` through IRSA's URLs on ``host:port`` (port 0: any free port)."""

    def __init__(
        self,
        archive: Archive,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        credentials: tuple[str, str] | None = None,
        faults: Faults | None = None,
        cache_bytes: int = 256 * 2**20,
        max_nights: int = 7,
        ranges: bool = True,
        gzip_masks: bool = False,
    ) -> None:
        self.archive = archive
        self.gzip_masks = gzip_masks  #: serve masks as ``…_mskimg.fits.gz`` (only)
        self.faults = faults or Faults()
        self.max_nights = max_nights
        self.ranges = ranges  #: False: ignore Range headers (answer 200 with the whole file)
        self.in_flight = 0
        self.max_in_flight = 0  #: most requests handled at once (clients' concurrency bound)
        self.requests: list[RequestRecord] = []
        self.cache = _ByteLRU(cache_bytes)
        self._credentials = credentials
        self._sessions: set[str] = set()
        self._counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._metadata: collections.OrderedDict[dt.date, list[dict]] = collections.OrderedDict()
        self._thread: threading.Thread | None = None
        handler = type("_Handler", (_Handler,), {"irsa": self})
        self.httpd = _HTTPServer((host, port), handler)

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. ``http://127.0.0.1:40123``."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> IrsaServer:
        """Serve from a background thread; returns self."""
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name=f"irsa-server-{self.url}", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` (or KeyboardInterrupt)."""
        self.httpd.serve_forever()

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> IrsaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- bookkeeping --------------------------------------------------------------------------

    def next_index(self, path: str) -> int:
        """The 0-based number of this request among those for ``path``."""
        with self._lock:
            k = self._counts[path]
            self._counts[path] += 1
            return k

    def request_count(self, path: str) -> int:
        """How many requests for ``path`` have arrived (answered or not)."""
        with self._lock:
            return self._counts[path]

    def expire_sessions(self) -> None:
        """Forget every login session (as an IRSA session timing out)."""
        with self._lock:
            self._sessions.clear()

    def authorised(self, cookie_header: str | None, authorization: str | None) -> bool:
        """Whether a request carries a valid session cookie or basic credentials."""
        if self._credentials is None:
            return True
        if cookie_header:
            for part in cookie_header.split(";"):
                name, _, value = part.strip().partition("=")
                if name == SESSION_COOKIE and value in self._sessions:
                    return True
        if authorization and authorization[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return self.check(user, password)
        return False

    def check(self, user: str, password: str) -> bool:
        """Constant-time credential check."""
        if self._credentials is None:
            return True
        ok_user = hmac.compare_digest(user.encode(), self._credentials[0].encode())
        ok_pass = hmac.compare_digest(password.encode(), self._credentials[1].encode())
        return ok_user and ok_pass

    @property
    def requires_login(self) -> bool:
        """Whether anonymous search and data requests are refused."""
        return self._credentials is not None

    def new_session(self) -> str:
        """A new JOSSO session token."""
        token = secrets.token_hex(16)
        with self._lock:
            self._sessions.add(token)
        return token

    # -- content ------------------------------------------------------------------------------

    def night_rows(self, date: dt.date) -> list[dict]:
        """The archive's metadata rows of a UT date, IRSA columns only (cached, 16 nights)."""
        with self._lock:
            if date in self._metadata:
                self._metadata.move_to_end(date)
                return self._metadata[date]
        table = self.archive.night_metadata(date).select(list(RAW_METADATA_COLUMNS))
        rows = table.to_pylist()
        with self._lock:
            self._metadata[date] = rows
            while len(self._metadata) > 16:
                self._metadata.popitem(last=False)
        return rows

    def search(self, params: dict[str, str]) -> bytes:
        """CSV answer of an IBE search of the raw table; QueryError for a bad request."""
        fmt = params.get("ct", "csv").lower()
        if fmt not in ("csv", "tsv"):
            raise query.QueryError(f"ct={fmt}: this server answers ct=csv or ct=tsv only")
        if "pos" in params:
            raise query.QueryError("POS is not supported for the raw table: use WHERE")
        columns = list(RAW_METADATA_COLUMNS)
        if params.get("columns"):
            columns = [c.strip().lower() for c in params["columns"].split(",") if c.strip()]
            unknown = [c for c in columns if c not in RAW_METADATA_COLUMNS]
            if unknown:
                raise query.QueryError(f"COLUMNS: unknown column(s) {', '.join(unknown)}")
        where = params.get("where", "")
        if not where.strip():
            raise query.QueryError(
                "a WHERE clause bounding obsjd, filefracday, obsdate or nid is required"
            )
        node = query.parse_where(where, RAW_METADATA_COLUMNS)
        span = query.night_range(node)
        if span is None:
            raise query.QueryError(
                "WHERE must bound the date (obsjd, filefracday, obsdate or "
                "nid): the synthetic archive generates nights on demand"
            )
        first, last = span
        n = (last - first).days + 1
        if n > self.max_nights:
            raise query.QueryError(
                f"WHERE spans {n} nights ({first} to {last}); at most {self.max_nights} per query"
            )
        out = io.StringIO()
        writer = csv.writer(out, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
        writer.writerow(columns)
        for i in range(max(n, 0)):
            for row in self.night_rows(first + dt.timedelta(days=i)):
                if query.evaluate(node, row):
                    writer.writerow([_csv_value(row[c]) for c in columns])
        return out.getvalue().encode()

    def product(self, relpath: str) -> bytes:
        """Bytes of a product under ``/ibe/data/ztf/products/``; LookupError if there is none."""
        if relpath.startswith("raw/"):
            try:
                raw = naming.parse_raw_filename(relpath)
            except InvalidName:
                raise LookupError(relpath) from None
            if raw.relpath != relpath:
                raise LookupError(relpath)
            return self.cache.get(relpath, lambda: self.archive.fetch_raw(raw))
        m = _SCI_RE.match(relpath)
        if m is None:
            raise LookupError(relpath)
        raw = RawName(m["ffd"], int(m["field"]), m["filt"], int(m["ccd"]), m["t"])
        qid = int(m["qid"])
        suffix = f"{m['suffix']}.fits{m['gz'] or ''}"
        if naming.science_quadrant_relpath(raw, qid, suffix) != relpath:
            raise LookupError(relpath)
        if not 1 <= raw.ccdid <= 16:
            raise LookupError(relpath)
        if m["suffix"] == "sciimg":
            if m["gz"]:
                raise LookupError(relpath)

            def sciimg() -> bytes:
                mask = ipac.read_mask(self._mask(raw, qid), relpath)
                header = self.archive.science_header(raw, qid)
                return ipac.image_bytes(header, np.full(mask.shape, np.nan, np.float32))

            return self.cache.get(relpath, sciimg)
        if bool(m["gz"]) != self.gzip_masks:
            raise LookupError(relpath)
        if self.gzip_masks:
            return self.cache.get(relpath, lambda: ipac.gzip_bytes(self._mask(raw, qid)))
        return self._mask(raw, qid)

    def _mask(self, raw: RawName, qid: int) -> bytes:
        """The archive's mask file of a quadrant, uncompressed (cached)."""
        relpath = naming.science_quadrant_relpath(raw, qid, "mskimg.fits")

        def render() -> bytes:
            mask_file = self.archive.fetch_mask(raw, qid)
            if mask_file.relpath.endswith(".gz"):
                return ipac.gunzip_bytes(mask_file.content, mask_file.name)
            return mask_file.content

        return self.cache.get(relpath, render)


class _Handler(BaseHTTPRequestHandler):
    """Request handler; ``irsa`` is the :class:`IrsaServer` (set on a per-server subclass)."""

    irsa: IrsaServer
    protocol_version = "HTTP/1.1"
    server_version = "ztfluigi-irsa/1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        logger.debug("%s %s", self.address_string(), _redact(format % args))

    def log_request(self, code: object = "-", size: object = "-") -> None:
        path = self.path.split("?", 1)[0] if self.path.startswith(LOGIN_PATH) else self.path
        logger.debug("%s %s %s", self.command, _redact(path), code)

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch(head=True)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch(head=False)

    # -- helpers ------------------------------------------------------------------------------

    def _record(
        self, path: str, status: int, length: int | None, sent: int, fault: str = ""
    ) -> None:
        self.irsa.requests.append(
            RequestRecord(
                self.command, path, self.headers.get("Range"), status, length, sent, fault
            )
        )

    def _send(
        self,
        status: int,
        body: bytes,
        path: str,
        content_type: str = "text/plain",
        extra: dict[str, str] | None = None,
        head: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Date", formatdate(usegmt=True))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self._record(path, status, len(body), 0 if head else len(body))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _dispatch(self, head: bool) -> None:
        with self.irsa._lock:
            self.irsa.in_flight += 1
            self.irsa.max_in_flight = max(self.irsa.max_in_flight, self.irsa.in_flight)
        try:
            self._answer(head)
        finally:
            with self.irsa._lock:
                self.irsa.in_flight -= 1

    def _answer(self, head: bool) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        params = {k.lower(): v for k, v in urllib.parse.parse_qsl(url.query)}
        try:
            if path == LOGIN_PATH:
                self._login(params, head)
                return
            if not (path.startswith(SEARCH_PREFIX) or path.startswith(DATA_PREFIX)):
                self._send(404, _xml_error(f"{path}: not found"), path, "text/xml", head=head)
                return
            if not self.irsa.authorised(
                self.headers.get("Cookie"), self.headers.get("Authorization")
            ):
                self._send(
                    401,
                    _xml_error("authentication required"),
                    path,
                    "text/xml",
                    {"WWW-Authenticate": 'Basic realm="IRSA"'},
                    head=head,
                )
                return
            k = self.irsa.next_index(path)
            if not path.startswith(self.irsa.faults.prefix):
                k = -1  # faults apply to this path prefix only
            if k >= 0 and self.irsa.faults.error_for(path, k):
                status = self.irsa.faults.fail_status
                body = f"{HTTPStatus(status).phrase} (injected fault)\n".encode()
                self._record(path, status, len(body), 0 if head else len(body), "error")
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)
                return
            if path.startswith(SEARCH_PREFIX):
                self._search(path, params, k, head)
            else:
                self._data(path, k, head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (e.g. it timed out)

    def _login(self, params: dict[str, str], head: bool) -> None:
        if params.get("josso_cmd") != "login":
            self._send(400, b"josso_cmd=login expected\n", LOGIN_PATH, head=head)
            return
        user = params.get("josso_username", "")
        password = params.get("josso_password", "")
        if self.irsa.requires_login and not self.irsa.check(user, password):
            self._send(401, b"login refused\n", LOGIN_PATH, head=head)
            return
        token = self.irsa.new_session()
        cookie = f"{SESSION_COOKIE}={token}; Path=/; HttpOnly"
        self._send(200, b"logged in\n", LOGIN_PATH, extra={"Set-Cookie": cookie}, head=head)

    def _search(self, path: str, params: dict[str, str], k: int, head: bool) -> None:
        table = path[len(SEARCH_PREFIX) :].strip("/")
        if table != "raw":
            self._send(
                404,
                _xml_error(f"table {table!r} is not served (only 'raw')"),
                path,
                "text/xml",
                head=head,
            )
            return
        try:
            body = self.irsa.search(params)
        except query.QueryError as exc:
            self._send(400, _xml_error(str(exc)), path, "text/xml", head=head)
            return
        ctype = "text/tab-separated-values" if params.get("ct") == "tsv" else "text/csv"
        self._body(path, body, ctype, k, head, None)

    def _data(self, path: str, k: int, head: bool) -> None:
        relpath = path[len(DATA_PREFIX) :]
        try:
            content = self.irsa.product(relpath)
        except (LookupError, ArchiveError) as exc:
            msg = str(exc) if isinstance(exc, ArchiveError) else f"{relpath}: no such product"
            self._send(404, _xml_error(msg), path, "text/xml", head=head)
            return
        faults, fault = self.irsa.faults, ""
        if 0 <= k < faults.corrupt_header_first and relpath.endswith((".fits", ".fits.gz")):
            content, fault = _damage(content, "header"), "header"
        if 0 <= k < faults.corrupt_pixel_first and "_mskimg.fits" in relpath:
            content, fault = _damage(content, "pixel"), "pixel"
        span = None
        spec = self.headers.get("Range")
        if spec and self.irsa.ranges:
            m = _RANGE_RE.match(spec.strip())
            if m and (m[1] or m[2]):  # a single byte range; anything else: the whole file
                size = len(content)
                if m[1]:
                    start = int(m[1])
                    end = min(int(m[2]), size - 1) if m[2] else size - 1
                else:
                    start, end = max(size - int(m[2]), 0), size - 1
                if start >= size or end < start:
                    self._send(
                        416,
                        b"range not satisfiable\n",
                        path,
                        extra={"Content-Range": f"bytes */{size}"},
                        head=head,
                    )
                    return
                span = (start, end, size)
        ctype = "application/gzip" if relpath.endswith(".gz") else "application/fits"
        self._body(path, content, ctype, k, head, span, fault)

    def _body(
        self,
        path: str,
        content: bytes,
        ctype: str,
        k: int,
        head: bool,
        span: tuple[int, int, int] | None,
        fault: str = "",
    ) -> None:
        faults = self.irsa.faults
        body = content if span is None else content[span[0] : span[1] + 1]
        status, length = 206 if span else 200, len(body)
        stall = 0 <= k < faults.stall_first and faults.stall_seconds > 0 and not head
        if 0 <= k < faults.short_first and length > 2880:
            body, length, fault = body[:-2880], length - 2880, "short"
        if stall:
            fault = "stall"
        if 0 <= k < faults.corrupt_first and body:
            mid = len(body) // 2
            body, fault = body[:mid] + bytes([body[mid] ^ 0xFF]) + body[mid + 1 :], "corrupt"
        if 0 <= k < faults.truncate_first and not head:
            body, fault = body[: len(body) // 2], "truncate"
            self.close_connection = True
        # recorded before the body goes out: a client that has its answer finds it in the log
        self._record(path, status, length, 0 if head else len(body), fault)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if span:
            self.send_header("Content-Range", f"bytes {span[0]}-{span[1]}/{span[2]}")
        self.end_headers()
        if head:
            return
        if stall:
            time.sleep(faults.stall_seconds)
        self.wfile.write(body)
        self.wfile.flush()
