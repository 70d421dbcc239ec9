"""Bundled ONNX models and demo photographs for pfv-onnx.

This package imports nothing outside the standard library. It only knows
where its files are and how each model expects its input:

>>> from pfv_onnx_models import MODELS, model_path, labels, demo_images
>>> MODELS["efficientnet-lite0"].preset
'inception'

The recipes that made the files (``export_efficientnet_lite0.py``,
``copy_ppocr_cls.py``, ``train_synthetic.py``, ``train_vit.py``, ``copy_demo_images.py``) live
beside them; see README.md. Licences are in LICENSES.md.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

__all__ = [
    "BundledModel",
    "MODELS",
    "DEFAULT_MODEL",
    "PRESETS",
    "model_path",
    "labels",
    "labels_path",
    "demo_images",
    "package_dir",
]

_HERE = pathlib.Path(__file__).resolve().parent


@dataclass(frozen=True)
class BundledModel:
    """One bundled ONNX classifier and the input it expects."""

    name: str
    """Registry key, e.g. ``"efficientnet-lite0"``."""
    file: str
    """File name of the ``.onnx`` file inside this package."""
    preset: str
    """Preprocessing preset: ``"imagenet"``, ``"inception"``, ``"caffe"`` or ``"raw"`` (see ``PRESETS``)."""
    color_order: str
    """Channel order the model was trained on: ``"RGB"`` or ``"BGR"``."""
    input_size: tuple[int, int] | None
    """``(H, W)`` the model is meant to run at, or ``None`` when any size works."""
    labels_file: str | None
    """File with one class name per line (index order), or ``None``."""
    framework: str
    """Where the graph came from (training framework and exporter)."""
    licence: str
    """Licence of the weights (SPDX identifier where there is one)."""
    description: str
    """One or two sentences for people."""
    demo_folder: str = "images"
    """Folder (inside this package) of the demo images of the model's own domain."""


# Preprocessing presets, as applied to an image of 0..255 values in the
# model's channel order:  y = (x * scale - mean[c]) / std[c].
PRESETS: dict[str, dict[str, tuple[float, ...] | float]] = {
    # ImageNet statistics on RGB in [0, 1] (torchvision, timm).
    "imagenet": {"scale": 1.0 / 255.0, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
    # (x / 255 - 0.5) / 0.5: values in [-1, 1] (TF "inception" style, PaddleOCR).
    "inception": {"scale": 1.0 / 255.0, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    # Caffe / Keras "caffe": BGR, 0..255, ImageNet mean subtracted, no scaling.
    "caffe": {"scale": 1.0, "mean": (103.939, 116.779, 123.68), "std": (1.0, 1.0, 1.0)},
    # Plain [0, 1].
    "raw": {"scale": 1.0 / 255.0, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)},
}


MODELS: dict[str, BundledModel] = {
    "efficientnet-lite0": BundledModel(
        name="efficientnet-lite0",
        file="efficientnet_lite0.onnx",
        preset="inception",
        color_order="RGB",
        input_size=(224, 224),
        labels_file="imagenet_labels.txt",
        framework="PyTorch (TorchScript ONNX exporter, opset 17)",
        licence="Apache-2.0",
        description=(
            "EfficientNet-Lite0 trained on ImageNet-1k (1000 classes, ReLU6, no squeeze-excite); "
            "input 1x3x224x224 RGB scaled to [-1, 1], output 1000 logits."
        ),
    ),
    "ppocr-cls": BundledModel(
        name="ppocr-cls",
        file="ppocr_cls.onnx",
        preset="inception",
        color_order="BGR",
        input_size=(48, 192),
        labels_file="ppocr_cls_labels.txt",
        framework="PaddlePaddle (paddle2onnx, opset 11), as shipped by RapidOCR",
        licence="Apache-2.0",
        description=(
            "PaddleOCR mobile v2.0 text-direction classifier: is a cropped text line upright (0) "
            "or upside down (180)? Input Nx3x48xW BGR scaled to [-1, 1] (W up to 192, "
            "narrower lines zero-padded on the right), output softmax probabilities."
        ),
        demo_folder="images/text_lines",
    ),
    "synthetic-shapes": BundledModel(
        name="synthetic-shapes",
        file="synthetic_shapes.onnx",
        preset="raw",
        color_order="RGB",
        input_size=(64, 64),
        labels_file="synthetic_labels.txt",
        framework="PyTorch (TorchScript ONNX exporter, opset 17)",
        licence="Apache-2.0, like pfv-onnx (trained here on generated data)",
        description=(
            "Small CNN trained here on synthetic images (pfv_onnx_models.synthetic): discs, "
            "squares and triangles on cluttered backgrounds; multi-label, one sigmoid logit "
            "per shape class. Input 1x3x64x64 RGB in [0, 1]."
        ),
        demo_folder="images/shapes",
    ),
    "synthetic-vit": BundledModel(
        name="synthetic-vit",
        file="synthetic_vit.onnx",
        preset="raw",
        color_order="RGB",
        input_size=(64, 64),
        labels_file="synthetic_labels.txt",
        framework="PyTorch (TorchScript ONNX exporter, opset 17)",
        licence="Apache-2.0, like pfv-onnx (trained here on generated data)",
        demo_folder="images/shapes",
        description=(
            "Small vision transformer with a CNN-like convolutional stem (ReLU maps at 64, 32 and "
            "16 px, an 8x8 patch grid, 4 blocks, a class token read by the head) trained here on the "
            "synthetic shapes (train_vit.py --head cls --epochs 14); multi-label, one sigmoid logit "
            "per shape class; held-out exact-match accuracy 0.98 (per label 0.99). "
            "Input 1x3x64x64 RGB in [0, 1]."
        ),
    ),
    "synthetic-vit-mean": BundledModel(
        name="synthetic-vit-mean",
        file="synthetic_vit_mean.onnx",
        preset="raw",
        color_order="RGB",
        input_size=(64, 64),
        labels_file="synthetic_labels.txt",
        framework="PyTorch (TorchScript ONNX exporter, opset 17)",
        licence="Apache-2.0, like pfv-onnx (trained here on generated data)",
        demo_folder="images/shapes",
        description=(
            "A small vision transformer without a class token: the head reads the mean of the "
            "patch tokens. Trained by train_vit.py --head mean --epochs 14 (16000 images): held-out "
            "exact-match accuracy 0.92 (per label 0.97). Input 1x3x64x64 RGB in [0, 1]."
        ),
    ),
}

DEFAULT_MODEL = "efficientnet-lite0"

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def package_dir() -> pathlib.Path:
    """The folder that holds the bundled files."""
    return _HERE


def _entry(name: str) -> BundledModel:
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise KeyError(f"unknown bundled model {name!r}; known: {known}") from None


def model_path(name: str = DEFAULT_MODEL) -> pathlib.Path:
    """Path of the bundled model's ``.onnx`` file."""
    path = _HERE / _entry(name).file
    if not path.is_file():
        raise FileNotFoundError(f"bundled model file is missing: {path}")
    return path


def labels_path(name: str = DEFAULT_MODEL) -> pathlib.Path | None:
    """Path of the model's class-name file, or ``None`` when it has none."""
    entry = _entry(name)
    if entry.labels_file is None:
        return None
    return _HERE / entry.labels_file


def labels(name: str = DEFAULT_MODEL) -> list[str] | None:
    """Class names in output order, or ``None`` when the model has none."""
    path = labels_path(name)
    if path is None:
        return None
    text = path.read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line != ""]


def demo_images(name: str = DEFAULT_MODEL) -> list[pathlib.Path]:
    """The demo images of the model's own domain, sorted by file name: photographs for the
    default model, lines of text for ``ppocr-cls``, synthetic shapes for ``synthetic-shapes``."""
    folder = _HERE / _entry(name).demo_folder
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
