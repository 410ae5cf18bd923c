"""Product I/O: bytes, FITS and parquet read and written through atomic targets."""

from __future__ import annotations

import io
import warnings
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from astropy.io import fits

from ztfluigi.storage.targets import FsspecTarget, as_target


class ProductError(Exception):
    """A product is missing or unreadable; the message is one user-facing line naming the URL."""

    def __init__(self, message: str, url: str | None = None) -> None:
        message = " ".join(str(message).split())
        super().__init__(message)
        self.url = url



def write_bytes(target: FsspecTarget, data: bytes) -> None:
    """Write ``data`` atomically to ``target``."""
    with target.open("wb") as f:
        f.write(data)


def read_bytes(target_or_url: FsspecTarget | str) -> bytes:
    """Return the content of a product, raising :class:`ProductError` if it is missing."""
    target = as_target(target_or_url)
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
    target = as_target(target_or_url)
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
    target = as_target(target_or_url)
    try:
        with target.fs.fsspec.open(target.path, "rb") as f:
            return pq.read_table(f, columns=columns)
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise ProductError(f"missing product: {target.path}", target.path) from exc
    except PermissionError as exc:
        raise ProductError(f"access denied to product {target.path}", target.path) from exc
    except pa.ArrowException as exc:
        raise ProductError(f"unreadable parquet product {target.path}: {exc}", target.path) from exc
