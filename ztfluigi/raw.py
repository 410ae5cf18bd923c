"""Raw CCD files: integrity checks and reading into quadrants and overscans (pure, no Luigi)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from ztfluigi import camera, fitschecksum

N_HDU = 9  #: primary + 4 quadrants + 4 overscans


class RawFileError(ValueError):
    """A raw file that is truncated, corrupt or not laid out as a ZTF raw CCD file."""


@dataclass
class RawCCD:
    """The content of one raw CCD file, arrays in raw (storage) orientation, float32."""

    header: fits.Header
    quadrant_headers: dict[int, fits.Header]
    data: dict[int, np.ndarray]  #: qid → (nrows, ncols)
    overscan: dict[int, np.ndarray]  #: qid → (nrows, 30)


def read_raw(content: bytes, name: str = "raw file") -> RawCCD:
    """Decode a raw ``.fits.fz`` file held in memory; raises RawFileError with the file name."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            with fits.open(io.BytesIO(content), lazy_load_hdus=False) as hdul:
                if len(hdul) != N_HDU:
                    raise RawFileError(f"{name}: {len(hdul)} HDUs, a ZTF raw file has {N_HDU}")
                data = {q: np.asarray(hdul[q].data, dtype=np.float32) for q in range(1, 5)}
                over = {q: np.asarray(hdul[q + 4].data, dtype=np.float32) for q in range(1, 5)}
                ccd = RawCCD(hdul[0].header.copy(), {q: hdul[q].header.copy() for q in range(1, 5)},
                             data, over)  # fmt: skip
    except RawFileError:
        raise
    except Exception as exc:  # astropy raises many types on corrupt input
        raise RawFileError(f"{name}: unreadable FITS ({type(exc).__name__}: {exc})") from None
    shape = ccd.data[1].shape
    for q in range(1, 5):
        if ccd.data[q] is None or ccd.data[q].shape != shape:
            raise RawFileError(
                f"{name}: quadrant {q} has shape {np.shape(ccd.data[q])}, not {shape}"
            )
        if ccd.overscan[q].shape != (shape[0], camera.OVERSCAN_COLUMNS):
            raise RawFileError(f"{name}: overscan {q} has shape {ccd.overscan[q].shape}")
    return ccd


def verify_raw(content: bytes, name: str = "raw file") -> RawCCD:
    """Check a downloaded raw file completely (structure, checksums, decompression); return it."""
    try:
        fitschecksum.verify(content, name)
    except fitschecksum.FitsIntegrityError as exc:
        raise RawFileError(str(exc) if name in str(exc) else f"{name}: {exc}") from None
    ccd = read_raw(content, name)
    if not all(np.isfinite(ccd.data[q]).all() for q in ccd.data):
        raise RawFileError(f"{name}: non-finite pixel values")
    return ccd
