"""Weighting maps whose channel sums cancel to rounding noise.

PFV weights the upsampling by each weighting map's channel sum. A map whose channels are
normalised to a constant sum (a LayerNorm over channels with a uniform scale, as every stage
output of a post-norm transformer such as Swin-V2 with untrained weights) has a channel sum of
float32 rounding noise: large positive and negative activations cancel, and what is left
differs from one export of the network to another. Such a sum carries no information about
where the network responds, so it must not weight anything.

Cancellation is measured, not guessed from the graph: one forward pass at batch 1 on a fixed
pseudo-random input gives each map's ratio |sum_c E| / sum_c |E| (summed over positions). It
is a property of the network, not of the images: a channel sum that is constant by
construction cancels on any input. The forward pass is made only for maps that follow a
normalisation over one axis (a LayerNorm, GroupNorm, ...); any other map keeps its channel sum unmeasured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx

from .candidates import probe_dims
from .errors import InputError
from .feature_maps import FeatureMap, Layout
from .graph_index import GraphIndex
from .model_io import FLOAT_TYPES, InputSpec, with_pinned_input

#: Below this ratio |sum_c E| / sum_c |E| a channel sum is rounding noise. Measured on the
#: random-weight fixtures (tests/fixtures/architectures, random images): Swin-V2's stage
#: outputs 1.4e-8 to 2.2e-8 (float32's resolution is 1.2e-7); the smallest real channel sum,
#: ConvNeXt's first stage (layer scale 1e-6 at initialisation), 5.2e-4; every other CNN and
#: transformer map 4e-3 or more.
CANCELLED = 1e-5

# Ops that normalise over one axis (possibly the channels): a LayerNorm, or a ReduceMean over
# one axis as in a LayerNorm written out in primitive ops.
_NORMALISING = {
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "MeanVarianceNormalization",
    "SkipLayerNormalization",
}  # fmt: skip

#: (pinned model with weights, tensor names, input dims, batch) -> tensor values
Probe = Callable[..., dict[str, Any]]


def follows_normalisation(g: GraphIndex, name: str) -> bool:
    """Whether a normalisation over one axis lies anywhere above tensor ``name``."""
    stack, seen = [name], set()
    while stack:
        t = stack.pop()
        if t in seen or t in g.constants:
            continue
        seen.add(t)
        node = g.producer_node(t)
        if node is None:
            continue
        if node.op_type in _NORMALISING or (node.op_type == "ReduceMean" and _one_axis(g, node)):
            return True
        stack.extend(x for x in node.input if x)
    return False


def _one_axis(g: GraphIndex, node: onnx.NodeProto) -> bool:
    axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = g.constant_value(node.input[1])
        axes = None if value is None else list(np.ravel(value))
    return axes is not None and len(axes) == 1


def ratios(probe: Probe, pinned: onnx.ModelProto, maps: Sequence[FeatureMap], dims: tuple[int, ...], integer_input: bool) -> dict[str, float]:
    """|sum_c E| / sum_c |E| of each map (summed over positions) on a fixed pseudo-random input."""
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=dims) if integer_input else rng.standard_normal(dims)
    values = probe(pinned, [fm.name for fm in maps], dims, batch)
    out = {}
    for fm in maps:
        if fm.name not in values:
            continue
        E = np.asarray(values[fm.name], dtype=np.float64)
        axis = (2 if fm.tokens.token_axis == 1 else 1) if fm.tokens is not None else fm.layout.channel_axis
        magnitude = float(np.abs(E).sum())
        if E.ndim > axis and magnitude > 0 and np.isfinite(magnitude):
            out[fm.name] = float(np.abs(E.sum(axis=axis)).sum()) / magnitude
    return out


def words(fm: FeatureMap, ratio: float) -> str:
    return (
        f"the channel sum of {fm.name!r} ({fm.hw[0]}x{fm.hw[1]}) cancels to float32 rounding noise "
        f"(|sum over channels| is {ratio:.0e} of the summed magnitudes on a probe input: its channels are "
        "normalised to a constant sum, as in a post-norm transformer with untrained weights)"
    )


def drop_cancelled(
    model: onnx.ModelProto,
    spec: InputSpec,
    size: tuple[int, int],
    input_layout: Layout,
    g: GraphIndex,
    weighting: list[FeatureMap],
    probe: Probe,
    *,
    named: bool,
) -> tuple[list[FeatureMap], list[str]]:
    """The weighting maps without those whose channel sums cancel, and a warning for each one
    dropped. Maps named by the caller are refused instead (one line)."""
    suspects = [fm for fm in weighting if fm.dtype in ("float", "float16", "double", "bfloat16") and follows_normalisation(g, fm.name)]
    if not suspects:
        return weighting, []
    dims = probe_dims(spec, size, input_layout)
    integer = spec.elem_type not in FLOAT_TYPES
    found = ratios(probe, with_pinned_input(model, spec, dims, weights=True), suspects, dims, integer)
    cancelled = [fm for fm in suspects if found.get(fm.name, 1.0) < CANCELLED]
    if cancelled and named:
        fm = cancelled[0]
        raise InputError(f"weight_layers: {words(fm, found[fm.name])}, so it cannot weight the upsampling; name other maps, or none")
    drop = {fm.name for fm in cancelled}
    messages = [f"weighting map dropped: {words(fm, found[fm.name])}, so it cannot weight the upsampling" for fm in cancelled]
    return [fm for fm in weighting if fm.name not in drop], messages
