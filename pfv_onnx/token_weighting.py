"""The weighting of a single-resolution token model (a plain ViT): no layer works at a grid finer
than its patch grid, so the CNN rule (finer stage outputs) gives nothing; the rule here was
chosen by measurement on the trained token models (docs/TOKEN_MODELS.md)."""

from __future__ import annotations

from dataclasses import replace

import onnx

from .candidates import MapGraph
from .feature_maps import FeatureMap, Layout, Role
from .graph_index import attr, depths


def _over_last_axis(softmax: onnx.NodeProto, opset: int) -> bool:
    """Whether a Softmax of a 4-D tensor normalises each row of its last axis on its own.

    Before opset 13 the axis defaults to 1 and the input is flattened to 2-D from the axis:
    only an axis of the last dimension then leaves the rows (each query's probabilities) apart.
    """
    return attr(softmax, "axis", -1 if opset >= 13 else 1) % 4 == 3


def single_resolution_token_weighting(m: MapGraph, decomposed: FeatureMap) -> list[FeatureMap]:
    """Weighting maps of a token model whose network has no grid finer than its patch grid (a plain ViT).

    The attention each patch token receives in the last attention block above E_L (its Softmax
    probabilities (N, heads, T, T), averaged over heads and queries, on E_L's grid): of the
    weightings a plain ViT has, the only one at least as good as none on every measure with
    both trained token models (docs/TOKEN_MODELS.md). No weighting where the graph has no such Softmax.
    """
    from .map_choice import MIXING

    t = decomposed.tokens
    assert t is not None
    g = m.g
    total = t.shape[t.token_axis]
    above: set[str] = set()
    stack = [decomposed.name]
    while stack:
        node = g.producer_node(stack.pop())
        for x in node.input if node is not None else ():
            if x and x not in above and x in m.reach:
                above.add(x)
                stack.append(x)
    found = []
    for name in above:
        node = g.producer_node(name)
        shape = g.shape(name)
        if node is None or node.op_type != "Softmax" or shape is None or len(shape) != 4 or shape[2:] != (total, total):
            continue
        if _over_last_axis(node, g.opset) and any(g.nodes[ci].op_type in MIXING for ci in g.consumers.get(name, [])):
            found.append(name)
    if not found:
        return []
    depth = depths(g)
    name = max(found, key=lambda x: depth.get(x, 0))
    n = decomposed.shape[0]
    h, w = decomposed.hw
    received = replace(t, shape=(n, 1, total), token_axis=2, attention=True)
    dtype = onnx.TensorProto.DataType.Name(g.info[name].elem_type).lower()
    reason = (f"attention each patch token receives in the last attention block ({g.producer_node(name).op_type} "  # type: ignore[union-attr]
              "probabilities averaged over heads and queries): the measured choice for single-resolution token models")
    return [FeatureMap(name, "Softmax", (n, 1, h, w), Layout.NCHW, dtype, Role.WEIGHTING, reason, received,
                       grid_from=f"the key axis of {list(shape)} attention probabilities, on E_L's {h}x{w} grid")]
