"""Stores: fsspec-backed Luigi targets with atomic commits, bulk existence and product I/O.

Every product of the pipeline is addressed by a URL: a local path, ``file://``, ``memory://``
or ``s3://`` (iRODS trees are mounted POSIX paths). Writes are atomic everywhere: a reader
never sees a partial file under a product's final name, even if the writer is killed. Products
are immutable and deterministic, so committing over an existing file is allowed (last writer
wins, with ``os.replace`` semantics): two workers racing on the same product write identical
bytes.

One module per job: :mod:`~ztfluigi.storage.urls` (URL helpers),
:mod:`~ztfluigi.storage.filesystems` (cached clients and the store settings),
:mod:`~ztfluigi.storage.targets` (the atomic Luigi target), :mod:`~ztfluigi.storage.listing`
(bulk existence), :mod:`~ztfluigi.storage.products` (bytes/FITS/parquet I/O),
:mod:`~ztfluigi.storage.s3` (multipart clean-up), :mod:`~ztfluigi.storage.credentials` (log
masking).
"""

from ztfluigi.storage import credentials
from ztfluigi.storage.filesystems import (
    S3_DEFAULT_PART_SIZE,
    S3_MIN_PART_SIZE,
    FsspecFileSystem,
    StoreSettings,
    configure,
    reset_filesystems,
    set_default_storage_options,
    set_s3_part_size,
)
from ztfluigi.storage.listing import ListingCache, bulk_exists, files_under, set_confirm_missing
from ztfluigi.storage.products import (
    DIGEST_KEY,
    DamagedProduct,
    MissingProduct,
    ProductError,
    quarantine,
    read_bytes,
    read_fits,
    read_parquet,
    table_digest,
    write_bytes,
    write_fits,
    write_parquet,
)
from ztfluigi.storage.s3 import abort_incomplete_uploads
from ztfluigi.storage.targets import FsspecTarget, get_target
from ztfluigi.storage.urls import url_join

credentials.install()

__all__ = [
    "S3_DEFAULT_PART_SIZE",
    "S3_MIN_PART_SIZE",
    "DIGEST_KEY",
    "DamagedProduct",
    "MissingProduct",
    "FsspecFileSystem",
    "FsspecTarget",
    "ListingCache",
    "files_under",
    "ProductError",
    "quarantine",
    "table_digest",
    "StoreSettings",
    "abort_incomplete_uploads",
    "bulk_exists",
    "configure",
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
