"""IPAC science-quadrant inputs: the ``sciimg`` header table and strict checks of IPAC answers.

Pure computation (bytes, numpy, pyarrow in and out; no Luigi, no network).

**Header table.** The IPAC ``sciimg`` primary headers of many science quadrants are stored as one
pyarrow table, one row per quadrant, so a rebuild needs no archive request. Key columns
(:data:`KEY_COLUMNS`: ``filefracday, expid, field, filtercode, ccdid, qid, rcid``) come first,
then one typed column per card keyword (bool, int64, float64 or string, in card order), then
two bookkeeping columns. The codec is exact: :func:`header_from_row` gives back the cards in
their order, with their values (and Python types) and comments. Where the comments go:

- IPAC writes the same comment for a keyword in every header, so each keyword's most common
  comment is kept once, in the schema metadata (``ztfluigi.ipac``: card order, column types,
  comments), rather than as a second string per cell;
- whatever a row does differently (another comment, another card order, a card with no value,
  a repeated keyword) goes into that row's ``_layout`` JSON cell, null for ordinary rows;
- commentary cards (``HISTORY``, ``COMMENT``, blank) repeat and sit anywhere: they are a list
  column ``_commentary`` of (position, keyword, text).

A keyword whose values differ in type between rows (never seen in IPAC headers) gets a string
column of tagged values (``i:30``, ``f:30.0``, ``s:…``, ``b:T``), which is still exact.

:func:`from_metaheader` reads the reference pipeline's ``metaheader_{YYYYMM}.parquet`` (one row
per EXPID × RCID, every value a FITS value string, no comments; reference_pipeline.md §5.3)
into the same table, so an existing ``$ZTFDATA`` mirror's tables serve as they are.

**Verification** (:class:`IpacError`, one line naming the file): header bytes must be printable
ASCII 80-character cards that astropy's strict card check accepts, ending with an END card and
blank padding (:func:`parse_header`); a mask must be a single 2-D int16/int32 image (of the
quadrant shape when given) whose pixels use only IPAC's defined bits 0–12 (bits 13–15 are
"RESERVED FOR FUTURE USE" in the mask header and never set; a negative int16 has bit 15 set;
ztf_formats.md §2.4) (:func:`read_mask`); a CSV answer must have the expected header line, complete
rows and, when known, row count (:func:`verify_csv`).
"""

from __future__ import annotations

import collections
import csv
import gzip
import io
import json
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from astropy.io import fits
from astropy.io.fits.card import UNDEFINED
from astropy.io.fits.verify import VerifyError, VerifyWarning
from astropy.utils.exceptions import AstropyUserWarning
from zlib_ng import gzip_ng, zlib_ng

from ztfluigi import fitschecksum, naming
from ztfluigi.naming import RawName

BLOCK = fitschecksum.BLOCK  #: FITS block (bytes)
CARD = fitschecksum.CARD  #: FITS card (bytes)
KEY_COLUMNS = ("filefracday", "expid", "field", "filtercode", "ccdid", "qid", "rcid")
KEY_TYPES: dict[str, pa.DataType] = {
    "filefracday": pa.int64(), "expid": pa.int64(), "field": pa.int32(),
    "filtercode": pa.string(), "ccdid": pa.int8(), "qid": pa.int8(), "rcid": pa.int8(),
}  # fmt: skip
COMMENTARY_COLUMN = "_commentary"
LAYOUT_COLUMN = "_layout"
METADATA_KEY = b"ztfluigi.ipac"
FORMAT_VERSION = 1
COMMENTARY_KEYWORDS = ("HISTORY", "COMMENT", "")
COMMENTARY_TYPE = pa.list_(
    pa.struct([("index", pa.int32()), ("keyword", pa.string()), ("text", pa.string())])
)
#: mask bits IPAC defines (0 tracks … 12 bright-star halo); 13-15 are reserved
IPAC_MASK_BITS = (1 << 13) - 1
MASK_BITPIX = {16: ">i2", 32: ">i4"}
#: largest mask file accepted (bytes, decompressed): an int32 full-size quadrant + headers
MAX_MASK_BYTES = 3080 * 3072 * 4 + 64 * BLOCK
_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string(),
    "tagged": pa.string(),
}  # fmt: skip
_INT64 = (-(2**63), 2**63 - 1)
_FILTER_CODES = {"ZTF_g": "zg", "ZTF_r": "zr", "ZTF_i": "zi"}
_FILTER_BY_ID = {v: k for k, v in naming.FILTER_IDS.items()}
_RAW_NAME_RE = re.compile(r"ztf_(\d{14})_")


class IpacError(ValueError):
    """An IPAC input (header, mask, metadata answer) that fails verification: one line, the file."""


# -- quadrant keys --------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class QuadrantKey:
    """The address of a science quadrant: its raw exposure (filefracday, field, filter), CCD and
    amplifier; ``expid`` is IPAC's exposure id when known (from the header's EXPID)."""

    filefracday: int
    ccdid: int
    qid: int
    field: int
    filtercode: str
    expid: int | None = None

    @classmethod
    def of(cls, raw: RawName, qid: int, expid: int | None = None) -> QuadrantKey:
        """The key of quadrant ``qid`` of a raw science file."""
        return cls(int(raw.filefracday), raw.ccdid, qid, raw.field, raw.filtercode, expid)

    @property
    def rcid(self) -> int:
        """IPAC readout-channel id 0..63."""
        return 4 * (self.ccdid - 1) + (self.qid - 1)

    @property
    def raw(self) -> RawName:
        """The raw science file the quadrant comes from."""
        return RawName(f"{self.filefracday:014d}", self.field, self.filtercode, self.ccdid, "o")

    def name(self, suffix: str = "sciimg.fits") -> str:
        """IPAC file name of a product of this quadrant (``ztf_…_qQ_sciimg.fits``)."""
        return naming.science_quadrant_name(self.raw, self.qid, suffix)

    def lookup(self) -> tuple[int, int, int]:
        """(filefracday, ccdid, qid): what identifies a row of a header table."""
        return self.filefracday, self.ccdid, self.qid


# -- header bytes: strict parsing -------------------------------------------------------------


#: a card in one of the standard forms: commentary, or KEYWORD = string/logical/int/float [/ c]
_STANDARD_CARD = re.compile(
    r"(?:(?:HISTORY |COMMENT |        ).*"
    r"|[A-Z0-9_-]{1,8} {0,7}(?<=^.{8})= *"
    r"(?:'(?:[^']|'')*'|[TF]|[+-]?\d+|[+-]?(?:\d+\.?\d*|\.\d+)(?:[EDed][+-]?\d+)?)"
    r" *(?:/.*)?)$",
    re.DOTALL,
)


def _printable(buf: bytes) -> int:
    """Offset of the first byte outside printable ASCII (0x20-0x7E), or -1."""
    m = re.search(rb"[^\x20-\x7e]", buf)
    return -1 if m is None else m.start()


def header_end(buf: bytes, name: str = "FITS file") -> int | None:
    """Offset just past the END card of the header at the start of ``buf``; None if ``buf``
    ends first. Raises IpacError at the first byte that cannot belong to a header (outside
    printable ASCII), so a damaged or non-FITS answer is refused without reading further."""
    for start in range(0, len(buf) - CARD + 1, CARD):
        card = buf[start : start + CARD]
        bad = _printable(card)
        if bad >= 0:
            raise IpacError(
                f"{name}: byte 0x{card[bad]:02x} at offset {start + bad} of the header is not "
                "printable ASCII (damaged header)"
            )
        if card[:8] == b"END     ":
            if card[8:].strip(b" "):
                raise IpacError(f"{name}: END card at offset {start} is not blank after END")
            return start + CARD
    bad = _printable(buf[len(buf) - len(buf) % CARD :])
    if bad >= 0:
        offset = len(buf) - len(buf) % CARD + bad
        raise IpacError(
            f"{name}: byte 0x{buf[offset]:02x} at offset {offset} of the header is not "
            "printable ASCII (damaged header)"
        )
    return None


def header_size(end: int) -> int:
    """Bytes of the header unit (whole FITS blocks) whose END card ends at ``end``."""
    return -(-end // BLOCK) * BLOCK


def _verify_message(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Verification reported", "Note:"))]
    return lines[0] if lines else type(exc).__name__


def parse_header(buf: bytes, name: str = "FITS file") -> fits.Header:
    """The primary header at the start of ``buf``, checked strictly; IpacError naming ``name``.

    Checks: printable ASCII, 80-character cards each accepted by astropy's strict verification
    (keyword characters, ``= `` in columns 9-10, a parsable value), an END card, blank padding up
    to the end of its block (as far as ``buf`` reaches), and the mandatory ``SIMPLE = T``,
    ``BITPIX``, ``NAXIS``, ``NAXISn`` cards in order.
    """
    end = header_end(buf, name)
    if end is None:
        raise IpacError(f"{name}: FITS header has no END card ({len(buf)} bytes read)")
    tail = buf[end : header_size(end)]
    if tail.strip(b" "):
        raise IpacError(f"{name}: header padding after END is not blank")
    text = buf[: end - CARD].decode("ascii")
    images = [text[i : i + CARD] for i in range(0, len(text), CARD)]
    # most cards have the standard forms: only the others go through astropy's (slow) checks
    unusual = {i for i, image in enumerate(images) if not _STANDARD_CARD.match(image)}
    for i in sorted(unusual):
        image = images[i]
        if image[8:10] != "= " and image[:8] not in ("CONTINUE", "HIERARCH"):
            # legal FITS, but IPAC never writes it: a damaged '=' would silently lose a value
            raise IpacError(
                f"{name}: card {i + 1} {image[:8].strip()!r} has no value indicator "
                "('= ' in columns 9-10)"
            )
    with warnings.catch_warnings():
        warnings.simplefilter("error", VerifyWarning)
        warnings.simplefilter("error", AstropyUserWarning)
        try:
            header = fits.Header.fromstring(text)
        except (VerifyError, VerifyWarning, AstropyUserWarning, ValueError) as exc:
            raise IpacError(f"{name}: malformed header ({_verify_message(exc)})") from None
        if unusual:
            starts = _card_starts(header, images)
            for index, card in enumerate(header.cards):
                if not unusual.intersection(range(starts[index], starts[index + 1])):
                    continue
                try:
                    card.verify("exception")
                    _ = card.value
                except (VerifyError, VerifyWarning, AstropyUserWarning, ValueError) as exc:
                    raise IpacError(
                        f"{name}: bad card {starts[index] + 1} {card.keyword!r} "
                        f"({_verify_message(exc)})"
                    ) from None
    _check_mandatory(header, name)
    return header


def _card_starts(header: fits.Header, images: list[str]) -> list[int]:
    """Index of the first 80-character image of each card (long strings span CONTINUE cards)."""
    starts, at = [], 0
    for _ in header.cards:
        starts.append(at)
        at += 1
        while at < len(images) and images[at].startswith("CONTINUE"):
            at += 1
    starts.append(len(images))
    return starts


def _check_mandatory(header: fits.Header, name: str) -> None:
    cards = header.cards
    if not cards or cards[0].keyword != "SIMPLE" or cards[0].value is not True:
        raise IpacError(f"{name}: first card is not SIMPLE = T (not a FITS file)")
    if len(cards) < 3 or cards[1].keyword != "BITPIX" or cards[2].keyword != "NAXIS":
        raise IpacError(f"{name}: BITPIX and NAXIS are not the 2nd and 3rd cards")
    bitpix, naxis = cards[1].value, cards[2].value
    if bitpix not in (8, 16, 32, 64, -32, -64) or isinstance(bitpix, bool):
        raise IpacError(f"{name}: invalid BITPIX {bitpix!r}")
    if not isinstance(naxis, int) or isinstance(naxis, bool) or not 0 <= naxis <= 999:
        raise IpacError(f"{name}: invalid NAXIS {naxis!r}")
    for i in range(1, naxis + 1):
        card = cards[2 + i] if len(cards) > 2 + i else None
        value = None if card is None else card.value
        if card is None or card.keyword != f"NAXIS{i}" or not isinstance(value, int) or value < 0:
            raise IpacError(f"{name}: NAXIS{i} missing, out of order or invalid")


def check_identity(header: fits.Header, key: QuadrantKey, name: str) -> None:
    """IpacError unless the header's ids (CCDID, QID, RCID, CCD_ID, AMP_ID) are the quadrant's."""
    expected = {"CCDID": key.ccdid, "QID": key.qid, "RCID": key.rcid, "CCD_ID": key.ccdid,
                "AMP_ID": key.qid - 1}  # fmt: skip
    for keyword, value in expected.items():
        got = header.get(keyword)
        if got is not None and got != value:
            raise IpacError(f"{name}: {keyword} = {got!r} in the header, expected {value}")


# -- FITS bytes (what IRSA serves) ------------------------------------------------------------


def image_header_bytes(header: fits.Header, bitpix: int, shape: tuple[int, ...]) -> bytes:
    """The padded primary header of a single-image FITS file, every card of ``header`` kept.

    Written by hand because astropy drops the ``PCOUNT``/``GCOUNT`` cards that IPAC's science
    headers carry over from the raw extension; ``SIMPLE``, ``BITPIX``, ``NAXIS*``, ``EXTEND`` and
    ``END`` of ``header`` are replaced by the layout of the image.
    """
    layout = [("SIMPLE", True, "conforms to FITS standard"), ("BITPIX", bitpix, ""),
              ("NAXIS", len(shape), "")]  # fmt: skip
    layout += [(f"NAXIS{i}", n, "") for i, n in enumerate(shape[::-1], start=1)]
    cards = [fits.Card(*c).image for c in layout]
    cards += [
        c.image
        for c in header.cards
        if c.keyword not in ("SIMPLE", "BITPIX", "EXTEND", "END")
        and not re.fullmatch(r"NAXIS\d*", c.keyword)
    ]
    text = "".join(cards) + "END".ljust(CARD)
    return text.encode("ascii").ljust(header_size(len(text)), b" ")


def image_bytes(header: fits.Header, data: np.ndarray) -> bytes:
    """A single-HDU FITS file of an int16, int32 or float32 image (:func:`image_header_bytes`)."""
    bitpix = {("i", 2): 16, ("i", 4): 32, ("f", 4): -32}[(data.dtype.kind, data.dtype.itemsize)]
    body = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder(">")).tobytes()
    return image_header_bytes(header, bitpix, data.shape) + body.ljust(
        header_size(len(body)), b"\0"
    )


def gzip_bytes(content: bytes) -> bytes:
    """Deterministic gzip (no time stamp, no file name): the same file gives the same bytes."""
    return gzip.compress(content, compresslevel=6, mtime=0)


def gunzip_bytes(content: bytes, name: str, limit: int = MAX_MASK_BYTES) -> bytes:
    """The decompressed content of a gzip file (every member's CRC-32 and length checked);
    IpacError if damaged or bigger than ``limit`` bytes.

    zlib-ng, ≈ 5× faster than the standard library on a mask, in one call when the trailer's
    length is within ``limit``; otherwise (a damaged trailer, a huge file) by a stream bounded
    to ``limit`` bytes of output, so that no damaged file can fill the memory.
    """
    if len(content) >= 18 and int.from_bytes(content[-4:], "little") <= limit:
        try:
            out = gzip_ng.decompress(content)
        except (OSError, EOFError, zlib_ng.error) as exc:
            raise IpacError(f"{name}: corrupt gzip stream ({_verify_message(exc)})") from None
        if len(out) > limit:
            raise IpacError(f"{name}: decompresses to more than {limit} bytes")
        return out
    stream = zlib_ng.decompressobj(wbits=31)
    try:
        out = stream.decompress(content, limit + 1)
    except zlib_ng.error as exc:
        raise IpacError(f"{name}: corrupt gzip stream ({exc})") from None
    if len(out) > limit:
        raise IpacError(f"{name}: decompresses to more than {limit} bytes")
    if not stream.eof:
        raise IpacError(f"{name}: corrupt gzip stream (it ends before its end-of-stream marker)")
    rest = stream.unused_data
    return out + gunzip_bytes(rest, name, limit - len(out)) if rest.strip(b"\0") else out


# -- masks ------------------------------------------------------------------------------------


def read_mask_hdu(
    content: bytes,
    name: str,
    shape: tuple[int, int] | None = None,
    allowed_bits: int = IPAC_MASK_BITS,
) -> tuple[fits.Header, np.ndarray]:
    """The header and int16 bit mask of an IPAC ``mskimg`` file (plain or gzip), verified.

    IpacError naming ``name`` when: the gzip stream or the FITS structure is damaged or
    truncated, a CHECKSUM/DATASUM (if present) fails, the header fails :func:`parse_header`, the
    file is not one 2-D int16/int32 image without scaling (of ``shape`` if given), or a pixel
    sets a bit outside ``allowed_bits`` (default IPAC's bits 0-12).
    """
    if content[:2] == b"\x1f\x8b":
        content = gunzip_bytes(content, name)
    try:
        spans = fitschecksum.hdu_spans(content)
        fitschecksum.verify(content, name)
    except fitschecksum.FitsIntegrityError as exc:
        message = str(exc).removeprefix(f"{name}: ")
        raise IpacError(f"{name}: {message}") from None
    if len(spans) != 1:
        raise IpacError(f"{name}: {len(spans)} HDUs, an IPAC mask has 1")
    _, data_start, _ = spans[0]
    header = parse_header(content[:data_start], name)
    bitpix, naxis = header["BITPIX"], header["NAXIS"]
    if bitpix not in MASK_BITPIX or naxis != 2:
        raise IpacError(f"{name}: BITPIX {bitpix}, NAXIS {naxis}: not a 2-D integer mask")
    if header.get("BZERO", 0) != 0 or header.get("BSCALE", 1) != 1:
        raise IpacError(f"{name}: scaled integers (BZERO/BSCALE) in a bit mask")
    got = (header["NAXIS2"], header["NAXIS1"])
    if shape is not None and got != tuple(shape):
        raise IpacError(f"{name}: mask shape {got}, expected {tuple(shape)}")
    dtype = np.dtype(MASK_BITPIX[bitpix])
    stored = np.frombuffer(content, dtype, count=got[0] * got[1], offset=data_start)
    mask = stored.astype(dtype.newbyteorder("="))  # native copy: one pass, then cheap checks
    outside = mask.dtype.type(~allowed_bits)
    if np.bitwise_or.reduce(mask) & outside:
        bad = (mask & outside) != 0
        first = int(np.argmax(bad))
        row, col = divmod(first, got[1])
        raise IpacError(
            f"{name}: {int(np.count_nonzero(bad))} mask pixel(s) outside the IPAC bits "
            f"0-{allowed_bits.bit_length() - 1} (first: {int(mask[first])} at row {row}, "
            f"column {col})"
        )
    return header, mask.reshape(got).astype(np.int16, copy=False)


def read_mask(content: bytes, name: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The verified int16 bit mask of an IPAC ``mskimg`` file (see :func:`read_mask_hdu`)."""
    return read_mask_hdu(content, name, shape)[1]


# -- CSV answers ------------------------------------------------------------------------------


def verify_csv(
    body: bytes,
    columns: Sequence[str],
    name: str,
    rows: int | None = None,
    *,
    exact: bool = True,
    delimiter: str = ",",
) -> int:
    """Check a CSV answer and return its row count: UTF-8; a header line naming ``columns``
    (exactly, or among others if not ``exact``); every row with as many fields as the header;
    the last line terminated (a cut body ends mid-line); ``rows`` rows if given."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IpacError(f"{name}: CSV answer is not UTF-8 (byte {exc.start})") from None
    if not text:
        if rows:
            raise IpacError(f"{name}: empty CSV answer, expected {rows} rows")
        return 0
    if not text.endswith("\n"):
        raise IpacError(f"{name}: CSV answer ends in the middle of a line (truncated)")
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in columns if c not in header]
    if missing or (exact and header != list(columns)):
        detail = f"missing {', '.join(missing)}" if missing else "not in the expected order"
        raise IpacError(f"{name}: CSV columns are not the expected ones ({detail[:120]})")
    count = 0
    for row in reader:
        count += 1
        if len(row) != len(header):
            raise IpacError(
                f"{name}: CSV row {count} has {len(row)} fields, expected {len(header)}"
            )
    if rows is not None and count != rows:
        raise IpacError(f"{name}: {count} CSV rows, expected {rows}")
    return count


# -- the header table: encoding ---------------------------------------------------------------


def _plain(value: object) -> object:
    """Python scalars for numpy scalars (headers built from numpy values)."""
    return value.item() if isinstance(value, np.generic) else value


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if _INT64[0] <= value <= _INT64[1] else "tagged"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "tagged"  # complex


def _tag(value: object) -> str:
    if isinstance(value, bool):
        return "b:T" if value else "b:F"
    if isinstance(value, int):
        return f"i:{value}"
    if isinstance(value, float):
        return f"f:{value!r}"
    if isinstance(value, str):
        return f"s:{value}"
    if isinstance(value, complex):
        return f"c:{value!r}"
    raise IpacError(f"header value {value!r} of type {type(value).__name__} cannot be stored")


def _untag(text: str) -> object:
    kind, body = text[:2], text[2:]
    if kind == "b:":
        return body == "T"
    if kind == "i:":
        return int(body)
    if kind == "f:":
        return float(body)
    if kind == "c:":
        return complex(body)
    return body


@dataclass
class _Row:
    values: dict[str, object]
    comments: dict[str, str]
    order: list[str]
    commentary: list[dict[str, object]]
    undefined: list[str]
    extra: list[list[object]]  #: [index, keyword, tagged value or None, comment]


def _split(cards: Iterable[tuple[str, object, str]]) -> _Row:
    """A header's (keyword, value, comment) cards sorted into what the table stores."""
    row = _Row({}, {}, [], [], [], [])
    reserved = set(KEY_COLUMNS) | {COMMENTARY_COLUMN, LAYOUT_COLUMN}
    for index, (key, raw_value, comment) in enumerate(cards):
        value = _plain(raw_value)
        if key in COMMENTARY_KEYWORDS:
            row.commentary.append({"index": index, "keyword": key, "text": str(value)})
        elif key in row.values or key in row.undefined or key in reserved:
            tagged = None if value is UNDEFINED else _tag(value)
            row.extra.append([index, key, tagged, comment])
        else:
            row.order.append(key)
            row.comments[key] = comment
            if value is UNDEFINED:
                row.undefined.append(key)
            else:
                row.values[key] = value
    return row


def _cards(header: fits.Header) -> list[tuple[str, object, str]]:
    return [(c.keyword, c.value, c.comment) for c in header.cards]


def _merged_order(orders: Iterable[list[str]]) -> list[str]:
    """One card order for the table: each row's new keywords go after their predecessor."""
    merged: list[str] = []
    position: dict[str, int] = {}
    for order in orders:
        previous = None
        for key in order:
            if key not in position:
                at = 0 if previous is None else merged.index(previous) + 1
                merged.insert(at, key)
                position = {k: i for i, k in enumerate(merged)}
            previous = key
    return merged


def _key_of(key: QuadrantKey | tuple[RawName, int]) -> QuadrantKey:
    return key if isinstance(key, QuadrantKey) else QuadrantKey.of(*key)


def encode_headers(
    headers: Sequence[fits.Header], keys: Sequence[QuadrantKey | tuple[RawName, int]]
) -> pa.Table:
    """The header table of science quadrants: ``headers[i]`` is the ``sciimg`` header of
    ``keys[i]`` (a QuadrantKey or (raw science file, qid)). Rows are sorted by
    (filefracday, ccdid, qid); ``expid`` comes from the key, else from the header's EXPID."""
    if len(headers) != len(keys):
        raise ValueError(f"{len(headers)} headers for {len(keys)} quadrants")
    return _encode([_split(_cards(h)) for h in headers], [_key_of(k) for k in keys])


def _encode(unsorted: Sequence[_Row], keys: Sequence[QuadrantKey]) -> pa.Table:
    pairs = sorted(zip(keys, unsorted, strict=True), key=lambda p: p[0].lookup())
    seen: set[tuple[int, int, int]] = set()
    for key, _ in pairs:
        if key.lookup() in seen:
            raise IpacError(f"{key.name()}: two headers for the same quadrant")
        seen.add(key.lookup())
    rows = [r for _, r in pairs]
    order = _merged_order(r.order for r in rows)
    kinds: dict[str, set[str]] = collections.defaultdict(set)
    comments: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for row in rows:
        for k, v in row.values.items():
            kinds[k].add(_kind(v))
        for k, c in row.comments.items():
            comments[k][c] += 1
    types = {k: next(iter(kinds[k])) if len(kinds[k]) == 1 else "tagged" for k in order}
    default_comment = {k: comments[k].most_common(1)[0][0] for k in order}
    columns: dict[str, pa.Array] = {}
    expids = []
    for key, row in pairs:
        expid = key.expid if key.expid is not None else row.values.get("EXPID")
        expids.append(
            int(expid) if isinstance(expid, int) and not isinstance(expid, bool) else None
        )
    keyed = [p[0] for p in pairs]
    for column in KEY_COLUMNS:
        values = expids if column == "expid" else [getattr(k, column) for k in keyed]
        columns[column] = pa.array(values, KEY_TYPES[column])
    for k in order:
        kind = types[k]
        cells = [row.values.get(k) for row in rows]
        if kind == "tagged":
            cells = [None if c is None else _tag(c) for c in cells]
        columns[k] = pa.array(cells, _TYPES[kind])
    columns[COMMENTARY_COLUMN] = pa.array([r.commentary for r in rows], COMMENTARY_TYPE)
    layouts = []
    for row in rows:
        layout: dict[str, object] = {}
        if row.order != [k for k in order if k in row.comments]:
            layout["order"] = row.order
        differ = {k: c for k, c in row.comments.items() if c != default_comment[k]}
        if differ:
            layout["comments"] = differ
        if row.undefined:
            layout["undefined"] = row.undefined
        if row.extra:
            layout["extra"] = row.extra
        layouts.append(json.dumps(layout, separators=(",", ":")) if layout else None)
    columns[LAYOUT_COLUMN] = pa.array(layouts, pa.string())
    meta = {"version": FORMAT_VERSION, "order": order, "types": types, "comments": default_comment}
    table = pa.table(columns)
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})


# -- the header table: decoding ---------------------------------------------------------------


def _table_meta(table: pa.Table) -> dict:
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise IpacError("not an IPAC header table (no ztfluigi.ipac schema metadata)")
    meta = json.loads(raw)
    if meta.get("version") != FORMAT_VERSION:
        raise IpacError(
            f"IPAC header table format {meta.get('version')}, expected {FORMAT_VERSION}"
        )
    return meta


def _card(key: str, value: object, comment: str) -> fits.Card:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)  # long keywords become HIERARCH cards
        return fits.Card(key, value, comment)


def _header(cards: Sequence[tuple[str, object, str]]) -> fits.Header:
    """A header of exactly these (keyword, value, comment) cards, in order.

    Built from Card objects, not parsed from text: text would round floats to 20 characters and
    strip blanks. (~50 µs a card; astropy's parser, lazy, costs as much once values are read.)
    """
    return fits.Header([_card(*c) for c in cards])


def _build(meta: dict, cells: Mapping[str, object]) -> fits.Header:
    types, comments = meta["types"], meta["comments"]
    layout = json.loads(cells[LAYOUT_COLUMN]) if cells.get(LAYOUT_COLUMN) else {}
    undefined = set(layout.get("undefined", ()))
    order = layout.get("order") or [
        k for k in meta["order"] if cells.get(k) is not None or k in undefined
    ]
    own_comments = {**comments, **layout.get("comments", {})}
    cards: list[tuple[str, object, str]] = []
    for key in order:
        value = UNDEFINED if key in undefined else cells[key]
        if types.get(key) == "tagged" and value is not UNDEFINED:
            value = _untag(value)  # type: ignore[arg-type]
        cards.append((key, value, own_comments.get(key, "")))
    inserts = [(int(c["index"]), (c["keyword"], c["text"], "")) for c in
               cells.get(COMMENTARY_COLUMN) or []]  # fmt: skip
    for index, key, tagged, comment in layout.get("extra", ()):
        value = UNDEFINED if tagged is None else _untag(tagged)
        inserts.append((int(index), (key, value, comment)))
    for index, card in sorted(inserts, key=lambda p: p[0]):
        cards.insert(index, card)
    return _header(cards)


def header_from_row(table: pa.Table, i: int) -> fits.Header:
    """The header of row ``i`` of a header table, exactly as it was encoded."""
    meta = _table_meta(table)
    return _build(meta, table.slice(i, 1).to_pylist()[0])


def headers_from_table(table: pa.Table) -> list[fits.Header]:
    """Every row's header (faster than :func:`header_from_row` per row)."""
    meta = _table_meta(table)
    return [_build(meta, cells) for cells in table.to_pylist()]


def row_index(table: pa.Table) -> dict[tuple[int, int, int], int]:
    """Row of each quadrant, keyed by (filefracday, ccdid, qid)."""
    keys = zip(*(table[c].to_pylist() for c in ("filefracday", "ccdid", "qid")), strict=True)
    return {k: i for i, k in enumerate(keys)}


def find_row(table: pa.Table, raw: RawName, qid: int) -> int:
    """The row of quadrant ``qid`` of ``raw``; IpacError naming its sciimg file if absent."""
    mask = pc.and_(
        pc.and_(pc.equal(table["filefracday"], int(raw.filefracday)),
                pc.equal(table["ccdid"], raw.ccdid)),
        pc.equal(table["qid"], qid),
    )  # fmt: skip
    rows = pc.indices_nonzero(mask).to_pylist()
    if not rows:
        name = naming.science_quadrant_name(raw, qid, "sciimg.fits")
        raise IpacError(f"{name}: no IPAC header for this quadrant in the header table")
    return int(rows[0])


def header_for(table: pa.Table, raw: RawName, qid: int) -> fits.Header:
    """The IPAC ``sciimg`` header of quadrant ``qid`` of ``raw`` from a header table."""
    return header_from_row(table, find_row(table, raw, qid))


def concat_tables(tables: Sequence[pa.Table]) -> pa.Table:
    """One header table from several (e.g. a night's CCDs), exact, rows re-sorted."""
    headers, keys = [], []
    for table in tables:
        headers += headers_from_table(table)
        keys += _keys_of(table)
    return encode_headers(headers, keys)


def _keys_of(table: pa.Table) -> list[QuadrantKey]:
    cols = {c: table[c].to_pylist() for c in KEY_COLUMNS}
    return [
        QuadrantKey(f, c, q, field, filt, e)
        for f, c, q, field, filt, e in zip(
            *(cols[k] for k in ("filefracday", "ccdid", "qid", "field", "filtercode", "expid")),
            strict=True,
        )
    ]


# -- the reference pipeline's metaheader tables -----------------------------------------------


_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[EeDd][+-]?\d+)?")
_STRING_RE = re.compile(r"'((?:[^']|'')*)'")


def _parse_value(key: str, text: str) -> object:
    """A FITS value string (``'ZTF_r   '``, ``30.``, ``T``…) as astropy reads it; ValueError
    if it is none. The usual forms are parsed directly (astropy's Card costs ~50 µs each)."""
    if text in ("T", "F"):
        return text == "T"
    if _INT_RE.fullmatch(text):
        return int(text)
    if _FLOAT_RE.fullmatch(text):
        return float(text.replace("D", "E").replace("d", "e"))
    m = _STRING_RE.fullmatch(text)
    if m:
        return m[1].replace("''", "'").rstrip()
    prefix = f"{key:8s}= " if len(key) <= 8 and " " not in key else f"HIERARCH {key} = "
    image = prefix + text
    if len(image) > CARD:
        raise ValueError(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VerifyWarning)
        card = fits.Card.fromstring(image.ljust(CARD))
        card.verify("exception")
        value = card.value
    if value is UNDEFINED:
        raise ValueError(text)
    return value


def from_metaheader(
    table: pa.Table, raw_index: pa.Table | None = None, name: str = "metaheader"
) -> pa.Table:
    """A reference-pipeline ``metaheader_{YYYYMM}.parquet`` table as a header table.

    The reference stores one row per (EXPID, RCID), one column per keyword, each value the FITS
    value string of the card (no comments; a missing card is null; pandas' index columns are
    ignored). A value that does not parse as a FITS value is dropped, as the reference drops
    ``SCAMPPTH`` (its strings were cut at the first ``/``); the dropped keywords are listed in
    the schema metadata ``ztfluigi.ipac.dropped``. The keys come from the cards (``FILENAME``
    for filefracday, ``RCID``/``CCDID``/``QID``, ``FIELDID``, ``FILTER``); without ``FILENAME``
    the filefracday is looked up in ``raw_index`` (columns expid, ccdid, filefracday, as the
    RawIndex or the reference's ``rawobject_metadata``). A monthly file holds ~10^6 rows: read
    only the rows needed (``pyarrow.parquet.read_table(path, filters=[("EXPID", "in", …)])``).
    """
    columns = [c for c in table.column_names if not c.startswith("__index_level_")]
    lookup: dict[tuple[int, int], int] = {}
    if raw_index is not None:
        for e, c, f in zip(*(raw_index[k].to_pylist() for k in ("expid", "ccdid", "filefracday")),
                           strict=True):  # fmt: skip
            lookup[(int(e), int(c))] = int(f)
    rows, keys, dropped = [], [], set()
    for i, cells in enumerate(table.select(columns).to_pylist()):
        cards: list[tuple[str, object, str]] = []
        for key, text in cells.items():
            if text is None or (isinstance(text, float) and np.isnan(text)):
                continue
            text = str(text)
            if key in COMMENTARY_KEYWORDS:
                cards.append((key, text, ""))
                continue
            try:
                cards.append((key, _parse_value(key, text.strip()), ""))
            except (ValueError, VerifyError, VerifyWarning):
                dropped.add(key)
        row = _split(cards)
        keys.append(_metaheader_key(row.values, lookup, f"{name} row {i}"))
        rows.append(row)
    out = _encode(rows, keys)
    meta = dict(out.schema.metadata)
    meta[METADATA_KEY + b".dropped"] = json.dumps(sorted(dropped)).encode()
    return out.replace_schema_metadata(meta)


def _metaheader_key(
    values: Mapping[str, object], lookup: Mapping[tuple[int, int], int], what: str
) -> QuadrantKey:
    def integer(*keys: str) -> int | None:
        for k in keys:
            v = values.get(k)
            if isinstance(v, int) and not isinstance(v, bool):
                return v
        return None

    rcid = integer("RCID", "DBRCID")
    ccdid = integer("CCDID") or (rcid // 4 + 1 if rcid is not None else None)
    qid = integer("QID") or (rcid % 4 + 1 if rcid is not None else None)
    expid = integer("EXPID", "DBEXPID")
    field = integer("FIELDID", "DBFIELD")
    filtercode = _FILTER_CODES.get(str(values.get("FILTER", "")).strip())
    filtercode = filtercode or _FILTER_BY_ID.get(integer("FILTERID", "DBFID") or 0)
    filefracday = None
    for k in ("FILENAME", "ORIGNAME"):
        m = _RAW_NAME_RE.match(str(values.get(k, "")))
        if m:
            filefracday = int(m[1])
            break
    if filefracday is None and expid is not None and ccdid is not None:
        filefracday = lookup.get((expid, ccdid))
    known = {"ccdid": ccdid, "qid": qid, "field": field, "filtercode": filtercode,
             "filefracday": filefracday}  # fmt: skip
    missing = [n for n, v in known.items() if v is None]
    if missing:
        raise IpacError(f"{what}: cannot tell the quadrant ({', '.join(missing)} unknown)")
    return QuadrantKey(filefracday, ccdid, qid, field, filtercode, expid)  # type: ignore[arg-type]
