"""Model randomisation (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018):
re-draw a trained network's weights, with onnx and NumPy only.

Any exporter's graph works (weights as initializers or ``Constant`` nodes, float32, float16,
bfloat16 or float64). Quantised weights are refused (see :func:`randomise_weights`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from .errors import InputError, ModelError

#: Operators whose stored weight is re-drawn.
WEIGHT_OPS = ("Conv", "Gemm", "MatMul")
#: Operators that carry integer weights; a model holding them is refused.
QUANTISED_OPS = frozenset(
    {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "MatMulNBits", "DynamicQuantizeMatMul"}
)
_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
_PASS_THROUGH = ("Identity", "Cast", "CastLike")


@dataclass(frozen=True)
class RedrawnWeight:
    """One weight tensor that was re-drawn: N(0, std^2) with std = sqrt(2 / fan_in)."""

    name: str  # the initializer's name, or the Constant node's output
    op: str  # the operator that reads it (the first one, when shared)
    node: str  # that node's name
    shape: tuple[int, ...]
    fan_in: int
    std: float


@dataclass
class Randomisation:
    """A model with re-drawn weights and what was changed.

    ``model`` keeps references to any external data of tensors that were not changed; save it
    with ``model_file.save_model`` and the source model's folder.
    """

    model: onnx.ModelProto
    weights: list[RedrawnWeight]
    zeroed_biases: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (node, why its weight was left alone)
    seed: int | None = None

    @property
    def n_parameters(self) -> int:
        return int(sum(int(np.prod(w.shape)) for w in self.weights))


class _Constants:
    """Where each constant tensor of the graph lives: an initializer or a Constant node."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.initializers = {t.name: t for t in graph.initializer}
        self.constants: dict[str, onnx.NodeProto] = {}
        self.producers: dict[str, onnx.NodeProto] = {}
        for node in graph.node:
            for out in node.output:
                self.producers[out] = node
            if node.op_type == "Constant" and node.output:
                self.constants[node.output[0]] = node
        graph_inputs = {i.name for i in graph.input}
        # An initializer that is also a graph input can be overridden at run time: not a constant.
        for name in list(self.initializers):
            if name in graph_inputs:
                del self.initializers[name]

    def source(self, name: str) -> tuple[str, str] | None:
        """Follow Identity/Cast back to a stored tensor: ``(stored name, "initializer"|"constant")``."""
        seen = set()
        while name and name not in seen:
            seen.add(name)
            if name in self.initializers:
                return name, "initializer"
            if name in self.constants:
                return name, "constant"
            node = self.producers.get(name)
            if node is None or node.op_type not in _PASS_THROUGH:
                return None
            name = node.input[0]
        return None

    def producer_op(self, name: str) -> str | None:
        """The operator that computes ``name`` after Identity/Cast, or None for a graph input."""
        seen = set()
        while name and name not in seen:
            seen.add(name)
            node = self.producers.get(name)
            if node is None:
                return None
            if node.op_type not in _PASS_THROUGH:
                return node.op_type
            name = node.input[0]
        return None

    def tensor(self, name: str, kind: str) -> onnx.TensorProto:
        if kind == "initializer":
            return self.initializers[name]
        node = self.constants[name]
        for attr in node.attribute:
            if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                return attr.t
        raise KeyError(name)

    def has_tensor(self, name: str, kind: str) -> bool:
        try:
            self.tensor(name, kind)
        except KeyError:
            return False
        return True


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _weight_inputs(node: onnx.NodeProto) -> list[tuple[int, int | None]]:
    """(input index of the weight, input index of its bias or None), by operator."""
    if node.op_type == "Conv":
        return [(1, 2)]
    if node.op_type == "Gemm":
        return [(1, 2), (0, None)]
    if node.op_type == "MatMul":
        return [(1, None), (0, None)]
    return []


def _fan_in(node: onnx.NodeProto, index: int, shape: tuple[int, ...]) -> int | None:
    """Inputs summed into one output value, for the weight at input ``index`` of ``node``."""
    if node.op_type == "Conv":
        if len(shape) < 3:
            return None
        return int(np.prod(shape[1:]))  # (M, C/group, k1, k2, ...): C/group * kernel size
    if node.op_type == "Gemm":
        if len(shape) != 2:
            return None
        if index == 1:  # B: (K, N), or (N, K) with transB
            return shape[1] if _attr(node, "transB", 0) else shape[0]
        return shape[0] if _attr(node, "transA", 0) else shape[1]  # A: (M, K), or (K, M) with transA
    if node.op_type == "MatMul":
        if index == 1:  # x @ W with W (..., K, N), or a vector (K,)
            return shape[-2] if len(shape) >= 2 else shape[0]
        return shape[-1]  # W @ x with W (..., M, K)
    return None


def _replace(tensor: onnx.TensorProto, values: np.ndarray) -> None:
    """Overwrite a tensor's data in place (name and type kept); any external data reference is dropped."""
    new = numpy_helper.from_array(values, tensor.name)
    if tensor.data_type == TensorProto.BFLOAT16:
        new = onnx.helper.make_tensor(tensor.name, TensorProto.BFLOAT16, values.shape, values.astype(np.float32).ravel())
    assert new.data_type == tensor.data_type, (new.data_type, tensor.data_type)
    tensor.CopyFrom(new)


def _np_dtype(data_type: int) -> np.dtype:
    """NumPy type to build values in (bfloat16 goes through float32)."""
    if data_type == TensorProto.BFLOAT16:
        return np.dtype(np.float32)
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type))


def _refuse_quantised(graph: onnx.GraphProto, consts: _Constants) -> None:
    for node in graph.node:
        if node.op_type in QUANTISED_OPS:
            raise ModelError(
                f"the model is quantised ({node.op_type} node {node.name or node.output[0]!r}); its integer weights and "
                "calibrated scales cannot be re-drawn meaningfully: randomise the float model instead"
            )
        for w_idx, _ in _weight_inputs(node):
            if w_idx < len(node.input) and consts.producer_op(node.input[w_idx]) == "DequantizeLinear":
                raise ModelError(
                    f"the weight of {node.op_type} node {node.name or node.output[0]!r} is quantised (DequantizeLinear); "
                    "the calibrated scales of a quantised model do not fit re-drawn weights: randomise the float model instead"
                )


def randomise_weights(model: onnx.ModelProto, *, seed: int | None = 0, biases: str = "zero") -> Randomisation:
    """Re-draw every stored Conv, Gemm and MatMul weight with He-normal values.

    Each weight W gets fresh values from N(0, 2 / fan_in), where fan_in is the number of inputs
    summed into one output (Conv: input channels per group times the kernel size; Gemm and
    MatMul: the contracted dimension, honouring ``transA``/``transB``). Weights are found as
    initializers or ``Constant`` nodes, also behind Identity or Cast. They keep their name,
    shape and element type (float32, float16, bfloat16, float64). A tensor shared by several
    operators is drawn once. Weights computed at run time are left alone and listed in
    ``skipped``. Nothing else changes: batch-norm parameters, biases added by a separate Add,
    and the graph's structure stay as they are.

    Args:
        model: the model (not modified; a copy is returned inside the result).
        seed: seed of ``numpy.random.default_rng``; the same seed gives the same weights.
        biases: ``"zero"`` sets the bias inputs of Conv and Gemm to zero, as a fresh
            initialisation does; ``"keep"`` leaves the trained biases.

    Returns:
        A :class:`Randomisation` with the new model and the list of re-drawn tensors.

    Raises:
        ModelError: the weights are quantised (QDQ or QOperator), or no weight was found.
        InputError: an unknown ``biases`` value.
    """
    if biases not in ("zero", "keep"):
        raise InputError(f"unknown biases mode {biases!r}; choose 'zero' or 'keep'")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    consts = _Constants(graph)
    _refuse_quantised(graph, consts)
    rng = np.random.default_rng(seed)
    done: dict[str, RedrawnWeight] = {}
    zeroed: list[str] = []
    skipped: list[tuple[str, str]] = []
    for node in graph.node:
        if node.op_type not in WEIGHT_OPS:
            continue
        label = node.name or node.output[0]
        redrawn_here = False
        for w_idx, b_idx in _weight_inputs(node):
            if w_idx >= len(node.input) or not node.input[w_idx]:
                continue
            found = consts.source(node.input[w_idx])
            if found is None or not consts.has_tensor(*found):
                continue
            name, kind = found
            if name in done:
                redrawn_here = True
                break
            tensor = consts.tensor(name, kind)
            shape = tuple(int(d) for d in tensor.dims)
            if tensor.data_type not in _FLOAT_TYPES:
                skipped.append((label, f"weight {name!r} is of type {TensorProto.DataType.Name(tensor.data_type)}"))
                break
            fan_in = _fan_in(node, w_idx, shape)
            if not fan_in or fan_in < 1:
                skipped.append((label, f"weight {name!r} has shape {list(shape)}, no fan-in to scale by"))
                break
            std = float(np.sqrt(2.0 / fan_in))
            _replace(tensor, (rng.standard_normal(shape) * std).astype(_np_dtype(tensor.data_type)))
            done[name] = RedrawnWeight(name, node.op_type, label, shape, int(fan_in), std)
            redrawn_here = True
            if biases == "zero" and b_idx is not None and b_idx < len(node.input) and node.input[b_idx]:
                bias = consts.source(node.input[b_idx])
                if bias is not None and consts.has_tensor(*bias) and bias[0] not in zeroed:
                    bt = consts.tensor(*bias)
                    if bt.data_type in _FLOAT_TYPES:
                        _replace(bt, np.zeros(tuple(int(d) for d in bt.dims), dtype=_np_dtype(bt.data_type)))
                        zeroed.append(bias[0])
            break
        if not redrawn_here and not any(s[0] == label for s in skipped):
            skipped.append((label, "no stored weight (computed at run time)"))
    if not done:
        raise ModelError(
            "the model has no stored Conv, Gemm or MatMul weight to re-draw; model randomisation needs a network "
            "whose weights are initializers or Constant nodes"
        )
    return Randomisation(out, list(done.values()), zeroed, skipped, seed)


def randomise_model_file(
    model: str | os.PathLike[str], out: str | os.PathLike[str], *, seed: int | None = 0, biases: str = "zero"
) -> Randomisation:
    """:func:`randomise_weights` on a model file, written to ``out`` (a self-contained ``.onnx``)."""
    from .model_file import ModelFile, save_model

    src, proto = ModelFile.open(model)
    result = randomise_weights(proto, seed=seed, biases=biases)
    save_model(result.model, out, src.folder)
    return result
