"""Principal directions of the decomposed feature map, on NumPy or CuPy arrays.

Every function takes arrays of one module (``numpy`` or ``cupy``), picks it with
``xp.array_module`` and returns arrays of the same module. Nothing here knows about ONNX.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import float_range, threads
from .errors import InputError
from .krylov import _generalised_eigh, block_krylov  # noqa: F401  (the solver of fit and top_eigh)
from .xp import array_module, to_host

# Rows per block of the float32 products whose sums are accumulated in float64.
_BLOCK_ROWS = 2048
_APPLY_BYTES = 4 << 20  # a block of rows of the Krylov products (in cache for its second product)
_SEGMENT_ROWS = 64  # row segments start at multiples of this many rows
# Row segments of the Krylov products, summed in float64 in a fixed order (spread over the threads).
_SEGMENTS = 8
# Row segments of the projections (each one product, spread over the threads).
_PROJECT_SEGMENTS = 64
# Rows per block of the column sums: float32 partial sums this long stay accurate to ~1e-7.
_SUM_ROWS = 256
# Up to this matrix size a full eigendecomposition costs less than an iterative top-k solver.
_FULL_EIGH_MAX = 384
# ``fit`` forms the smaller of the covariance and the Gram matrix when min(rows, channels) is at
# most this; above it, it finds the top k with block Krylov products of the rows themselves.
_DENSE_MAX = 256

Scratch = Any  # (shape, dtype) -> a writable array of that shape and dtype


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
    if xp is np and E.dtype == np.float32 and E.flags.c_contiguous and c > 1 and h * w > 1:
        # NCHW float32: OpenCV's blocked transpose of each image's (C, h*w) matrix is several
        # times faster than NumPy's strided copy.
        import cv2

        rows = np.empty((n, h * w, c), dtype=np.float32)
        planes = E.reshape(n, c, h * w)

        def transpose(span: tuple[int, int]) -> None:
            for i in range(*span):
                cv2.transpose(planes[i], dst=rows[i])

        threads.run(transpose, threads.spans(n, threads.count()))
        return rows.reshape(n * h * w, c)
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


def centred(X: Any, scratch: Scratch | None = None) -> tuple[Any, Any]:
    """(X - mean) in float32 and the float64 column means.

    ``scratch(shape, dtype)``: where the centred rows go (a memory-mapped file for rows
    spooled to disk), filled a block of rows at a time; the values are the same. Host memory
    only: CuPy rows are centred on the device and the scratch is not used.
    """
    xp = array_module(X)
    mean = column_mean(X)
    m32 = mean.astype(xp.float32)
    if xp is not np:
        return X - m32, mean
    dtype = np.result_type(X.dtype, np.float32)
    out = np.empty(X.shape, dtype=dtype) if scratch is None else scratch(X.shape, dtype)
    threads.run(lambda s: np.subtract(X[s[0] : s[1]], m32, out=out[s[0] : s[1]]), threads.spans(X.shape[0], threads.count()))
    return out, mean


def column_mean(X: Any) -> Any:
    """Float64 column means of (M, C) rows: float32 sums of row blocks (one matrix-vector
    product each, a single pass over X) added up in float64."""
    xp = array_module(X)
    if xp is not np or X.dtype != np.float32:
        return X.mean(axis=0, dtype=xp.float64)
    m = X.shape[0]
    ones = np.ones(min(m, _SUM_ROWS), dtype=np.float32)
    total = np.zeros(X.shape[1], dtype=np.float64)
    for start in range(0, m, _SUM_ROWS):
        block = X[start : start + _SUM_ROWS]
        total += ones[: block.shape[0]] @ block
    return total / m


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
    """The k largest eigenvalues (descending) and unit eigenvectors of a symmetric float64 matrix.

    Large matrices go through block Krylov products with ``S`` (O(n^2) per step) instead of a
    full O(n^3) decomposition, which remains the fallback when the iteration does not settle.
    """
    xp = array_module(S)
    n = S.shape[0]
    with single_threaded_blas():
        if n > _FULL_EIGH_MAX and k < n // 4:
            found = block_krylov(lambda Q: to_host(S @ xp.asarray(Q)), n, k, max_dim=n // 2)
            if found is not None:
                vals, V = found
                return xp.asarray(vals), xp.asarray(V)
        vals, vecs = xp.linalg.eigh(S)
    return vals[::-1][:k], vecs[:, ::-1][:, :k]


def single_threaded_blas():
    """A context that keeps NumPy's BLAS on one thread (with threadpoolctl installed).

    The products here are thin (C x 8 blocks) or small, so one thread does them nearly as
    fast as several; but multi-threaded OpenBLAS waits for its threads by spinning, and on a
    machine with other work (or beside the decoding threads of ``pfv-onnx run``) each call
    then costs tens of times more. Without threadpoolctl nothing changes.
    """
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _BLAS_CONTROLLER = False
        else:
            # Finding the libraries reads files (~2 ms): once per process.
            _BLAS_CONTROLLER = ThreadpoolController()
    if _BLAS_CONTROLLER is False:
        return contextlib.nullcontext()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


_BLAS_CONTROLLER: Any = None


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


def fit(X: Any, k: int, *, peak: float | None = None, scratch: Scratch | None = None) -> tuple[PrincipalBasis, Any]:
    """Principal basis of rows ``X`` (M, C) and the sign-oriented projections (M, k) float32.

    Small problems use the C x C covariance or the M x M Gram matrix, whichever is smaller,
    and a full eigendecomposition. Larger ones find only the top k by block Krylov products
    with the centred rows (float32 products of the (M, C) rows with thin (C, b) blocks), which
    costs a few passes over X instead of forming the covariance and decomposing it.

    Rows whose largest magnitude (``peak``, computed when not given) is outside
    ``float_range``'s safe range are decomposed scaled by a power of two, and the result is
    scaled back: the directions do not depend on the scale, and the float32 products stay finite.

    ``scratch``: where the centred copy of NumPy rows X goes (see :func:`centred`), and their
    rescaled copy when they need one; with X and the scratch memory-mapped, the fit holds only
    row blocks and the (M, k) projections.
    """
    xp = array_module(X)
    check_k(k, X.shape[1], X.shape[0])
    f = float_range.factor(float_range.peak(X) if peak is None else peak)
    with single_threaded_blas() if xp is np else contextlib.nullcontext():
        if f == 1.0:
            return _fit(X, k, scratch)
        basis, P = _fit(_scaled(X, f, scratch), k, scratch)
    unscaled = PrincipalBasis(
        mean=basis.mean / f,
        directions=basis.directions,
        eigenvalues=basis.eigenvalues / (f * f),
        total_variance=basis.total_variance / (f * f),
        n_observations=basis.n_observations,
    )
    return unscaled, float_range.scale(P, 1.0 / f)


def _scaled(X: Any, f: float, scratch: Scratch | None) -> Any:
    """``float_range.scale(X, f)``; with a scratch (NumPy rows), written into it a block of
    rows at a time (the same values), so memory-mapped rows are never copied whole into RAM."""
    if scratch is None or array_module(X) is not np:
        return float_range.scale(X, f)
    out = scratch(X.shape, np.result_type(X.dtype, np.float32))
    for start in range(0, X.shape[0], _BLOCK_ROWS):
        out[start : start + _BLOCK_ROWS] = float_range.scale(X[start : start + _BLOCK_ROWS], f)
    return out


def _fit(X: Any, k: int, scratch: Scratch | None = None) -> tuple[PrincipalBasis, Any]:
    xp = array_module(X)
    m, c = X.shape
    Xc, mean = centred(X, scratch)
    # The float32 mean leaves a small residual mean; remove its contribution exactly.
    resid = column_mean(Xc)
    found = _fit_krylov(Xc, resid, k) if min(m, c) > _DENSE_MAX else None
    if found is not None:
        vals, V, trace = found
        vals, V = xp.asarray(vals), xp.asarray(V)
    elif m < c:
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
    # (Xc - 1 r^T) V without a copy of Xc.
    P = _project_rows(Xc, V.astype(xp.float32), (resid @ V).astype(xp.float32))
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


def _fit_krylov(Xc: Any, resid: Any, k: int):
    """Top k of the scatter of the exactly centred rows (Xc - 1 r^T), and its trace; or None."""
    xp = array_module(Xc)
    m, c = Xc.shape
    r = to_host(resid).astype(np.float64)

    segments = _row_segments(m)

    def apply(Q: np.ndarray) -> np.ndarray:
        Q32 = xp.asarray(Q, dtype=xp.float32)
        if xp is np:
            # (Q^T Xc^T) Xc over fixed segments of rows on the math threads, two row-major products
            # per block of rows with the thin block as their short side (nearly twice as fast as
            # Xc Q then Xc^T Y); the segments' float32 sums add up in float64 in a fixed order.
            Qt, block = np.ascontiguousarray(Q32.T), max(_SEGMENT_ROWS, _APPLY_BYTES // (4 * c))

            def segment(span: tuple[int, int]) -> np.ndarray:
                Zt32 = np.zeros((Qt.shape[0], c), dtype=np.float32)
                for start in range(span[0], span[1], block):
                    rows = Xc[start : min(start + block, span[1])]
                    Zt32 += (Qt @ rows.T) @ rows
                return Zt32

            Zt = np.zeros((Q32.shape[1], c), dtype=np.float64)
            for part in threads.run(segment, segments):
                Zt += part
            Z = Zt.T
        else:
            Z = to_host(Xc.T @ (Xc @ Q32)).astype(np.float64)
        return Z - m * np.outer(r, r @ Q)

    found = block_krylov(apply, c, k, max_dim=min(c, m - 1) // 2)
    if found is None:
        return None
    vals, V = found
    return vals, V, squared_norm(Xc) - m * float(r @ r)


def _row_segments(m: int, parts: int = _SEGMENTS) -> list[tuple[int, int]]:
    """Fixed spans of ``_SEGMENT_ROWS``-aligned rows, ``parts`` of them (fewer for few rows):
    the same whatever the number of threads."""
    blocks = -(-m // _SEGMENT_ROWS)
    return [(a * _SEGMENT_ROWS, min(b * _SEGMENT_ROWS, m)) for a, b in threads.spans(blocks, parts)]


def squared_norm(X: Any) -> float:
    """Sum of squares of a float32 array, accurate to float64 rounding of float32 partial sums."""
    xp = array_module(X)
    if xp is not np:
        return float((X.astype(xp.float64) ** 2).sum())
    flat = X.reshape(-1)
    step = 1 << 16
    return float(sum(float(part @ part) for part in (flat[i : i + step] for i in range(0, flat.size, step))))


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


def _project_rows(X: Any, V32: Any, offset32: Any) -> Any:
    """X @ V32 - offset32, on NumPy over fixed segments of rows on the math threads (a cut by
    the number of threads would change the bits: a one-row product takes another BLAS path)."""
    xp = array_module(X)
    if xp is not np:
        return X @ V32 - offset32
    out = np.empty((X.shape[0], V32.shape[1]), dtype=np.float32)

    def part(span: tuple[int, int]) -> None:
        a, b = span
        np.matmul(X[a:b], V32, out=out[a:b])
        out[a:b] -= offset32

    threads.run(part, _row_segments(X.shape[0], _PROJECT_SEGMENTS))
    return out


def project(X: Any, basis: PrincipalBasis) -> Any:
    """Projections (M, k) float32 of rows ``X`` onto a given basis (its mean removed);
    InputError when the basis has another number of channels."""
    xp = array_module(X)
    if X.shape[1] != basis.mean.shape[0]:
        raise InputError(
            f"the basis has {basis.mean.shape[0]} channels, the decomposed feature map {X.shape[1]}; "
            "use a basis fitted on this model's feature map"
        )
    mean = xp.asarray(basis.mean, dtype=xp.float32)
    V = xp.asarray(basis.directions, dtype=xp.float32)
    with single_threaded_blas() if xp is np else contextlib.nullcontext():
        return (X - mean) @ V


def components(P: Any, n: int, h: int, w: int) -> Any:
    """(N*h*w, k) projections as (N, k, h, w)."""
    xp = array_module(P)
    k = P.shape[1]
    return xp.ascontiguousarray(P.reshape(n, h, w, k).transpose(0, 3, 1, 2))
