"""``compare`` over sets of any size: the reference's colour space from a fitted basis.

With a basis fitted on the reference (``pfv-onnx fit``), nothing in a chunk of images depends
on the others: both models' maps are projected onto the fitted basis, weighted and coloured
with its peaks and colour statistics, and the per-image drift follows. Only per-image scalars
and the sufficient statistics of the set-level numbers (linear CKA, the channel evidence) are
kept, so memory does not grow with the number of images.

The candidate must have the reference's channels (a converted, quantised, fine-tuned copy):
rotating another architecture's own components needs its own PCA over the whole set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import compare as cmp
from . import pca
from .decompose import decompose
from .errors import InputError
from .predictions import class_scores
from .xp import to_host


class CrossStats:
    """Running sums for linear CKA and channel correlations of two row sets (M, C1), (M, C2)
    seen chunk by chunk, in float64. Rows are shifted by the first chunk's column means
    before summing (centring at the end is then exact algebra on well-scaled sums)."""

    def __init__(self) -> None:
        self.n = 0
        self.shift_x: np.ndarray | None = None
        self.shift_y: np.ndarray | None = None

    def add(self, X: Any, Y: Any) -> None:
        X, Y = to_host(X).astype(np.float64), to_host(Y).astype(np.float64)
        if X.shape[0] != Y.shape[0]:
            raise InputError(f"CKA needs the same observations for both maps, got {X.shape[0]} and {Y.shape[0]} rows")
        if self.shift_x is None:
            self.shift_x, self.shift_y = X.mean(axis=0), Y.mean(axis=0)
            self.sx, self.sy = np.zeros(X.shape[1]), np.zeros(Y.shape[1])
            self.xx, self.yy = np.zeros((X.shape[1],) * 2), np.zeros((Y.shape[1],) * 2)
            self.xy = np.zeros((X.shape[1], Y.shape[1]))
        X -= self.shift_x
        Y -= self.shift_y
        self.n += X.shape[0]
        self.sx += X.sum(axis=0)
        self.sy += Y.sum(axis=0)
        self.xx += X.T @ X
        self.yy += Y.T @ Y
        self.xy += X.T @ Y

    def centred(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Xc^T Xc, Yc^T Yc, Xc^T Yc of the column-centred rows seen so far."""
        mx, my = self.sx / self.n, self.sy / self.n
        return (
            self.xx - self.n * np.outer(mx, mx),
            self.yy - self.n * np.outer(my, my),
            self.xy - self.n * np.outer(mx, my),
        )

    def cka(self) -> float:
        """||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), as :func:`compare.linear_cka`."""
        xx, yy, xy = self.centred()
        den = float(np.linalg.norm(xx) * np.linalg.norm(yy))
        return float(np.linalg.norm(xy) ** 2) / den if den > 0 else float("nan")

    def correlation(self) -> np.ndarray:
        """(C1, C2) Pearson correlations of the columns; 0 where a column is constant."""
        xx, yy, xy = self.centred()
        sx, sy = np.sqrt(np.clip(np.diag(xx), 0, None)), np.sqrt(np.clip(np.diag(yy), 0, None))
        den = np.outer(sx, sy)
        return np.divide(xy, den, out=np.zeros_like(xy), where=den > 0)


@dataclass
class ChunkComparison:
    """One chunk's images (``start`` is the first one's index in the set)."""

    start: int
    drift: np.ndarray
    top1_reference: list[int | None]
    top1_candidate: list[int | None]
    reference_rgb: np.ndarray  # (n, H, W, k) in the fitted basis's colour space
    candidate_rgb: np.ndarray


class StreamedComparison:
    """Compare two ``PFV`` engines chunk by chunk in the reference's fitted colour space.

    ``add`` one chunk at a time (each batch preprocessed for its model), then ``finish`` for
    the set's :class:`compare.Comparison` (its ``*_rgb`` are empty: the pictures were the chunks')."""

    def __init__(self, reference: Any, candidate: Any, fitted: Any, *, channels: str = "auto") -> None:
        if channels not in ("auto", "same", "procrustes"):
            raise InputError(f"channels must be 'auto', 'same' or 'procrustes', got {channels!r}")
        if channels == "procrustes":
            raise InputError("--basis carries the reference's colour space to a copy with the same channels; leave --basis out to compare another architecture (Procrustes)")
        fitted.check_model(reference)
        self.reference, self.candidate, self.fitted, self.channels = reference, candidate, fitted, channels
        self.stats = CrossStats()
        self.drift: list[np.ndarray] = []
        self.top1_reference: list[int | None] = []
        self.top1_candidate: list[int | None] = []
        self.classes: tuple[int | None, int | None] = (None, None)
        self.grid: tuple[int, int] = (0, 0)
        self.candidate_grid: tuple[int, int] = (0, 0)
        self.candidate_maps: list[str] = []

    def add(self, reference_batch: np.ndarray, candidate_batch: np.ndarray | None = None, *, batch_size: int | None = None) -> ChunkComparison:
        candidate_batch = reference_batch if candidate_batch is None else candidate_batch
        n = len(reference_batch)
        if len(candidate_batch) != n or n == 0:
            raise InputError("compare needs the same images, at least one, for both models")
        step = batch_size or n
        ref_passes = [self.reference.forward(reference_batch[i : i + step]) for i in range(0, n, step)]
        cand_passes = [self.candidate.forward(candidate_batch[i : i + step]) for i in range(0, n, step)]
        fitted, hier, n_sigma = self.fitted, self.reference.hierarchical, self.reference.n_sigma
        res_r = self.reference.decompose(ref_passes, basis=fitted)
        cand_maps = self.candidate.maps(cand_passes[0].input_hw)
        channels = int(cand_passes[0].activations.shape[1])
        if channels != fitted.mean.shape[0]:
            raise InputError(
                f"the candidate's map {cand_maps[-1].name} has {channels} channels, the reference's basis {fitted.mean.shape[0]}: "
                "--basis needs a copy with the same channels; leave --basis out to compare another architecture"
            )
        res_c = decompose(
            cand_passes, cand_maps, k=fitted.k, hierarchical=hier, n_sigma=n_sigma, basis=fitted, scaling=fitted.scaling(hier)
        )  # fmt: skip
        self.grid = tuple(res_r.components.shape[2:])  # type: ignore[assignment]
        self.candidate_grid = tuple(res_c.components.shape[2:])  # type: ignore[assignment]
        self.candidate_maps = [m.name for m in cand_maps]
        drift = cmp.image_drift(res_r.components, cmp.resample(res_c.components, self.grid))
        E_r = cmp._gather([p.activations for p in ref_passes])
        E_c = cmp.resample(cmp._gather([p.activations for p in cand_passes]), self.grid)
        self.stats.add(pca.observations(E_r), pca.observations(E_c))
        outs_r = {name: np.concatenate([p.outputs[name] for p in ref_passes]) for name in ref_passes[0].outputs}
        outs_c = {name: np.concatenate([p.outputs[name] for p in cand_passes]) for name in cand_passes[0].outputs}
        probs_r, _ = class_scores(outs_r, n, self.reference.output_names)
        probs_c, _ = class_scores(outs_c, n, self.candidate.output_names)
        self.classes = (None if probs_r is None else int(probs_r.shape[1]), None if probs_c is None else int(probs_c.shape[1]))
        chunk = ChunkComparison(
            start=sum(d.size for d in self.drift), drift=drift, top1_reference=cmp._top1(probs_r, n), top1_candidate=cmp._top1(probs_c, n),
            reference_rgb=res_r.rgb, candidate_rgb=res_c.rgb,
        )  # fmt: skip
        self.drift.append(drift)
        self.top1_reference += chunk.top1_reference
        self.top1_candidate += chunk.top1_candidate
        return chunk

    def finish(self) -> cmp.Comparison:
        """The set's comparison; refuses (InputError) a candidate whose channels, over the
        whole set, are not the reference's, unless ``channels="same"`` was asked for."""
        if not self.drift:
            raise InputError("compare needs at least one image")
        xx, yy, _ = self.stats.centred()
        varying = np.flatnonzero((np.diag(xx) > 0) & (np.diag(yy) > 0))
        evidence = cmp.evidence_from_correlation(self.stats.correlation()[np.ix_(varying, varying)])
        if self.channels == "auto" and not evidence.same:
            raise InputError(f"the candidate's channels are not the reference's ({evidence.reason}); leave --basis out to compare by Procrustes, or give --channels same")
        empty = np.zeros((0, 0, 0, self.fitted.k), dtype=np.float32)
        return cmp.Comparison(
            drift=np.concatenate(self.drift), top1_reference=self.top1_reference, top1_candidate=self.top1_candidate,
            cka=self.stats.cka(), channels="same", evidence=evidence, reference_rgb=empty, candidate_rgb=empty,
            reference_maps=list(self.fitted.tensors), candidate_maps=self.candidate_maps, classes=self.classes,
            grid=self.grid, candidate_grid=self.candidate_grid,
        )  # fmt: skip
