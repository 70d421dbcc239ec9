"""Write the demo images of the two bundled models that do not classify photographs.

- ``images/text_lines/``: lines of text drawn with OpenCV's ``putText`` (dark on light, 64 x 256,
  the 1:4 aspect of the text-direction classifier's 48 x 192 input), half of them turned upside
  down, for ``ppocr-cls`` (classes "0" and "180").
- ``images/shapes/``: images of ``synthetic.py`` (64 x 64, at least one shape each, a seed
  apart from the training data), for ``synthetic-shapes``.

    python models/make_demo_images.py
"""

from __future__ import annotations

import argparse
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
LINES = [
    ("Hello world", False),
    ("PFV 2020", True),
    ("onnxruntime", False),
    ("feature maps", True),
    ("principal axes", False),
    ("text direction", True),
]
SHAPES = 8
SHAPES_SEED = 20260  # training used other seeds (train_synthetic.py)


def text_line(text: str, upside_down: bool):
    """A dark-on-light line of text, 64 x 256 BGR uint8, turned 180 degrees when asked."""
    import cv2
    import numpy as np

    canvas = np.full((64, 256, 3), 236, np.uint8)
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 1.0, 2
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    scale = min(1.2, 236 / tw)  # fill the width, with a margin
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    cv2.putText(canvas, text, ((256 - tw) // 2, (64 + th) // 2), font, scale, (24, 24, 24), thick, cv2.LINE_AA)
    return canvas[::-1, ::-1].copy() if upside_down else canvas


def main(argv: list[str] | None = None) -> int:
    import cv2

    from pfv_onnx_models.synthetic import CLASS_NAMES, make_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "images")
    args = parser.parse_args(argv)
    lines_dir, shapes_dir = args.out / "text_lines", args.out / "shapes"
    for d in (lines_dir, shapes_dir):
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.png"):
            old.unlink()
    for i, (text, flipped) in enumerate(LINES):
        name = f"line{i}_{'180' if flipped else '0'}.png"
        cv2.imwrite(str(lines_dir / name), cv2.cvtColor(text_line(text, flipped), cv2.COLOR_BGR2GRAY), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    images, _, masks = make_dataset(SHAPES, SHAPES_SEED, 64, min_objects=1)
    for i, (image, m) in enumerate(zip(images, masks)):
        names = "-".join(CLASS_NAMES[c] for c in sorted({c for c, _ in m}))
        cv2.imwrite(str(shapes_dir / f"shapes{i}_{names}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {len(LINES)} text lines to {lines_dir} and {SHAPES} shape images to {shapes_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
