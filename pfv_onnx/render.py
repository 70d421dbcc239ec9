"""PFV maps to pictures: full-size maps, overlays and mosaics (NumPy and OpenCV only).

Every function takes and returns host (NumPy) arrays. Maps come in as the engine's
``res.rgb[i]``: (h, w, k) float in [0, 1]. Pictures are (H, W, 3) uint8 in OpenCV's
B, G, R order, ready for :func:`encode_png`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels of the original image


def map_to_bgr(rgb: np.ndarray) -> np.ndarray:
    """A (h, w, k) map in [0, 1] as a (h, w, 3) float32 B, G, R picture in [0, 1].

    Component i is drawn as colour i (R, G, B). With k = 1 the map is gray; with k = 2
    blue stays 0; with k > 3 only the first three components are drawn. NaN becomes 0.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = rgb[:, :, None]
    if rgb.ndim != 3:
        raise ValueError(f"a map must be (h, w, k), got shape {rgb.shape}")
    if rgb.shape[2] >= 3 and rgb.dtype == np.float32:  # the usual map: one OpenCV channel swap, then clip in place (2 -> 0.4 ms at 224 px)
        import cv2

        out = cv2.cvtColor(np.ascontiguousarray(rgb[:, :, :3]), cv2.COLOR_RGB2BGR)
        np.clip(out, 0.0, 1.0, out=out)  # NaN stays NaN here
        if not np.isfinite(out).all():
            np.nan_to_num(out, copy=False, nan=0.0)
        return out
    x = np.nan_to_num(rgb.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
    k = x.shape[2]
    if k == 1:
        out = np.repeat(x, 3, axis=2)
    else:
        out = np.zeros((*x.shape[:2], 3), np.float32)
        out[:, :, : min(k, 3)] = x[:, :, :3]
        out = out[:, :, ::-1]  # R, G, B -> B, G, R
    return np.clip(out, 0.0, 1.0)


def component_ends(k: int) -> list[tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]]:
    """For each drawn component of a k-component map: its (negative end, neutral, positive end) colours, R, G, B in [0, 1].

    Neutral is the middle of every drawn channel, where the batch colour scaling puts a weak
    or average projection (about: a component whose batch mean is off zero tints it). An end
    is that channel at 0 or 1 with the others neutral: component 1's positive end is red, its
    negative end teal. With k = 1 the map is gray: black to white. Components past the third
    are not drawn and get no entry.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k == 1:
        return [((0.0, 0.0, 0.0), (0.5, 0.5, 0.5), (1.0, 1.0, 1.0))]
    drawn = min(k, 3)
    neutral = tuple(0.5 if c < drawn else 0.0 for c in range(3))
    ends = []
    for c in range(drawn):
        lo, hi = list(neutral), list(neutral)
        lo[c], hi[c] = 0.0, 1.0
        ends.append((tuple(lo), neutral, tuple(hi)))
    return ends  # type: ignore[return-value]


DIVERGING_NEG = (33, 102, 172)  # R, G, B of a component view's most negative value (blue)
DIVERGING_POS = (178, 24, 43)  # and of its most positive (red); zero is white


def diverging(values: np.ndarray, scale: float) -> np.ndarray:
    """One component's values (h, w) as a blue-white-red picture, (h, w, 3) uint8 BGR.

    ``values / scale`` clipped to [-1, 1]: -1 is :data:`DIVERGING_NEG`, 0 white, +1
    :data:`DIVERGING_POS`, linear in between. NaN is white.
    """
    t = np.asarray(values, np.float32) / np.float32(scale if scale > 0 else 1.0)
    t = np.clip(np.nan_to_num(t, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    pos, neg = np.maximum(t, 0), np.maximum(-t, 0)
    out = np.empty((*t.shape, 3), np.uint8)
    for ch, (hi, lo) in enumerate(zip(DIVERGING_POS[::-1], DIVERGING_NEG[::-1])):  # B, G, R: one plane at a time, in float32
        plane = np.float32(255.0) + pos * np.float32(hi - 255) + neg * np.float32(lo - 255)
        out[..., ch] = np.rint(plane, out=plane)
    return out


def component_picture(values: np.ndarray, scale: float, size_hw: tuple[int, int], box: Box | None = None) -> np.ndarray:
    """One component's grid (h, w) upsampled (bilinear, half-pixel centres) over ``box`` of
    an image of ``size_hw`` and drawn with :func:`diverging`; outside ``box`` is light gray."""
    import cv2

    h, w = size_hw
    x0, y0, x1, y1 = box if box is not None else (0, 0, w, h)
    up = cv2.resize(np.asarray(values, np.float32), (max(1, x1 - x0), max(1, y1 - y0)), interpolation=cv2.INTER_LINEAR)
    out = np.full((h, w, 3), 230, np.uint8)
    out[y0:y1, x0:x1] = diverging(up, scale)[: y1 - y0, : x1 - x0]
    return out


def _to_u8(x: np.ndarray) -> np.ndarray:
    """[0, 1] float to uint8, rounded half to even and saturated (one OpenCV pass; x >= 0 here)."""
    import cv2

    if x.dtype != np.float32 or x.ndim != 3 or x.shape[2] not in (3, 4) or not x.flags.c_contiguous:
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    return cv2.convertScaleAbs(x, alpha=255.0)


def map_picture(rgb: np.ndarray, size_hw: tuple[int, int], box: Box | None = None) -> np.ndarray:
    """The map upsampled to an image of ``size_hw`` (H, W), as uint8 BGR.

    ``box`` is the region of the image the model saw (see ``inputs.crop_box``); the map
    is stretched over it (bilinear, half-pixel centres) and the rest stays black. By
    default the map covers the whole image.
    """
    import cv2

    h, w = size_hw
    x0, y0, x1, y1 = box if box is not None else (0, 0, w, h)
    bgr = map_to_bgr(rgb)
    up = cv2.resize(bgr, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    if (x0, y0, x1, y1) == (0, 0, w, h):
        return _to_u8(up)
    out = np.zeros((h, w, 3), np.uint8)
    out[y0:y1, x0:x1] = _to_u8(up)
    return out


def overlay(image_bgr: np.ndarray, map_bgr: np.ndarray, alpha: float = 0.5, box: Box | None = None) -> np.ndarray:
    """Blend a full-size map picture over the image: ``alpha * map + (1 - alpha) * image``.

    Outside ``box`` (the part the model did not see) the image is shown at half brightness.
    Both pictures are (H, W, 3) uint8 of the same size; the result is too.
    """
    import cv2

    if image_bgr.shape != map_bgr.shape:
        raise ValueError(f"image {image_bgr.shape} and map {map_bgr.shape} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    out = cv2.addWeighted(map_bgr, float(alpha), image_bgr, float(1.0 - alpha), 0.0)
    if box is not None:
        h, w = image_bgr.shape[:2]
        x0, y0, x1, y1 = box
        if (x0, y0, x1, y1) != (0, 0, w, h):
            dim = (image_bgr // 2).astype(np.uint8)
            dim[y0:y1, x0:x1] = out[y0:y1, x0:x1]
            out = dim
    return out


def letterbox(img: np.ndarray, tile: int, background: int = 255) -> np.ndarray:
    """Fit ``img`` (H, W, 3) uint8 into a ``tile`` x ``tile`` square, aspect kept, centred."""
    import cv2

    h, w = img.shape[:2]
    scale = tile / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(img, (nw, nh), interpolation=interp)
    out = np.full((tile, tile, 3), background, np.uint8)
    y0, x0 = (tile - nh) // 2, (tile - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = small
    return out


def fit_text(text: str, width: int, max_scale: float = 0.45, min_scale: float = 0.3) -> tuple[str, float]:
    """Text shortened (ASCII only, ``..`` when cut) and a font scale that fits ``width`` px."""
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    clean = "".join(c if 32 <= ord(c) < 127 else "?" for c in text).strip()
    scale = max_scale
    while scale > min_scale and cv2.getTextSize(clean, font, scale, 1)[0][0] > width:
        scale = round(scale - 0.05, 2)
    if cv2.getTextSize(clean, font, scale, 1)[0][0] <= width:
        return clean, scale
    while clean and cv2.getTextSize(clean + "..", font, scale, 1)[0][0] > width:
        clean = clean[:-1]
    return clean + "..", scale


def mosaic(
    images: Sequence[np.ndarray],
    maps: Sequence[np.ndarray],
    captions: Sequence[str] | None = None,
    *,
    columns: int = 8,
    tile: int = 160,
    gap: int = 4,
    key: int = 0,
) -> np.ndarray:
    """Images in a row with their maps below and a caption under each map, like the paper's figures.

    Args:
        images, maps: tiles, each (H, W, 3) uint8 BGR of any size (letterboxed into
            ``tile`` x ``tile`` squares); the same count.
        captions: one line under each map (e.g. the predicted class); ``None`` for none.
        columns: tiles per row; larger sets wrap into further image/map row pairs.
        key: the maps' component count k: a colour key under the tiles shows each drawn
            component's two ends and the neutral middle (see :func:`component_ends`);
            0 draws none.

    Returns:
        One (H, W, 3) uint8 BGR picture on a white background.
    """
    import cv2

    n = len(images)
    if n == 0 or len(maps) != n:
        raise ValueError(f"need as many maps as images (>= 1), got {n} images and {len(maps)} maps")
    if captions is not None and len(captions) != n:
        raise ValueError(f"need one caption per image, got {len(captions)} for {n}")
    cols = max(1, min(columns, n))
    rows = -(-n // cols)
    cap_h = 20 if captions is not None else 0
    block_h = 2 * tile + gap + cap_h + 2 * gap
    width = cols * tile + (cols + 1) * gap
    height = rows * block_h + gap
    canvas = np.full((height, width, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        x = gap + c * (tile + gap)
        y = gap + r * block_h
        canvas[y : y + tile, x : x + tile] = letterbox(images[i], tile)
        canvas[y + tile + gap : y + 2 * tile + gap, x : x + tile] = letterbox(maps[i], tile, background=0)
        if captions is not None and captions[i]:
            text, scale = fit_text(captions[i], tile - 4)
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            tx = x + (tile - tw) // 2
            ty = y + 2 * tile + gap + (cap_h + th) // 2
            cv2.putText(canvas, text, (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    if key:
        canvas = np.concatenate([canvas, colour_key(key, width)], axis=0)
    return canvas


KEY_ROW = 22  # height of one row of the mosaic's colour key, in pixels


def colour_key(k: int, width: int) -> np.ndarray:
    """A colour key ``width`` pixels wide, (H, W, 3) uint8 BGR on white: one row per drawn
    component, a bar from its negative end through neutral to its positive end, and a last
    line saying what neutral and saturated mean."""
    import cv2

    ends = component_ends(k)
    rows = len(ends) + 1
    canvas = np.full((rows * KEY_ROW + 4, width, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    label_w = min(86, width // 3)
    bar_x0 = label_w + 14
    bar_x1 = max(bar_x0 + 8, min(width - 16, bar_x0 + 260))
    for c, (lo, mid, hi) in enumerate(ends):
        y = 2 + c * KEY_ROW
        name = "brightness" if k == 1 else f"component {c + 1}"
        text, scale = fit_text(name, label_w - 4, max_scale=0.4)
        cv2.putText(canvas, text, (4, y + 15), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
        n = bar_x1 - bar_x0
        t = np.linspace(-1.0, 1.0, n)[:, None]
        lo_, mid_, hi_ = (np.asarray(v, np.float64) for v in (lo, mid, hi))
        line = np.where(t < 0, mid_ + (-t) * (lo_ - mid_), mid_ + t * (hi_ - mid_))
        canvas[y + 4 : y + KEY_ROW - 4, bar_x0:bar_x1] = np.rint(255 * line[:, ::-1]).astype(np.uint8)[None]
        cv2.putText(canvas, "-", (bar_x0 - 10, y + 15), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(canvas, "+", (bar_x1 + 3, y + 15), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    text, scale = fit_text("middle: weak or average; saturated: strong principal features", width - 8, max_scale=0.4)
    cv2.putText(canvas, text, (4, 2 + len(ends) * KEY_ROW + 15), font, scale, (60, 60, 60), 1, cv2.LINE_AA)
    return canvas


PNG_LEVEL = 1  # deflate level of the pictures: the size/speed trade-off measured in docs/PERFORMANCE.md


def encode_png(bgr: np.ndarray, compression: int = PNG_LEVEL) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 BGR picture (deterministic for the same pixels).

    Every row gets the "up" filter (the difference from the row above): PFV maps are smooth,
    and a fixed filter costs half the time of adaptive filtering at the same size. The rows are
    deflated by libdeflate (the ``deflate`` package) when it is installed: at level 1 it makes
    maps about a fifth smaller than zlib's level 1, in less time. Without it OpenCV's
    zlib encoder writes the file (OpenCV before 4.11 has no filter option and uses its default).
    """
    compress = _libdeflate()
    pic = np.asarray(bgr)
    if compress is None or pic.dtype != np.uint8 or pic.ndim != 3 or pic.shape[2] != 3 or 0 in pic.shape:
        import cv2

        return _encode(bgr, ".png", [cv2.IMWRITE_PNG_COMPRESSION, int(compression)], ("IMWRITE_PNG_FILTER", "IMWRITE_PNG_FILTER_UP"))
    return png_file(pic, compress(up_filtered(pic), max(1, int(compression))))


def up_filtered(bgr: np.ndarray) -> bytes:
    """The PNG scanlines of an (H, W, 3) uint8 BGR picture, as R, G, B with filter type 2
    ("up") on every row: each byte minus the byte above it, modulo 256 (the first row as it is)."""
    import cv2

    h, w = bgr.shape[:2]
    rgb = cv2.cvtColor(np.ascontiguousarray(bgr), cv2.COLOR_BGR2RGB).reshape(h, w * 3)
    out = np.empty((h, w * 3 + 1), np.uint8)
    out[:, 0] = 2
    out[0, 1:] = rgb[0]
    np.subtract(rgb[1:], rgb[:-1], out=out[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG's filter does
    return out.data


def png_file(bgr: np.ndarray, idat: bytes) -> bytes:
    """A PNG file of 8-bit RGB pixels the size of ``bgr`` around ``idat``, their zlib stream."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))

    h, w = bgr.shape[:2]
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit, truecolour, deflate, filters, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _libdeflate():
    """libdeflate's zlib compressor, or None when the ``deflate`` package is missing."""
    try:
        from deflate import zlib_compress
    except ImportError:
        return None
    return zlib_compress


OVERLAY_QUALITY = 85  # JPEG overlays of JPEG photographs (41.6 dB PSNR on the bundled photos)
MOSAIC_QUALITY = 92  # the mosaic, a picture to skim and share (43 dB; a third of the PNG bytes)


def encode_jpeg(bgr: np.ndarray, quality: int = OVERLAY_QUALITY, *, full_colour: bool = True) -> bytes:
    """JPEG bytes of an (H, W, 3) uint8 BGR picture, colour at full resolution (4:4:4).

    PFV maps are all colour: the default 4:2:0 chroma subsampling would blur their edges.
    ``full_colour=False`` keeps that default (half-resolution colour, as cameras store
    photographs): for small pictures of photographs.
    """
    import cv2

    sampling = ("IMWRITE_JPEG_SAMPLING_FACTOR", "IMWRITE_JPEG_SAMPLING_FACTOR_444" if full_colour else "IMWRITE_JPEG_SAMPLING_FACTOR_420")
    return _encode(bgr, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(quality)], sampling)


def _encode(bgr: np.ndarray, ext: str, params: list[int], optional: tuple[str, str]) -> bytes:
    """``cv2.imencode`` with ``params``, plus the flag and value named in ``optional`` when this OpenCV has them."""
    import cv2

    flag, value = (getattr(cv2, name, None) for name in optional)
    if flag is not None and value is not None:
        params = [*params, flag, value]
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a picture of shape {bgr.shape} as {ext[1:].upper()}")
    return buf.tobytes()
