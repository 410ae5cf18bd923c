"""Product I/O: bytes, FITS and parquet read and written through atomic targets, with integrity.

Every product carries a checksum its writer computed, and readers verify it before use:

* FITS products get ``CHECKSUM``/``DATASUM`` cards in every HDU (FITS standard appendix J, with
  fixed comments so that rebuilding gives identical bytes: :mod:`ztfluigi.fitschecksum`);
* parquet products are written with page checksums and carry :data:`DIGEST_KEY`, the SHA-256
  of their schema, rows and other key-value metadata, in their key-value metadata.

A product that fails verification raises :class:`DamagedProduct` naming it; the task layer
then sets it aside (:func:`quarantine`) and builds it again.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import warnings
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from astropy.io import fits

from ztfluigi import fitschecksum
from ztfluigi.storage.targets import FsspecTarget, as_target
from ztfluigi.storage.urls import split_url

DIGEST_KEY = "ztfluigi.sha256"  #: parquet metadata key of the rows' SHA-256


class ProductError(Exception):
    """A product is missing or unreadable; the message is one user-facing line naming the URL."""

    def __init__(self, message: str, url: str | None = None) -> None:
        message = " ".join(str(message).split())
        super().__init__(message)
        self.url = url


class DamagedProduct(ProductError):
    """A stored product that fails verification (checksum, structure, truncation)."""


class MissingProduct(ProductError):
    """A product that does not exist (yet) under its name."""


@functools.cache
def _write_error_type(os_error: type[OSError]) -> type[ProductError]:
    """A ProductError that is also the OS error it reports (callers may catch either)."""
    return type(f"Product{os_error.__name__}", (ProductError, os_error), {"__module__": __name__})


def _write_error(target: FsspecTarget, exc: OSError) -> ProductError:
    """An OS error of a write (full disk, permissions…) as one line naming the product."""
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    return _write_error_type(type(exc))(
        f"cannot write product {target.path}: {reason} (nothing was written under its name)",
        target.path)  # fmt: skip


def write_bytes(target: FsspecTarget, data: bytes) -> None:
    """Write ``data`` atomically to ``target``."""
    try:
        with target.open("wb") as f:
            f.write(data)
    except OSError as exc:
        raise _write_error(target, exc) from exc


def read_bytes(target_or_url: FsspecTarget | str) -> bytes:
    """Return the content of a product, raising :class:`ProductError` if it is missing."""
    target = as_target(target_or_url)
    try:
        return target.fs.fsspec.cat_file(target.path)
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise MissingProduct(f"missing product: {target.path}", target.path) from exc
    except PermissionError as exc:
        raise ProductError(f"access denied to product {target.path}", target.path) from exc


def write_fits(target: FsspecTarget, hdul: fits.HDUList, **writeto_kwargs: Any) -> None:
    """Write an HDU list atomically to ``target`` with CHECKSUM/DATASUM in every HDU (dtypes are
    preserved: float32 stays float32; the same HDUs always give the same bytes)."""
    buf = io.BytesIO()
    hdul.writeto(buf, **writeto_kwargs)
    write_bytes(target, fitschecksum.add_checksums(buf.getvalue()))


def read_fits(target_or_url: FsspecTarget | str, require_checksum: bool = False) -> fits.HDUList:
    """Load a FITS product fully into memory, raising :class:`ProductError` if missing and
    :class:`DamagedProduct` if truncated, malformed or failing its CHECKSUM/DATASUM
    (``require_checksum``: also when the checksum cards are absent — every ztfluigi product has
    them). Astropy only warns about truncated files, so such warnings are turned into errors.
    """
    target = as_target(target_or_url)
    data = read_bytes(target)
    verify_fits_bytes(data, target.path, require_checksum)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(io.BytesIO(data), lazy_load_hdus=False, memmap=False)
            for hdu in hdul:
                hdu.data  # noqa: B018 - force loading (and decompression) now
        except Exception as exc:
            raise DamagedProduct(f"corrupt FITS product {target.path}: {exc}", target.path) from exc
    for w in caught:
        message = str(w.message)
        if "truncated" in message or "corrupt" in message:
            first = message.splitlines()[0]
            raise DamagedProduct(f"corrupt FITS product {target.path}: {first}", target.path)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return hdul


def verify_fits_bytes(data: bytes, url: str, require_checksum: bool = False) -> None:
    """Structure and checksums of a FITS product's bytes; :class:`DamagedProduct` on failure."""
    try:
        fitschecksum.verify(data, url)
        if require_checksum and b"CHECKSUM= " not in data[: fitschecksum.hdu_spans(data)[0][1]]:
            raise fitschecksum.FitsIntegrityError(f"{url}: no CHECKSUM (not written whole)")
    except fitschecksum.FitsIntegrityError as exc:
        text = str(exc) if url in str(exc) else f"{url}: {exc}"
        raise DamagedProduct(f"damaged FITS product {text}", url) from exc


def table_digest(table: pa.Table) -> str:
    """SHA-256 of a table's schema, rows and key-value metadata (but the digest itself)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema.remove_metadata()) as writer:
        writer.write_table(table.replace_schema_metadata(None))
    digest = hashlib.sha256(sink.getvalue().to_pybytes())
    metadata = table.schema.metadata or {}
    for key in sorted(k for k in metadata if k not in (DIGEST_KEY.encode(), b"ARROW:schema")):
        digest.update(len(key).to_bytes(8, "little") + key)
        digest.update(len(metadata[key]).to_bytes(8, "little") + metadata[key])
    return digest.hexdigest()


def write_parquet(
    target: FsspecTarget,
    table: pa.Table,
    metadata: dict[str, str] | None = None,
    **write_table_kwargs: Any,
) -> None:
    """Write a table atomically, merging ``metadata`` into the schema key-value metadata, with
    page checksums and the rows' digest (:data:`DIGEST_KEY`)."""
    merged = dict(table.schema.metadata or {})
    merged.update({str(k).encode(): str(v).encode() for k, v in (metadata or {}).items()})
    merged.pop(DIGEST_KEY.encode(), None)
    table = table.replace_schema_metadata(merged)
    write_table_kwargs.setdefault("write_page_checksum", True)
    # The digest is of the table as readers will see it (parquet renames nested list fields,
    # may widen types): round trip it in memory first.
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, **write_table_kwargs)
    as_read = pq.read_table(pa.BufferReader(buffer.getvalue()))
    merged[DIGEST_KEY.encode()] = table_digest(as_read).encode()
    table = table.replace_schema_metadata(merged)
    try:
        with target.temporary_path() as tmp:
            pq.write_table(table, tmp, **write_table_kwargs)
    except OSError as exc:
        raise _write_error(target, exc) from exc


def read_parquet(
    target_or_url: FsspecTarget | str, columns: list[str] | None = None,
    require_digest: bool = False, filters: list | None = None,
) -> pa.Table:
    """Read a parquet product (optionally only ``columns``), verifying its page checksums and,
    when reading it whole, its digest (``require_digest``: the digest must be there);
    ``filters``: pyarrow row filters (only matching row groups are read).
    :class:`ProductError` if missing, :class:`DamagedProduct` if it fails verification."""
    target = as_target(target_or_url)
    try:
        with target.fs.fsspec.open(target.path, "rb") as f:
            table = pq.read_table(f, columns=columns, filters=filters,
                                  page_checksum_verification=True)  # fmt: skip
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise MissingProduct(f"missing product: {target.path}", target.path) from exc
    except PermissionError as exc:
        raise ProductError(f"access denied to product {target.path}", target.path) from exc
    except (pa.ArrowException, OSError) as exc:
        message = " ".join(str(exc).split())[:200]
        raise DamagedProduct(f"damaged parquet product {target.path}: {message}",
                             target.path) from exc  # fmt: skip
    expected = (table.schema.metadata or {}).get(DIGEST_KEY.encode())
    if expected is None and require_digest:
        raise DamagedProduct(f"damaged parquet product {target.path}: no digest", target.path)
    whole = columns is None and filters is None
    if expected is not None and whole and table_digest(table).encode() != expected:
        raise DamagedProduct(f"damaged parquet product {target.path}: content differs from its "
                             "digest", target.path)  # fmt: skip
    return table


def quarantine(url: str) -> str | None:
    """Set a damaged product aside under a hidden name in its directory (never read again,
    and absent for existence checks, so the next run rebuilds it); returns the new URL."""
    target = as_target(url)
    parent, name = split_url(target.path)
    aside = f"{parent}/.{name}.damaged-{os.getpid()}"
    try:
        target.fs.move(target.path, aside)
    except FileNotFoundError:
        return None
    return aside
