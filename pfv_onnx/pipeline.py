"""PFV for library users: model file -> surgery -> runtime -> PFV math -> result."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .feature_maps import FeatureMap, Layout


@dataclass
class ForwardPass:
    """Feature maps and original outputs of one chunk of images.

    ``decomposed``: E_L as (n, C, h, w) float32 array of the backend (NumPy or CuPy).
    ``weights``: channel sums S_l as (n, 1, H_l, W_l) float32 arrays, earliest first.
    ``outputs``: the model's original outputs, NumPy arrays, by output name.
    """

    decomposed: Any
    weights: list[Any]
    outputs: dict[str, np.ndarray]
    input_hw: tuple[int, int]

    @property
    def n(self) -> int:
        return int(self.decomposed.shape[0])


@dataclass
class PFVResult:
    """Everything PFV computed for one group of images (one decomposition)."""

    rgb: np.ndarray  # (N, H, W, k) float32 in [0, 1]; k = 3 gives RGB
    components: np.ndarray  # (N, k, h, w) float32: sign-fixed projections P, before weighting
    eigenvalues: np.ndarray  # (k,) float64: leading eigenvalues of the sample covariance of E_L
    explained_variance_ratio: np.ndarray  # (k,) float64: eigenvalues / total variance
    feature_maps: list[str]  # tensor names, earliest first; the last one is E_L
    outputs: dict[str, np.ndarray]  # the model's original outputs, unchanged
    basis: Any = None  # the principal basis used (see pca.PrincipalBasis)
    maps: list[FeatureMap] = field(default_factory=list)  # records of the tensors used
