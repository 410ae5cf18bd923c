"""Credential masking in network clients' logs (botocore prints access key ids and tokens)."""

from __future__ import annotations

import logging
import re

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


_MASK = _MaskCredentials()


def install() -> None:
    """Mask credentials in the loggers of the S3 clients (idempotent)."""
    for name in ("botocore.endpoint", "botocore.auth", "aiobotocore.endpoint"):
        logging.getLogger(name).addFilter(_MASK)

