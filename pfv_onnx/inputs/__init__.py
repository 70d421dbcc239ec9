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

from .collect import IMAGE_EXTENSIONS, Collected, collect_images
from .decode import DEFAULT_MAX_PIXELS, DecodedImage, decode_bytes, decode_image, exif_orientation
from .headers import BadImageError
from .preprocess import (
    COLOR_ORDERS,
    PRESETS,
    RESIZE_MODES,
    Preprocessing,
    crop_box,
    load_image,
    make_preprocessing,
    preprocess,
    resize_to,
    stack_batch,
)

__all__ = [
    "COLOR_ORDERS", "DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "PRESETS", "RESIZE_MODES", "BadImageError", "Collected",
    "DecodedImage", "Preprocessing", "collect_images", "crop_box", "decode_bytes", "decode_image", "exif_orientation",
    "load_image", "make_preprocessing", "preprocess", "resize_to", "stack_batch",
]  # fmt: skip
