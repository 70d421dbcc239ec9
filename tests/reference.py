"""An independent plain-NumPy restatement of PFV (shared/docs/PFV_METHOD.md), float64.

Written from the method's definition only, to check the engine against:

1. X = E_L as (N*h*w, C), centred by column means; principal directions from an SVD of
   the centred X; eigenvalues of the sample covariance X^T X / (M - 1); P = X V_k.
2. Signs: optional ``signs`` vector, or ``align_to`` (the engine's components: reference
   component i is flipped when its correlation with the engine's is negative), or
   ``use_sign_rule=True`` (the engine's documented rule: third moment of each projection
   positive; when it is exactly zero, the largest-magnitude entry of the direction
   positive). Applied right after the projection, before weighting and colour scaling.
3. Weighting: flat (P upsampled to the image times the sum of the upsampled channel sums
   of the earlier maps) or hierarchical (from the deepest earlier map to the earliest: P
   upsampled to its size times S_l / max(S_l) over the whole batch), then to the image.
4. Colour scaling over the whole (N, k, H, W) array: z-score, clip to +-n_sigma, min-max
   to [0, 1]; a constant array gives zeros.

The bilinear resize uses half-pixel centres with edge clamping (PyTorch
``interpolate(mode="bilinear", align_corners=False)``), written here as two small
interpolation matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Reference:
    rgb: np.ndarray  # (N, H, W, k) float64 in [0, 1]
    components: np.ndarray  # (N, k, h, w) float64, signs applied
    eigenvalues: np.ndarray  # (k,) leading eigenvalues of the sample covariance
    explained_variance_ratio: np.ndarray  # (k,)
    directions: np.ndarray  # (C, k) principal directions, signs applied
    signs: np.ndarray  # (k,) the +-1 applied to the SVD's directions
    all_eigenvalues: np.ndarray  # every eigenvalue of the sample covariance, descending
    weighted: np.ndarray  # (N, k, H, W) before colour scaling


# ---------------------------------------------------------------------------
# bilinear resize, half-pixel centres
# ---------------------------------------------------------------------------


def interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix R with out = R @ in along one axis (align_corners=False)."""
    if n_in < 1 or n_out < 1:
        raise ValueError("empty axis")
    r = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for o in range(n_out):
        src = (o + 0.5) * scale - 0.5
        if src < 0.0:
            src = 0.0
        i0 = int(np.floor(src))
        if i0 > n_in - 1:
            i0 = n_in - 1
        i1 = i0 + 1 if i0 < n_in - 1 else i0
        frac = src - i0
        r[o, i0] += 1.0 - frac
        r[o, i1] += frac
    return r


def resize(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of the last two axes of ``x`` to ``hw``."""
    x = np.asarray(x, dtype=np.float64)
    rh = interp_matrix(x.shape[-2], hw[0])
    rw = interp_matrix(x.shape[-1], hw[1])
    return np.einsum("oh,...hw,pw->...op", rh, x, rw)


# ---------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------


def colour_scale(x: np.ndarray, n_sigma: float = 1.0) -> np.ndarray:
    """z-score over the whole array, clip to +-n_sigma, min-max to [0, 1]."""
    x = np.asarray(x, dtype=np.float64)
    std = x.std()
    if std == 0.0:
        return np.zeros_like(x)
    z = np.clip((x - x.mean()) / std, -n_sigma, n_sigma)
    lo, hi = z.min(), z.max()
    if hi == lo:
        return np.zeros_like(x)
    return (z - lo) / (hi - lo)


def principal(e_l: np.ndarray, k: int):
    """(centred X, V (C, k) from the SVD, all eigenvalues descending, total variance)."""
    e = np.asarray(e_l, dtype=np.float64)
    n, c, h, w = e.shape
    m = n * h * w
    if k > c or k > m:
        raise ValueError(f"k={k} exceeds channels ({c}) or observations ({m})")
    x = e.transpose(0, 2, 3, 1).reshape(m, c)
    xc = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    denom = max(m - 1, 1)
    eig = s**2 / denom
    total = float((xc**2).sum() / denom)  # trace of the sample covariance
    return xc, vt[:k].T, eig, total


def sign_rule(p: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The engine's documented rule: (M, k) projections, (C, k) directions -> signs (k,)."""
    signs = np.ones(p.shape[1])
    for i in range(p.shape[1]):
        m3 = float(np.sum(p[:, i] ** 3))
        if m3 < 0:
            signs[i] = -1.0
        elif m3 == 0.0:
            j = int(np.argmax(np.abs(v[:, i])))
            signs[i] = -1.0 if v[j, i] < 0 else 1.0
    return signs


def weight(p: np.ndarray, weights: list[np.ndarray], image_hw: tuple[int, int],
           hierarchical: bool = False) -> np.ndarray:
    """Activation-weighted upsampling of P (N, k, h, w) by the earlier maps (earliest first)."""
    sums = [np.asarray(wl, dtype=np.float64).sum(axis=1) for wl in weights]  # (N, H_l, W_l)
    if not sums:
        return resize(p, image_hw)
    if hierarchical:
        out = p
        for s in reversed(sums):
            out = resize(out, s.shape[-2:]) * (s / s.max())[:, None]
        return resize(out, image_hw)
    a = sum(resize(s, image_hw) for s in sums)
    return resize(p, image_hw) * a[:, None]


def pfv(decomposed: np.ndarray, weights: list[np.ndarray] | None = None,
        image_hw: tuple[int, int] | None = None, *, k: int = 3, hierarchical: bool = False,
        n_sigma: float = 1.0, signs=None, align_to: np.ndarray | None = None,
        use_sign_rule: bool = False) -> Reference:
    """PFV of float NCHW maps: ``decomposed`` = E_L, ``weights`` = earlier maps, earliest first."""
    weights = list(weights or [])
    e = np.asarray(decomposed, dtype=np.float64)
    n, c, h, w = e.shape
    if image_hw is None:
        image_hw = (h, w)
    xc, v, eig, total = principal(e, k)
    p = xc @ v  # (M, k)
    if signs is not None:
        sg = np.asarray(signs, dtype=np.float64).reshape(k)
    elif align_to is not None:
        a = np.asarray(align_to, dtype=np.float64).transpose(0, 2, 3, 1).reshape(-1, k)
        sg = np.where(np.sum(a * p, axis=0) < 0, -1.0, 1.0)
    elif use_sign_rule:
        sg = sign_rule(p, v)
    else:
        sg = np.ones(k)
    p = p * sg
    v = v * sg
    comps = p.reshape(n, h, w, k).transpose(0, 3, 1, 2)
    weighted = weight(comps, weights, image_hw, hierarchical)
    rgb = colour_scale(weighted, n_sigma).transpose(0, 2, 3, 1)
    lead = eig[:k]
    if len(lead) < k:  # fewer singular values than k (M < C): the rest are zero
        lead = np.concatenate([lead, np.zeros(k - len(lead))])
    evr = lead / total if total > 0 else np.zeros(k)
    return Reference(rgb=rgb, components=comps, eigenvalues=lead, explained_variance_ratio=evr,
                     directions=v, signs=sg, all_eigenvalues=eig, weighted=weighted)
