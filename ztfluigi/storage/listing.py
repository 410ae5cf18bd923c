"""Bulk existence: many ``exists`` answered from one directory listing per parent directory."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

import fsspec
import fsspec.asyn

from ztfluigi.storage.filesystems import get_fsspec, is_s3
from ztfluigi.storage.targets import TMP_RE
from ztfluigi.storage.urls import normalise_url, protocol_of, split_url, url_join


def list_directory(fs: fsspec.AbstractFileSystem, directory: str) -> list[str]:
    """Paths of a directory's entries: one LIST per 1,000 entries on S3, also when empty.

    (s3fs's ``ls`` lists the parent too when a prefix is empty, to tell it from a file.)
    """
    if is_s3(fs):
        entries = fsspec.asyn.sync(fs.loop, fs._lsdir, directory, refresh=True)
        return [e["name"] for e in entries]
    return fs.ls(directory, detail=False)


def files_under(url: str) -> list[str]:
    """Paths of every file below a directory URL (recursively; none if it does not exist): one
    walk of names on local disk (fsspec's ``find`` stats every file), ``find`` elsewhere (a
    recursive LIST on S3), never from a stale cache."""
    from ztfluigi.storage.targets import get_target

    target_fs = get_target(url).fs
    fs = target_fs.fsspec
    path = fs._strip_protocol(url)
    if target_fs.is_local:
        return [f"{d}/{n}" for d, _, names in os.walk(path) for n in names]
    fs.invalidate_cache(path)
    try:
        return fs.find(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


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
        parent, name = split_url(normalise_url(url))
        return self._key(parent), name

    def _key(self, directory: str) -> tuple[str, str]:
        protocol = protocol_of(directory)
        fs = get_fsspec(protocol, self.storage_options)
        return protocol, fs._strip_protocol(directory).rstrip("/") or "/"

    def _entry(self, key: tuple[str, str]) -> tuple[float, set[str], set[str]]:
        """(time, listed names, names confirmed missing) of a directory, listing it if needed."""
        entry = self._listings.get(key)
        if entry is not None and (self.ttl is None or time.monotonic() - entry[0] <= self.ttl):
            return entry
        protocol, directory = key
        fs = get_fsspec(protocol, self.storage_options)
        fs.invalidate_cache(directory)
        try:
            listing = list_directory(fs, directory)
        except (FileNotFoundError, NotADirectoryError):
            listing = []
        self.n_listings += 1
        names = {p.rstrip("/").rpartition("/")[2] for p in listing}
        names = {n for n in names if n and not TMP_RE.match(n)}
        entry = self._listings[key] = (time.monotonic(), names, set())
        return entry

    def exists(self, url: str) -> bool:
        """Whether ``url`` exists, listing its parent directory only if not cached."""
        key, name = self._locate(url)
        _, names, missing = self._entry(key)
        if name in names:
            return True
        if not self.confirm_missing or name in missing or TMP_RE.match(name):
            return False
        # The listing may lag behind a just-committed file: ask for the file itself, once.
        protocol, directory = key
        fs = get_fsspec(protocol, self.storage_options)
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
        self._listings.pop(self._key(normalise_url(url_or_dir)), None)

    def note_written(self, url: str) -> None:
        """Record that ``url`` now exists, if its directory listing is cached."""
        key, name = self._locate(url)
        entry = self._listings.get(key)
        if entry is not None and not TMP_RE.match(name):
            entry[1].add(name)
            entry[2].discard(name)


def set_confirm_missing(enabled: bool) -> None:
    """Process default of :class:`ListingCache` ``confirm_missing`` (for lagging mounts)."""
    ListingCache.confirm_missing_default = bool(enabled)


def bulk_exists(urls: Iterable[str]) -> list[bool]:
    """Return whether each URL exists, with one listing per parent directory."""
    return ListingCache().exists_many(urls)
