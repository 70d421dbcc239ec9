"""Shared fixtures: model files written once per session, the ``gpu`` marker."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
for p in (str(TESTS), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CuPy and a CUDA device; skipped cleanly without them")


def _gpu_missing() -> str | None:
    """Why GPU tests cannot run here, or None when they can."""
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # ImportError, or a CuPy build that cannot load its CUDA libraries
        return f"cupy not usable: {type(exc).__name__}: {exc}"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device"
        cupy.zeros(1).sum().item()  # a real kernel launch
    except Exception as exc:
        return f"no usable CUDA device: {type(exc).__name__}: {exc}"
    return None


def pytest_collection_modifyitems(config, items):
    gpu_items = [it for it in items if it.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    why = _gpu_missing()
    if why is None:
        return
    skip = pytest.mark.skip(reason=why)
    for it in gpu_items:
        it.add_marker(skip)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def save_model(model_dir):
    """save_model(model, name) -> path of the written .onnx file (each name written once)."""
    written: dict[str, Path] = {}

    def _save(model: onnx.ModelProto, name: str) -> str:
        if name not in written:
            path = model_dir / f"{name}.onnx"
            onnx.save(model, str(path))
            written[name] = path
        return str(written[name])

    return _save


@pytest.fixture(scope="session")
def vgg_model(tmp_path_factory) -> Path:
    """The small VGG-like test graph (10 classes) as an .onnx file, for the command-line tests."""
    import graphs

    path = tmp_path_factory.mktemp("vgg") / "vgg.onnx"
    onnx.save(graphs.vgg().model, str(path))
    return path


@pytest.fixture(scope="session")
def labels_file(tmp_path_factory) -> Path:
    """Names for vgg_model's 10 classes (graphs.VGG_LABELS), one per line."""
    import graphs

    path = tmp_path_factory.mktemp("labels") / "labels.txt"
    path.write_text("\n".join(graphs.VGG_LABELS) + "\n")
    return path


@pytest.fixture(scope="session")
def efficientnet_int8(tmp_path_factory) -> Path:
    """The bundled EfficientNet-Lite0 through onnxruntime's static quantiser (QDQ, per channel), once per session."""
    import derived_models

    return derived_models.quantise_int8(tmp_path_factory.mktemp("int8"))
