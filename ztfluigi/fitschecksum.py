"""FITS CHECKSUM/DATASUM (FITS standard 4.0, appendix J) on whole files held in memory.

Writers stamp the current time into the checksum comments, which makes files differ from run to
run; here the comments are fixed, so the same pixels give the same bytes. :func:`verify` also
checks the file's structure (block alignment, complete data units), so a truncated download or a
flipped bit is caught before the file is accepted.
"""

from __future__ import annotations

import numpy as np

BLOCK = 2880
CARD = 80
_EXCLUDE = set(range(0x3A, 0x41)) | set(range(0x5B, 0x61))


class FitsIntegrityError(ValueError):
    """A FITS file that is truncated, malformed or fails its checksums."""


def _parse_value(card: bytes) -> str:
    return card[10:].split(b"/")[0].strip().decode("ascii", "replace").strip("'").strip()


def hdu_spans(data: bytes) -> list[tuple[int, int, int]]:
    """(header_start, data_start, end) byte offsets of every HDU; raises on truncation."""
    if len(data) % BLOCK:
        raise FitsIntegrityError(
            f"size {len(data)} is not a multiple of {BLOCK} bytes (truncated?)"
        )
    spans, pos = [], 0
    while pos < len(data):
        start, keys = pos, {}
        while True:
            if pos + BLOCK > len(data):
                raise FitsIntegrityError(f"header of HDU {len(spans)} is truncated")
            block = data[pos : pos + BLOCK]
            pos += BLOCK
            cards = [block[i : i + CARD] for i in range(0, BLOCK, CARD)]
            ended = False
            for card in cards:
                key = card[:8].strip().decode("ascii", "replace")
                if key == "END":
                    ended = True
                    break
                if (
                    card[8:10] == b"= "
                    and key in ("BITPIX", "NAXIS", "PCOUNT", "GCOUNT")
                    or (key.startswith("NAXIS") and card[8:10] == b"= ")
                ):
                    keys[key] = _parse_value(card)
            if ended:
                break
        if len(spans) == 0 and not data.startswith(b"SIMPLE  ="):
            raise FitsIntegrityError("not a FITS file (no SIMPLE card)")
        try:
            naxis = int(keys.get("NAXIS", 0))
            size = 0
            if naxis:
                size = 1
                for i in range(1, naxis + 1):
                    size *= int(keys[f"NAXIS{i}"])
            size = (
                abs(int(keys["BITPIX"]))
                // 8
                * int(keys.get("GCOUNT", 1))
                * (size + int(keys.get("PCOUNT", 0)))
            )
        except (KeyError, ValueError) as exc:
            raise FitsIntegrityError(f"HDU {len(spans)} has a malformed header ({exc})") from None
        data_start = pos
        pos += -(-size // BLOCK) * BLOCK
        if pos > len(data):
            raise FitsIntegrityError(
                f"data of HDU {len(spans)} is truncated ({len(data) - data_start} of "
                f"{pos - data_start} bytes)"
            )
        spans.append((start, data_start, pos))
    return spans


def _sum32(buf: bytes | bytearray | memoryview) -> int:
    """32-bit ones' complement sum of big-endian words."""
    words = np.frombuffer(buf, dtype=">u4")
    total = int(words.sum(dtype=np.uint64))
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def _encode(value: int) -> str:
    """The 16-character ASCII encoding of a 32-bit checksum complement."""
    chars = [0] * 16
    for i in range(4):
        byte = (value >> (24 - 8 * i)) & 0xFF
        quotient, remainder = divmod(byte, 4)
        ch = [quotient + remainder + 0x30] + [quotient + 0x30] * 3
        changed = True
        while changed:
            changed = False
            for j in (0, 2):
                if ch[j] in _EXCLUDE or ch[j + 1] in _EXCLUDE:
                    ch[j] += 1
                    ch[j + 1] -= 1
                    changed = True
        for j in range(4):
            chars[4 * j + i] = ch[j]
    chars = chars[15:] + chars[:15]
    return bytes(chars).decode("ascii")


def _card(key: str, value: str, comment: str) -> bytes:
    return f"{key:<8}= {value:<20} / {comment}".ljust(CARD)[:CARD].encode("ascii")


def add_checksums(data: bytes, comment: str = "HDU checksum") -> bytes:
    """Return ``data`` with CHECKSUM and DATASUM cards (fixed comments) in every HDU."""
    out = bytearray()
    for start, data_start, end in hdu_spans(data):
        header = bytearray(data[start:data_start])
        cards = [bytes(header[i : i + CARD]) for i in range(0, len(header), CARD)]
        cards = [c for c in cards if c[:8] not in (b"CHECKSUM", b"DATASUM ")]
        end_at = next(i for i, c in enumerate(cards) if c[:8].strip() == b"END")
        datasum = _sum32(data[data_start:end])
        cards[end_at:end_at] = [
            _card("CHECKSUM", "'0000000000000000'", comment),
            _card("DATASUM", f"'{datasum}'", "data unit checksum"),
        ]
        cards = cards[: end_at + 3]
        text = b"".join(cards)
        text += b" " * (-len(text) % BLOCK)
        total = _sum32(text)
        total = (
            (total + datasum) & 0xFFFFFFFF
            if total + datasum <= 0xFFFFFFFF
            else ((total + datasum) & 0xFFFFFFFF) + 1
        )
        encoded = _encode(~total & 0xFFFFFFFF)
        text = text.replace(b"'0000000000000000'", f"'{encoded}'".encode(), 1)
        out += text
        out += data[data_start:end]
    return bytes(out)


def verify(data: bytes, name: str = "file") -> None:
    """Check structure and, where present, CHECKSUM/DATASUM of every HDU; raise on failure."""
    for index, (start, data_start, end) in enumerate(hdu_spans(data)):
        header = data[start:data_start]
        cards = {header[i : i + 8]: header[i : i + CARD] for i in range(0, len(header), CARD)}
        if b"DATASUM " in cards:
            expected = _parse_value(cards[b"DATASUM "])
            if expected and int(expected) != _sum32(data[data_start:end]):
                raise FitsIntegrityError(f"{name}: DATASUM mismatch in HDU {index} (corrupt data)")
        if b"CHECKSUM" in cards and _sum32(data[start:end]) != 0xFFFFFFFF:
            raise FitsIntegrityError(f"{name}: CHECKSUM mismatch in HDU {index} (corrupt file)")
