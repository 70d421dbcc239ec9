"""The array-module-generic path of every math kernel (the one CuPy takes), run with NumPy.

The kernels take NumPy-only shortcuts (OpenCV resizes and transposes, blocked float32 sums,
chunked colour scaling) when ``array_module`` says ``numpy``. The ``generic`` fixture makes
it answer with a stand-in module that forwards to NumPy but is not ``numpy``, so the
branches written for CuPy run here, in CI, without a GPU; each test computes both ways and
compares. Expected numbers of the kernels themselves come from other tests (test_math.py,
test_basis.py); here the two paths must agree.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import graphs
from pfv_onnx import PFV, basis, decompose, fit_stats, pca, weighting, xp


class _NumpyStandIn(types.ModuleType):
    """NumPy under another identity: ``xp is numpy`` is False, every function is NumPy's."""

    def __getattr__(self, name):
        return getattr(np, name)


STAND_IN = _NumpyStandIn("numpy_generic")


@pytest.fixture
def generic(monkeypatch):
    """``run(fn)``: ``fn()`` with NumPy arrays taken through the generic (CuPy) path."""

    real = xp.array_module

    def module_of(a):
        found = real(a)
        return STAND_IN if found is np else found

    def run(fn):
        with monkeypatch.context() as m:
            for mod in (xp, pca, weighting, fit_stats):
                m.setattr(mod, "array_module", module_of)
            # weighting's per-image loop (OpenCV, image-major) is taken for NumPy arrays only
            m.setattr(weighting, "_per_image", lambda P: False)
            return fn()

    return run


def test_the_stand_in_really_takes_the_generic_branches(generic):
    """The fixture is effective: the NumPy-only shortcuts are not called under it."""
    import cv2

    calls = []
    real = cv2.resize

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    x = np.random.default_rng(0).random((2, 3, 5, 7)).astype(np.float32)
    cv2.resize = spy
    try:
        weighting.resize_bilinear(x, (11, 13))
        assert calls  # the NumPy path resizes with OpenCV
        calls.clear()
        generic(lambda: weighting.resize_bilinear(x, (11, 13)))
        assert not calls
    finally:
        cv2.resize = real
    assert generic(lambda: pca.array_module(x)) is STAND_IN and pca.array_module(x) is np


def _rows(m: int, c: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((c, c)) * np.linspace(2.0, 0.1, c)
    return (rng.standard_normal((m, c)) @ mix + 3.0).astype(np.float32)


@pytest.mark.parametrize(("m", "c", "k"), [(300, 12, 3), (9, 40, 3), (2600, 300, 4)], ids=["covariance", "gram", "krylov"])
def test_pca_fit_agrees(generic, m, c, k):
    X = _rows(m, c, seed=m)
    b_np, P_np = pca.fit(X, k)
    b_gen, P_gen = generic(lambda: pca.fit(X, k))
    np.testing.assert_allclose(b_gen.eigenvalues, b_np.eigenvalues, rtol=1e-4)
    np.testing.assert_allclose(b_gen.mean, b_np.mean, rtol=1e-6, atol=1e-6)
    assert b_gen.total_variance == pytest.approx(b_np.total_variance, rel=1e-5)
    np.testing.assert_allclose(np.abs(b_gen.directions.T @ b_np.directions), np.eye(k), atol=2e-3)  # same directions
    np.testing.assert_array_equal(np.sign(np.diag(b_gen.directions.T @ b_np.directions)), np.ones(k))  # same signs
    np.testing.assert_allclose(P_gen, P_np, rtol=1e-3, atol=1e-3 * float(np.abs(P_np).max()))


def test_pca_helpers_agree(generic):
    X = _rows(5000, 7, seed=2)
    E = np.random.default_rng(3).standard_normal((3, 6, 5, 4)).astype(np.float32)
    for fn in (pca.column_mean, pca.squared_norm, lambda a: pca.scatter(a - a.mean(axis=0))):
        np.testing.assert_allclose(generic(lambda: fn(X)), fn(X), rtol=1e-5)
    np.testing.assert_array_equal(generic(lambda: pca.observations(E)), pca.observations(E))


@pytest.mark.parametrize("size", [(5, 7), (16, 21), (3, 2)])
def test_resize_agrees(generic, size):
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(generic(lambda: weighting.resize_bilinear(x, size)), weighting.resize_bilinear(x, size), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("peaks", [None, [3.0, 4.0]])
def test_weighting_agrees(generic, peaks):
    rng = np.random.default_rng(4)
    P = rng.standard_normal((3, 3, 4, 5)).astype(np.float32)
    S = [np.abs(rng.standard_normal((3, 1, 16, 20))).astype(np.float32), np.abs(rng.standard_normal((3, 1, 8, 10))).astype(np.float32)]
    size = (32, 40)
    for fn in (lambda: weighting.flat(P, S, size), lambda: weighting.hierarchical(P, S, size, peaks=peaks)):
        np.testing.assert_allclose(generic(fn), fn(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fitted", [{}, {"mean": 0.2, "std": 1.5}])
def test_colour_scaling_agrees(generic, fitted):
    x = np.random.default_rng(5).standard_normal((2, 3, 40, 50)).astype(np.float32) * 2 + 0.5
    np.testing.assert_allclose(
        generic(lambda: weighting.scale_colours(x, 1.0, **fitted)), weighting.scale_colours(x, 1.0, **fitted), atol=1e-5
    )


def test_fit_statistics_and_decomposition_agree(generic, save_model):
    """The fit's two passes and a whole decomposition on a model's feature maps, both ways."""
    case = graphs.vgg()
    pfv = PFV(save_model(case.model, "vgg_generic"), provider="cpu")
    batch = graphs.make_batch((4, 3, 24, 32), seed=6)
    passes = [pfv.forward(batch[:2]), pfv.forward(batch[2:])]
    maps = pfv.maps(passes[0].input_hw)

    def both():
        cov = basis.CovarianceStats()
        for p in passes:
            cov.add(p)
        cov = cov.host()
        dirs = cov.principal(3)
        proj = basis.ProjectionStats()
        for p in passes:
            proj.add(p, dirs, cov.peaks)
        res = [decompose.decompose(passes, maps, k=3, hierarchical=h) for h in (False, True)]
        return cov, proj, res

    (cov_n, proj_n, res_n), (cov_g, proj_g, res_g) = both(), generic(both)
    np.testing.assert_allclose(cov_g.scatter(), cov_n.scatter(), rtol=1e-6, atol=1e-6 * float(np.abs(cov_n.scatter()).max()))
    np.testing.assert_allclose(proj_g.third, proj_n.third, rtol=1e-4)
    for v in basis.VARIANTS:
        np.testing.assert_allclose(proj_g.moments[v].m2, proj_n.moments[v].m2, rtol=1e-4)
    for a, b in zip(res_g, res_n):
        np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-4)
        np.testing.assert_allclose(a.rgb, b.rgb, atol=2e-3)
