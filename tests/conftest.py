"""Shared fixtures: model files written once per session, the ``gpu`` marker, and how the
suite shares two cores under pytest-xdist (README, "Tests")."""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable
from pathlib import Path


def _pin_xdist_worker() -> None:
    """Under pytest-xdist with no more workers than cores, each worker keeps to a core of its own.

    onnxruntime and OpenBLAS size their thread pools from the cores a process may use, so
    each worker then computes on one thread, and the workers' spinning pools do not take
    turns on the same cores. Done before NumPy is imported (OpenBLAS reads it when loaded);
    the processes a test starts (Ray, Chromium, the command line) inherit the core.
    """
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if not name.startswith("gw") or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if 2 <= count <= len(cores):
        os.sched_setaffinity(0, {cores[int(name[2:]) % len(cores)]})


_pin_xdist_worker()

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
    # The modules with Ray tests first: the longest (a local cluster), so that under pytest-xdist
    # (whole modules to a worker, in this order) one does not start last while the other worker
    # has nothing left to do.
    ray_modules = {it.path for it in items if it.get_closest_marker("ray") is not None}
    items.sort(key=lambda it: it.path not in ray_modules)
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


def made_once(tmp_path_factory, name: str, make: Callable[[Path], Path]) -> Path:
    """``make(folder)``'s file, made once per test run: pytest-xdist's workers share the run's
    base temporary folder, and a lock there makes the others wait for the first to make it."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder, made = base / f"once-{name}", base / f"once-{name}.txt"
    with open(base / f"once-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not made.exists():
            made.write_text(make(folder).relative_to(folder).as_posix())
    return folder / made.read_text()


@pytest.fixture(scope="session")
def efficientnet_int8(tmp_path_factory) -> Path:
    """The bundled EfficientNet-Lite0 through onnxruntime's static quantiser (QDQ, per channel), once per run."""
    import derived_models

    return made_once(tmp_path_factory, "int8", derived_models.quantise_int8)
