"""The PFV math on several cores: fixed parts of the work on a small pool of Python threads.

NumPy and OpenCV release the GIL in the calls the math makes (elementwise passes, resizes,
float32 products with BLAS held to one thread), so plain threads run them in parallel. The
threads block on a queue when idle: nothing spins, unlike multi-threaded BLAS, whose spinning
workers cost tens of times more beside other busy threads (docs/PERFORMANCE.md, "The PFV math").

How the work is cut never depends on the number of threads: on NumPy a result is the same bit
for bit with one thread or many (CuPy arrays do not use these threads).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

T = TypeVar("T")

_LIMIT: int | None = None
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_LOCK = threading.Lock()


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def count() -> int:
    """Threads the math may use: the limit set with :func:`limit`, else one per usable core."""
    return max(1, _LIMIT if _LIMIT is not None else usable_cpus())


def set_limit(n: int | None) -> None:
    """Use at most ``n`` threads for the math from now on (None: one per usable core).

    The limit is process-wide: it holds for the math on every thread, not just the caller's.
    """
    global _LIMIT
    if n is not None and n < 1:
        raise ValueError(f"the thread limit must be at least 1, got {n}")
    _LIMIT = n


@contextlib.contextmanager
def limit(n: int | None) -> Iterator[None]:
    """At most ``n`` threads for the math inside the block (process-wide, like :func:`set_limit`)."""
    before = _LIMIT
    set_limit(n)
    try:
        yield
    finally:
        set_limit(before)


def _pool(n: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _LOCK:
        if _POOL is None or _POOL_SIZE < n:
            # A smaller pool is replaced, never shut down: a run on another thread may still be
            # handing it work. Its idle threads end once the last run holding it lets it go.
            _POOL, _POOL_SIZE = ThreadPoolExecutor(max_workers=n, thread_name_prefix="pfv-math"), n
        return _POOL


def _forget_pool() -> None:
    """In a forked child: the parent's pool threads do not exist there, so start afresh."""
    global _POOL, _POOL_SIZE, _LOCK
    _POOL, _POOL_SIZE, _LOCK = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def spans(n: int, parts: int) -> list[tuple[int, int]]:
    """``range(n)`` cut into at most ``parts`` contiguous (start, stop) spans of near-equal size."""
    parts = max(1, min(parts, n))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def run(fn: Callable[[T], Any], items: Sequence[T]) -> list[Any]:
    """``[fn(item) for item in items]``, the items spread over up to :func:`count` threads.

    Each thread takes a contiguous run of the items, the calling thread the first; the
    results keep the items' order. Every run of items has ended when this returns or raises;
    an error is the one of the first run that failed.
    """
    n = min(count(), len(items))
    if n <= 1 or threading.current_thread().name.startswith("pfv-math"):  # no nested pools
        return [fn(item) for item in items]
    lanes = [list(items[a:b]) for a, b in spans(len(items), n)]
    pool = _pool(n - 1)
    futures = [pool.submit(lambda lane: [fn(item) for item in lane], lane) for lane in lanes[1:]]
    try:
        out = [fn(item) for item in lanes[0]]
    finally:
        wait(futures)
    for f in futures:
        out.extend(f.result())
    return out
