"""Luigi targets on any fsspec URL whose writes are atomic: a product exists only when whole."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import luigi.target

from ztfluigi.storage import filesystems
from ztfluigi.storage.filesystems import FsspecFileSystem, is_s3
from ztfluigi.storage.urls import normalise_url, split_url

# Hidden temporary names written next to (or instead of) a product:
# ``.{name}.tmp-{host:8}{pid:8}{uuid:32}`` in hex (older versions wrote ``.{name}.tmp-{uuid}``).
TMP_RE = re.compile(r"^\..+\.tmp-[0-9a-f]+$")
_WRITER_RE = re.compile(r"\.tmp-([0-9a-f]{8})([0-9a-f]{8})[0-9a-f]{32}$")
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
#: a temporary older than this is stale whoever wrote it (no product write takes that long)
STALE_TEMPORARY_S = 6 * 3600.0
_SWEPT: set[str] = set()  # directories already swept by this process


def _writer_gone(name: str) -> bool:
    """Whether the temporary's writer was a process of this host that no longer exists."""
    match = _WRITER_RE.search(name)
    if match is None or match.group(1) != _HOST:
        return False
    try:
        os.kill(int(match.group(2), 16), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def sweep_stale_temporaries(directory: str, now: float | None = None) -> list[str]:
    """Remove the temporaries that killed writers left in a local directory: those whose writer
    (on this host) is gone, and any older than :data:`STALE_TEMPORARY_S`. Returns their paths."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if not TMP_RE.match(entry.name):
            continue
        try:
            stale = now - entry.stat().st_mtime > STALE_TEMPORARY_S or _writer_gone(entry.name)
            if stale:
                os.remove(entry.path)
                removed.append(entry.path)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            continue
    return removed


class _Staging:
    """A local temporary file for a target and the way to commit it under the final name."""

    def __init__(self, target: FsspecTarget) -> None:
        self.fs = target.fs
        self.url = target.path
        tmp_name = f".{split_url(self.url)[1]}.tmp-{_HOST}{os.getpid():08x}{uuid.uuid4().hex}"
        if self.fs.is_local:
            # Same directory as the product: os.replace is then an atomic rename, also on
            # FUSE mounts (iRODS) where cross-directory renames may copy or fail.
            self.final = self.fs._path(self.url)
            parent = os.path.dirname(self.final)
            os.makedirs(parent, exist_ok=True)
            if parent not in _SWEPT:  # the first write into a directory clears killed writes
                _SWEPT.add(parent)
                sweep_stale_temporaries(parent)
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
            kwargs = {"chunksize": filesystems.s3_part_size()} if is_s3(fs) else {}
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
        super().__init__(normalise_url(url))
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
        if is_s3(fs):
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


def as_target(target_or_url: FsspecTarget | str | os.PathLike) -> FsspecTarget:
    if isinstance(target_or_url, FsspecTarget):
        return target_or_url
    if isinstance(target_or_url, luigi.target.FileSystemTarget):
        return FsspecTarget(target_or_url.path)
    return FsspecTarget(target_or_url)


# --------------------------------------------------------------------------------------------
# Bulk existence
