"""Raw CCD files: integrity checks and reading into quadrants and overscans (pure, no Luigi)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import fitsio
import numpy as np
from astropy.io import fits

from ztfluigi import camera, fitschecksum, ipac

N_HDU = 9  #: primary + 4 quadrants + 4 overscans
HEADER_PROBE = 4 * fitschecksum.BLOCK  #: first read of a primary header (a raw one: 3 blocks)
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None


class RawFileError(ValueError):
    """A raw file that is truncated, corrupt or not laid out as a ZTF raw CCD file."""


@dataclass
class RawCCD:
    """The content of one raw CCD file, arrays in raw (storage) orientation, float32."""

    header: fits.Header
    quadrant_headers: dict[int, fits.Header]
    data: dict[int, np.ndarray]  #: qid → (nrows, ncols)
    overscan: dict[int, np.ndarray]  #: qid → (nrows, 30)


def raw_hdu_spans(content: bytes, name: str = "raw file") -> list[tuple[int, int, int]]:
    """The (header start, data start, end) byte spans of a raw file's HDUs; RawFileError naming
    the file when it is not a FITS file of the :data:`N_HDU` HDUs of a ZTF raw file."""
    try:
        spans = fitschecksum.hdu_spans(content)
    except fitschecksum.FitsIntegrityError as exc:
        raise RawFileError(f"{name}: {exc}") from None
    if len(spans) != N_HDU:
        raise RawFileError(f"{name}: {len(spans)} HDUs, a ZTF raw file has {N_HDU}")
    return spans


def read_raw(content: bytes, name: str = "raw file") -> RawCCD:
    """Decode a raw ``.fits.fz`` file held in memory; raises RawFileError with the file name.

    CFITSIO (fitsio) decompresses ≈8× faster than astropy here, so pixels are read with it from
    a scratch copy in memory-backed storage; headers keep their cards (compressed HDUs show their
    ``Z*`` bookkeeping keys besides the image keys).
    """
    spans = raw_hdu_spans(content, name)
    try:
        with tempfile.NamedTemporaryFile(suffix=".fits.fz", dir=_SCRATCH) as tmp:
            tmp.write(content)
            tmp.flush()
            with fitsio.FITS(tmp.name) as f:
                data = {q: np.asarray(f[q].read(), dtype=np.float32) for q in range(1, 5)}
                over = {q: np.asarray(f[q + 4].read(), dtype=np.float32) for q in range(1, 5)}
    except RawFileError:
        raise
    except Exception as exc:  # CFITSIO raises IOError/ValueError with multi-line messages
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RawFileError(f"{name}: unreadable FITS ({first})") from None
    hdrs = [fits.Header.fromstring(content[a:b]) for a, b, _ in spans[:5]]
    ccd = RawCCD(hdrs[0], {q: hdrs[q] for q in range(1, 5)}, data, over)
    shape = ccd.data[1].shape
    for q in range(1, 5):
        if ccd.data[q].ndim != 2 or ccd.data[q].shape != shape:
            raise RawFileError(f"{name}: quadrant {q} has shape {ccd.data[q].shape}, not {shape}")
        if ccd.overscan[q].shape != (shape[0], camera.OVERSCAN_COLUMNS):
            raise RawFileError(f"{name}: overscan {q} has shape {ccd.overscan[q].shape}")
    return ccd


def verify_raw(
    content: bytes, name: str = "raw file", qids: tuple[int, ...] = (1, 2, 3, 4)
) -> RawCCD:
    """Check a raw file (structure, checksums, decompression of quadrants ``qids``: all by
    default, as a download is checked); return it (:func:`read_quadrants`)."""
    try:
        fitschecksum.verify(content, name)
    except fitschecksum.FitsIntegrityError as exc:
        raise RawFileError(str(exc) if name in str(exc) else f"{name}: {exc}") from None
    ccd = read_quadrants(content, name, qids)
    if not all(np.isfinite(ccd.data[q]).all() for q in ccd.data):
        raise RawFileError(f"{name}: non-finite pixel values")
    return ccd


def read_primary_header(
    read: Callable[[int, int], bytes], name: str = "raw file", probe: int = HEADER_PROBE
) -> fits.Header:
    """The primary header of a FITS file from ranged reads ``read(start, end)`` of its first
    blocks (``probe`` bytes, doubled until the END card): a raw file's header without reading
    its 4-20 MB of pixels. Parsed strictly; RawFileError naming ``name`` when damaged."""
    buf = b""
    while True:
        chunk = read(len(buf), probe)
        buf += chunk
        try:
            if len(buf) >= 9 and not buf.startswith(b"SIMPLE  ="):
                raise ipac.IpacError(f"{name}: not a FITS file")
            end = ipac.header_end(buf, name)
            if end is not None:
                return ipac.parse_header(buf[: ipac.header_size(end)], name)
        except ipac.IpacError as exc:
            raise RawFileError(str(exc)) from None
        if len(buf) < probe:
            raise RawFileError(f"{name}: FITS primary header has no END card ({len(buf)} bytes)")
        probe *= 2


def read_quadrants(
    content: bytes, name: str = "raw file", qids: tuple[int, ...] = (1, 2, 3, 4)
) -> RawCCD:
    """:func:`read_raw` for the quadrants ``qids`` only (and their overscans), decoded by
    :mod:`ztfluigi.ricefits` from ``content`` in one compiled pass each (≈ 5× faster than CFITSIO,
    bit for bit equal); a layout that decoder does not handle is read by :func:`read_raw`.

    A night reads each exposure once for its four quadrants (the default); one quadrant's build
    decodes that quadrant alone. The headers of the primary and of all quadrant HDUs are parsed.
    """
    from ztfluigi import ricefits

    spans = raw_hdu_spans(content, name)
    hdrs = [fits.Header.fromstring(content[a:b]) for a, b, _ in spans]
    buf = np.frombuffer(content, np.uint8)
    try:
        data = {q: ricefits.decode_image(buf, spans[q], hdrs[q]) for q in qids}
        over = {q: ricefits.decode_image(buf, spans[q + 4], hdrs[q + 4]) for q in qids}
    except ricefits.Unsupported:
        ccd = read_raw(content, name)
        ccd.data = {q: ccd.data[q] for q in qids}
        ccd.overscan = {q: ccd.overscan[q] for q in qids}
        return ccd
    except ValueError as exc:
        raise RawFileError(f"{name}: unreadable FITS ({exc})") from None
    ccd = RawCCD(hdrs[0], {q: hdrs[q] for q in range(1, 5)}, data, over)
    for q in qids:
        if ccd.overscan[q].shape != (ccd.data[q].shape[0], camera.OVERSCAN_COLUMNS):
            raise RawFileError(f"{name}: overscan {q} has shape {ccd.overscan[q].shape}")
    if len({ccd.data[q].shape for q in qids}) > 1:
        raise RawFileError(f"{name}: quadrants differ in shape")
    return ccd
