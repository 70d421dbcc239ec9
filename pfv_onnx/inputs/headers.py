"""Image headers: the format from the first bytes, and the size (and whether there may be
alpha) read from the header without decoding, so a decompression bomb is refused early."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import InputError


class BadImageError(InputError):
    """One image file cannot be used; the message is a one-line reason."""


def _format_of(head: bytes) -> str | None:
    """Image format from the first bytes, or None when unknown."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head.startswith(b"BM") and len(head) >= 26:
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n#":
        return "pnm"
    if head[4:12] in (b"ftypavif", b"ftypavis"):
        return "avif"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xff\x4f\xff\x51"):
        return "jpeg2000"
    if head.startswith(b"#?RADIANCE") or head.startswith(b"#?RGBE"):
        return "hdr"
    if head[:2] in (b"PF", b"Pf"):
        return "pfm"
    if head.startswith(b"\x59\xa6\x6a\x95"):
        return "sunraster"
    return None


@dataclass(frozen=True)
class _Header:
    fmt: str | None
    width: int | None = None
    height: int | None = None
    maybe_alpha: bool = False


def _png_header(data: bytes) -> _Header:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise BadImageError("corrupt PNG (no IHDR chunk)")
    width, height = struct.unpack(">II", data[16:24])
    color_type = data[25]
    alpha = color_type in (4, 6)
    if not alpha:  # palette or gray images may carry transparency in a tRNS chunk
        pos = 8
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos : pos + 8])
            if kind == b"tRNS":
                alpha = True
                break
            if kind in (b"IDAT", b"IEND"):
                break
            pos += 12 + length
    return _Header("png", width, height, alpha)


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_header(data: bytes) -> _Header:
    pos = 2
    n = len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:  # stray bytes between segments: libjpeg skips them, so do we
            nxt = data.find(b"\xff", pos)
            if nxt < 0:
                break
            pos = nxt
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF_MARKERS:
            if pos + 9 > n:
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return _Header("jpeg", width, height)
        if marker in (0xD9, 0xDA):  # end of image, or start of scan without a frame header
            break
        pos += 2 + length
    return _Header("jpeg")  # no frame header found here: the decoder decides, the size is checked after


def _bmp_header(data: bytes) -> _Header:
    (dib,) = struct.unpack("<I", data[14:18])
    if dib == 12:
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    return _Header("bmp", abs(width), abs(height), maybe_alpha=True)


def _webp_header(data: bytes) -> _Header:
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        flags = data[20]
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return _Header("webp", width, height, maybe_alpha=bool(flags & 0x10))
    if kind == b"VP8L" and len(data) >= 25:
        (bits,) = struct.unpack("<I", data[21:25])
        width = 1 + (bits & 0x3FFF)
        height = 1 + ((bits >> 14) & 0x3FFF)
        return _Header("webp", width, height, maybe_alpha=bool((bits >> 28) & 1))
    if kind == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return _Header("webp", width & 0x3FFF, height & 0x3FFF)
    return _Header("webp")


def _tiff_header(data: bytes) -> _Header:
    end = "<" if data[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack(end + "I", data[4:8])
        (count,) = struct.unpack(end + "H", data[offset : offset + 2])
        width = height = None
        for i in range(count):
            entry = data[offset + 2 + 12 * i : offset + 14 + 12 * i]
            tag, typ = struct.unpack(end + "HH", entry[:4])
            if tag in (256, 257):
                value = struct.unpack(end + ("H" if typ == 3 else "I"), entry[8 : 10 if typ == 3 else 12])[0]
                if tag == 256:
                    width = value
                else:
                    height = value
        return _Header("tiff", width, height, maybe_alpha=True)
    except struct.error:
        return _Header("tiff", maybe_alpha=True)


def _pnm_header(data: bytes) -> _Header:
    tokens: list[bytes] = []
    pos = 2
    while len(tokens) < 2 and pos < min(len(data), 4096):
        c = data[pos : pos + 1]
        if c == b"#":
            nl = data.find(b"\n", pos)
            pos = len(data) if nl < 0 else nl + 1
        elif c.isspace():
            pos += 1
        else:
            start = pos
            while pos < len(data) and not data[pos : pos + 1].isspace() and data[pos : pos + 1] != b"#":
                pos += 1
            tokens.append(data[start:pos])
    try:
        return _Header("pnm", int(tokens[0]), int(tokens[1]))
    except (IndexError, ValueError):
        return _Header("pnm")


def _read_header(data: bytes) -> _Header:
    fmt = _format_of(data[:32])
    try:
        if fmt == "png":
            return _png_header(data)
        if fmt == "jpeg":
            return _jpeg_header(data)
        if fmt == "gif" and len(data) >= 10:
            width, height = struct.unpack("<HH", data[6:10])
            return _Header("gif", width, height)
        if fmt == "bmp":
            return _bmp_header(data)
        if fmt == "webp":
            return _webp_header(data)
        if fmt == "tiff":
            return _tiff_header(data)
        if fmt == "pnm":
            return _pnm_header(data)
    except struct.error:
        raise BadImageError(f"corrupt {fmt.upper()} header") from None
    return _Header(fmt, maybe_alpha=fmt in ("avif", "jpeg2000"))
