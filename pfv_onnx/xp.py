"""Choose the array module (NumPy or CuPy) and move arrays between host and device.

The only module that imports CuPy, always inside functions.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from .errors import DependencyError


def cupy_module() -> ModuleType:
    try:
        import cupy
    except ImportError as exc:
        raise DependencyError("CuPy is not installed; install the GPU extra: pip install 'pfv-onnx[gpu]'") from exc
    return cupy


def cuda_available() -> bool:
    try:
        cp = cupy_module()
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def array_module(a: Any) -> ModuleType:
    """The module an array belongs to: numpy for NumPy arrays, cupy for CuPy arrays."""
    if isinstance(a, np.ndarray) or np.isscalar(a):
        return np
    mod = type(a).__module__.split(".")[0]
    if mod == "cupy":
        return cupy_module()
    return np


def backend(name: str) -> ModuleType:
    """``"numpy"``/``"cpu"`` or ``"cupy"``/``"cuda"``."""
    if name in ("numpy", "cpu"):
        return np
    if name in ("cupy", "cuda"):
        return cupy_module()
    raise ValueError(f"unknown array backend {name!r}")


def to_host(a: Any) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "get"):
        return a.get()
    return np.asarray(a)


def to_backend(a: Any, xp: ModuleType) -> Any:
    if xp is np:
        return to_host(a)
    return xp.asarray(a)


def from_dlpack(value: Any) -> Any:
    """An onnxruntime OrtValue on the GPU as a CuPy array, without a host copy.

    The array's DLPack capsule keeps the OrtValue's memory alive.
    """
    cp = cupy_module()
    if hasattr(value, "__dlpack__"):
        return cp.from_dlpack(value)
    return cp.from_dlpack(value._ortvalue.to_dlpack())  # onnxruntime < 1.20
