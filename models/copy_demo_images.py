"""Copy the demo photographs from the packages that ship them into ``images/``.

Each photo is read from the installed package (scikit-image, scikit-learn,
matplotlib), shrunk so that its longer side is at most 512 px (area
interpolation, never enlarged) and written as a JPEG of quality 90. Sources
and licences are listed in LICENSES.md.

    pip install scikit-image scikit-learn matplotlib opencv-python-headless
    python models/copy_demo_images.py
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys

# (output file, package, path inside the package)
SOURCES: list[tuple[str, str, str]] = [
    ("astronaut.jpg", "skimage", "data/astronaut.png"),
    ("chelsea_cat.jpg", "skimage", "data/chelsea.png"),
    ("coffee.jpg", "skimage", "data/coffee.png"),
    ("rocket.jpg", "skimage", "data/rocket.jpg"),
    ("china_temple.jpg", "sklearn", "datasets/images/china.jpg"),
    ("flower.jpg", "sklearn", "datasets/images/flower.jpg"),
    ("grace_hopper.jpg", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
]

MAX_SIDE = 512
JPEG_QUALITY = 90


def _package_root(package: str) -> pathlib.Path:
    # find_spec locates the package without importing it.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {package!r} is not installed (pip install it first)")
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def main(argv: list[str] | None = None) -> int:
    import cv2  # imported here so the module can be imported without OpenCV

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parent / "images",
        help="destination folder (default: images/ beside this script)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    for name, package, rel in SOURCES:
        src = _package_root(package) / rel
        image = cv2.imread(str(src), cv2.IMREAD_COLOR)  # BGR, 8-bit, alpha dropped
        if image is None:
            raise SystemExit(f"cannot read {src}")
        h, w = image.shape[:2]
        scale = min(1.0, MAX_SIDE / max(h, w))
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        dst = args.out / name
        if not cv2.imwrite(str(dst), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise SystemExit(f"cannot write {dst}")
        print(f"{dst.name:18s} {image.shape[1]}x{image.shape[0]}  {dst.stat().st_size:7d} B  <- {package}/{rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
