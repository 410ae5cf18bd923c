"""URLs of products: normalisation, protocol, joining and splitting (fsspec conventions)."""

from __future__ import annotations

import os

from fsspec.core import split_protocol


def normalise_url(url: str | os.PathLike) -> str:
    """Return ``url`` as a string, making plain local paths absolute (URLs are kept as given)."""
    url = os.fspath(url)
    if split_protocol(url)[0] is None:
        return os.path.abspath(os.path.expanduser(url))
    return url


def protocol_of(url: str) -> str:
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


def split_url(url: str) -> tuple[str, str]:
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
