"""Detect a broken onnxruntime install: two builds that share one ``onnxruntime`` module.

``onnxruntime``, ``onnxruntime-gpu`` and the other builds all install the same Python
package; pip lets them sit side by side and the last one installed silently wins, and
uninstalling either one later deletes files the other needs. Only removing every build
and installing one fixes it. Reads package metadata only; never imports onnxruntime.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib import metadata

from .errors import DependencyError

_NAME_HINT = re.compile(r"^(onnxruntime|ort[-_]nightly)", re.IGNORECASE)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _provides_onnxruntime(dist: metadata.Distribution) -> bool:
    top = dist.read_text("top_level.txt")
    if top is not None:
        return "onnxruntime" in top.split()
    files = dist.files or []
    return any(str(f).replace("\\", "/") == "onnxruntime/__init__.py" for f in files)


def onnxruntime_builds(path: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """``(distribution name, version)`` of every installed build of the ``onnxruntime`` module.

    Args:
        path: folders to search instead of ``sys.path`` (for tests).

    Returns:
        Sorted by name; ``onnxruntime-extensions`` and the like, which install other
        modules, are not counted.
    """
    dists = metadata.distributions(path=list(path)) if path is not None else metadata.distributions()
    found: dict[str, str] = {}
    for dist in dists:
        folder_name = getattr(dist, "_normalized_name", None)  # from the folder's name: parsing every package's metadata costs 0.1 s
        if isinstance(folder_name, str) and not _NAME_HINT.match(folder_name):
            continue
        name = dist.metadata.get("Name") or ""
        if not _NAME_HINT.match(name):
            continue
        if _provides_onnxruntime(dist):
            found.setdefault(_normalise(name), dist.version)
    return sorted(found.items())


def check_onnxruntime_install(path: Iterable[str] | None = None) -> str:
    """Raise :class:`DependencyError` unless exactly one onnxruntime build is installed.

    Returns:
        The distribution name of the one build (``"onnxruntime"``, ``"onnxruntime-gpu"``, ...).
    """
    builds = onnxruntime_builds(path)
    if not builds:
        raise DependencyError(
            "onnxruntime is not installed; install one build: pip install onnxruntime "
            "(CPU) or pip install onnxruntime-gpu (CUDA 12)"
        )
    if len(builds) > 1:
        listed = ", ".join(f"{n} {v}" for n, v in builds)
        names = " ".join(n for n, _ in builds)
        keep = "onnxruntime-gpu" if any(n == "onnxruntime-gpu" for n, _ in builds) else builds[0][0]
        raise DependencyError(
            f"several onnxruntime builds are installed ({listed}); they share one module and the "
            f"last one installed wins. Repair: pip uninstall -y {names} && pip install {keep}"
        )
    return builds[0][0]
