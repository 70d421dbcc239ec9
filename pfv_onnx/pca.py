"""Principal directions of the decomposed feature map, on NumPy or CuPy arrays.

Every function takes arrays of one module (``numpy`` or ``cupy``), picks it with
``xp.array_module`` and returns arrays of the same module. Nothing here knows about ONNX.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError
from .xp import array_module, to_host

# Rows per block of the float32 products whose sums are accumulated in float64.
_BLOCK_ROWS = 2048
# Below this matrix size a full eigendecomposition costs less than an iterative top-k solver.
_FULL_EIGH_MAX = 384


@dataclass(frozen=True)
class PrincipalBasis:
    """The leading principal directions of E_L and what is needed to project onto them.

    ``directions`` is (C, k) float64 with unit columns, oriented by the sign rule;
    ``eigenvalues`` are those of the sample covariance (divided by ``n_observations - 1``).
    """

    mean: np.ndarray  # (C,) float64
    directions: np.ndarray  # (C, k) float64
    eigenvalues: np.ndarray  # (k,) float64
    total_variance: float  # trace of the sample covariance
    n_observations: int

    @property
    def k(self) -> int:
        return int(self.directions.shape[1])

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        if self.total_variance <= 0:
            return np.zeros_like(self.eigenvalues)
        return self.eigenvalues / self.total_variance


def observations(E: Any) -> Any:
    """(N, C, h, w) map to (N*h*w, C) rows, one per spatial position (a view when E is NHWC-contiguous)."""
    xp = array_module(E)
    n, c, h, w = E.shape
    return xp.ascontiguousarray(E.transpose(0, 2, 3, 1)).reshape(n * h * w, c)


def check_k(k: int, n_channels: int, n_observations: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    if k > n_channels:
        raise InputError(f"k={k} is larger than the {n_channels} channels of the decomposed map; use k <= {n_channels}")
    if k > n_observations - 1:
        raise InputError(
            f"k={k} needs more than {n_observations} observations (images x positions of the decomposed map); "
            "use more images or a smaller k"
        )


def centred(X: Any) -> tuple[Any, Any]:
    """(X - mean) in float32 and the float64 column means."""
    xp = array_module(X)
    mean = X.mean(axis=0, dtype=xp.float64)
    return X - mean.astype(xp.float32), mean


def scatter(Xc: Any) -> Any:
    """Xc^T Xc as float64: float32 products over row blocks, summed in float64.

    Exact to float32 rounding inside a block of ``_BLOCK_ROWS`` rows, with the cost of one
    float32 matrix product. On CuPy a single float64 product is cheap, so it is used directly.
    """
    xp = array_module(Xc)
    m, c = Xc.shape
    if xp is not np:
        X64 = Xc.astype(xp.float64)
        return X64.T @ X64
    acc = np.zeros((c, c), dtype=np.float64)
    for start in range(0, m, _BLOCK_ROWS):
        block = Xc[start : start + _BLOCK_ROWS]
        acc += (block.T @ block).astype(np.float64)
    return acc


def top_eigh(S: Any, k: int) -> tuple[Any, Any]:
    """The k largest eigenvalues (descending) and unit eigenvectors of a symmetric float64 matrix."""
    xp = array_module(S)
    n = S.shape[0]
    if xp is np and n > _FULL_EIGH_MAX and k < n // 4:
        from scipy.sparse.linalg import ArpackNoConvergence, eigsh

        v0 = np.random.default_rng(0).standard_normal(n)  # fixed start: identical results on every run
        try:
            vals, vecs = eigsh(S, k=k, which="LA", v0=v0, tol=0)
        except ArpackNoConvergence:
            vals, vecs = np.linalg.eigh(S)
        order = np.argsort(vals)[::-1][:k]
        return vals[order], vecs[:, order]
    vals, vecs = xp.linalg.eigh(S)
    return vals[::-1][:k], vecs[:, ::-1][:, :k]


def orient(directions: Any, projections: Any) -> Any:
    """Sign rule: each direction's projections get a positive third moment (sum of cubes).

    The strong responses (the long tail) of every component are thus bright. When the sum is
    exactly zero, the direction's entry of largest magnitude is made positive instead.
    """
    xp = array_module(directions)
    third = (projections.astype(xp.float64) ** 3).sum(axis=0)
    idx = xp.argmax(xp.abs(directions), axis=0)
    fallback = xp.sign(directions[idx, xp.arange(directions.shape[1])])
    signs = xp.where(third != 0, xp.sign(third), fallback)
    signs = xp.where(signs == 0, 1.0, signs)
    return signs


def fit(X: Any, k: int) -> tuple[PrincipalBasis, Any]:
    """Principal basis of rows ``X`` (M, C) and the sign-oriented projections (M, k) float32.

    Uses the C x C covariance or the M x M Gram matrix, whichever is smaller.
    """
    xp = array_module(X)
    m, c = X.shape
    check_k(k, c, m)
    Xc, mean = centred(X)
    # The float32 mean leaves a small residual mean; remove its contribution exactly.
    resid = Xc.mean(axis=0, dtype=xp.float64)
    if m < c:
        G = _gram(Xc)
        ones = xp.ones((m, 1), dtype=xp.float64)
        proj_resid = (Xc.astype(xp.float64) @ resid)[:, None]
        # G of the exactly centred rows: (Xc - 1 r^T)(Xc - 1 r^T)^T
        G = G - proj_resid @ ones.T - ones @ proj_resid.T + float(resid @ resid) * (ones @ ones.T)
        vals, U = top_eigh(G, k)
        V = Xc.astype(xp.float64).T @ U - xp.outer(resid, U.sum(axis=0))
        V = V / xp.maximum(xp.linalg.norm(V, axis=0), 1e-300)
        trace = float(xp.trace(G))
    else:
        S = scatter(Xc) - m * xp.outer(resid, resid)
        vals, V = top_eigh(S, k)
        trace = float(xp.trace(S))
    vals = xp.maximum(vals, 0.0) / (m - 1)
    total_variance = max(trace, 0.0) / (m - 1)
    mean_exact = mean + resid
    P = (Xc - resid.astype(xp.float32)) @ V.astype(xp.float32)
    signs = orient(V, P)
    V = V * signs
    P = P * signs.astype(xp.float32)
    basis = PrincipalBasis(
        mean=to_host(mean_exact),
        directions=to_host(V),
        eigenvalues=to_host(vals).astype(np.float64),
        total_variance=float(total_variance),
        n_observations=int(m),
    )
    return basis, P


def _gram(Xc: Any) -> Any:
    """Xc Xc^T as float64, accumulated like ``scatter``."""
    xp = array_module(Xc)
    if xp is not np:
        X64 = Xc.astype(xp.float64)
        return X64 @ X64.T
    m = Xc.shape[0]
    acc = np.zeros((m, m), dtype=np.float64)
    c = Xc.shape[1]
    for start in range(0, c, _BLOCK_ROWS):
        block = Xc[:, start : start + _BLOCK_ROWS]
        acc += (block @ block.T).astype(np.float64)
    return acc


def project(X: Any, basis: PrincipalBasis) -> Any:
    """Projections (M, k) float32 of rows ``X`` onto a given basis (its mean removed)."""
    xp = array_module(X)
    mean = xp.asarray(basis.mean, dtype=xp.float32)
    V = xp.asarray(basis.directions, dtype=xp.float32)
    return (X - mean) @ V


def components(P: Any, n: int, h: int, w: int) -> Any:
    """(N*h*w, k) projections as (N, k, h, w)."""
    xp = array_module(P)
    k = P.shape[1]
    return xp.ascontiguousarray(P.reshape(n, h, w, k).transpose(0, 3, 1, 2))
