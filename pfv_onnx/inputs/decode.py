"""Decoding one image file with OpenCV into upright 8-bit BGR: EXIF orientation, grayscale,
alpha over white, 16-bit and float images, first frames, and a pixel limit."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import one_line
from .headers import BadImageError, _read_header

DEFAULT_MAX_PIXELS = 100_000_000
"""Images with more pixels than this are refused (a guard against decompression bombs)."""


@dataclass
class DecodedImage:
    """One decoded image.

    ``bgr``: (H, W, 3) uint8 in OpenCV's B, G, R order, already turned upright by its
    EXIF orientation. ``format``: the detected file format (``"png"``, ``"jpeg"``, ...).
    ``notes``: conversions made (``"grayscale"``, ``"16-bit scaled to 8-bit"``, ...).
    """

    path: Path
    bgr: np.ndarray
    format: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.bgr.shape[0])

    @property
    def width(self) -> int:
        return int(self.bgr.shape[1])


def _check_pixels(width: int, height: int, max_pixels: int, where: str) -> None:
    if width <= 0 or height <= 0:
        raise BadImageError(f"image has no pixels ({width}x{height} {where})")
    if width * height > max_pixels:
        raise BadImageError(
            f"image too large: {width}x{height} = {width * height:,} pixels {where}, "
            f"limit {max_pixels:,} (raise it with --max-pixels)"
        )


def _to_uint8(img: np.ndarray, notes: list[str]) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        notes.append("16-bit scaled to 8-bit")
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if img.dtype in (np.float32, np.float64):
        notes.append("floating-point image clipped to [0, 1] and scaled to 8-bit")
        x = np.nan_to_num(img.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    if img.dtype == np.int8:
        return (img.astype(np.int16) + 128).astype(np.uint8)
    raise BadImageError(f"unsupported pixel type {img.dtype}")


_ORIENTATIONS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: a.swapaxes(0, 1)[:, ::-1],  # 90 degrees clockwise
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: a.swapaxes(0, 1)[::-1, :],  # 90 degrees counter-clockwise
}
"""EXIF orientation (TIFF tag 0x0112) -> how the stored pixels (rows, columns first) turn upright."""


def exif_orientation(exif: bytes) -> int:
    """The Orientation tag of an EXIF block (a TIFF header and IFD0, with or without the
    ``Exif\\0\\0`` prefix of a JPEG APP1 segment); 1 (upright) when absent or unreadable."""
    if exif.startswith(b"Exif\x00\x00"):
        exif = exif[6:]
    if exif[:4] not in (b"II*\x00", b"MM\x00*"):
        return 1
    end = "<" if exif[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack(end + "I", exif[4:8])
        (count,) = struct.unpack(end + "H", exif[ifd : ifd + 2])
        for i in range(count):
            at = ifd + 2 + 12 * i
            tag, typ = struct.unpack(end + "HH", exif[at : at + 4])
            if tag == 0x0112 and typ == 3:
                (value,) = struct.unpack(end + "H", exif[at + 8 : at + 10])
                return int(value) if value in _ORIENTATIONS else 1
    except struct.error:
        pass
    return 1


def _decode_with_orientation(buf: np.ndarray) -> tuple[np.ndarray | None, int]:
    """The pixels as stored (alpha kept, not turned) and the EXIF orientation the decoder read."""
    import cv2

    if not hasattr(cv2, "imdecodeWithMetadata"):  # OpenCV before 4.12: no metadata from the decoder
        return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED), 1
    raw, types, blobs = cv2.imdecodeWithMetadata(buf, cv2.IMREAD_UNCHANGED)
    orientation = 1
    for kind, blob in zip(list(types), list(blobs)):
        if int(kind) == cv2.IMAGE_METADATA_EXIF:
            orientation = exif_orientation(np.asarray(blob, dtype=np.uint8).tobytes())
    return raw, orientation


def _composite_alpha(raw: np.ndarray, orientation: int, upright: np.ndarray, notes: list[str]) -> np.ndarray:
    """Blend an image with alpha over white, turned by its EXIF ``orientation`` like ``upright``.

    OpenCV applies the EXIF orientation only when it drops the alpha channel, so the
    stored pixels with alpha are turned here by the orientation the decoder read; the
    turned colours must equal ``upright`` (the decoder's own turned image), else the alpha
    is dropped with a note rather than put in the wrong place.
    """
    if raw.shape[2] == 2:  # gray + alpha
        color = np.repeat(_to_uint8(raw[:, :, :1], []), 3, axis=2)
    else:
        color = _to_uint8(raw[:, :, :3], [])
    alpha_raw = raw[:, :, -1]
    if alpha_raw.dtype == np.uint8:
        alpha = alpha_raw.astype(np.float32) / 255.0
    elif alpha_raw.dtype == np.uint16:
        alpha = alpha_raw.astype(np.float32) / 65535.0
    else:
        alpha = np.clip(alpha_raw.astype(np.float32), 0.0, 1.0)
    if bool((alpha >= 1.0).all()):
        return upright
    turn = _ORIENTATIONS[orientation]
    color, alpha = turn(color), turn(alpha)
    if color.shape != upright.shape or not np.array_equal(color, upright):
        notes.append("alpha channel dropped")
        return upright
    notes.append("alpha composited over white")
    a = alpha[:, :, None]
    out = color.astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def decode_bytes(data: bytes, *, path: str | os.PathLike[str] = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode an encoded image held in memory; see :func:`decode_image`."""
    import cv2

    if len(data) == 0:
        raise BadImageError("empty file (0 bytes)")
    header = _read_header(data)
    if header.fmt is None:
        raise BadImageError("not an image (unknown file type)")
    if header.width is not None and header.height is not None:
        _check_pixels(header.width, header.height, max_pixels, "in the header")
    buf = np.frombuffer(data, dtype=np.uint8)
    notes: list[str] = []
    try:
        upright = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
        raw, orientation = _decode_with_orientation(buf) if header.maybe_alpha and upright is not None else (None, 1)
    except cv2.error as exc:
        raise BadImageError(f"OpenCV could not decode the {header.fmt.upper()} file: {one_line(str(exc))}") from None
    except MemoryError:
        raise BadImageError("out of memory while decoding") from None
    if upright is None or upright.size == 0:
        raise BadImageError(f"corrupt or truncated {header.fmt.upper()} file (OpenCV could not decode it)")
    _check_pixels(upright.shape[1], upright.shape[0], max_pixels, "after decoding")
    if upright.ndim == 2:
        upright = cv2.cvtColor(upright, cv2.COLOR_GRAY2BGR)
    upright = _to_uint8(upright, notes)
    if raw is not None and raw.ndim == 3 and raw.shape[2] in (2, 4):
        upright = _composite_alpha(raw, orientation, upright, notes)
    if _is_gray(upright):
        notes.append("grayscale")
    if header.fmt == "gif":
        notes.append("first frame")
    return DecodedImage(Path(path), np.ascontiguousarray(upright), header.fmt, notes)


def _is_gray(bgr: np.ndarray) -> bool:
    return bool(np.array_equal(bgr[:, :, 0], bgr[:, :, 1]) and np.array_equal(bgr[:, :, 1], bgr[:, :, 2]))


def decode_image(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Read one image file as upright 8-bit BGR.

    Args:
        path: the image file (any format OpenCV reads: JPEG, PNG, GIF, BMP, WebP, TIFF,
            PNM, AVIF, JPEG 2000, HDR).
        max_pixels: images with more pixels are refused; checked from the header before
            decoding for PNG, JPEG, GIF, BMP, WebP, TIFF and PNM, and after decoding for
            all formats.

    Returns:
        A :class:`DecodedImage` whose ``bgr`` is (H, W, 3) uint8, EXIF orientation applied.
        Grayscale is replicated to three channels; alpha is composited over white; 16-bit
        is scaled by 1/257 with rounding; only the first frame of an animation is used.

    Raises:
        BadImageError: unreadable, empty, corrupt, truncated, not an image, or too large.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max(8 * max_pixels, 64 << 20):
            raise BadImageError(f"file too large for an image of at most {max_pixels:,} pixels ({size:,} bytes)")
        data = p.read_bytes()
    except FileNotFoundError:
        raise BadImageError("no such file") from None
    except IsADirectoryError:
        raise BadImageError("is a folder, not an image file") from None
    except OSError as exc:
        raise BadImageError(f"cannot read the file: {exc.strerror or exc}") from None
    return decode_bytes(data, path=p, max_pixels=max_pixels)
