"""C library functions that Python's standard library does not offer (Linux only)."""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Any


@functools.cache
def function(name: str) -> Any:
    """The process's C library function ``name`` (looked up once), or None where it has none:
    another system, or a C library without it (``malloc_trim`` is glibc's alone)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
