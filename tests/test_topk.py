"""The top-k eigen solver of ``pfv_onnx.pca`` against a full ``numpy.linalg.eigh``.

The reference in each test is plain NumPy in float64: the covariance of the float32 rows,
its full eigendecomposition, the projections, and the documented sign rule (positive sum of
cubes). Eigenvalues must agree to 1e-6 relative, component maps to 1e-4 of their largest value.
"""

from __future__ import annotations

import numpy as np
import pytest

from pfv_onnx import pca

EIG_RTOL = 1e-6
MAP_TOL = 1e-4


def rows_with_spectrum(m: int, c: int, variances: np.ndarray, *, seed: int, offset: float = 0.0) -> np.ndarray:
    """(m, c) float32 rows whose population covariance has the given variances in random directions."""
    rng = np.random.default_rng(seed)
    r = len(variances)
    directions = np.linalg.qr(rng.standard_normal((c, r)))[0]
    scores = rng.standard_normal((m, r)) * np.sqrt(variances)
    # a skewed first score, so the sign rule has a clear third moment to read
    scores[:, 0] = (rng.exponential(1.0, m) - 1.0) * np.sqrt(variances[0])
    return (scores @ directions.T + offset + rng.uniform(-1, 1, c)).astype(np.float32)


def slow_decay(c: int) -> np.ndarray:
    """Variances falling like those of CNN feature maps: lambda_4 / lambda_3 = 0.8."""
    return 1.0 / (1.0 + np.arange(c)) ** 0.75


def reference(x: np.ndarray, k: int):
    """(eigenvalues (k,), explained-variance ratios (k,), oriented directions (C, k), projections (M, k))."""
    x64 = x.astype(np.float64)
    xc = x64 - x64.mean(axis=0)
    cov = xc.T @ xc / (len(x) - 1)
    vals, vecs = np.linalg.eigh(cov)
    vals, vecs = vals[::-1][:k], vecs[:, ::-1][:, :k]
    proj = xc @ vecs
    for i in range(k):
        third = np.sum(proj[:, i] ** 3)
        sign = np.sign(third) if third != 0 else np.sign(vecs[np.argmax(np.abs(vecs[:, i])), i])
        vecs[:, i] *= sign
        proj[:, i] *= sign
    return vals, vals / np.trace(cov), vecs, proj


def assert_matches(x: np.ndarray, k: int) -> None:
    basis, p = pca.fit(x, k)
    vals, ratios, vecs, proj = reference(x, k)
    np.testing.assert_allclose(basis.eigenvalues, vals, rtol=EIG_RTOL)
    np.testing.assert_allclose(basis.explained_variance_ratio, ratios, rtol=EIG_RTOL)
    p = np.asarray(p, dtype=np.float64)
    for i in range(k):
        err = np.abs(p[:, i] - proj[:, i]).max() / np.abs(proj[:, i]).max()
        assert err <= MAP_TOL, f"component {i}: max difference {err:.2e} of its largest value"


@pytest.fixture
def krylov_calls(monkeypatch):
    """Records what every ``pca.block_krylov`` call returned (None: it did not settle)."""
    results: list[object] = []
    real = pca.block_krylov

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        results.append(out)
        return out

    monkeypatch.setattr(pca, "block_krylov", spy)
    return results


@pytest.mark.parametrize(
    ("m", "c"),
    [(1500, 320), (300, 900)],  # more rows than channels, and fewer (as at batch 8 of a 7x7 map)
    ids=["rows>channels", "rows<channels"],
)
def test_fit_krylov_matches_full_eigh(m, c, krylov_calls):
    assert min(m, c) > pca._DENSE_MAX  # the top-k solver's range, not the dense one
    x = rows_with_spectrum(m, c, slow_decay(c), seed=1)
    assert_matches(x, 3)
    assert krylov_calls and all(r is not None for r in krylov_calls), "the block Krylov solver was not used or did not settle"


def test_fit_krylov_with_a_large_mean(krylov_calls):
    # features far from zero (mean 50, spread about 1): the float32 centring must not cost accuracy
    x = rows_with_spectrum(1200, 300, slow_decay(300), seed=2, offset=50.0)
    assert_matches(x, 3)
    assert krylov_calls and krylov_calls[-1] is not None


def test_fit_krylov_on_low_rank_rows(krylov_calls):
    # rank 5 < the block size: the Krylov space stops growing and is refilled with random directions
    x = rows_with_spectrum(1000, 400, np.array([9.0, 4.0, 2.0, 1.0, 0.5]), seed=3)
    assert_matches(x, 3)
    assert krylov_calls and krylov_calls[-1] is not None


def test_fit_other_k(krylov_calls):
    x = rows_with_spectrum(900, 300, slow_decay(300), seed=4)
    assert_matches(x, 5)
    assert krylov_calls[-1] is not None


def test_fit_falls_back_to_full_eigh_without_a_gap(krylov_calls):
    # lambda_3 == lambda_4 in the sample itself (up to float32 rounding): no residual bound can
    # separate them, so the solver gives up and the full decomposition answers; the eigenvalues
    # and the first two maps are still defined
    m, c = 1000, 300
    rng = np.random.default_rng(5)
    variances = np.concatenate([[8.0, 4.0, 2.0, 2.0], 0.5 * slow_decay(c - 4)])
    scores = rng.standard_normal((m, c))
    scores -= scores.mean(axis=0)
    scores = np.linalg.qr(scores)[0] * np.sqrt(variances * (m - 1))  # sample variances exactly these
    x = (scores @ np.linalg.qr(rng.standard_normal((c, c)))[0].T + 1.0).astype(np.float32)
    basis, p = pca.fit(x, 3)
    assert krylov_calls and krylov_calls[-1] is None, "expected the top-k solver to give up"
    vals, _, _, proj = reference(x, 3)
    np.testing.assert_allclose(basis.eigenvalues, vals, rtol=EIG_RTOL)
    for i in range(2):
        err = np.abs(np.asarray(p[:, i], dtype=np.float64) - proj[:, i]).max() / np.abs(proj[:, i]).max()
        assert err <= MAP_TOL


def test_top_eigh_of_a_matrix_matches_full_eigh(krylov_calls):
    rng = np.random.default_rng(6)
    n = 600
    q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    s = (q * slow_decay(n)) @ q.T
    vals, vecs = pca.top_eigh(s, 3)
    ref_vals, ref_vecs = np.linalg.eigh(s)
    ref_vals, ref_vecs = ref_vals[::-1][:3], ref_vecs[:, ::-1][:, :3]
    np.testing.assert_allclose(vals, ref_vals, rtol=EIG_RTOL)
    signs = np.sign(np.sum(vecs * ref_vecs, axis=0))  # eigenvector signs are free here
    np.testing.assert_allclose(vecs * signs, ref_vecs, atol=MAP_TOL)
    assert krylov_calls and krylov_calls[-1] is not None


def test_krylov_is_deterministic():
    x = rows_with_spectrum(1000, 300, slow_decay(300), seed=7)
    a, pa = pca.fit(x, 3)
    b, pb = pca.fit(x.copy(), 3)
    np.testing.assert_array_equal(a.directions, b.directions)
    np.testing.assert_array_equal(pa, pb)


def test_krylov_on_constant_rows():
    # zero variance: a defined, finite answer (all-zero eigenvalues and maps), never NaN
    x = np.full((600, 300), 3.0, dtype=np.float32)
    basis, p = pca.fit(x, 3)
    assert np.all(basis.eigenvalues == 0) and np.all(np.isfinite(basis.directions))
    assert np.all(np.asarray(p) == 0)


@pytest.mark.gpu
def test_krylov_on_cupy_matches_full_eigh():
    import cupy as cp

    x = rows_with_spectrum(1500, 320, slow_decay(320), seed=8)
    basis, p = pca.fit(cp.asarray(x), 3)
    vals, _, _, proj = reference(x, 3)
    np.testing.assert_allclose(basis.eigenvalues, vals, rtol=EIG_RTOL)
    p = cp.asnumpy(p).astype(np.float64)
    assert np.abs(p - proj).max() / np.abs(proj).max() <= MAP_TOL


@pytest.mark.parametrize("d", [8, 24, 64])
def test_generalised_ritz_problem_against_its_definition(d):
    """H u = theta G u with U^T G U = I, checked on the definition and against the eigenvalues
    of G^-1 H computed by NumPy's general (non-symmetric) solver."""
    rng = np.random.default_rng(d)
    A = rng.standard_normal((d, d))
    H = A @ A.T
    E = 1e-4 * rng.standard_normal((d, d))
    G = np.eye(d) + (E + E.T) / 2  # a nearly orthonormal basis's Gram matrix
    theta, U = pca._generalised_eigh(H, G)
    assert np.all(np.diff(theta) >= 0)
    np.testing.assert_allclose(H @ U, G @ U * theta, atol=1e-8 * np.abs(H).max())
    np.testing.assert_allclose(U.T @ G @ U, np.eye(d), atol=1e-10)
    other = np.sort(np.linalg.eigvals(np.linalg.solve(G, H)).real)
    np.testing.assert_allclose(theta, other, rtol=1e-8, atol=1e-8 * theta.max())


def test_generalised_ritz_problem_refuses_an_indefinite_gram_matrix():
    H = np.eye(3)
    G = np.diag([1.0, -1.0, 1.0])
    assert pca._generalised_eigh(H, G) is None
