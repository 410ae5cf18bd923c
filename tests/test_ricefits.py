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


def rice_stream(first: int, blocks: list[tuple[int, list[int]]]) -> bytes:
    """A Rice stream of 4-byte pixels written bit by bit as ``fits_rcomp`` lays it out, with the
    code of each block chosen by the caller: the first pixel (32 bits), then per block its code
    ``fs + 1`` (5 bits; 0: all pixels equal to the previous one, 26: 32-bit differences) and per
    pixel the zig-zag difference as ``d >> fs`` zeros, a one and the ``fs`` low bits."""
    bits: list[int] = []

    def put(value: int, n: int) -> None:
        bits.extend((value >> (n - 1 - k)) & 1 for k in range(n))

    put(first & 0xFFFFFFFF, 32)
    last = first
    for code, values in blocks:
        put(code, 5)
        for value in values:
            d = (value - last + 2**31) % 2**32 - 2**31  # int32 difference, as CFITSIO wraps
            zig = 2 * d if d >= 0 else -2 * d - 1
            last = value
            if code == 0:
                assert zig == 0
            elif code == 26:
                put(zig, 32)
            else:
                fs = code - 1
                bits.extend([0] * (zig >> fs) + [1])
                put(zig & ((1 << fs) - 1), fs)
    bits.extend([0] * (-len(bits) % 8))
    return np.packbits(np.array(bits, np.uint8)).tobytes()


def stream_cases(rng: np.random.Generator) -> tuple[np.ndarray, bytes]:
    """Int32 pixels in blocks of 32 (the last one shorter) of every code: equal pixels, fs from
    0 to 24 with unary runs up to a few hundred zeros (longer than the 64-bit bit buffer), and
    32-bit differences spanning the int32 range; and their stream."""
    first = int(rng.integers(-(2**31), 2**31))
    values, blocks, last = [], [], first
    for b in range(40):
        n = 32 if b < 39 else 19
        kind = b % 4
        if kind == 0:  # low entropy
            block, code = [last] * n, 0
        elif kind == 3:  # high entropy
            block, code = [int(v) for v in rng.integers(-(2**31), 2**31, n)], 26
        else:
            fs = int(rng.integers(0, 25))
            zig = rng.integers(0, 2**fs, n) + (rng.integers(0, 400 if kind == 1 else 4, n) << fs)
            diffs = np.where(zig % 2 == 0, zig // 2, -(zig + 1) // 2)
            block, code, prev = [], fs + 1, last
            for d in diffs:
                prev = (prev + int(d) + 2**31) % 2**32 - 2**31
                block.append(prev)
        blocks.append((code, block))
        values.extend(block)
        last = values[-1]
    return np.array(values, np.int32), rice_stream(first, blocks)


def test_bit_reader_on_streams_of_every_code(tmp_path):
    """The compiled bit reader against an independent writer of the format: at the end of its
    buffer (byte-wise refills), followed by other bytes (8-byte refills across the tile's end),
    and one byte short (reported, also inside a run of zeros longer than the bit buffer)."""
    rng = np.random.default_rng(15)
    for _ in range(5):
        want, stream = stream_cases(rng)
        out = np.empty(want.size, np.int32)
        alone = np.frombuffer(stream, np.uint8)
        assert ricefits._rice_tile(alone, 0, alone.size, out, 32)
        assert np.array_equal(out, want)
        for fill in (0x00, 0xFF):
            framed = np.full(alone.size + 64, fill, np.uint8)
            framed[7 : 7 + alone.size] = alone
            out[:] = 0
            assert ricefits._rice_tile(framed, 7, alone.size, out, 32)
            assert np.array_equal(out, want)
            assert not ricefits._rice_tile(framed, 7, alone.size - 1, out, 32)
        assert not ricefits._rice_tile(alone[:-1].copy(), 0, alone.size - 1, out, 32)
    # a stream cut inside a unary run of 300 zeros, with and without bytes after the cut
    long_run = rice_stream(0, [(1, [150])])
    buf = np.frombuffer(long_run, np.uint8)
    out = np.empty(1, np.int32)
    assert ricefits._rice_tile(buf, 0, buf.size, out, 32) and out[0] == 150
    for cut in (6, 12, 20, buf.size - 1):
        assert not ricefits._rice_tile(buf, 0, cut, out, 32)
        assert not ricefits._rice_tile(buf[:cut].copy(), 0, cut, out, 32)


def test_short_tile_in_the_heap_is_reported(tmp_path):
    """A tile whose byte count is one short is a damaged stream even though the bytes after it
    (the next tile's) are readable."""
    rng = np.random.default_rng(3)
    image = rng.normal(0, 30, (8, 512)).astype(np.float32)
    content = bytearray(compressed(tmp_path, image, tile_dims=[1, 512], qlevel=-0.5, **RICE))
    _, data_start, _ = fitschecksum.hdu_spans(bytes(content))[1]
    row = data_start + 24 * 4  # tile 5's descriptor: count, offset (big-endian int32)
    count = int.from_bytes(content[row : row + 4], "big")
    content[row : row + 4] = (count - 1).to_bytes(4, "big")
    with pytest.raises(ValueError, match="tile 5: Rice stream ends early"):
        decoded(bytes(content))
