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
class FeatureMap:
    """One spatial activation tensor of the model.

    ``shape`` is the tensor's own shape (in ``layout``) at the analysed input size,
    with the batch dimension as 1. ``stride`` is input height / map height.
    """

    name: str
    op: str
    shape: tuple[int, int, int, int]
    layout: Layout
    dtype: str
    role: Role = Role.CANDIDATE
    reason: str = ""

    @property
    def channels(self) -> int:
        return self.shape[self.layout.channel_axis]

    @property
    def hw(self) -> tuple[int, int]:
        a, b = self.layout.spatial_axes
        return (self.shape[a], self.shape[b])
