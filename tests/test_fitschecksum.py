"""FITS checksums with fixed comments: valid for astropy, reproducible, and catching corruption."""

import io
import warnings

import numpy as np
import pytest
from astropy.io import fits

from ztfluigi import fitschecksum


def _file(seed=0):
    rng = np.random.default_rng(seed)
    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(rng.normal(size=(50, 40)).astype("f4")),
            fits.CompImageHDU(rng.normal(size=(64, 32)).astype("f4")),
        ]
    )
    buf = io.BytesIO()
    hdul.writeto(buf)
    return buf.getvalue()


def test_checksums_are_valid_for_astropy_and_reproducible():
    data = fitschecksum.add_checksums(_file())
    assert data == fitschecksum.add_checksums(_file())
    fitschecksum.verify(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fits.open(io.BytesIO(data), checksum=True) as hdul:
            assert "CHECKSUM" in hdul[1].header
            hdul[2].data  # noqa: B018 - decompress


def test_corruption_and_truncation_are_caught():
    data = bytearray(fitschecksum.add_checksums(_file()))
    data[-100] ^= 0x01
    with pytest.raises(fitschecksum.FitsIntegrityError, match="mismatch"):
        fitschecksum.verify(bytes(data), "x.fits")
    good = fitschecksum.add_checksums(_file())
    for cut in (2880 * 2, len(good) - 2880, 1000):
        with pytest.raises(fitschecksum.FitsIntegrityError):
            fitschecksum.verify(good[:cut], "x.fits")
