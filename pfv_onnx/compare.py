"""Did a converted, quantised or fine-tuned copy of a model change what it looks at?

Both models' PFVs go into one space, the reference's principal basis:

- **same channels** (a quantised, fp16, re-exported or fine-tuned copy): the candidate's E_L
  is projected onto the reference's basis. Decided from evidence, not from equal channel
  counts: each candidate channel must correlate best, over the images, with the reference
  channel of the same index (``channel_evidence``).
- **different channels** (another architecture): the candidate's own components are rotated
  onto the reference's by orthogonal Procrustes over the same images, on the reference's grid.

Per image, ``drift`` is 1 - the Pearson correlation of the two (k, h, w) component maps in
that space, clipped to [0, 1]; over the set, linear CKA compares the two E_L. The functions
below the ``compare`` entry point are pure (NumPy or CuPy arrays in, NumPy results out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import float_range, pca, weighting
from .errors import InputError
from .predictions import class_scores
from .xp import array_module, to_host

# Same channels when at least this share of the reference's varying channels correlate best
# with the candidate channel of the same index (random channel pairs: about 1 / C).
SAME_CHANNEL_SHARE = 0.5


@dataclass(frozen=True)
class ChannelEvidence:
    """How well the candidate's channels match the reference's one to one, over the images."""

    same: bool
    matched_share: float  # share of varying reference channels whose best-correlated candidate channel has the same index
    median_correlation: float  # median over those channels of corr(reference c, candidate c)
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"same": self.same, "matched_share": self.matched_share, "median_correlation": self.median_correlation, "reason": self.reason}


@dataclass
class Comparison:
    """Everything ``compare`` found, per image (index order of the batch) and over the set."""

    drift: np.ndarray  # (N,) float64 in [0, 1]
    top1_reference: list[int | None]
    top1_candidate: list[int | None]
    cka: float
    channels: str  # "same" or "procrustes"
    evidence: ChannelEvidence
    reference_rgb: np.ndarray  # (N, H, W, k) float32 in [0, 1], the reference's colour space
    candidate_rgb: np.ndarray  # (N, H', W', k) float32 in [0, 1], the same colour space
    reference_maps: list[str] = field(default_factory=list)  # tensor names, earliest first; the last is E_L
    candidate_maps: list[str] = field(default_factory=list)
    classes: tuple[int | None, int | None] = (None, None)  # each model's number of classes (None: no class scores)
    grid: tuple[int, int] = (0, 0)  # the common (h, w) of the component maps
    candidate_grid: tuple[int, int] = (0, 0)

    def top1_agreement(self) -> float | None:
        pairs = [(a, b) for a, b in zip(self.top1_reference, self.top1_candidate) if a is not None and b is not None]
        return float(np.mean([a == b for a, b in pairs])) if pairs else None

    def compared_drift(self, quantile: float | None = None) -> float:
        """The drift a gate compares: the largest, or the given quantile (0..1) over the images."""
        return float(self.drift.max() if quantile is None else np.quantile(self.drift, quantile))

    def summary(self) -> dict[str, Any]:
        return {
            "images": int(self.drift.size),
            "drift_mean": float(self.drift.mean()),
            "drift_median": float(np.median(self.drift)),
            "drift_max": float(self.drift.max()),
            "top1_agreement": self.top1_agreement(),
            "cka": self.cka,
            "channels": self.channels,
            "channel_evidence": self.evidence.to_dict(),
            "grid": list(self.grid),
            "candidate_grid": list(self.candidate_grid),
            "reference_maps": self.reference_maps,
            "candidate_maps": self.candidate_maps,
        }


def compare(
    reference: Any,
    candidate: Any,
    reference_batch: np.ndarray,
    candidate_batch: np.ndarray | None = None,
    *,
    k: int | None = None,
    batch_size: int | None = None,
    channels: str = "auto",
) -> Comparison:
    """Compare two ``PFV`` engines on the same images (each batch preprocessed for its model;
    ``candidate_batch`` defaults to ``reference_batch``). ``channels``: ``"auto"`` (from the
    evidence), ``"same"`` or ``"procrustes"``. The reference's ``k``, weighting variant and
    ``n_sigma`` apply to both."""
    candidate_batch = reference_batch if candidate_batch is None else candidate_batch
    if len(candidate_batch) != len(reference_batch) or len(reference_batch) == 0:
        raise InputError("compare needs the same images, at least one, for both models")
    if channels not in ("auto", "same", "procrustes"):
        raise InputError(f"channels must be 'auto', 'same' or 'procrustes', got {channels!r}")
    k = reference.k if k is None else k
    n = len(reference_batch)
    step = batch_size or n
    ref_passes = [reference.forward(reference_batch[i : i + step]) for i in range(0, n, step)]
    cand_passes = [candidate.forward(candidate_batch[i : i + step]) for i in range(0, n, step)]
    ref_res = reference.decompose(ref_passes, k=k)
    E_r = _gather([p.activations for p in ref_passes])
    E_c = _gather([p.activations for p in cand_passes])
    grid = tuple(E_r.shape[2:])
    E_c_grid = resample(E_c, grid)  # type: ignore[arg-type]
    evidence = channel_evidence(E_r, E_c_grid)
    use_same = evidence.same if channels == "auto" else channels == "same"
    if use_same and E_c.shape[1] != E_r.shape[1]:
        raise InputError(f"the models' maps have {E_r.shape[1]} and {E_c.shape[1]} channels: they cannot be the same channels")
    ref_comps = ref_res.components
    if use_same:
        # both projected the same way onto the reference's basis (identical maps give drift 0 exactly)
        ref_comps = projected(E_r, ref_res.basis)
        cand_comps = projected(E_c, ref_res.basis)  # on the candidate's own grid
    else:
        own = candidate.decompose(cand_passes, k=k).components
        cand_comps = rotate(own, procrustes(resample(own, grid), ref_comps))  # type: ignore[arg-type]
    drift = image_drift(ref_comps, resample(cand_comps, grid))  # type: ignore[arg-type]
    ref_rgb, cand_rgb = shared_colours(
        ref_comps,
        [_gather([p.weights[i] for p in ref_passes]) for i in range(len(ref_passes[0].weights))],
        ref_passes[0].input_hw,
        cand_comps,
        [_gather([p.weights[i] for p in cand_passes]) for i in range(len(cand_passes[0].weights))],
        cand_passes[0].input_hw,
        hierarchical=reference.hierarchical,
        n_sigma=reference.n_sigma,
    )
    outs_r = {name: np.concatenate([p.outputs[name] for p in ref_passes]) for name in ref_passes[0].outputs}
    outs_c = {name: np.concatenate([p.outputs[name] for p in cand_passes]) for name in cand_passes[0].outputs}
    probs_r, _ = class_scores(outs_r, n, reference.output_names)
    probs_c, _ = class_scores(outs_c, n, candidate.output_names)
    return Comparison(
        drift=drift,
        top1_reference=_top1(probs_r, n),
        top1_candidate=_top1(probs_c, n),
        classes=(None if probs_r is None else int(probs_r.shape[1]), None if probs_c is None else int(probs_c.shape[1])),
        cka=linear_cka(pca.observations(E_r), pca.observations(E_c_grid)),
        channels="same" if use_same else "procrustes",
        evidence=evidence,
        reference_rgb=ref_rgb,
        candidate_rgb=cand_rgb,
        reference_maps=list(ref_res.feature_maps),
        candidate_maps=candidate.feature_maps(cand_passes[0].input_hw),
        grid=grid,  # type: ignore[arg-type]
        candidate_grid=tuple(E_c.shape[2:]),  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- pure functions


def resample(maps: Any, grid: tuple[int, int]) -> Any:
    """(N, c, h, w) maps on another (h, w) grid (bilinear, half-pixel centres); unchanged when equal."""
    return maps if tuple(maps.shape[2:]) == tuple(grid) else weighting.resize_bilinear(maps, grid)


def projected(E: Any, basis: pca.PrincipalBasis) -> Any:
    """(N, C, h, w) maps projected onto a principal basis: (N, k, h, w) float32 components."""
    n, _, h, w = E.shape
    return pca.components(pca.project(pca.observations(E), basis), n, h, w)


def channel_evidence(E_ref: Any, E_cand: Any) -> ChannelEvidence:
    """Whether the candidate's channels are the reference's, from their correlations over the
    images: (N, C, h, w) maps on one grid. Channels that do not vary in either model are left out."""
    c_r, c_c = int(E_ref.shape[1]), int(E_cand.shape[1])
    if c_r != c_c:
        return ChannelEvidence(False, 0.0, float("nan"), f"{c_r} and {c_c} channels")
    X = _standardised(pca.observations(E_ref))
    Y = _standardised(pca.observations(E_cand))
    varying = np.flatnonzero((np.abs(X).sum(axis=0) > 0) & (np.abs(Y).sum(axis=0) > 0))
    corr = (X[:, varying].T @ Y[:, varying]) / X.shape[0]  # (reference, candidate) Pearson correlations
    return evidence_from_correlation(corr)


def evidence_from_correlation(corr: np.ndarray) -> ChannelEvidence:
    """The channel evidence from the (reference, candidate) Pearson correlations of the
    channels that vary in both models (same indices on both axes)."""
    if corr.size == 0:
        return ChannelEvidence(False, 0.0, float("nan"), "no channel varies over the images")
    diagonal = np.diag(corr)
    matched = float(np.mean(np.argmax(corr, axis=1) == np.arange(corr.shape[0])))
    median = float(np.median(diagonal))
    same = matched >= SAME_CHANNEL_SHARE
    reason = (
        f"{matched:.0%} of {corr.shape[0]} varying channels correlate best with the candidate channel of the same index "
        f"(median correlation {median:.3f}); {'at least' if same else 'under'} {SAME_CHANNEL_SHARE:.0%} means the same channels"
    )
    return ChannelEvidence(same, matched, median, reason)


def _standardised(X: Any) -> np.ndarray:
    """Host float64 columns with mean 0 and (population) std 1; constant columns all zero."""
    X = _host64(X)
    X -= X.mean(axis=0)
    std = X.std(axis=0)
    return np.divide(X, std, out=np.zeros_like(X), where=std > 0)


def procrustes(source: Any, target: Any) -> np.ndarray:
    """The orthogonal (k, k) rotation R that minimises ||source R - target|| over all images and
    positions; both (N, k, h, w) on the same grid (k may differ: R is then (k_s, k_t), orthonormal columns)."""
    S, T = _host64(pca.observations(source)), _host64(pca.observations(target))
    U, _, Vt = np.linalg.svd(S.T @ T, full_matrices=False)
    return U @ Vt


def rotate(components: Any, rotation: np.ndarray) -> Any:
    """(N, k, h, w) components times a (k, k') rotation: (N, k', h, w), float32."""
    xp = array_module(components)
    n, _, h, w = components.shape
    P = pca.observations(components) @ xp.asarray(rotation, dtype=xp.float32)
    return pca.components(P, n, h, w)


def image_drift(reference: Any, candidate: Any) -> np.ndarray:
    """Per image: 1 - Pearson correlation of the (k, h, w) component maps, clipped to [0, 1]
    (1 when either map is constant: nothing in common can be shown)."""
    a = _host64(reference).reshape(len(reference), -1)
    b = _host64(candidate).reshape(len(candidate), -1)
    if a.shape != b.shape:
        raise InputError(f"component maps of shapes {a.shape} and {b.shape} cannot be compared; resample them to one grid")
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    r = np.divide((a * b).sum(axis=1), norms, out=np.zeros(len(a)), where=norms > 0)
    r[(norms > 0) & np.all(a == b, axis=1)] = 1.0  # equal maps: exactly 0, not a rounding of it
    return np.clip(1.0 - r, 0.0, 1.0)


def linear_cka(X: Any, Y: Any) -> float:
    """Linear CKA of two sets of rows (M, C1) and (M, C2) for the same M observations:
    ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred Xc, Yc (Kornblith et al. 2019)."""
    if X.shape[0] != Y.shape[0]:
        raise InputError(f"CKA needs the same observations for both maps, got {X.shape[0]} and {Y.shape[0]} rows")
    Xc = _host64(X)
    Xc -= Xc.mean(axis=0)
    Yc = _host64(Y)
    Yc -= Yc.mean(axis=0)
    if Xc.shape[0] <= max(Xc.shape[1], Yc.shape[1]):  # fewer rows than channels: Gram matrices
        Kx, Ky = Xc @ Xc.T, Yc @ Yc.T
        num, den = float((Kx * Ky).sum()), float(np.linalg.norm(Kx) * np.linalg.norm(Ky))
    else:
        num = float(np.linalg.norm(Yc.T @ Xc) ** 2)
        den = float(np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
    return num / den if den > 0 else float("nan")


def _host64(X: Any) -> np.ndarray:
    """A host float64 copy, multiplied by a power of two when its magnitudes leave the safe
    range (every use here is scale-free)."""
    X = to_host(X).astype(np.float64)
    X *= float_range.factor(float(np.abs(X).max()) if X.size else 0.0)
    return X


def shared_colours(
    ref_components: Any,
    ref_weights: Sequence[Any],
    ref_hw: tuple[int, int],
    cand_components: Any,
    cand_weights: Sequence[Any],
    cand_hw: tuple[int, int],
    *,
    hierarchical: bool,
    n_sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Both models' maps (N, H, W, k) in [0, 1] in the reference's colour space: each weighted
    by its own maps, both scaled with the mean and std of the reference's weighted components.

    The flat weighting's maps are divided by the mean of their sum over the images first, so
    both weighted maps keep the components' units whatever the two models' weighting maps
    are (their scale, their number, or none)."""

    def weighted(P: Any, weights: Sequence[Any], hw: tuple[int, int]) -> Any:
        if hierarchical:
            return weighting.hierarchical(P, weights, hw)
        total = sum(float(S.mean(dtype=array_module(S).float64)) for S in weights)
        if weights and total > 0:
            f = float_range.factor(total)  # the sum of means may be out of range; its power of two first
            norm = 1.0 / (total * f)
            weights = [float_range.scale(S, f) * array_module(S).float32(norm) for S in weights]
        return weighting.flat(P, weights, hw)

    mapped_r = weighted(ref_components, ref_weights, ref_hw)
    mapped_c = weighted(cand_components, cand_weights, cand_hw)
    # one power of two for both, so the candidate is scaled exactly as the reference
    f = float_range.factor(max(float_range.peak(mapped_r), 1e-300))
    host_r = to_host(mapped_r).astype(np.float64) * f
    mean, std = float(host_r.mean()), float(host_r.std())
    out = []
    for mapped in (mapped_r, mapped_c):
        scaled = float_range.scale(mapped, f) if f != 1.0 else mapped
        rgb = weighting.scale_colours(scaled, n_sigma, mean=mean, std=std)
        out.append(np.ascontiguousarray(to_host(rgb).transpose(0, 2, 3, 1), dtype=np.float32))
    return out[0], out[1]


def _top1(probs: np.ndarray | None, n: int) -> list[int | None]:
    return [None] * n if probs is None else [int(c) for c in probs.argmax(axis=1)]


def _gather(arrays: list[Any]) -> Any:
    return arrays[0] if len(arrays) == 1 else array_module(arrays[0]).concatenate(arrays, axis=0)
