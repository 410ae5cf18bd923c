"""The compiled Rice/dither decoder equals CFITSIO bit for bit, refuses what it does not handle, and
raw files read through it equal :func:`ztfluigi.raw.read_raw`."""

from __future__ import annotations

import datetime as dt

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from ztfluigi import fitschecksum, raw, ricefits


def compressed(tmp_path, image: np.ndarray, **options) -> bytes:
    """``image`` written by CFITSIO (fitsio) as a tile-compressed HDU after an empty primary."""
    path = tmp_path / "image.fits.fz"
    with fitsio.FITS(path, "rw", clobber=True) as out:
        out.write(None)
        out.write(image, **options)
    return path.read_bytes()


def decoded(content: bytes, hdu: int = 1) -> np.ndarray:
    spans = fitschecksum.hdu_spans(content)
    start, data_start, _ = spans[hdu]
    return ricefits.decode_image(
        content, spans[hdu], fits.Header.fromstring(content[start:data_start])
    )


RICE = dict(compress="RICE", qmethod="SUBTRACTIVE_DITHER_1")


@pytest.mark.parametrize("seed", [1, 4752, 9999, 10000])
def test_equal_to_cfitsio_bit_for_bit(tmp_path, seed):
    """Sky noise, a flat zero row (Rice low-entropy blocks), huge values (high-entropy blocks),
    negative values and steps, with dither seeds around the sequence's wrap."""
    rng = np.random.default_rng(seed)
    image = rng.normal(1000.0, 12.0, (37, 1030)).astype(np.float32)
    image[3] = 0.0
    image[5, 100:400] = rng.uniform(-3e6, 3e6, 300).astype(np.float32)
    image[7, :50] = -40000.0
    image[:, 900:] += 60000.0
    content = compressed(tmp_path, image, tile_dims=[1, 1030], qlevel=-0.5,
                         dither_seed=seed, **RICE)  # fmt: skip
    ours = decoded(content)
    theirs = fitsio.read(tmp_path / "image.fits.fz", ext=1)
    assert ours.dtype == np.float32 and ours.shape == image.shape
    assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))
    assert np.max(np.abs(ours - image)) <= 0.5  # quantisation step 0.5


def test_other_layouts_are_refused(tmp_path):
    image = np.arange(64 * 32, dtype=np.float32).reshape(64, 32)
    for options in (dict(compress="GZIP", tile_dims=[1, 32], qlevel=-0.5),
                    dict(compress="RICE", tile_dims=[8, 32], qlevel=-0.5,
                         qmethod="SUBTRACTIVE_DITHER_1"),
                    dict(compress="RICE", tile_dims=[1, 32], qlevel=-0.5,
                         qmethod="SUBTRACTIVE_DITHER_2")):  # fmt: skip
        with pytest.raises(ricefits.Unsupported):
            decoded(compressed(tmp_path, image, **options))
    with pytest.raises(ricefits.Unsupported):  # integers are not quantised
        decoded(compressed(tmp_path, image.astype(np.int16), compress="RICE", tile_dims=[1, 32]))


def test_damaged_stream_is_an_error_not_garbage(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1e4, (16, 256)).astype(np.float32)
    content = bytearray(compressed(tmp_path, image, tile_dims=[1, 256], qlevel=-0.5, **RICE))
    spans = fitschecksum.hdu_spans(bytes(content))
    _, data_start, _ = spans[1]
    # tile 1 claims more bytes than the heap holds
    content[data_start : data_start + 4] = (10**8).to_bytes(4, "big")
    with pytest.raises(ValueError, match="beyond the heap"):
        decoded(bytes(content))


def test_raw_file_of_the_simulator_reads_as_read_raw(sim_config):
    from ztfluigi.archive.sim import SimArchive

    archive = SimArchive(sim_config)
    exp = next(e for e in archive.exposures(dt.date(2019, 3, 31)).values()
               if e.imgtype == "object")  # fmt: skip
    rawname = exp.raw_name(3)
    content = archive.fetch_raw(rawname)
    reference = raw.read_raw(content, rawname.filename)
    ours = raw.read_quadrants(content, rawname.filename)
    assert ours.header == reference.header
    for q in range(1, 5):
        assert ours.quadrant_headers[q] == reference.quadrant_headers[q]
        for got, want in ((ours.data[q], reference.data[q]),
                          (ours.overscan[q], reference.overscan[q])):  # fmt: skip
            assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32),
                                                              want.view(np.uint32))  # fmt: skip
    one = raw.read_quadrants(content, rawname.filename, qids=(2,))
    assert sorted(one.data) == sorted(one.overscan) == [2]
    assert np.array_equal(one.data[2], reference.data[2])
    with pytest.raises(raw.RawFileError, match=rawname.filename):
        raw.read_quadrants(content[:-2880], rawname.filename)


def test_dither_table_is_the_standard_one():
    table = ricefits.dither_table()
    assert table.dtype == np.float32 and table.size == 10000
    assert 0 < table.min() and table.max() < 1
    assert table[0] == np.float32(16807 / 2147483647)
