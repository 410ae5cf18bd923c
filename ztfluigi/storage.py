"""fsspec-backed Luigi targets with atomic commits, bulk existence checks and FITS/parquet I/O.

Every product of the pipeline is addressed by a URL: a local path, ``file://``, ``memory://``
or ``s3://`` (iRODS trees are mounted POSIX paths).  Writes are atomic everywhere: a reader
never sees a partial file under a product's final name, even if the writer is killed.

Products are immutable and deterministic, so committing over an existing file is allowed
(last writer wins, with ``os.replace`` semantics): two workers racing on the same product
write identical bytes.

Endpoints and credentials are per-protocol defaults (:func:`set_default_storage_options`,
installed from luigi.cfg's ``[s3]`` by :mod:`ztfluigi.config`); they live in memory only and
never appear in a target's repr, its pickle, log lines or error messages.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import fsspec
import fsspec.asyn
import fsspec.config
import luigi.target
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.io import fits
from fsspec.core import split_protocol
from fsspec.implementations.local import LocalFileSystem

__all__ = [
    "FsspecFileSystem",
    "FsspecTarget",
    "ListingCache",
    "ProductError",
    "abort_incomplete_uploads",
    "bulk_exists",
    "get_target",
    "read_bytes",
    "read_fits",
    "read_parquet",
    "reset_filesystems",
    "set_confirm_missing",
    "set_default_storage_options",
    "set_s3_part_size",
    "url_join",
    "write_bytes",
    "write_fits",
    "write_parquet",
]

# Hidden temporary names written next to (or instead of) a product: ``.{name}.tmp-{hex}``.
_TMP_RE = re.compile(r"^\..+\.tmp-[0-9a-f]+$")


class ProductError(Exception):
    """A product is missing or unreadable; the message is one user-facing line naming the URL."""

    def __init__(self, message: str, url: str | None = None) -> None:
        message = " ".join(str(message).split())
        super().__init__(message)
        self.url = url


# --------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------


def _normalise_url(url: str | os.PathLike) -> str:
    """Return ``url`` as a string, making plain local paths absolute (URLs are kept as given)."""
    url = os.fspath(url)
    if split_protocol(url)[0] is None:
        return os.path.abspath(os.path.expanduser(url))
    return url


def _protocol(url: str) -> str:
    """Return the fsspec protocol of ``url`` (``"file"`` for plain paths)."""
    return split_protocol(url)[0] or "file"


def url_join(root: str, *parts: str) -> str:
    """Join relative path parts onto a root URL or path, with ``/`` separators.

    Leading slashes of ``parts`` are ignored (parts never reset the root, unlike
    ``os.path.join``); works for ``s3://b/p``, ``memory://x``, ``/abs``, ``rel`` and ``file:///x``.
    """
    proto, sep, path = os.fspath(root).partition("://")
    if not sep:
        proto, path = "", proto
    for part in parts:
        part = os.fspath(part).lstrip("/")
        if not part:
            continue
        if not path or path.endswith("/"):
            path += part
        else:
            path += "/" + part
    return f"{proto}{sep}{path}"


def _split_url(url: str) -> tuple[str, str]:
    """Split a URL into (parent URL, base name)."""
    proto, sep, path = url.partition("://")
    if not sep:
        proto, path = "", proto
    parent, _, name = path.rstrip("/").rpartition("/")
    if not parent and path.startswith("/"):
        parent = "/"
    return f"{proto}{sep}{parent}", name


# --------------------------------------------------------------------------------------------
# File systems
# --------------------------------------------------------------------------------------------

# botocore's DEBUG logs show each request's headers and canonical request: the access key id
# (``Credential=``) and any session token. Secret keys are never logged; these two are masked.
_CREDENTIAL_RE = re.compile(
    r"((?:X-Amz-)?Credential=)[^/%&,'\"\s]+|(X-Amz-Security-Token(?:': b?'|=|:))[^'&\s]+",
    re.IGNORECASE,
)


class _MaskCredentials(logging.Filter):
    """Mask access key ids and session tokens in a record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: leave it to the handler
            return True
        masked = _CREDENTIAL_RE.sub(lambda m: (m.group(1) or m.group(2)) + "***", message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


for _name in ("botocore.endpoint", "botocore.auth", "aiobotocore.endpoint"):
    logging.getLogger(_name).addFilter(_MaskCredentials())

_FS_CACHE: dict[tuple, fsspec.AbstractFileSystem] = {}
_FS_CACHE_PID = os.getpid()
_FS_LOCK = threading.Lock()


def _freeze(value: Any) -> Any:
    """Return a hashable, order-independent version of nested storage options."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _get_fsspec(protocol: str, storage_options: dict | None) -> fsspec.AbstractFileSystem:
    """Return the per-process fsspec filesystem for (protocol, options), creating it lazily.

    The protocol's default options (:func:`set_default_storage_options`) are merged under the
    explicit ones. The cache is dropped in forked children: remote clients (s3fs/aiohttp) do not
    survive a fork; it is also dropped whenever the defaults change.
    """
    global _FS_CACHE_PID
    key = (protocol, _freeze(storage_options or {}))
    with _FS_LOCK:
        if _FS_CACHE_PID != os.getpid():
            _FS_CACHE.clear()
            _FS_CACHE_PID = os.getpid()
        fs = _FS_CACHE.get(key)
        if fs is None:
            options = {**_DEFAULT_OPTIONS.get(protocol, {}), **(storage_options or {})}
            fs = _FS_CACHE[key] = fsspec.filesystem(protocol, **options)
    return fs


def reset_filesystems() -> None:
    """Forget every cached filesystem and network client of this process.

    Clients keep the endpoint and credentials they were created with (s3fs reads ``AWS_*`` and
    ``~/.aws`` once); after those change (rotated credentials), the next use reads them again.
    """
    with _FS_LOCK:
        for cls in {type(fs) for fs in _FS_CACHE.values()}:
            cls.clear_instance_cache()
        _FS_CACHE.clear()


# Per-protocol defaults: endpoint, region, credentials (s3fs options), multipart part size.

S3_MIN_PART_SIZE = 5 * 2**20  #: S3's smallest allowed multipart part (all but the last)
S3_DEFAULT_PART_SIZE = 16 * 2**20  #: products of two parts or more are uploaded in parts
_DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {}
_FSSPEC_CONF_BEFORE: dict[str, dict[str, Any] | None] = {}  # fsspec conf entries we replaced
_S3_PART_SIZE = S3_DEFAULT_PART_SIZE


def _aliases(protocol: str) -> tuple[str, ...]:
    """All names of the filesystem serving ``protocol`` (``s3`` and ``s3a`` are one class)."""
    try:
        names = fsspec.get_filesystem_class(protocol).protocol
    except (ValueError, ImportError):
        return (protocol,)
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(dict.fromkeys((protocol, *names)))


def set_default_storage_options(protocol: str, options: dict[str, Any] | None) -> None:
    """Make ``options`` the defaults of every filesystem on ``protocol``; ``None`` removes them.

    Explicit ``storage_options`` of a target win key by key. The defaults are also installed in
    fsspec's own configuration so that code handing URLs to fsspec or pyarrow directly (the
    HATS reference-catalogue reader) reaches the same endpoint with the same credentials.
    """
    conf = fsspec.config.conf
    with _FS_LOCK:
        for name in _aliases(protocol):
            if name not in _FSSPEC_CONF_BEFORE:
                before = conf.get(name)
                _FSSPEC_CONF_BEFORE[name] = dict(before) if before is not None else None
            before = _FSSPEC_CONF_BEFORE[name]
            if options:
                _DEFAULT_OPTIONS[name] = dict(options)
                conf[name] = {**(before or {}), **options}
            else:
                _DEFAULT_OPTIONS.pop(name, None)
                del _FSSPEC_CONF_BEFORE[name]
                if before is None:
                    conf.pop(name, None)
                else:
                    conf[name] = before
        _FS_CACHE.clear()


def set_s3_part_size(nbytes: int | None) -> None:
    """Set the multipart part size of S3 commits (``None``: :data:`S3_DEFAULT_PART_SIZE`).

    A product of at least two parts is uploaded as a multipart upload, which S3 publishes only
    on completion; smaller ones go up in a single PUT.
    """
    global _S3_PART_SIZE
    nbytes = S3_DEFAULT_PART_SIZE if nbytes is None else int(nbytes)
    if nbytes < S3_MIN_PART_SIZE:
        raise ValueError(f"S3 multipart part size must be at least 5 MiB, got {nbytes} bytes")
    _S3_PART_SIZE = nbytes


def _is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    names = type(fs).protocol
    return "s3" in ((names,) if isinstance(names, str) else tuple(names))


class FsspecFileSystem(luigi.target.FileSystem):
    """Luigi FileSystem delegating to an fsspec filesystem; paths are full URLs.

    Only the protocol and storage options are stored, so instances pickle cleanly; the fsspec
    filesystem (and any network client) is created lazily and cached per process.
    """

    def __init__(self, url: str = "file://", storage_options: dict | None = None) -> None:
        self.protocol = _protocol(os.fspath(url))
        self.storage_options = dict(storage_options or {})

    def __repr__(self) -> str:
        return f"FsspecFileSystem({self.protocol!r})"

    @property
    def fsspec(self) -> fsspec.AbstractFileSystem:
        """The underlying fsspec filesystem (cached per process)."""
        return _get_fsspec(self.protocol, self.storage_options)

    @property
    def is_local(self) -> bool:
        """Whether paths are on a local (POSIX or mounted) filesystem."""
        return isinstance(self.fsspec, LocalFileSystem)

    def _path(self, url: str) -> str:
        """Return ``url`` without its protocol, as understood by the fsspec filesystem."""
        return self.fsspec._strip_protocol(url)

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists; drops fsspec's listing cache first so answers are fresh."""
        self.fsspec.invalidate_cache(self._path(path))
        return self.fsspec.exists(path)

    def remove(self, path: str, recursive: bool = True, skip_trash: bool = True) -> bool:
        """Remove ``path`` (a directory only if ``recursive``); return False if it did not exist."""
        try:
            self.fsspec.rm(path, recursive=recursive)
        except FileNotFoundError:
            return False
        self.fsspec.invalidate_cache(self._path(path))
        return True

    def mkdir(self, path: str, parents: bool = True, raise_if_exists: bool = False) -> None:
        """Create directory ``path`` (a no-op on object stores, which have no directories)."""
        if raise_if_exists and self.exists(path):
            raise luigi.target.FileAlreadyExists(path)
        if parents:
            self.fsspec.makedirs(path, exist_ok=True)
            return
        try:
            self.fsspec.mkdir(path, create_parents=False)
        except FileNotFoundError as exc:
            raise luigi.target.MissingParentDirectory(path) from exc
        except FileExistsError:
            pass

    def isdir(self, path: str) -> bool:
        """Whether ``path`` is a directory (or a non-empty prefix on object stores)."""
        return self.fsspec.isdir(path)

    def listdir(self, path: str) -> list[str]:
        """Return the URLs of all files below ``path``, recursively (Luigi's listdir contract)."""
        root = self._path(path).rstrip("/")
        found = self.fsspec.find(path)
        return sorted(url_join(path, p[len(root) :]) for p in found if p.startswith(root + "/"))

    def _make_parent(self, path: str) -> None:
        if self.is_local:
            os.makedirs(_split_url(self._path(path))[0], exist_ok=True)

    def move(self, path: str, dest: str) -> None:
        """Move ``path`` to ``dest`` (creating local parent directories)."""
        self._make_parent(dest)
        self.fsspec.mv(path, dest, recursive=True)

    def rename_dont_move(self, path: str, dest: str) -> None:
        """Move ``path`` to ``dest``; FileAlreadyExists if ``dest`` exists (check, then move).

        Like luigi's LocalFileSystem this is not atomic; product commits use ``temporary_path``.
        """
        if self.exists(dest):
            raise luigi.target.FileAlreadyExists(dest)
        self.move(path, dest)

    def copy(self, path: str, dest: str) -> None:
        """Copy ``path`` to ``dest`` (creating local parent directories)."""
        self._make_parent(dest)
        self.fsspec.copy(path, dest, recursive=True)


# --------------------------------------------------------------------------------------------
# Targets and atomic writes
# --------------------------------------------------------------------------------------------


class _Staging:
    """A local temporary file for a target and the way to commit it under the final name."""

    def __init__(self, target: FsspecTarget) -> None:
        self.fs = target.fs
        self.url = target.path
        tmp_name = f".{_split_url(self.url)[1]}.tmp-{uuid.uuid4().hex}"
        if self.fs.is_local:
            # Same directory as the product: os.replace is then an atomic rename, also on
            # FUSE mounts (iRODS) where cross-directory renames may copy or fail.
            self.final = self.fs._path(self.url)
            parent = os.path.dirname(self.final)
            os.makedirs(parent, exist_ok=True)
            self.local_path = os.path.join(parent, tmp_name)
        else:
            self.final = None
            self.local_path = os.path.join(tempfile.gettempdir(), tmp_name)

    def commit(self) -> None:
        """Publish the temporary under the final name, overwriting any previous version."""
        if self.final is not None:
            os.replace(self.local_path, self.final)
        else:
            # A single PUT, or the completion of a multipart upload, is the commit: S3 shows
            # nothing under the key before (a killed writer leaves at most invisible parts).
            fs = self.fs.fsspec
            kwargs = {"chunksize": _S3_PART_SIZE} if _is_s3(fs) else {}
            fs.put_file(self.local_path, self.url, **kwargs)
            fs.invalidate_cache(self.fs._path(self.url))

    def discard(self) -> None:
        """Remove the temporary if it is still there."""
        if os.path.isdir(self.local_path) and not os.path.islink(self.local_path):
            shutil.rmtree(self.local_path, ignore_errors=True)
        else:
            try:
                os.remove(self.local_path)
            except FileNotFoundError:
                pass


class _AtomicWriter(io.BufferedWriter):
    """Binary file writing to a staging file; ``close()`` commits, errors and GC discard."""

    def __init__(self, staging: _Staging) -> None:
        self._staging = staging
        self._aborted = False
        super().__init__(io.FileIO(staging.local_path, "w"))

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()
            if not self._aborted:
                self._staging.commit()
        finally:
            self._staging.discard()

    def abort(self) -> None:
        """Close without committing."""
        self._aborted = True
        self.close()

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        try:
            if not self.closed:
                self.abort()
        except (AttributeError, ValueError):  # __init__ failed: nothing to clean up
            pass


class _AtomicTextWriter(io.TextIOWrapper):
    """UTF-8 text layer over :class:`_AtomicWriter` that also discards on exceptions."""

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is not None:
            self.buffer._aborted = True
        self.close()

    def __del__(self) -> None:
        try:
            if not self.closed:
                self.buffer._aborted = True
                self.close()
        except (AttributeError, ValueError):
            pass


class FsspecTarget(luigi.target.FileSystemTarget):
    """Luigi target for a file at any fsspec URL, with atomic writes.

    ``path`` is the URL as given, except that plain relative local paths are made absolute.
    """

    def __init__(self, url: str | os.PathLike, storage_options: dict | None = None) -> None:
        super().__init__(_normalise_url(url))
        self.storage_options = dict(storage_options or {})
        self._fs = FsspecFileSystem(self.path, self.storage_options)

    def __repr__(self) -> str:
        return f"FsspecTarget({self.path!r})"

    @property
    def fs(self) -> FsspecFileSystem:
        """The :class:`FsspecFileSystem` of this target."""
        return self._fs

    def exists(self) -> bool:
        """Whether the product exists under its final name (temporaries never count).

        On S3 a product is an object: one HEAD (s3fs's ``exists`` adds a LIST when the object
        is missing, looking for a "directory" of that name).
        """
        fs = self.fs.fsspec
        if _is_s3(fs):
            bucket, key, _ = fs.split_path(self.path)
            if key:
                try:
                    fs.call_s3("head_object", Bucket=bucket, Key=key)
                except FileNotFoundError:
                    return False
                return True
        return self.fs.exists(self.path)

    def open(self, mode: str = "r") -> Any:
        """Open for reading (``r``/``rb``) or atomic writing (``w``/``wb``, committed on close)."""
        if mode == "r":
            return self.fs.fsspec.open(self.path, "r", encoding="utf-8")
        if mode == "rb":
            return self.fs.fsspec.open(self.path, "rb")
        if mode in ("w", "wb"):
            writer = _AtomicWriter(_Staging(self))
            return writer if mode == "wb" else _AtomicTextWriter(writer, encoding="utf-8")
        raise ValueError(f"unsupported mode {mode!r} for {self.path}")

    @contextmanager
    def temporary_path(self) -> Iterator[str]:
        """Yield a local path to write the product to; commit it atomically on normal exit.

        Local filesystems: a hidden ``.{name}.tmp-{uuid}`` file in the destination directory,
        renamed with ``os.replace``.  Other filesystems: a local temporary file uploaded with a
        single ``put_file`` (on S3 one PUT, or one multipart upload for products of two parts or
        more, see :func:`set_s3_part_size`).  On exception nothing is committed and the
        temporary is removed; the hidden name does not keep the extension, so writers must not
        infer formats from it.
        """
        staging = _Staging(self)
        try:
            yield staging.local_path
            staging.commit()
        finally:
            staging.discard()


def get_target(url: str | os.PathLike, storage_options: dict | None = None) -> FsspecTarget:
    """Return an :class:`FsspecTarget` for ``url``."""
    return FsspecTarget(url, storage_options)


def _as_target(target_or_url: FsspecTarget | str | os.PathLike) -> FsspecTarget:
    if isinstance(target_or_url, FsspecTarget):
        return target_or_url
    if isinstance(target_or_url, luigi.target.FileSystemTarget):
        return FsspecTarget(target_or_url.path)
    return FsspecTarget(target_or_url)


# --------------------------------------------------------------------------------------------
# Bulk existence
# --------------------------------------------------------------------------------------------


def _list_directory(fs: fsspec.AbstractFileSystem, directory: str) -> list[str]:
    """Paths of a directory's entries: one LIST per 1,000 entries on S3, also when empty.

    (s3fs's ``ls`` lists the parent too when a prefix is empty, to tell it from a file.)
    """
    if _is_s3(fs):
        entries = fsspec.asyn.sync(fs.loop, fs._lsdir, directory, refresh=True)
        return [e["name"] for e in entries]
    return fs.ls(directory, detail=False)


class ListingCache:
    """Answer many ``exists`` questions with one directory listing per parent directory.

    Listings are kept for ``ttl`` seconds (``None``: for the life of the object); hidden
    temporaries never count as existing.  Not meant to be shared between threads.

    On mounts whose directory listings lag behind writes (iRODS FUSE, NFS attribute caches),
    ``confirm_missing`` checks each name missing from a listing once with a direct stat/HEAD
    (a complete night costs nothing extra). ``None`` takes the process default
    (:func:`set_confirm_missing`, ``[ztfluigi] listing_confirm_missing``).
    """

    confirm_missing_default = False

    def __init__(
        self,
        ttl: float | None = None,
        storage_options: dict | None = None,
        confirm_missing: bool | None = None,
    ) -> None:
        self.ttl = ttl
        self.storage_options = dict(storage_options or {})
        self.confirm_missing = (
            ListingCache.confirm_missing_default if confirm_missing is None else confirm_missing
        )
        self.n_listings = 0
        self.n_confirmations = 0
        self._listings: dict[tuple[str, str], tuple[float, set[str], set[str]]] = {}

    def _locate(self, url: str) -> tuple[tuple[str, str], str]:
        """Return the cache key of the parent directory of ``url`` and its base name."""
        parent, name = _split_url(_normalise_url(url))
        return self._key(parent), name

    def _key(self, directory: str) -> tuple[str, str]:
        protocol = _protocol(directory)
        fs = _get_fsspec(protocol, self.storage_options)
        return protocol, fs._strip_protocol(directory).rstrip("/") or "/"

    def _entry(self, key: tuple[str, str]) -> tuple[float, set[str], set[str]]:
        """(time, listed names, names confirmed missing) of a directory, listing it if needed."""
        entry = self._listings.get(key)
        if entry is not None and (self.ttl is None or time.monotonic() - entry[0] <= self.ttl):
            return entry
        protocol, directory = key
        fs = _get_fsspec(protocol, self.storage_options)
        fs.invalidate_cache(directory)
        try:
            listing = _list_directory(fs, directory)
        except (FileNotFoundError, NotADirectoryError):
            listing = []
        self.n_listings += 1
        names = {p.rstrip("/").rpartition("/")[2] for p in listing}
        names = {n for n in names if n and not _TMP_RE.match(n)}
        entry = self._listings[key] = (time.monotonic(), names, set())
        return entry

    def exists(self, url: str) -> bool:
        """Whether ``url`` exists, listing its parent directory only if not cached."""
        key, name = self._locate(url)
        _, names, missing = self._entry(key)
        if name in names:
            return True
        if not self.confirm_missing or name in missing or _TMP_RE.match(name):
            return False
        # The listing may lag behind a just-committed file: ask for the file itself, once.
        protocol, directory = key
        fs = _get_fsspec(protocol, self.storage_options)
        path = url_join(directory, name)
        fs.invalidate_cache(path)
        self.n_confirmations += 1
        if fs.exists(path):
            names.add(name)
            return True
        missing.add(name)
        return False

    def exists_many(self, urls: Iterable[str]) -> list[bool]:
        """Return ``exists(url)`` for each URL, with at most one listing per directory."""
        return [self.exists(url) for url in urls]

    def invalidate(self, url_or_dir: str | None = None) -> None:
        """Forget the listing of a directory, or of a file's parent directory (None: all)."""
        if url_or_dir is None:
            self._listings.clear()
            return
        key, _ = self._locate(url_or_dir)
        self._listings.pop(key, None)
        self._listings.pop(self._key(_normalise_url(url_or_dir)), None)

    def note_written(self, url: str) -> None:
        """Record that ``url`` now exists, if its directory listing is cached."""
        key, name = self._locate(url)
        entry = self._listings.get(key)
        if entry is not None and not _TMP_RE.match(name):
            entry[1].add(name)
            entry[2].discard(name)


def set_confirm_missing(enabled: bool) -> None:
    """Process default of :class:`ListingCache` ``confirm_missing`` (for lagging mounts)."""
    ListingCache.confirm_missing_default = bool(enabled)


def bulk_exists(urls: Iterable[str]) -> list[bool]:
    """Return whether each URL exists, with one listing per parent directory."""
    return ListingCache().exists_many(urls)


def abort_incomplete_uploads(url: str, older_than: float = 86400.0) -> int:
    """Abort S3 multipart uploads under ``url`` started over ``older_than`` seconds ago.

    A writer killed mid-upload leaves parts that are never visible as an object but are billed
    until aborted (or expired by a bucket lifecycle rule). Returns how many were aborted.
    """
    fs = FsspecFileSystem(url).fsspec
    if not _is_s3(fs):
        raise ValueError(f"multipart uploads exist only on S3, not at {url}")
    bucket, prefix, _ = fs.split_path(url)
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than)
    aborted, markers = 0, {}
    while True:
        page = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix, **markers)
        for upload in page.get("Uploads", []):
            if upload["Initiated"] <= cutoff:
                fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=upload["Key"],
                           UploadId=upload["UploadId"])  # fmt: skip
                aborted += 1
        if not page.get("IsTruncated"):
            return aborted
        markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}


# --------------------------------------------------------------------------------------------
# Product I/O
# --------------------------------------------------------------------------------------------


def write_bytes(target: FsspecTarget, data: bytes) -> None:
    """Write ``data`` atomically to ``target``."""
    with target.open("wb") as f:
        f.write(data)


def read_bytes(target_or_url: FsspecTarget | str) -> bytes:
    """Return the content of a product, raising :class:`ProductError` if it is missing."""
    target = _as_target(target_or_url)
    try:
        return target.fs.fsspec.cat_file(target.path)
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise ProductError(f"missing product: {target.path}", target.path) from exc
    except PermissionError as exc:
        raise ProductError(f"access denied to product {target.path}", target.path) from exc


def write_fits(target: FsspecTarget, hdul: fits.HDUList, **writeto_kwargs: Any) -> None:
    """Write an HDU list atomically to ``target`` (dtypes are preserved: float32 stays float32)."""
    with target.temporary_path() as tmp:
        hdul.writeto(tmp, **writeto_kwargs)


def read_fits(target_or_url: FsspecTarget | str) -> fits.HDUList:
    """Load a FITS product fully into memory, raising :class:`ProductError` if missing or corrupt.

    Astropy only warns about truncated files (and silently drops a truncated last HDU), so
    such warnings are turned into errors.
    """
    target = _as_target(target_or_url)
    data = read_bytes(target)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(io.BytesIO(data), lazy_load_hdus=False, memmap=False)
            for hdu in hdul:
                hdu.data  # noqa: B018 - force loading (and decompression) now
        except Exception as exc:
            raise ProductError(f"corrupt FITS product {target.path}: {exc}", target.path) from exc
    for w in caught:
        message = str(w.message)
        if "truncated" in message or "corrupt" in message:
            first = message.splitlines()[0]
            raise ProductError(f"corrupt FITS product {target.path}: {first}", target.path)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return hdul


def write_parquet(
    target: FsspecTarget,
    table: pa.Table,
    metadata: dict[str, str] | None = None,
    **write_table_kwargs: Any,
) -> None:
    """Write a table atomically, merging ``metadata`` into the schema key-value metadata."""
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({str(k).encode(): str(v).encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    with target.temporary_path() as tmp:
        pq.write_table(table, tmp, **write_table_kwargs)


def read_parquet(target_or_url: FsspecTarget | str, columns: list[str] | None = None) -> pa.Table:
    """Read a parquet product (optionally only ``columns``); ProductError if missing or corrupt."""
    target = _as_target(target_or_url)
    try:
        with target.fs.fsspec.open(target.path, "rb") as f:
            return pq.read_table(f, columns=columns)
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise ProductError(f"missing product: {target.path}", target.path) from exc
    except PermissionError as exc:
        raise ProductError(f"access denied to product {target.path}", target.path) from exc
    except pa.ArrowException as exc:
        raise ProductError(f"unreadable parquet product {target.path}: {exc}", target.path) from exc
