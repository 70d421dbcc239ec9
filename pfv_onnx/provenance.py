"""What a result was made with: library versions and each input's SHA-256, for report.json."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

SCHEMA_VERSION = 1
"""Version of the layout of report.json; raised when a key changes meaning or goes."""


def _version(module: str, attribute: str = "__version__") -> str | None:
    import importlib

    try:
        return str(getattr(importlib.import_module(module), attribute))
    except Exception:  # not installed or broken: recorded as unknown
        return None


def sha256_of(path: str | os.PathLike[str]) -> str | None:
    """The file's SHA-256 in hex, or None when it cannot be read."""
    from pathlib import Path

    from .model_file import file_sha256

    try:
        return file_sha256(Path(path))
    except OSError:
        return None


def provenance(inputs: Iterable[str | os.PathLike[str]]) -> dict[str, Any]:
    """``{"schema_version", "versions": {pfv_onnx, onnxruntime, numpy, opencv, python},
    "inputs": [{"file", "sha256"}]}``; an input that cannot be read has ``sha256`` None."""
    import platform

    from . import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "versions": {
            "pfv_onnx": __version__,
            "onnxruntime": _version("onnxruntime"),
            "numpy": _version("numpy"),
            "opencv": _version("cv2"),
            "python": platform.python_version(),
        },
        "inputs": [{"file": os.fspath(p), "sha256": sha256_of(p)} for p in inputs],
    }
