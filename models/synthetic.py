"""Synthetic shapes on cluttered backgrounds, with ground-truth masks.

Needs only numpy and OpenCV, and is deterministic for a given seed (or a
given ``numpy.random.Generator`` state).

Each image shows 0 to 3 filled, flat-coloured objects of three classes
(``CLASS_NAMES``: disc, square, triangle), at random positions, sizes,
rotations and colours, on a cluttered background: a smooth random colour
field, thin random lines, small dots and pixel noise. Objects never overlap,
so each mask is the whole object. Nothing in the clutter is a filled shape
of object size, so the task is well defined:

*Labels are multi-label*: ``labels[i, c] = 1`` when image ``i`` contains at
least one object of class ``c``. The bundled model (``train_synthetic.py``)
has one logit per class, read with a sigmoid (present when logit > 0). An
image with objects of several classes is therefore labelled with all of
them, and an image with none is all zeros.

API:

- ``make_sample(rng, size=64)`` -> ``(image, masks)``: ``image`` is
  ``(size, size, 3)`` uint8 RGB, ``masks`` a list of ``(class_id, bool mask)``.
- ``make_dataset(n, seed, size=64, min_objects=0, max_objects=3)`` ->
  ``(images (n, size, size, 3) uint8, labels (n, 3) float32 multi-hot, masks)``.
- ``label_map(masks, size)`` -> ``(size, size)`` int16 map, class id or -1.
- ``to_input(images)`` -> ``(n, 3, size, size)`` float32 in [0, 1], the
  bundled model's input ("raw" preset, RGB).

``python -m pfv_onnx_models.synthetic OUT_DIR`` writes a few examples as PNG.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

__all__ = [
    "CLASS_NAMES",
    "make_sample",
    "make_dataset",
    "label_map",
    "to_input",
]

CLASS_NAMES: list[str] = ["disc", "square", "triangle"]

# Object size, as the radius of the circumscribed circle, in units of the
# image side (the same proportions at every image size).
_MIN_RADIUS = 0.11
_MAX_RADIUS = 0.21
# Per-class factor on the circumradius so that the three classes have
# comparable areas (disc: pi r^2, square: 2 R^2, triangle: 1.30 R^2).
_CLASS_SCALE = (0.80, 1.0, 1.20)
# Minimum colour distance (Euclidean, 0..255 RGB) between an object and the
# mean background under it.
_MIN_CONTRAST = 90.0


def _smooth_field(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random smooth colour field (float32, HxWx3, 0..255)."""
    cells = int(rng.integers(2, 6))
    base = rng.uniform(0, 255, size=3)
    spread = rng.uniform(10, 90)
    grid = np.clip(base + rng.normal(0, spread, size=(cells, cells, 3)), 0, 255).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def _draw_clutter(rng: np.random.Generator, canvas: np.ndarray) -> None:
    """Thin lines and small dots, in place."""
    size = canvas.shape[0]
    for _ in range(int(rng.integers(1, 7))):
        p1 = tuple(int(v) for v in rng.integers(-size // 4, size + size // 4, size=2))
        p2 = tuple(int(v) for v in rng.integers(-size // 4, size + size // 4, size=2))
        colour = tuple(float(v) for v in rng.uniform(0, 255, size=3))
        cv2.line(canvas, p1, p2, colour, 1, cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 9))):
        centre = tuple(int(v) for v in rng.integers(0, size, size=2))
        radius = max(1, int(round(rng.uniform(0.5, 1.6) * size / 64)))
        colour = tuple(float(v) for v in rng.uniform(0, 255, size=3))
        cv2.circle(canvas, centre, radius, colour, -1, cv2.LINE_AA)


def _polygon(class_id: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Vertices (k, 2) of the square or triangle with this circumradius and rotation."""
    k = 4 if class_id == 1 else 3
    theta = angle + 2 * math.pi * np.arange(k) / k
    return np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], axis=1)


def _object_mask(class_id: int, size: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    # Draw at 4x sub-pixel precision (shift=2) on a uint8 canvas.
    canvas = np.zeros((size, size), np.uint8)
    shift = 2
    scale = 1 << shift
    if class_id == 0:
        cv2.circle(canvas, (int(round(cx * scale)), int(round(cy * scale))),
                   int(round(radius * scale)), 255, -1, cv2.LINE_8, shift)
    else:
        pts = np.round(_polygon(class_id, cx, cy, radius, angle) * scale).astype(np.int32)
        cv2.fillPoly(canvas, [pts], 255, cv2.LINE_8, shift)
    return canvas > 0


def make_sample(
    rng: np.random.Generator,
    size: int = 64,
    *,
    n_objects: int | None = None,
    classes: Sequence[int] | None = None,
    min_objects: int = 0,
    max_objects: int = 3,
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One image (``size`` x ``size`` x 3, uint8, RGB) and its object masks.

    ``n_objects`` (default: uniform in ``[min_objects, max_objects]``) objects
    are requested, of the classes in ``classes`` when given (else uniform at
    random). An object that cannot be placed without overlap after a few tries
    is dropped, so ``masks`` lists the objects actually drawn, in drawing order.
    """
    if size < 16:
        raise ValueError("size must be at least 16")
    if classes is not None:
        classes = [int(c) for c in classes]
        if any(c not in range(len(CLASS_NAMES)) for c in classes):
            raise ValueError(f"class ids must be in 0..{len(CLASS_NAMES) - 1}")
        n_objects = len(classes)
    elif n_objects is None:
        n_objects = int(rng.integers(min_objects, max_objects + 1))

    # Background: smooth colour field, clutter, (noise is added at the end).
    background = _smooth_field(rng, size)
    _draw_clutter(rng, background)

    image = background.copy()
    masks: list[tuple[int, np.ndarray]] = []
    placed: list[tuple[float, float, float]] = []
    for i in range(n_objects):
        class_id = classes[i] if classes is not None else int(rng.integers(0, len(CLASS_NAMES)))
        radius = rng.uniform(_MIN_RADIUS, _MAX_RADIUS) * size * _CLASS_SCALE[class_id]
        angle = rng.uniform(0, 2 * math.pi)
        for _ in range(30):
            cx, cy = rng.uniform(radius + 1, size - radius - 1, size=2)
            if all(math.hypot(cx - x, cy - y) > radius + r + 2 for x, y, r in placed):
                break
        else:
            continue
        mask = _object_mask(class_id, size, cx, cy, radius, angle)
        if not mask.any():
            continue
        under = background[mask].mean(axis=0)
        for _ in range(30):
            colour = rng.uniform(0, 255, size=3)
            if np.linalg.norm(colour - under) >= _MIN_CONTRAST:
                break
        else:
            colour = np.where(under > 127, 0.0, 255.0)
        # Slight shading so that objects are not perfectly flat.
        shade = rng.uniform(-12, 12, size=3) * np.linspace(-1, 1, size, dtype=np.float32)[:, None, None]
        image[mask] = np.clip(colour + shade[np.nonzero(mask)[0], 0, :], 0, 255)
        placed.append((cx, cy, radius))
        masks.append((class_id, mask))

    noise = rng.normal(0, rng.uniform(0, 12), size=image.shape)
    image = np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)
    return image, masks


def make_dataset(
    n: int,
    seed: int,
    size: int = 64,
    *,
    min_objects: int = 0,
    max_objects: int = 3,
) -> tuple[np.ndarray, np.ndarray, list[list[tuple[int, np.ndarray]]]]:
    """``n`` samples from ``numpy.random.default_rng(seed)``.

    Returns ``images`` (n, size, size, 3) uint8 RGB, ``labels`` (n, 3)
    float32 multi-hot (class present), and the per-image mask lists.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.zeros((n, len(CLASS_NAMES)), np.float32)
    all_masks: list[list[tuple[int, np.ndarray]]] = []
    for i in range(n):
        image, masks = make_sample(rng, size, min_objects=min_objects, max_objects=max_objects)
        images[i] = image
        for class_id, _ in masks:
            labels[i, class_id] = 1.0
        all_masks.append(masks)
    return images, labels, all_masks


def label_map(masks: Sequence[tuple[int, np.ndarray]], size: int | tuple[int, int]) -> np.ndarray:
    """Per-pixel class id (int16), -1 where there is no object."""
    shape = (size, size) if isinstance(size, int) else tuple(size)
    out = np.full(shape, -1, np.int16)
    for class_id, mask in masks:
        out[mask] = class_id
    return out


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 RGB images (n, H, W, 3) or (H, W, 3) -> float32 NCHW in [0, 1]."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import pathlib

    parser = argparse.ArgumentParser(description="Write synthetic example images (PNG) and their label maps.")
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("-n", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    images, labels, masks = make_dataset(args.n, args.seed, args.size, min_objects=1)
    for i, (image, m) in enumerate(zip(images, masks)):
        names = "-".join(CLASS_NAMES[c] for c in sorted({c for c, _ in m})) or "none"
        cv2.imwrite(str(args.out / f"synthetic_{i:03d}_{names}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        lm = label_map(m, args.size)
        cv2.imwrite(str(args.out / f"synthetic_{i:03d}_{names}_mask.png"), (lm + 1).astype(np.uint8) * 80)
    print(f"wrote {2 * args.n} files to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
