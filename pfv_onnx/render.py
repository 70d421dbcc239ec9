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
    x = np.nan_to_num(rgb.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
    k = x.shape[2]
    if k == 1:
        out = np.repeat(x, 3, axis=2)
    else:
        out = np.zeros((*x.shape[:2], 3), np.float32)
        out[:, :, : min(k, 3)] = x[:, :, :3]
        out = out[:, :, ::-1]  # R, G, B -> B, G, R
    return np.clip(out, 0.0, 1.0)


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
) -> np.ndarray:
    """Images in a row with their maps below and a caption under each map, like the paper's figures.

    Args:
        images, maps: tiles, each (H, W, 3) uint8 BGR of any size (letterboxed into
            ``tile`` x ``tile`` squares); the same count.
        captions: one line under each map (e.g. the predicted class); ``None`` for none.
        columns: tiles per row; larger sets wrap into further image/map row pairs.

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
    return canvas


def encode_png(bgr: np.ndarray, compression: int = 1) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 BGR picture (deterministic for the same pixels).

    zlib level 1 with the "up" row filter alone: on PFV maps and overlays that encodes in
    about half the time of the default adaptive filtering, at the same size or smaller
    (measured in docs/PERFORMANCE.md). OpenCV before 4.11 has no filter option and uses its default.
    """
    import cv2

    return _encode(bgr, ".png", [cv2.IMWRITE_PNG_COMPRESSION, int(compression)], ("IMWRITE_PNG_FILTER", "IMWRITE_PNG_FILTER_UP"))


def encode_jpeg(bgr: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of an (H, W, 3) uint8 BGR picture, colour at full resolution (4:4:4).

    PFV maps are all colour: the default 4:2:0 chroma subsampling would blur their edges.
    """
    import cv2

    return _encode(
        bgr, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(quality)], ("IMWRITE_JPEG_SAMPLING_FACTOR", "IMWRITE_JPEG_SAMPLING_FACTOR_444")
    )


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
