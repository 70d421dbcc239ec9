"""The PFV math on several threads: the same result bit for bit as on one, and the reference's."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import reference as ref
from pfv_onnx import pca, threads, weighting


def maps(n: int = 6, c: int = 320, h: int = 9, w: int = 8, seed: int = 0):
    """E_L with a clear top-3 spectrum (min(rows, channels) above the dense limit: the Krylov
    route) and two weighting maps' channel sums of other resolutions."""
    rng = np.random.default_rng(seed)
    scales = np.concatenate([[9.0, 6.0, 4.0], np.linspace(1.0, 0.2, c - 3)])
    e = (rng.standard_normal((n, h, w, c)) * scales).transpose(0, 3, 1, 2)
    e = np.ascontiguousarray(e + rng.uniform(-1, 1, c)[None, :, None, None], dtype=np.float32)
    sums = [rng.uniform(0.0, 2.0, (n, 1, 4 * h, 4 * w)).astype(np.float32), rng.uniform(0.0, 2.0, (n, 1, 2 * h, 2 * w)).astype(np.float32)]
    return e, sums


def pipeline(e: np.ndarray, sums: list[np.ndarray], hierarchical: bool):
    n, _, h, w = e.shape
    basis, p = pca.fit(pca.observations(e), 3)
    comps = pca.components(p, n, h, w)
    fn = weighting.hierarchical if hierarchical else weighting.flat
    rgb = weighting.scale_colours(fn(comps, sums, (8 * h, 8 * w)), 1.0)
    return basis, comps, np.asarray(rgb)


@pytest.mark.parametrize("hierarchical", [False, True])
def test_threads_do_not_change_a_bit(hierarchical):
    e, sums = maps()
    with threads.limit(1):
        one = pipeline(e, sums, hierarchical)
    with threads.limit(3):
        three = pipeline(e, sums, hierarchical)
    assert np.array_equal(one[0].directions, three[0].directions)
    assert np.array_equal(one[0].eigenvalues, three[0].eigenvalues)
    assert np.array_equal(one[1], three[1])
    assert np.array_equal(one[2], three[2])


def test_threaded_math_matches_the_reference():
    e, sums = maps(seed=1)
    n, _, h, w = e.shape
    with threads.limit(3):
        basis, comps, rgb = pipeline(e, sums, hierarchical=False)
    want = ref.pfv(e, [s.repeat(2, axis=1) / 2 for s in sums], (8 * h, 8 * w), k=3, align_to=comps)
    np.testing.assert_allclose(basis.eigenvalues, want.eigenvalues, rtol=1e-5)
    np.testing.assert_allclose(comps, want.components, atol=1e-5 * np.abs(want.components).max())
    np.testing.assert_allclose(rgb.transpose(0, 2, 3, 1), want.rgb, atol=1e-5)


@pytest.mark.parametrize("n, parts", [(0, 3), (1, 4), (7, 3), (10, 10), (5, 1)])
def test_spans_cover_the_range_once_in_order(n, parts):
    got = threads.spans(n, parts)
    assert [i for a, b in got for i in range(a, b)] == list(range(n))
    assert len(got) <= max(parts, 1)
    assert all(b > a for a, b in got)


def test_run_keeps_order_and_the_limit_is_restored():
    before = threads.count()
    with threads.limit(4):
        assert threads.count() == 4
        assert threads.run(lambda i: i * i, list(range(11))) == [i * i for i in range(11)]
    assert threads.count() == before
    with pytest.raises(ValueError):
        threads.set_limit(0)


_FORK_CHILD = """
import os, signal, threading
from pfv_onnx import threads
def busy(i):
    threading.Event().wait(0.05)  # every pool thread gets started, busy at once
    return i + 1
with threads.limit(3):
    assert threads.run(busy, list(range(6))) == list(range(1, 7))
    pid = os.fork()
    if pid == 0:
        signal.alarm(20)  # a hang guard: the child dies of SIGALRM rather than hang for ever
        ok = threads.run(lambda i: i * 2, list(range(6))) == [i * 2 for i in range(6)]
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_the_math():
    # The parent's pool threads do not exist in a forked child: the child needs its own.
    done = subprocess.run([sys.executable, "-c", _FORK_CHILD], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0", "the forked child did not finish the math (-14: killed by the hang guard)"


def _slow(finished: list[int], fail: int):
    def fn(i: int) -> int:
        if i == fail:
            raise KeyError(i)
        threading.Event().wait(0.2)  # the failing lane is done long before this one
        finished.append(i)
        return i

    return fn


@pytest.mark.parametrize("fail", [0, 1])  # the calling thread's lane, a pool thread's lane
def test_run_waits_for_every_lane_before_raising(fail):
    finished: list[int] = []
    with threads.limit(4), pytest.raises(KeyError):
        threads.run(_slow(finished, fail), [0, 1, 2, 3])
    assert sorted(finished) == [i for i in range(4) if i != fail]


def test_a_run_that_grows_the_pool_leaves_a_concurrent_run_working(monkeypatch):
    # Thread A has its pool and is about to hand it work when thread B needs a larger one.
    submit = ThreadPoolExecutor.submit
    a_submits, b_done = threading.Event(), threading.Event()

    def paused_submit(self, *args, **kwargs):
        if threading.current_thread().name == "A" and not a_submits.is_set():
            a_submits.set()
            assert b_done.wait(30)
        return submit(self, *args, **kwargs)

    monkeypatch.setattr(ThreadPoolExecutor, "submit", paused_submit)
    results: dict[str, object] = {}

    def call(name: str, n: int) -> None:
        try:
            results[name] = threads.run(lambda i: i + 1, list(range(n)))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            results[name] = error

    with threads.limit(64):
        a = threading.Thread(target=call, args=("A", 2), name="A")
        a.start()
        assert a_submits.wait(30)
        call("B", 64)
        b_done.set()
        a.join(30)
    assert results == {"A": [1, 2], "B": list(range(1, 65))}


@pytest.mark.parametrize("n_threads", [3, 4, 7])
def test_fewer_rows_than_threads_do_not_change_a_bit(n_threads):
    # Five rows: cut by the number of threads, some spans would be one row long.
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((5, 48)) * np.linspace(3.0, 0.1, 48)).astype(np.float32)
    with threads.limit(1):
        basis_one, p_one = pca.fit(x, 3)
    with threads.limit(n_threads):
        basis_many, p_many = pca.fit(x, 3)
    assert np.array_equal(basis_one.directions, basis_many.directions)
    assert np.array_equal(p_one, p_many)
