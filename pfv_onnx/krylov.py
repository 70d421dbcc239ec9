"""Top-k eigenpairs of a symmetric positive semi-definite operator by block Krylov products.

The operator is given only as ``apply(Q) = A @ Q`` (``pca`` applies the centred rows twice
instead of forming their covariance). Host NumPy, float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Block Krylov stops when every Ritz residual is below this fraction of the gap between the k-th
# and the (k+1)-th Ritz value: that bounds the angle between the subspace found and the true one.
_KRYLOV_TOL = 1e-4


def block_krylov(apply: Any, n: int, k: int, *, max_dim: int, tol: float = _KRYLOV_TOL, seed: int = 0):
    """Top k eigenpairs of a symmetric positive semi-definite operator, or None if unsettled.

    ``apply(Q)`` returns A @ Q for a host float64 (n, b) block. The Krylov space
    span{Q0, A Q0, A^2 Q0, ...} grows by one block per product; Rayleigh-Ritz on it gives
    the estimates, and it stops once every residual ||A v - theta v|| is below ``tol`` times
    the gap theta_k - theta_(k+1). Blocks are rounded to float32 (so a float32 ``apply`` is
    exact on them) and the generalised Ritz problem absorbs the rounding. The start block
    is seeded: the same input gives the same result.
    Returns (eigenvalues (k,) descending, vectors (n, k)) as host float64 arrays.
    """
    b = max(2 * k + 2, 8)
    if n < 2 * b or max_dim < 2 * b:
        return None
    cols = min(max_dim, n) // b * b
    first_check = min(4 * b, cols)  # real spectra need 6 to 8 blocks; earlier checks rarely stop
    K = np.empty((n, cols), order="F")  # the Krylov basis, one block of b columns per step
    AK = np.empty((n, cols), order="F")  # A @ K
    H = np.empty((cols, cols))  # K^T A K, grown a block at a time
    G = np.empty((cols, cols))  # K^T K (the identity up to the float32 rounding of K)
    rng = np.random.default_rng(seed)
    block = _orthonormal_block(K[:, :0], rng.standard_normal((n, b)), rng)
    d = 0
    while True:
        K[:, d : d + b] = block
        AK[:, d : d + b] = apply(block)
        H[: d + b, d : d + b] = K[:, : d + b].T @ AK[:, d : d + b]
        H[d : d + b, :d] = H[:d, d : d + b].T
        H[d : d + b, d : d + b] = (H[d : d + b, d : d + b] + H[d : d + b, d : d + b].T) / 2
        G[: d + b, d : d + b] = K[:, : d + b].T @ block
        G[d : d + b, :d] = G[:d, d : d + b].T
        d += b
        if d >= first_check:
            found = _generalised_eigh(H[:d, :d], G[:d, :d])
            if found is None:
                return None
            theta, U = found
            theta, U = theta[::-1], U[:, ::-1]
            V = K[:, :d] @ U[:, :k]
            residual = np.linalg.norm(AK[:, :d] @ U[:, :k] - V * theta[:k], axis=0)
            gap = theta[k - 1] - theta[k]
            if np.all(residual <= tol * gap) or (theta[0] <= 0 and np.all(residual == 0)):
                V = V / np.maximum(np.linalg.norm(V, axis=0), 1e-300)
                return theta[:k], V
        if d + b > cols:
            return None
        block = _orthonormal_block(K[:, :d], AK[:, d - b : d], rng)


def _generalised_eigh(H: np.ndarray, G: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Solutions of H u = theta G u (G symmetric positive definite), theta ascending, U^T G U = I.

    By the Cholesky factor G = L L^T: the standard problem of L^-1 H L^-T. G is the Gram
    matrix of a basis orthonormal up to float32 rounding, so L is near the identity. None
    when G is not positive definite or the values are not finite.
    """
    try:
        L_inv = np.linalg.inv(np.linalg.cholesky(G))
        C = L_inv @ H @ L_inv.T
        theta, W = np.linalg.eigh((C + C.T) / 2)
    except np.linalg.LinAlgError:
        return None
    if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(W))):
        return None
    return theta, L_inv.T @ W


def _orthonormal_block(K: np.ndarray, W: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Columns of W made orthonormal to K and to each other, rounded to float32 values.

    Columns that vanish (the Krylov space stopped growing in their direction) are replaced
    by random ones, so the block always has full rank.
    """
    scale = max(float(np.abs(W).max()) if W.size else 0.0, 1e-300)
    for _ in range(2):
        W = W - K @ (K.T @ W)
    Q, R = np.linalg.qr(W)
    weak = np.abs(np.diag(R)) <= 1e-10 * scale * np.sqrt(W.shape[0])
    if weak.any():
        known = np.hstack([K, Q[:, ~weak]])
        fresh = rng.standard_normal((W.shape[0], int(weak.sum())))
        for _ in range(2):
            fresh = fresh - known @ (known.T @ fresh)
        Q[:, weak] = np.linalg.qr(fresh)[0]
    return Q.astype(np.float32).astype(np.float64)
