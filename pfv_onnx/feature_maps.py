"""Frozen records describing the tensors PFV taps, shared by every stage."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Layout(str, enum.Enum):
    """Memory layout of a 4-D activation tensor."""

    NCHW = "NCHW"
    NHWC = "NHWC"

    @property
    def channel_axis(self) -> int:
        return 1 if self is Layout.NCHW else 3

    @property
    def spatial_axes(self) -> tuple[int, int]:
        return (2, 3) if self is Layout.NCHW else (1, 2)


class Role(str, enum.Enum):
    DECOMPOSED = "decomposed"  # E_L, the map the principal components come from
    WEIGHTING = "weighting"  # an earlier E_l whose channel sum weights the upsampling
    CANDIDATE = "candidate"  # a spatial map the automatic choice did not take


@dataclass(frozen=True)
class TokenGrid:
    """How a token tensor, (N, T, C) or (N, C, T), holds its h*w patch tokens (row-major)."""

    shape: tuple[int, int, int]  # the tensor's own shape at the analysed input size
    token_axis: int  # 1 for (N, T, C), 2 for (N, C, T)
    before: int  # special tokens (class, register) before the patch tokens
    after: int  # special tokens after them
    origin: str = ""  # a rank-4 map with the same grid, whose shape gives h and w at any input size
    origin_axes: tuple[int, int] = (2, 3)  # that map's spatial axes
    # The tensor is a block's attention probabilities (N, heads, T_query, T_key), viewed as the
    # attention each token receives (mean over heads and queries): (N, 1, T), token_axis 2.
    attention: bool = False


@dataclass(frozen=True)
class FeatureMap:
    """One spatial activation tensor of the model.

    ``shape`` is the map's shape in ``layout`` at the analysed input size (the batch dimension as
    analysed): the tensor's own shape, or for a token tensor (``tokens`` set) the (N, h, w, C) or
    (N, C, h, w) view of its patch tokens that the rewritten graph outputs. ``grid_from`` says how
    the grid was found when a Reshape or Transpose made it (token sequences, re-partitioned maps).
    """

    name: str
    op: str
    shape: tuple[int, int, int, int]
    layout: Layout
    dtype: str
    role: Role = Role.CANDIDATE
    reason: str = ""
    tokens: TokenGrid | None = None
    grid_from: str = ""

    @property
    def channels(self) -> int:
        return self.shape[self.layout.channel_axis]

    @property
    def hw(self) -> tuple[int, int]:
        a, b = self.layout.spatial_axes
        return (self.shape[a], self.shape[b])
