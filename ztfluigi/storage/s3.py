"""S3 housekeeping: multipart uploads that killed writers left behind."""

from __future__ import annotations

import datetime as dt

from ztfluigi.storage.filesystems import FsspecFileSystem, is_s3


def abort_incomplete_uploads(url: str, older_than: float = 86400.0) -> int:
    """Abort S3 multipart uploads under ``url`` started over ``older_than`` seconds ago.

    A writer killed mid-upload leaves parts that are never visible as an object but are billed
    until aborted (or expired by a bucket lifecycle rule). Returns how many were aborted.
    """
    fs = FsspecFileSystem(url).fsspec
    if not is_s3(fs):
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
