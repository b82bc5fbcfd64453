"""Text encodings of city files: strict decoding of UTF-8 and GB18030 first, charset-normalizer's guess last."""

from __future__ import annotations

import codecs
from pathlib import Path

from civicgrid.geo.errors import ReadError

#: Bytes read at a time when a whole file is checked.
_CHUNK_BYTES = 1 << 22

#: Encodings tried, in order, when a text file does not say its own (GB18030 is a superset of GBK and GB2312).
CANDIDATE_ENCODINGS = ("utf-8", "gb18030")


#: Bytes from the top of a text file that decide its encoding when they hold non-ASCII text (the rest is
#: checked while it is read).
_HEAD_BYTES = 1 << 22


def decodes(chunks, encoding: str, *, final: bool = True) -> bool:
    """True when the byte chunks decode strictly in ``encoding`` (``final=False``: they may end mid-character)."""
    dec = codecs.getincrementaldecoder(encoding)("strict")
    try:
        for chunk in chunks:
            dec.decode(chunk)
        if final:
            dec.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def file_chunks(p: Path, *, skip: int = 0):
    with open(p, "rb") as fh:
        fh.seek(skip)
        while chunk := fh.read(_CHUNK_BYTES):
            yield chunk


def detect_encoding(p: Path) -> str:
    """Return the encoding of a text file: ``utf-8-sig``, ``utf-8``, ``gb18030``, or charset-normalizer's guess.

    Strict decoding is tried first (UTF-8, then GB18030): it is exact where a
    statistical guess can confuse GBK with other East-Asian encodings. When the
    first 4 MB hold non-ASCII text they decide (the CSV reader then checks
    every later byte and fails with a clear message on one that does not
    decode); an all-ASCII head is followed by a scan of the whole file.
    """
    with open(p, "rb") as fh:
        head = fh.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    with open(p, "rb") as fh:
        head = fh.read(_HEAD_BYTES)
    if (utf16 := utf16_without_bom(head)) is not None:
        return utf16
    if not head.isascii():
        # Non-ASCII text in the first MBs decides (the reader checks every later byte in that encoding).
        for enc in CANDIDATE_ENCODINGS:
            if decodes([head], enc, final=len(head) < _HEAD_BYTES):
                return enc
    else:
        for enc in CANDIDATE_ENCODINGS:
            if decodes(file_chunks(p), enc):
                return enc
    from charset_normalizer import from_path

    best = from_path(p).best()
    if best is None:
        msg = f"cannot tell the text encoding of {p.name}; give it with --encoding (e.g. gbk, utf-8, big5)"
        raise ReadError(msg)
    return best.encoding


def utf16_without_bom(head: bytes) -> str | None:
    """``utf-16-le`` or ``utf-16-be`` when the bytes look like UTF-16 text without a byte-order mark (a zero byte
    beside most ASCII characters, on one side only; what Excel's "Unicode text" and some office systems write),
    else None."""
    sample = head[:8192]
    if len(sample) < 4 or b"\x00" not in sample:
        return None
    even, odd = sample[0::2], sample[1::2]
    zeros_even, zeros_odd = even.count(0) / len(even), odd.count(0) / len(odd)
    if zeros_odd > 0.3 and zeros_even < 0.05:
        return "utf-16-le"
    if zeros_even > 0.3 and zeros_odd < 0.05:
        return "utf-16-be"
    return None


def check_encoding(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError as exc:
        msg = f"unknown encoding {name!r} (try utf-8, gbk, gb18030, big5)"
        raise ReadError(msg) from exc
