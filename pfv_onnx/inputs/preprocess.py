"""A decoded image to one model input: resize (stretch or centre crop), channel order,
normalisation presets, and the batch layout."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .decode import DEFAULT_MAX_PIXELS, DecodedImage, decode_image

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
