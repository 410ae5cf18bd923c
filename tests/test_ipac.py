"""IPAC inputs (pure): exact header table codec; damaged headers, masks and CSVs refused."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.io.fits.card import UNDEFINED

from tests.helpers import DEMO_DATE, reference_metaheader
from ztfluigi import fitschecksum, ipac
from ztfluigi.archive.sim import SimArchive
from ztfluigi.naming import parse_raw_filename
from ztfluigi.sim import headers as sim_headers
from ztfluigi.sim.schedule import SimConfig

REAL_RAW = parse_raw_filename("ztf_20200924431759_000655_zr_c13_o.fits.fz")
REAL_NAME = "ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits"
SHAPE = (3080, 3072)


def signature(header: fits.Header) -> list[tuple]:
    """Everything a header holds: keyword, value (repr: -0.0 is not 0.0), value type and comment
    of each card, in order."""
    return [(c.keyword, repr(c.value), type(c.value), c.comment) for c in header.cards]


def real_header() -> fits.Header:
    """The real IPAC sciimg header (ztf_formats.md Appendix A) with its layout cards."""
    return ipac.parse_header(
        ipac.image_header_bytes(sim_headers.real_science_header(), -32, SHAPE), REAL_NAME
    )


def parquet_round_trip(table: pa.Table) -> pa.Table:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return pq.read_table(io.BytesIO(buf.getvalue()))


@pytest.fixture(scope="module")
def sim_quadrants():
    """The science quadrants of CCD 5 of the demo night at scale 32 and their headers."""
    archive = SimArchive(SimConfig(seed=0, scale=32, n_fields=1))
    exposures = [e for e in archive.exposures(DEMO_DATE).values() if e.imgtype == "object"]
    quadrants = [(e.raw_name(5), qid) for e in exposures for qid in range(1, 5)]
    return archive, quadrants


# -- the header table -----------------------------------------------------------------------


def test_real_headers_round_trip_exactly():
    sci = real_header()
    mask = sim_headers.real_mask_header()  # has HISTORY and an odd "COMMENT  =  '…'" card
    table = ipac.encode_headers([sci, mask], [(REAL_RAW, 3), (REAL_RAW, 4)])
    assert table.num_rows == 2 and table.column_names[:7] == list(ipac.KEY_COLUMNS)
    stored = parquet_round_trip(table)
    got = ipac.headers_from_table(stored)
    assert signature(got[0]) == signature(sci) and signature(got[1]) == signature(mask)
    assert signature(ipac.header_from_row(stored, 1)) == signature(mask)
    # typed columns; comments once in the schema, the real header needs no per-row layout
    assert stored.schema.field("MAGZP").type == pa.float64()
    assert stored.schema.field("RCID").type == pa.int64()
    assert stored.schema.field("PHOTLINK").type == pa.bool_()
    assert stored.schema.field("FILTER").type == pa.string()
    assert stored[ipac.LAYOUT_COLUMN][0].as_py() is None
    keys = stored.slice(0, 1).select(list(ipac.KEY_COLUMNS)).to_pylist()[0]
    assert keys == {"filefracday": 20200924431759, "expid": 136243177, "field": 655,
                    "filtercode": "zr", "ccdid": 13, "qid": 3, "rcid": 50}  # fmt: skip
    history = [c["text"] for c in stored[ipac.COMMENTARY_COLUMN][0].as_py()]
    assert history[0] == "executed CorrectFloatingBias at 2020-09-24T03:25:44"


def test_irregular_headers_round_trip_exactly():
    """Whatever a header holds comes back: other comments and order, repeated and valueless
    keywords, long strings, HIERARCH keys, mixed types, huge integers, commentary anywhere."""
    base = fits.Header()
    base["COMMENT"] = "first card is commentary"
    for key, value, comment in [("A", 1, "int"), ("B", 2.5, "float"), ("C", "text", "str"),
                                ("D", True, "bool"), ("E", 3, "mixed")]:  # fmt: skip
        base.append((key, value, comment))
    odd = fits.Header()
    odd.append(("B", -0.0, "another comment"))  # other order, other comment
    odd.append(("A", 7, "int"))
    odd.append(("C", "x" * 150, "long string (CONTINUE cards)"))
    odd.append(("E", 3.0, "mixed"))  # a float where the other row has an int
    odd.append(("F", UNDEFINED, "no value"))
    odd.append(("A", 8, "repeated keyword"))
    odd.append(("HIERARCH ESO DET ID", 5, "hierarch"))
    odd.append(("BIG", 2**70, "beyond int64"))
    odd.append(("Z", 1 + 2j, "complex"))
    odd.append(("HISTORY", "made up"))
    odd.append(("", "blank keyword commentary"))
    odd.append(("D", False, "bool"))
    odd.append(("COMMENT", "last"))
    raw2 = parse_raw_filename("ztf_20200924431760_000655_zr_c13_o.fits.fz")
    headers = [base, odd, real_header()]
    table = ipac.encode_headers(headers, [(REAL_RAW, 1), (REAL_RAW, 2), (raw2, 3)])
    stored = parquet_round_trip(table)
    for got, want in zip(ipac.headers_from_table(stored), headers, strict=True):
        assert signature(got) == signature(want)
    assert stored.schema.field("E").type == pa.string()  # tagged: exact for both rows
    assert stored[ipac.LAYOUT_COLUMN][0].as_py() is None
    assert stored[ipac.LAYOUT_COLUMN][1].as_py() is not None
    assert ipac.header_from_row(stored, 1).cards["F"].value is UNDEFINED


def test_simulated_headers_round_trip_and_lookup(sim_quadrants):
    archive, quadrants = sim_quadrants
    table = archive.fetch_science_headers(quadrants)
    assert table.num_rows == len(quadrants) == 12
    assert table[ipac.LAYOUT_COLUMN].null_count == 12  # one comment and order for all rows
    stored = parquet_round_trip(table)
    index = ipac.row_index(stored)
    for raw, qid in quadrants:
        header = ipac.header_for(stored, raw, qid)
        # the values as written in the file IRSA serves (astropy writes floats in 20 characters)
        expected = fits.Header.fromstring(archive.science_header(raw, qid).tostring())
        assert [c for c in signature(header) if c[0] not in ("SIMPLE", "BITPIX") and
                not c[0].startswith("NAXIS")] == signature(expected)  # fmt: skip
        assert header["NAXIS1"] == 96 and header["QID"] == qid
        assert index[(int(raw.filefracday), raw.ccdid, qid)] == ipac.find_row(stored, raw, qid)
    other = parse_raw_filename(quadrants[0][0].filename.replace("_c05_", "_c06_"))
    with pytest.raises(ipac.IpacError, match=r"ztf_.*_c06_o_q1_sciimg\.fits: no IPAC header"):
        ipac.find_row(stored, other, 1)
    with pytest.raises(ipac.IpacError, match="two headers for the same quadrant"):
        ipac.encode_headers([expected, expected], [quadrants[0], quadrants[0]])
    halves = [archive.fetch_science_headers(quadrants[:5]), archive.fetch_science_headers(
        quadrants[5:])]  # fmt: skip
    assert ipac.concat_tables(halves).equals(table)


def test_every_float_and_string_comes_back_exactly():
    """Floats are stored as float64 and rebuilt without astropy's 20-character rounding."""
    rng = np.random.default_rng(3)
    floats = [*(rng.standard_normal(60) * 10.0 ** rng.integers(-300, 300, 60)), 1e16, -0.0,
              5e-324, 1.7976931348623157e308, 0.1 + 0.2]  # fmt: skip
    strings = ["", " lead", "it's", "x" * 68, "x" * 69, "trail ", "a  b"]
    header = fits.Header()
    for i, value in enumerate(floats):
        header.append((f"F{i}", float(value), "c" * (i % 50)))
    for i, value in enumerate(strings):
        header.append((f"S{i}", value, " spaced comment " if i % 2 else ""))
    table = ipac.encode_headers([header], [(REAL_RAW, 1)])
    assert signature(ipac.headers_from_table(parquet_round_trip(table))[0]) == signature(header)


# -- header bytes -----------------------------------------------------------------------------


def flip(buf: bytes, offset: int, value: int | None = None) -> bytes:
    out = bytearray(buf)
    out[offset] = out[offset] ^ 0xFF if value is None else value
    return bytes(out)


def test_a_good_header_parses():
    real = sim_headers.real_science_header()  # its layout cards are replaced, END added
    block = ipac.image_header_bytes(real, -32, SHAPE)
    assert len(block) % 2880 == 0 and ipac.header_end(block) == (len(real.cards) + 1) * 80
    header = ipac.parse_header(block, REAL_NAME)
    assert header["MAGZP"] == 26.285139 and header["NAXIS2"] == 3080
    assert ipac.header_end(block[:2880]) is None  # END not reached yet: read more


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: flip(b, 8000), "byte 0x.. at offset 8000 of the header is not printable ASCII"),
        (lambda b: flip(b, 800 + 30, ord("x")), "bad card 11 'INSTRUME'"),  # junk after a string
        (lambda b: flip(b, 800 + 4, ord("r")), "not upper case"),
        (lambda b: flip(b, 1280 + 28, ord("Q")), "bad card 17 'EXPTIME'"),  # '30.' -> '3Q.'
        (lambda b: b.replace(b"EXPTIME =", b"EXPTIME :"), "card 17 'EXPTIME' has no value"),
        (lambda b: b[:1760] + b"X" * 80 + b[1840:], "card 23 'XXXXXXXX' has no value indicator"),
        (lambda b: b.replace(b"END" + b" " * 77, b" " * 80), "has no END card"),
        (lambda b: flip(b, len(b) - 1, ord("x")), "padding after END is not blank"),
        (lambda b: b.replace(b"SIMPLE  =                    T", b"SIMPLE  =                    F"),
         "not SIMPLE = T"),  # fmt: skip
        (lambda b: b[:80] + b[160:240] + b[80:160] + b[240:], "BITPIX and NAXIS"),
    ],
    ids=["non-ascii", "junk", "lowercase", "bad-number", "no-equals", "text-card", "no-end",
         "padding",
         "simple-f", "order"],  # fmt: skip
)
def test_damaged_headers_are_refused_naming_the_file(damage, message):
    block = ipac.image_header_bytes(sim_headers.real_science_header(), -32, SHAPE)
    with pytest.raises(ipac.IpacError, match=message) as err:
        ipac.parse_header(damage(block), REAL_NAME)
    assert str(err.value).startswith(f"{REAL_NAME}: ") and "\n" not in str(err.value)


# -- masks ------------------------------------------------------------------------------------


MASK_NAME = "ztf_20200924431759_000655_zr_c13_o_q3_mskimg.fits"


def mask_file(data: np.ndarray, checksums: bool = False) -> bytes:
    content = ipac.image_bytes(sim_headers.real_mask_header(), data)
    return fitschecksum.add_checksums(content) if checksums else content


@pytest.fixture(scope="module")
def mask_data():
    rng = np.random.default_rng(1)
    bits = rng.choice([0, 1 << 1, 1 << 8, 1 << 11, (1 << 12) | 1], size=(40, 36))
    return bits.astype(np.int16)


def test_a_good_mask_is_read(mask_data):
    for content in (mask_file(mask_data), ipac.gzip_bytes(mask_file(mask_data)),
                    mask_file(mask_data, checksums=True),
                    mask_file(mask_data.astype(np.int32))):  # fmt: skip
        mask = ipac.read_mask(content, MASK_NAME, (40, 36))
        assert mask.dtype == np.int16 and mask.dtype.isnative
        np.testing.assert_array_equal(mask, mask_data)
    header, _ = ipac.read_mask_hdu(mask_file(mask_data), MASK_NAME)
    assert header["BIT12"] == 12
    assert ipac.gzip_bytes(mask_file(mask_data)) == ipac.gzip_bytes(mask_file(mask_data))


def with_pixel(data: np.ndarray, value: int) -> np.ndarray:
    out = data.astype(np.int32)
    out[7, 5] = value
    return out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda d: mask_file(with_pixel(d, -32768).astype(np.int16)),
         r"1 mask pixel\(s\) outside the IPAC bits 0-12 \(first: -32768 at row 7, column 5\)"),
        (lambda d: mask_file(with_pixel(d, 1 << 13).astype(np.int16)), "outside the IPAC bits"),
        (lambda d: mask_file(with_pixel(d, 1 << 16)), "outside the IPAC bits"),
        (lambda d: mask_file(d.astype(np.float32)), "not a 2-D integer mask"),
        (lambda d: mask_file(d[:, :30]), r"mask shape \(40, 30\), expected \(40, 36\)"),
        (lambda d: mask_file(d)[:-2880], "truncated"),
        (lambda d: mask_file(d) + mask_file(d), "2 HDUs"),
        (lambda d: flip(mask_file(d, checksums=True), -100), "DATASUM mismatch"),
        (lambda d: flip(ipac.gzip_bytes(mask_file(d)), 200), "corrupt gzip stream"),
        (lambda d: ipac.gzip_bytes(mask_file(d))[:-8], "corrupt gzip stream"),
        (lambda d: flip(mask_file(d), 1000), "not printable ASCII"),
    ],
    ids=["bit15", "bit13", "int32-bit16", "float", "shape", "truncated", "two-hdus", "checksum",
         "gzip-flip", "gzip-cut", "header"],  # fmt: skip
)
def test_damaged_masks_are_refused_naming_the_file(mask_data, content, message):
    with pytest.raises(ipac.IpacError, match=message) as err:
        ipac.read_mask(content(mask_data), MASK_NAME, (40, 36))
    assert str(err.value).startswith(f"{MASK_NAME}: ") and "\n" not in str(err.value)


# -- CSV answers ------------------------------------------------------------------------------


COLUMNS = ("ccdid", "obsjd", "imgtype")
GOOD = b"ccdid,obsjd,imgtype\n1,2458573.5,bias\n2,2458573.6,flat\n"


def test_a_good_csv_is_counted():
    assert ipac.verify_csv(GOOD, COLUMNS, "raw metadata", rows=2) == 2
    assert ipac.verify_csv(b"", COLUMNS, "raw metadata") == 0
    extra = b"ccdid,obsjd,imgtype,dist\n1,2458573.5,bias,0.1\n"
    assert ipac.verify_csv(extra, COLUMNS, "raw metadata", exact=False) == 1


@pytest.mark.parametrize(
    ("body", "kwargs", "message"),
    [
        (GOOD[:-5], {}, "ends in the middle of a line"),
        (GOOD.replace(b",imgtype", b""), {}, "missing imgtype"),
        (GOOD.replace(b"ccdid,obsjd", b"obsjd,ccdid"), {}, "not in the expected order"),
        (GOOD + b"3,2458573.7\n", {}, "row 3 has 2 fields, expected 3"),
        (GOOD, {"rows": 3}, "2 CSV rows, expected 3"),
        (GOOD.replace(b"bias", b"bi\xffs"), {}, "not UTF-8"),
        (b"ccdid,obsjd,imgtype,dist\n1,2,bias,0\n", {}, "not in the expected order"),
    ],
    ids=["cut", "missing", "order", "short-row", "count", "utf8", "extra"],
)
def test_damaged_csv_answers_are_refused(body, kwargs, message):
    with pytest.raises(ipac.IpacError, match=message) as err:
        ipac.verify_csv(body, COLUMNS, "raw metadata of 2019-03-31", **kwargs)
    assert str(err.value).startswith("raw metadata of 2019-03-31: ")


# -- the reference pipeline's metaheader tables -------------------------------------------------


def test_reference_metaheader_reads_as_a_header_table(sim_quadrants, tmp_path):
    archive, quadrants = sim_quadrants
    sims = ipac.headers_from_table(archive.fetch_science_headers(quadrants[:4]))
    headers = [real_header(), *sims]
    reference = reference_metaheader(headers)
    assert reference.schema.field("EXPID").type == pa.string()  # values are strings
    # pandas' to_parquet adds its index as a column
    reference = reference.append_column("__index_level_0__", pa.array(range(5, 10)))
    path = tmp_path / "metaheader_202009.parquet"
    pq.write_table(reference, path)
    table = ipac.from_metaheader(pq.read_table(path))
    assert table.num_rows == 5
    assert table.schema.metadata[ipac.METADATA_KEY + b".dropped"] == b'["SCAMPPTH"]'
    row = ipac.find_row(table, REAL_RAW, 3)
    got = ipac.header_from_row(table, row)
    want = [(c.keyword, c.value, type(c.value)) for c in headers[0].cards
            if c.keyword not in ("HISTORY", "COMMENT", "SCAMPPTH")]  # fmt: skip
    assert [(c.keyword, c.value, type(c.value)) for c in got.cards] == want
    assert table["expid"][row].as_py() == 136243177 and table["rcid"][row].as_py() == 50
    for raw, qid in quadrants[:4]:
        header = ipac.header_for(table, raw, qid)
        assert header["MAGZP"] == archive.science_header(raw, qid)["MAGZP"]


def test_metaheader_without_filename_uses_the_raw_index(sim_quadrants):
    archive, quadrants = sim_quadrants
    sims = ipac.headers_from_table(archive.fetch_science_headers(quadrants[:4]))
    reference = reference_metaheader(sims, drop=("FILENAME", "ORIGNAME"))
    with pytest.raises(ipac.IpacError, match="metaheader row 0: cannot tell the quadrant"):
        ipac.from_metaheader(reference)
    index = archive.night_metadata(DEMO_DATE)
    table = ipac.from_metaheader(reference, raw_index=index)
    assert [ipac.find_row(table, raw, qid) for raw, qid in quadrants[:4]] == [0, 1, 2, 3]


def test_gunzip_bytes_members_limits_and_damage():
    """Both paths of gunzip_bytes: the one-call path (trailer within the limit) and the bounded
    stream (a trailer beyond it), multi-member files, zero padding, truncation, size limit."""
    import gzip

    one, two = gzip.compress(b"a" * 5000, mtime=0), gzip.compress(b"b" * 3000, mtime=0)
    assert ipac.gunzip_bytes(one + two, "m") == b"a" * 5000 + b"b" * 3000
    assert ipac.gunzip_bytes(one + b"\0" * 16, "m") == b"a" * 5000  # padding: stream path
    with pytest.raises(ipac.IpacError, match="m: decompresses to more than 4000 bytes"):
        ipac.gunzip_bytes(one, "m", limit=4000)  # trailer says 5000
    lying = one[:-4] + (100).to_bytes(4, "little")  # trailer says 100 bytes: CRC/size check
    with pytest.raises(ipac.IpacError, match="m: corrupt gzip stream"):
        ipac.gunzip_bytes(lying, "m")
    with pytest.raises(ipac.IpacError, match="m: corrupt gzip stream"):
        ipac.gunzip_bytes(one[: len(one) // 2], "m")
    with pytest.raises(ipac.IpacError, match="m: corrupt gzip stream"):
        ipac.gunzip_bytes(one + b"garbage!", "m")
