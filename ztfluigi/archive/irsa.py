"""The IRSA client: ZTF raw metadata and files from IRSA or an IRSA-compatible server.

Speaks IRSA's IBE services over the standard library's ``http.client`` (ztf_formats.md §3):
the night's metadata is one ``ct=csv`` search of the ``raw`` table over the UT date's ``obsjd``
range; IRSA has no LED column, so each dome-flat exposure's ``ILUM_LED`` is read from the primary
header of one of its CCD files with a ranged GET of the first FITS blocks (the task layer keeps
the result in the RawIndex). Downloads are streamed, checked against ``Content-Length`` and the
FITS structure and checksums (:func:`ztfluigi.fitschecksum.verify`), and retried with exponential
back-off on 5xx answers, timeouts, dropped connections and truncated or corrupt bodies; the final
failure is an :class:`~ztfluigi.archive.ArchiveError` naming the file.

IPAC inputs of science quadrants (:mod:`ztfluigi.ipac`) take the cheapest requests IRSA allows:
a ``sciimg`` header is one ranged read of the file's first blocks (grown if END is further),
never the 37 MB image; a mask is one download of ``…_mskimg.fits`` (``…_mskimg.fits.gz`` where a
server has only that; the client remembers which answered). Damaged answers — a header byte that
is not printable ASCII or breaks the FITS card rules, a mask pixel outside IPAC's bits, a metadata
CSV with missing columns or a cut row — are retried like other transient damage.

Credentials: ``IRSA_USERNAME``/``IRSA_PASSWORD`` from the environment, else ztfquery's
``~/.ztfquery`` (section ``[irsa]``, ``password`` base64-encoded as ``b'…'``). They are sent only
to IRSA itself or to a loopback server unless given explicitly, and never appear in logs,
exception messages or ``repr``. Login is IRSA's JOSSO one (session cookie ``JOSSO_SESSIONID``,
as ztfquery does), or HTTP basic auth with ``auth="basic"``.

Retries: ``attempts`` tries per request (default 5), sleeping ``backoff`` × 2^k seconds between
them (default 1 s, at most ``max_backoff``); ``timeout`` (default 60 s) bounds the connection and
every read. The defaults come from ``ZTFLUIGI_IRSA_ATTEMPTS``, ``ZTFLUIGI_IRSA_BACKOFF`` and
``ZTFLUIGI_IRSA_TIMEOUT`` when set (``archive = irsa`` in luigi.cfg builds the client with them).

Concurrency: at most :data:`MAX_CONNECTIONS` requests in flight per server and per process
(environment ``ZTFLUIGI_IRSA_MAX_CONNECTIONS``, default 4); with ``luigi --workers N`` that is
up to N × MAX_CONNECTIONS connections to IRSA.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import configparser
import datetime as dt
import http.client
import http.cookies
import io
import ipaddress
import logging
import os
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from astropy.io import fits

from ztfluigi import fitschecksum, ipac, naming
from ztfluigi import raw as raw_io
from ztfluigi.archive import (
    RAW_METADATA_COLUMNS,
    RAW_TYPES,
    Archive,
    ArchiveError,
    ArchiveUnreachable,
    MaskFile,
    query,
)
from ztfluigi.naming import RawName

logger = logging.getLogger(__name__)

IRSA_URL = "https://irsa.ipac.caltech.edu"
DATA_PATH = "/ibe/data/ztf/products/"
SEARCH_PATH = "/ibe/search/ztf/products/raw"
LOGIN_PATH = "/account/signon/login.do"
SESSION_COOKIE = "JOSSO_SESSIONID"
#: requests in flight per server and per process
MAX_CONNECTIONS = int(os.environ.get("ZTFLUIGI_IRSA_MAX_CONNECTIONS", "4"))
HEADER_PROBE = 10 * fitschecksum.BLOCK  #: first ranged read of a primary header (grows ×2)
CHUNK = 1 << 20
#: image types the pipeline's file names cover (focus and guider frames are left out)
IMGTYPE_CODES = ("o", "b", "f", "d")
#: hosts that receive the environment's / ztfquery's IRSA credentials (besides loopback)
IRSA_HOSTS = frozenset({"irsa.ipac.caltech.edu"})
#: names IPAC masks are served under, in the order tried first (IRSA serves ``mskimg.fits``)
MASK_SUFFIXES = ("mskimg.fits", "mskimg.fits.gz")
#: cards describing a file's layout rather than the quadrant (dropped from returned headers)
_LAYOUT_KEYS = re.compile(r"^(SIMPLE|BITPIX|NAXIS\d*|EXTEND|BZERO|BSCALE)$")


_semaphores: dict[str, threading.BoundedSemaphore] = {}
_semaphores_lock = threading.Lock()


def _reset_after_fork() -> None:
    global _semaphores_lock
    _semaphores.clear()
    _semaphores_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def _slots(netloc: str) -> threading.BoundedSemaphore:
    """The process-wide limit of requests in flight to one server."""
    with _semaphores_lock:
        if netloc not in _semaphores:
            _semaphores[netloc] = threading.BoundedSemaphore(max(MAX_CONNECTIONS, 1))
        return _semaphores[netloc]


class Credentials:
    """An IRSA account; its repr and str never show the values."""

    __slots__ = ("username", "password")

    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username, password

    def __repr__(self) -> str:
        return "Credentials(<hidden>)"

    __str__ = __repr__

    def basic(self) -> str:
        """The value of an HTTP basic ``Authorization`` header."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


def read_ztfquery_credentials(path: str = "~/.ztfquery") -> Credentials | None:
    """The ``[irsa]`` account of ztfquery's credentials file, if there is one."""
    config = configparser.ConfigParser()
    try:
        config.read(os.path.expanduser(path))
    except configparser.Error:
        raise ArchiveError(f"{path}: not a ztfquery credentials file") from None
    if not config.has_option("irsa", "username") or not config.has_option("irsa", "password"):
        return None
    encoded = config.get("irsa", "password", raw=True).strip()
    if encoded.startswith(("b'", 'b"')) and encoded[-1:] in ("'", '"'):
        encoded = encoded[2:-1]  # ztfquery writes str(base64 bytes)
    try:
        password = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ArchiveError(f"{path}: [irsa] password is not base64-encoded") from None
    return Credentials(config.get("irsa", "username", raw=True).strip(), password)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_credentials(host: str, ztfquery_file: str = "~/.ztfquery") -> Credentials | None:
    """Environment or ztfquery credentials, for IRSA's own host and loopback servers only."""
    if host not in IRSA_HOSTS and not _is_loopback(host):
        return None
    user, password = os.environ.get("IRSA_USERNAME"), os.environ.get("IRSA_PASSWORD")
    if user and password:
        return Credentials(user, password)
    return read_ztfquery_credentials(ztfquery_file)


class _Retry(Exception):
    """A transient failure (5xx, timeout, dropped connection, bad body): try again.

    ``unreachable``: no usable answer came back (transport failure, 5xx/408/429), as opposed to
    a damaged answer; when every attempt ends so, the archive is :class:`ArchiveUnreachable`.
    """

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class _AuthError(ArchiveError):
    """HTTP 401/403: not retried, except once after a fresh login (an expired session)."""


class _NotFound(ArchiveError):
    """HTTP 404: the server has no such product (not retried)."""


@dataclass
class _Response:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes
    complete: bool  #: False when reading stopped early on purpose


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _header_read(buf: bytes) -> bool:
    """Whether reading a primary header can stop: END reached, or bytes no header can hold."""
    try:
        return ipac.header_end(buf) is not None
    except ipac.IpacError:
        return True


def _without_layout(header: fits.Header) -> fits.Header:
    """The header's cards minus the ones describing the file's data layout."""
    out = fits.Header()
    for card in header.cards:
        if not _LAYOUT_KEYS.match(card.keyword):
            out.append(card)
    return out


class IrsaArchive(Archive):
    """IRSA (``base_url`` = :data:`IRSA_URL`) or any server with IRSA's URL layout."""

    verifies_raw = True

    def __init__(
        self,
        base_url: str = IRSA_URL,
        *,
        username: str | None = None,
        password: str | None = None,
        auth: str = "cookie",
        attempts: int | None = None,
        backoff: float | None = None,
        max_backoff: float = 30.0,
        timeout: float | None = None,
        ztfquery_file: str = "~/.ztfquery",
    ) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ArchiveError(f"archive URL must be http(s)://host[:port], got {url.scheme}://…")
        if auth not in ("cookie", "basic"):
            raise ArchiveError(f"auth must be 'cookie' or 'basic', got {auth!r}")
        self.scheme, self.host, self.port = url.scheme, url.hostname, url.port
        self.prefix = url.path.rstrip("/")
        netloc = self.host if self.port is None else f"{self.host}:{self.port}"
        if ":" in self.host:
            netloc = f"[{self.host}]" + ("" if self.port is None else f":{self.port}")
        self.netloc = netloc
        self.name = f"{self.scheme}://{netloc}{self.prefix}"
        if username is not None and password is not None:
            self._credentials: Credentials | None = Credentials(username, password)
        elif url.username and url.password:
            self._credentials = Credentials(
                urllib.parse.unquote(url.username), urllib.parse.unquote(url.password)
            )
        else:
            self._credentials = default_credentials(self.host, ztfquery_file)
        self.auth = auth
        env = os.environ.get
        self.attempts = max(attempts or int(env("ZTFLUIGI_IRSA_ATTEMPTS", "5")), 1)
        self.backoff = backoff if backoff is not None else float(env("ZTFLUIGI_IRSA_BACKOFF", "1"))
        self.max_backoff = max_backoff
        self.timeout = timeout if timeout is not None else float(env("ZTFLUIGI_IRSA_TIMEOUT", "60"))
        self._cookie: str | None = None
        self._login_lock = threading.Lock()
        self._local = threading.local()
        self._mask_suffix = MASK_SUFFIXES[0]  #: the mask name the server answered last

    def __repr__(self) -> str:
        return f"IrsaArchive({self.name!r})"

    # -- HTTP ---------------------------------------------------------------------------------

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's keep-alive connection (and whether it is new)."""
        held = getattr(self._local, "conn", None)
        if held is not None and held[0] == os.getpid():
            return held[1], False
        if self.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._local.conn = (os.getpid(), conn)
        return conn, True

    def _drop_connection(self) -> None:
        held = getattr(self._local, "conn", None)
        self._local.conn = None
        if held is not None and held[0] == os.getpid():
            held[1].close()

    def _exchange(
        self,
        path: str,
        headers: dict[str, str],
        stop: Callable[[bytes], bool] | None = None,
        secret: bool = False,
    ) -> _Response:
        """One GET; transient transport failures raise _Retry (without URL if ``secret``)."""
        headers = {"User-Agent": "ztfluigi", **headers}
        t0 = time.monotonic()
        with _slots(self.netloc):
            for fresh_try in (False, True):
                conn, fresh = self._connection()
                try:
                    conn.request("GET", self.prefix + path, headers=headers)
                    resp = conn.getresponse()
                    break
                except (
                    ConnectionResetError,
                    BrokenPipeError,
                    http.client.RemoteDisconnected,
                ) as exc:
                    self._drop_connection()
                    if fresh or fresh_try:  # a reused keep-alive connection may have expired
                        raise _Retry(
                            type(exc).__name__ if secret else _describe(exc), unreachable=True
                        ) from None
                except (OSError, http.client.HTTPException) as exc:
                    self._drop_connection()
                    raise _Retry(
                        type(exc).__name__ if secret else _describe(exc), unreachable=True
                    ) from None
            try:
                announced = resp.getheader("Content-Length")
                buf = bytearray()
                complete = True
                while True:
                    chunk = resp.read(CHUNK if stop is None else 16 * fitschecksum.BLOCK)
                    if not chunk:
                        break
                    buf += chunk
                    if stop is not None and resp.status == 200 and stop(buf):
                        complete = False
                        break
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                raise _Retry(f"{_describe(exc)} after {len(buf)} bytes", unreachable=True) from None
            if not complete or resp.will_close:
                self._drop_connection()
        if complete and announced is not None and len(buf) != int(announced):
            self._drop_connection()
            raise _Retry(f"truncated body: {len(buf)} of {announced} bytes", unreachable=True)
        if not secret:
            logger.debug(
                "GET %s%s -> %d, %d bytes in %.3f s",
                self.name,
                path,
                resp.status,
                len(buf),
                time.monotonic() - t0,
            )
        return _Response(resp.status, resp.reason, resp.headers, bytes(buf), complete)

    def _auth_headers(self) -> dict[str, str]:
        if self._credentials is None:
            return {}
        if self.auth == "basic":
            return {"Authorization": self._credentials.basic()}
        self._login()
        return {"Cookie": f"{SESSION_COOKIE}={self._cookie}"} if self._cookie else {}

    def _login(self, force: bool = False) -> None:
        """IRSA's JOSSO login: obtain the session cookie once (again with ``force``)."""
        with self._login_lock:
            if self._cookie is not None and not force:
                return
            creds = self._credentials
            assert creds is not None
            params = urllib.parse.urlencode(
                {
                    "josso_cmd": "login",
                    "josso_username": creds.username,
                    "josso_password": creds.password,
                }
            )
            what = f"login to {self.name}"
            logger.debug("%s", what)
            resp = self._retrying(
                what,
                lambda: self._checked(
                    what, f"{LOGIN_PATH}?{params}", {}, secret=True, accept=(200, 301, 302, 303)
                ),
            )
            cookie = http.cookies.SimpleCookie()
            for value in resp.headers.get_all("Set-Cookie") or []:
                try:
                    cookie.load(value)
                except http.cookies.CookieError:
                    continue
            if SESSION_COOKIE not in cookie:
                raise ArchiveError(
                    f"{what} refused: no {SESSION_COOKIE} cookie came back "
                    "(check IRSA_USERNAME/IRSA_PASSWORD or ~/.ztfquery)"
                )
            self._cookie = cookie[SESSION_COOKIE].value

    def _checked(
        self,
        what: str,
        path: str,
        headers: dict[str, str],
        *,
        stop: Callable[[bytes], bool] | None = None,
        secret: bool = False,
        accept: tuple[int, ...] = (200,),
    ) -> _Response:
        """One GET whose status is judged: accepted, transient (_Retry) or final (ArchiveError)."""
        resp = self._exchange(path, headers, stop, secret)
        if resp.status in accept:
            return resp
        if resp.status >= 500 or resp.status in (408, 429):
            raise _Retry(f"HTTP {resp.status} {resp.reason}", unreachable=True)
        if resp.status in (401, 403):
            hint = (
                "credentials refused"
                if self._credentials is not None
                else "login required: set IRSA_USERNAME/IRSA_PASSWORD or ~/.ztfquery"
            )
            raise _AuthError(f"{what}: HTTP {resp.status} from {self.name} ({hint})")
        if resp.status == 404:
            raise _NotFound(f"{what}: not found on {self.name} (HTTP 404)")
        message = resp.body.decode("utf-8", "replace")
        m = re.search(r"<message>(.*?)</message>", message, re.DOTALL)
        text = (m[1] if m else message).strip()
        detail = text.splitlines()[0][:200] if text else ""
        raise ArchiveError(
            f"{what}: HTTP {resp.status} from {self.name}" + (f" ({detail})" if detail else "")
        )

    def _retrying(self, what: str, attempt: Callable[[], _Response]) -> _Response:
        """Run ``attempt`` until it succeeds, backing off exponentially on transient failures."""
        last = ""
        unreachable = False
        for k in range(1, self.attempts + 1):
            try:
                return attempt()
            except _Retry as exc:
                last, unreachable = str(exc), exc.unreachable
                if k == self.attempts:
                    break
                delay = min(self.backoff * 2 ** (k - 1), self.max_backoff)
                logger.warning(
                    "%s: attempt %d of %d failed (%s); retrying in %.3g s",
                    what,
                    k,
                    self.attempts,
                    last,
                    delay,
                )
                time.sleep(delay)
        error = ArchiveUnreachable if unreachable else ArchiveError
        raise error(f"{what}: failed after {self.attempts} attempts from {self.name} ({last})")

    def get(
        self,
        what: str,
        path: str,
        headers: dict[str, str] | None = None,
        *,
        stop: Callable[[bytes], bool] | None = None,
        check: Callable[[_Response], None] | None = None,
        accept: tuple[int, ...] = (200,),
    ) -> _Response:
        """GET with authentication, retries and an optional body check (raise _Retry to retry)."""
        relogged = False

        def attempt() -> _Response:
            nonlocal relogged
            sent = {**self._auth_headers(), **(headers or {})}
            try:
                resp = self._checked(what, path, sent, stop=stop, accept=accept)
            except _AuthError:
                # an expired session: log in again, once
                if self.auth != "cookie" or self._credentials is None or relogged:
                    raise
                relogged = True
                self._login(force=True)
                sent = {**self._auth_headers(), **(headers or {})}
                resp = self._checked(what, path, sent, stop=stop, accept=accept)
            if check is not None:
                check(resp)
            return resp

        return self._retrying(what, attempt)

    # -- the Archive interface ----------------------------------------------------------------

    def night_metadata(self, date: dt.date) -> pa.Table:
        lo = query.jd_of_date(date)
        codes = ",".join(f"'{c}'" for c in IMGTYPE_CODES)
        where = f"obsjd >= {lo!r} AND obsjd < {lo + 1!r} AND imgtypecode IN ({codes})"
        params = urllib.parse.urlencode(
            {"WHERE": where, "COLUMNS": ",".join(RAW_METADATA_COLUMNS), "ct": "csv"}
        )
        what = f"raw metadata of {date}"
        parsed: list[pa.Table] = []

        def check(resp: _Response) -> None:
            try:
                parsed.append(parse_metadata_csv(resp.body, what))
            except ipac.IpacError as exc:
                raise _Retry(str(exc).removeprefix(f"{what}: ")) from None

        self.get(what, f"{SEARCH_PATH}?{params}", check=check)
        table = parsed[-1].sort_by([("obsjd", "ascending"), ("ccdid", "ascending")])
        names = [
            RawName(f"{f:014d}", field, filt, ccd, code).filename
            for f, field, filt, ccd, code in zip(
                *(
                    table[c].to_pylist()
                    for c in ("filefracday", "field", "filtercode", "ccdid", "imgtypecode")
                ),
                strict=True,
            )
        ]
        leds = self.flat_leds(table, names)
        ledid = [leds.get(f, -1) for f in table["filefracday"].to_pylist()]
        table = table.append_column("ledid", pa.array(ledid, pa.int64()))
        return table.append_column("filename", pa.array(names, pa.string()))

    def flat_leds(self, table: pa.Table, names: list[str]) -> dict[int, int]:
        """``ILUM_LED`` of every dome-flat exposure (keyed by filefracday), read from one CCD file.

        The illuminator lights the whole focal plane, so one file's primary header gives the
        exposure's LED; an exposure whose header lacks ILUM_LED gets -1.
        """
        first: dict[int, str] = {}
        is_flat = pc.equal(table["imgtype"], "flat").to_pylist()
        for f, name, flat in zip(table["filefracday"].to_pylist(), names, is_flat, strict=True):
            if flat and f not in first:
                first[f] = name
        if not first:
            return {}

        def led(name: str) -> int:
            header = self.primary_header(naming.parse_raw_filename(name).relpath, name)
            value = header.get("ILUM_LED")
            return int(value) if isinstance(value, int | float) else -1

        workers = max(1, min(MAX_CONNECTIONS, len(first)))
        with concurrent.futures.ThreadPoolExecutor(workers, "irsa-led") as pool:
            values = list(pool.map(led, first.values()))
        return dict(zip(first, values, strict=True))

    def primary_header(
        self,
        relpath: str,
        what: str,
        probe: int = HEADER_PROBE,
        verify: Callable[[fits.Header], None] | None = None,
    ) -> fits.Header:
        """The primary header of a product, read with ranged GETs of its first blocks.

        Starts with ``probe`` bytes and doubles until the END card; a server that ignores Range
        answers 200, and then reading stops as soon as the header is complete. The header is
        parsed strictly (:func:`ztfluigi.ipac.parse_header`) and given to ``verify``; a damaged
        answer (IpacError from either) is retried.
        """
        buf = b""
        want = probe
        parsed: list[fits.Header] = []
        while True:
            start = len(buf)

            def check(resp: _Response, start: int = start, prefix: bytes = buf) -> None:
                if resp.status == 206:
                    m = re.match(r"bytes (\d+)-(\d+)/(\d+)", resp.headers.get("Content-Range", ""))
                    if m is None or int(m[1]) != start:
                        raise _Retry(f"bad Content-Range {resp.headers.get('Content-Range')!r}")
                data = prefix + resp.body if resp.status == 206 else resp.body
                try:
                    if len(data) >= 9 and not data.startswith(b"SIMPLE  ="):
                        raise ipac.IpacError(f"{what}: not a FITS file")
                    end = ipac.header_end(data, what)
                    if end is not None:
                        header = ipac.parse_header(data[: ipac.header_size(end)], what)
                        if verify is not None:
                            verify(header)
                        parsed.append(header)
                except ipac.IpacError as exc:
                    raise _Retry(str(exc).removeprefix(f"{what}: ")) from None

            resp = self.get(
                what,
                DATA_PATH + relpath,
                {"Range": f"bytes={start}-{want - 1}"},
                stop=lambda b: _header_read(bytes(b)),
                check=check,
                accept=(200, 206),
            )
            if parsed:
                return parsed[-1]
            buf = resp.body if resp.status == 200 else buf + resp.body
            if resp.status == 200 or len(buf) < want:  # the whole file, and no END card
                raise ArchiveError(f"{what}: FITS primary header has no END card")
            want *= 2

    def download(
        self, relpath: str, what: str, verify: Callable[[bytes, str], object] = fitschecksum.verify
    ) -> bytes:
        """A whole FITS product with retries, accepted once ``verify`` passes (length is checked
        against Content-Length; the default verification is FITS structure and checksums)."""

        def check(resp: _Response) -> None:
            try:
                verify(resp.body, what)
            except (fitschecksum.FitsIntegrityError, raw_io.RawFileError, ipac.IpacError) as exc:
                raise _Retry(str(exc).removeprefix(f"{what}: ")) from None

        return self.get(what, DATA_PATH + relpath, check=check).body

    def fetch_raw(self, raw: RawName) -> bytes:
        """The raw file, accepted only when it passes :func:`ztfluigi.raw.verify_raw` (structure,
        checksums, decompression): raw files without checksum cards are still caught."""
        return self.download(raw.relpath, raw.filename, raw_io.verify_raw)

    def science_header(self, raw: RawName, qid: int) -> fits.Header:
        """The quadrant's IPAC ``sciimg`` header (one ranged read), without its layout cards."""
        return _without_layout(self._science_header(raw, qid))

    def _science_header(self, raw: RawName, qid: int) -> fits.Header:
        relpath = naming.science_quadrant_relpath(raw, qid, "sciimg.fits")
        name = relpath.rsplit("/", 1)[-1]
        key = ipac.QuadrantKey.of(raw, qid)
        return self.primary_header(
            relpath, name, verify=lambda h: ipac.check_identity(h, key, name)
        )

    def fetch_science_headers(self, quadrants: Sequence[tuple[RawName, int]]) -> pa.Table:
        """Every card of the quadrants' ``sciimg`` primary headers: one ranged read per quadrant
        (MAX_CONNECTIONS in parallel), verified, as one header table."""
        quadrants = list(quadrants)
        workers = max(1, min(MAX_CONNECTIONS, len(quadrants)))
        with concurrent.futures.ThreadPoolExecutor(workers, "irsa-ipac") as pool:
            headers = list(pool.map(lambda q: self._science_header(*q), quadrants))
        return ipac.encode_headers(headers, quadrants)

    def fetch_mask(self, raw: RawName, qid: int, shape: tuple[int, int] | None = None) -> MaskFile:
        """The quadrant's mask file, one download: ``…_mskimg.fits``, or ``…_mskimg.fits.gz``
        on a server that has only that (404 for the other). Verified by
        :func:`ztfluigi.ipac.read_mask_hdu` (structure, ``shape``, IPAC bits, the quadrant's
        CCD_ID/AMP_ID); damaged answers are retried."""
        key = ipac.QuadrantKey.of(raw, qid)

        def verify(content: bytes, name: str) -> None:
            header, _ = ipac.read_mask_hdu(content, name, shape)
            ipac.check_identity(header, key, name)

        first = self._mask_suffix
        order = [first, *(s for s in MASK_SUFFIXES if s != first)]
        for i, suffix in enumerate(order):
            relpath = naming.science_quadrant_relpath(raw, qid, suffix)
            try:
                content = self.download(relpath, relpath.rsplit("/", 1)[-1], verify)
            except _NotFound:
                if i + 1 < len(order):
                    continue
                name = naming.science_quadrant_name(raw, qid, first)
                raise _NotFound(
                    f"{name}: not found on {self.name} (HTTP 404, nor as {' or '.join(order[1:])})"
                ) from None
            self._mask_suffix = suffix
            return MaskFile(relpath, content)
        raise AssertionError("unreachable")

    def science_mask(self, raw: RawName, qid: int) -> tuple[fits.Header, np.ndarray]:
        """The quadrant's IPAC mask (one verified download) and its header without layout cards."""
        mask_file = self.fetch_mask(raw, qid)
        header, mask = ipac.read_mask_hdu(mask_file.content, mask_file.name)
        return _without_layout(header), mask


def parse_metadata_csv(body: bytes, what: str = "metadata") -> pa.Table:
    """IRSA's CSV answer as a typed table of ``RAW_METADATA_COLUMNS``.

    An IBE error document (XML) is an ArchiveError; a damaged CSV (missing columns, a row with
    the wrong number of fields, a cut last line, a value of the wrong type) is an
    :class:`~ztfluigi.ipac.IpacError`, which the client retries.
    """
    text = body.lstrip()
    if text.startswith(b"<"):  # IBE reports errors as XML
        m = re.search(rb"<message>(.*?)</message>", text, re.DOTALL)
        detail = (m[1] if m else text[:200]).decode("utf-8", "replace").strip().splitlines()
        raise ArchiveError(f"{what}: the server answered an error ({detail[0] if detail else ''})")
    if not text:
        return pa.table({c: pa.array([], RAW_TYPES[c]) for c in RAW_METADATA_COLUMNS})
    ipac.verify_csv(body, RAW_METADATA_COLUMNS, what, exact=False)
    options = pacsv.ConvertOptions(
        column_types={c: RAW_TYPES[c] for c in RAW_METADATA_COLUMNS},
        include_columns=list(RAW_METADATA_COLUMNS),
    )
    try:
        table = pacsv.read_csv(io.BytesIO(body), convert_options=options)
    except (pa.ArrowInvalid, pa.ArrowKeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ipac.IpacError(f"{what}: unexpected CSV from the server ({first})") from None
    return table.select(list(RAW_METADATA_COLUMNS))
