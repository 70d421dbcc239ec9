"""Image files to model feed: find, decode, resize, normalise, lay out.

Three steps, each usable on its own:

- :func:`collect_images` turns files, folders (recursive) and glob patterns into a
  sorted, de-duplicated list of files, with a reason for every argument that gave none.
- :func:`decode_image` reads one file with OpenCV into an 8-bit BGR array: EXIF
  orientation honoured, grayscale expanded, alpha composited over white, 16-bit and
  float images converted, animated images reduced to their first frame, and images
  above a pixel limit refused (from the header, before decoding, where the format
  allows). A bad file raises :class:`BadImageError` with a one-line reason.
- :func:`preprocess` resizes one decoded image and normalises it with a
  :class:`Preprocessing` (a preset plus overrides); :func:`stack_batch` lays a list of
  them out as the model's NCHW or NHWC float32 batch.
"""

from __future__ import annotations

import glob
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError, one_line

DEFAULT_MAX_PIXELS = 100_000_000
"""Images with more pixels than this are refused (a guard against decompression bombs)."""

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".gif",
        ".webp", ".tif", ".tiff", ".pbm", ".pgm", ".ppm", ".pnm", ".pxm", ".pfm",
        ".jp2", ".j2k", ".avif", ".hdr", ".pic", ".sr", ".ras",
    }
)  # fmt: skip
"""File name endings picked up when a folder is searched (compared in lower case)."""


class BadImageError(InputError):
    """One image file cannot be used; the message is a one-line reason."""


# --------------------------------------------------------------------------- finding files


@dataclass
class Collected:
    """Result of :func:`collect_images`.

    ``files``: the image files, in a deterministic order (arguments in the order given,
    the files of one folder or pattern sorted by path), each once.
    ``missing``: ``(argument, reason)`` for each argument that named nothing.
    ``skipped``: ``(file, reason)`` for files found in folders that are not images.
    """

    files: list[Path] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


_GLOB_CHARS = frozenset("*?[")


def _key(path: str | os.PathLike[str]) -> str:
    return os.path.normcase(os.path.realpath(path))


def _walk_folder(folder: Path, exclude: frozenset[str] = frozenset()) -> tuple[list[Path], list[tuple[str, str]]]:
    """Every image below ``folder`` (hidden entries and ``exclude`` keys left out), sorted by relative path."""
    found: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and _key(Path(root) / d) not in exclude)
        for name in sorted(names):
            if name.startswith("."):
                continue  # .DS_Store, AppleDouble "._x.jpg" files and the like
            path = Path(root) / name
            if not path.is_file() or (exclude and _key(path) in exclude):
                continue
            if path.suffix.lower() in IMAGE_EXTENSIONS or _sniff_format(path) is not None:
                found.append(path)
            else:
                skipped.append((str(path), "not an image (unknown file type)"))
    order = sorted(range(len(found)), key=lambda i: found[i].relative_to(folder).parts)
    return [found[i] for i in order], skipped


def _excluded_match(match: Path, pattern: str, excluded: frozenset[str]) -> bool:
    """Whether a pattern's match is, or lies in, an excluded path below the pattern's fixed part."""
    fixed: list[str] = []
    for part in Path(pattern).parts:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    floor = _key(Path(*fixed) if fixed else Path("."))
    for p in (match, *match.parents):
        k = _key(p)
        if k == floor or floor.startswith(k.rstrip(os.sep) + os.sep):
            return False
        if k in excluded:
            return True
    return False


def _sniff_format(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError:
        return None
    return _format_of(head)


def collect_images(specs: Iterable[str | os.PathLike[str]], *, exclude: Iterable[str | os.PathLike[str]] = ()) -> Collected:
    """Find image files from file names, folders (searched recursively) and glob patterns.

    A file named directly is always kept, whatever its extension (decoding decides).
    In folders, files with an image extension (:data:`IMAGE_EXTENSIONS`) or image
    content are kept, other files are reported in ``skipped``, hidden files and folders
    (names starting with a dot) are ignored. Patterns use :mod:`glob` syntax with ``**``
    for any depth. Never raises for a missing path: it is reported in ``missing``.
    ``exclude``: files and folders that searching folders and patterns leaves out (a run's
    output folder and the files it wrote), unless an argument names them directly.
    """
    out = Collected()
    seen: set[str] = set()
    excluded = frozenset(_key(p) for p in exclude)

    def add(path: Path) -> None:
        key = _key(path)
        if key not in seen:
            seen.add(key)
            out.files.append(path)

    for spec in specs:
        text = os.fspath(spec)
        path = Path(text)
        if path.is_dir():
            files, skipped = _walk_folder(path, excluded)
            if not files and not skipped:
                out.missing.append((text, "folder holds no files"))
            for f in files:
                add(f)
            out.skipped.extend(skipped)
        elif path.is_file():
            add(path)
        elif path.exists():
            out.missing.append((text, "not a regular file or folder"))
        elif _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                out.missing.append((text, "no file matches this pattern"))
            for m in matches:
                mp = Path(m)
                if excluded and _excluded_match(mp, text, excluded):
                    continue
                if mp.is_dir():
                    files, skipped = _walk_folder(mp, excluded)
                    for f in files:
                        add(f)
                    out.skipped.extend(skipped)
                elif mp.is_file():
                    add(mp)
        else:
            out.missing.append((text, "no such file or folder"))
    return out


# --------------------------------------------------------------------------- header sniffing


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


# --------------------------------------------------------------------------- decoding


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


# --------------------------------------------------------------------------- preprocessing

PRESETS: dict[str, dict[str, object]] = {
    # mean and std in R, G, B order, in the units of `range` (the pixel range before normalising)
    "imagenet": {"range": 1.0, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "color_order": "RGB"},
    "inception": {"range": 1.0, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "color_order": "RGB"},
    "caffe": {"range": 255.0, "mean": (123.68, 116.779, 103.939), "std": (1.0, 1.0, 1.0), "color_order": "BGR"},
    "raw": {"range": 1.0, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "color_order": "RGB"},
}
"""Named preprocessing recipes: ``imagenet`` (RGB in [0, 1], ImageNet mean/std),
``inception`` ((x/255 - 0.5)/0.5), ``caffe`` (BGR on 0-255 minus the Caffe means),
``raw`` (RGB in [0, 1])."""

RESIZE_MODES = ("stretch", "crop")
COLOR_ORDERS = ("RGB", "BGR", "GRAY")


@dataclass(frozen=True)
class Preprocessing:
    """How a decoded image becomes one model input.

    Per pixel and channel, in the channel order fed to the model (``color_order``):
    ``x = (v * range / 255 - mean[c]) / std[c]`` where ``v`` is the 8-bit value.
    ``size`` is the model input's (H, W); ``layout`` is ``"NCHW"`` or ``"NHWC"``.
    """

    preset: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    color_order: str
    range: float
    size: tuple[int, int]
    resize: str = "stretch"
    layout: str = "NCHW"

    @property
    def channels(self) -> int:
        return 1 if self.color_order == "GRAY" else 3

    def to_dict(self) -> dict[str, object]:
        return {
            "preset": self.preset,
            "mean": list(self.mean),
            "std": list(self.std),
            "color_order": self.color_order,
            "pixel_range": self.range,
            "size": list(self.size),
            "resize": self.resize,
            "layout": self.layout,
        }


def make_preprocessing(
    preset: str = "imagenet",
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    color_order: str | None = None,
    pixel_range: float | None = None,
    size: tuple[int, int] | int = 224,
    resize: str = "stretch",
    layout: str = "NCHW",
    channels: int = 3,
) -> Preprocessing:
    """Build a :class:`Preprocessing` from a preset name and optional overrides.

    Args:
        preset: one of :data:`PRESETS`.
        mean, std: one value or one per channel, in the channel order fed to the model
            and in the units of ``pixel_range``; replace the preset's.
        color_order: ``"RGB"`` or ``"BGR"``; default: the preset's. The preset's
            mean and std (given in RGB order) are reordered to match.
        pixel_range: 1.0 (pixels scaled to [0, 1]) or 255.0 (kept on 0-255) before mean
            and std; default: the preset's.
        size: model input (H, W), or one int for a square.
        resize: ``"stretch"`` (whole image, aspect changed) or ``"crop"`` (shorter side
            fitted, centre cropped).
        layout: ``"NCHW"`` or ``"NHWC"``.
        channels: 3, or 1 for a grayscale model (the preset's mean/std are averaged).

    Raises:
        InputError: an unknown name or a value of the wrong length or sign.
    """
    if preset not in PRESETS:
        raise InputError(f"unknown preprocessing preset {preset!r}; choose one of {', '.join(PRESETS)}")
    recipe = PRESETS[preset]
    if resize not in RESIZE_MODES:
        raise InputError(f"unknown resize mode {resize!r}; choose one of {', '.join(RESIZE_MODES)}")
    layout = str(getattr(layout, "value", layout)).upper()
    if layout not in ("NCHW", "NHWC"):
        raise InputError(f"unknown layout {layout!r}; choose NCHW or NHWC")
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or any(int(s) < 1 for s in size):
        raise InputError(f"image size must be two positive integers (H, W), got {size!r}")
    size = (int(size[0]), int(size[1]))
    if channels not in (1, 3):
        raise InputError(f"the model expects {channels} image channels; only 1 (grayscale) and 3 are supported")
    order = (color_order or str(recipe["color_order"])).upper()
    if order not in ("RGB", "BGR"):
        raise InputError(f"unknown colour order {color_order!r}; choose RGB or BGR")
    rng = float(recipe["range"] if pixel_range is None else pixel_range)
    if rng not in (1.0, 255.0):
        raise InputError(f"pixel range must be 1 or 255, got {pixel_range!r}")

    def per_channel(values: Sequence[float] | None, default: tuple[float, ...], what: str) -> tuple[float, ...]:
        if values is None:
            vals = tuple(float(v) for v in default)
            if order == "BGR":
                vals = vals[::-1]
            if channels == 1:
                vals = (sum(vals) / 3.0,)
            return vals
        vals = tuple(float(v) for v in values)
        if len(vals) == 1:
            vals = vals * channels
        if len(vals) != channels:
            raise InputError(f"--{what} needs 1 or {channels} values, got {len(vals)}")
        if not all(np.isfinite(vals)):
            raise InputError(f"--{what} values must be finite, got {list(vals)}")
        return vals

    mean_t = per_channel(mean, recipe["mean"], "mean")  # type: ignore[arg-type]
    std_t = per_channel(std, recipe["std"], "std")  # type: ignore[arg-type]
    if any(s <= 0 for s in std_t):
        raise InputError(f"--std values must be positive, got {list(std_t)}")
    return Preprocessing(
        preset=preset,
        mean=mean_t,
        std=std_t,
        color_order="GRAY" if channels == 1 else order,
        range=rng,
        size=size,
        resize=resize,
        layout=layout,
    )


def crop_box(width: int, height: int, prep: Preprocessing) -> tuple[int, int, int, int]:
    """The region (x0, y0, x1, y1) of a ``width`` x ``height`` image that the model sees.

    The whole image for ``stretch``; for ``crop``, the centred region with the model
    input's aspect ratio, as large as fits.
    """
    if prep.resize == "stretch":
        return (0, 0, width, height)
    th, tw = prep.size
    scale = max(th / height, tw / width)
    cw = min(width, max(1, round(tw / scale)))
    ch = min(height, max(1, round(th / scale)))
    x0 = (width - cw) // 2
    y0 = (height - ch) // 2
    return (x0, y0, x0 + cw, y0 + ch)


def resize_to(img: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize with area averaging when shrinking both sides, else bilinear."""
    import cv2

    h, w = img.shape[:2]
    th, tw = size_hw
    if (h, w) == (th, tw):
        return img
    interp = cv2.INTER_AREA if th <= h and tw <= w else cv2.INTER_LINEAR
    return cv2.resize(img, (tw, th), interpolation=interp)


def preprocess(bgr: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """One decoded image (H, W, 3) uint8 BGR to a (h, w, C) float32 model input (HWC).

    The region of :func:`crop_box` is resized to ``prep.size``, reordered to
    ``prep.color_order`` and normalised. Use :func:`stack_batch` for the batch layout.
    """
    import cv2

    x0, y0, x1, y1 = crop_box(bgr.shape[1], bgr.shape[0], prep)
    region = bgr[y0:y1, x0:x1]
    small = resize_to(region, prep.size)
    if prep.color_order == "GRAY":
        pixels = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)[:, :, None]
    elif prep.color_order == "RGB":
        pixels = small[:, :, ::-1]
    else:
        pixels = small
    x = pixels.astype(np.float32) * np.float32(prep.range / 255.0)
    x -= np.asarray(prep.mean, dtype=np.float32)
    x /= np.asarray(prep.std, dtype=np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def stack_batch(images: Sequence[np.ndarray], layout: str = "NCHW") -> np.ndarray:
    """Stack (h, w, C) float32 images into one (N, C, h, w) or (N, h, w, C) float32 batch."""
    if not images:
        raise InputError("no images to stack")
    batch = np.stack(images, axis=0).astype(np.float32, copy=False)
    if str(getattr(layout, "value", layout)).upper() == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch)


def load_image(path: str | os.PathLike[str], prep: Preprocessing, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[DecodedImage, np.ndarray]:
    """Decode and preprocess one file: ``(decoded image, (h, w, C) float32 input)``."""
    img = decode_image(path, max_pixels=max_pixels)
    return img, preprocess(img.bgr, prep)
