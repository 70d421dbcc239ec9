"""A read-only index over an ONNX graph with its input pinned: nodes in topological order,
producer and consumers of each tensor, tensor types and shapes, and the constant tensors.

Why not onnx-graphsurgeon's ``Graph``, which has producers, consumers and ``toposort``: the map
analysis indexes everything by a node's *position* in one topological order (the cut test
compares first and last uses, depths are longest paths), and by the shapes that shape inference
gives at one pinned input size; over gs nodes the same position and shape maps would have to be
built beside the graph. So the analysis indexes the protobuf it already has, and the rewrite
(``rewrite.py``) edits with onnx-graphsurgeon.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from .errors import ModelError
from .model_io import TensorInfo

# Ops that move or relabel data without computing.
PLUMBING = {"Transpose", "Cast", "Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "QuantizeLinear"}


@dataclass
class GraphIndex:
    nodes: list[onnx.NodeProto]  # topologically sorted
    producer: dict[str, int]  # tensor -> position of the node that makes it
    consumers: dict[str, list[int]]  # tensor -> positions of the nodes that read it
    info: dict[str, TensorInfo]
    constants: set[str]  # initializers, Constant outputs and plumbing of constants
    outputs: list[str]
    initializers: dict[str, onnx.TensorProto]
    opset: int  # of the default (ai.onnx) domain: some operators' defaults depend on it

    def shape(self, name: str) -> tuple[int, ...] | None:
        ti = self.info.get(name)
        return None if ti is None or ti.shape is None else tuple(ti.shape)  # type: ignore[arg-type]

    def rank(self, name: str) -> int | None:
        s = self.shape(name)
        return None if s is None else len(s)

    def producer_node(self, name: str) -> onnx.NodeProto | None:
        i = self.producer.get(name)
        return None if i is None else self.nodes[i]

    def constant_value(self, name: str):
        """The value of a constant tensor (initializer or Constant node), else None."""
        from onnx import numpy_helper

        if name in self.initializers:
            try:
                return numpy_helper.to_array(self.initializers[name])
            except Exception:  # external data not loaded: unknown here
                return None
        node = self.producer_node(name)
        if node is not None and node.op_type == "Constant":
            value = attr(node, "value")
            return None if value is None else numpy_helper.to_array(value)
        return None


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def toposorted(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            # Inputs produced inside subgraphs' outer scope are fine: only top-level names matter.
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.input if i not in available})[:3]
            raise ModelError(f"the graph is not a DAG or uses undefined tensors ({', '.join(missing)}); the file is damaged")
        pending = rest
    return ordered


def build(model: onnx.ModelProto, info: dict[str, TensorInfo]) -> GraphIndex:
    nodes = toposorted(model.graph)
    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = {}
    constants = {t.name for t in model.graph.initializer}
    for i, node in enumerate(nodes):
        for out in node.output:
            if out:
                producer[out] = i
        for inp in node.input:
            if inp:
                consumers.setdefault(inp, []).append(i)
        # Weights stored quantised (a DequantizeLinear of an initializer, as onnxruntime's
        # quantiser writes them) are constants too, not data flowing from the image.
        if node.op_type == "Constant" or (
            node.input and all((not x) or x in constants for x in node.input) and (node.op_type in PLUMBING or node.op_type == "DequantizeLinear")
        ):
            constants.update(o for o in node.output if o)
    inits = {t.name: t for t in model.graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), onnx.defs.onnx_opset_version())
    return GraphIndex(nodes, producer, consumers, info, constants, [o.name for o in model.graph.output], inits, opset)


def reachable_from(g: GraphIndex, start: str) -> set[str]:
    """Every tensor computed from ``start``."""
    seen = {start}
    stack = [start]
    while stack:
        t = stack.pop()
        for ci in g.consumers.get(t, []):
            for o in g.nodes[ci].output:
                if o and o not in seen:
                    seen.add(o)
                    stack.append(o)
    return seen


def depths(g: GraphIndex) -> dict[str, int]:
    """Longest path (in nodes) from the graph's inputs to every tensor."""
    depth: dict[str, int] = {}
    for node in g.nodes:  # topologically sorted
        d = 1 + max((depth.get(x, 0) for x in node.input if x), default=0)
        for out in node.output:
            if out:
                depth[out] = d
    return depth
