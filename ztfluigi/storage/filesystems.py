"""Filesystems: one cached fsspec client per (protocol, options) and process, store settings.

Endpoints and credentials are per-protocol defaults set once per configuration by
:func:`configure` (``[s3]`` of luigi.cfg, handed over by :mod:`ztfluigi.config`); they live in
memory only and never appear in a target's repr, its pickle, log lines or error messages.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

import fsspec
import fsspec.config
import luigi.target
from fsspec.implementations.local import LocalFileSystem

from ztfluigi.storage.urls import protocol_of, split_url, url_join

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


def get_fsspec(protocol: str, storage_options: dict | None) -> fsspec.AbstractFileSystem:
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


def s3_part_size() -> int:
    """The multipart part size of S3 commits, in bytes."""
    return _S3_PART_SIZE


@dataclass(frozen=True)
class StoreSettings:
    """How stores are reached: per-protocol client options (endpoint, credentials), the S3
    multipart part size and the listing policy of lagging mounts. Built from luigi.cfg by
    :mod:`ztfluigi.config`; ``repr`` never shows the options (they may hold credentials)."""

    options: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    s3_part_size: int = S3_DEFAULT_PART_SIZE
    confirm_missing: bool = False


_CONFIGURED: StoreSettings | None = None


def configure(settings: StoreSettings) -> None:
    """Make ``settings`` this process's store settings (a no-op when they are unchanged).

    Called once per configuration (not per product URL); protocols configured before and absent
    now get their fsspec defaults back.
    """
    global _CONFIGURED
    if settings == _CONFIGURED:
        return
    from ztfluigi.storage.listing import set_confirm_missing

    before = _CONFIGURED.options if _CONFIGURED is not None else {}
    for protocol in {*before, *settings.options}:
        if settings.options.get(protocol) or before.get(protocol):
            set_default_storage_options(protocol, settings.options.get(protocol) or None)
    set_s3_part_size(settings.s3_part_size)
    set_confirm_missing(settings.confirm_missing)
    _CONFIGURED = settings


def is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    names = type(fs).protocol
    return "s3" in ((names,) if isinstance(names, str) else tuple(names))


class FsspecFileSystem(luigi.target.FileSystem):
    """Luigi FileSystem delegating to an fsspec filesystem; paths are full URLs.

    Only the protocol and storage options are stored, so instances pickle cleanly; the fsspec
    filesystem (and any network client) is created lazily and cached per process.
    """

    def __init__(self, url: str = "file://", storage_options: dict | None = None) -> None:
        self.protocol = protocol_of(os.fspath(url))
        self.storage_options = dict(storage_options or {})

    def __repr__(self) -> str:
        return f"FsspecFileSystem({self.protocol!r})"

    @property
    def fsspec(self) -> fsspec.AbstractFileSystem:
        """The underlying fsspec filesystem (cached per process)."""
        return get_fsspec(self.protocol, self.storage_options)

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
            os.makedirs(split_url(self._path(path))[0], exist_ok=True)

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

