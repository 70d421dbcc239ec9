"""Checks that PFV maps depend on what a network learned: model randomisation and map similarity.

The model-randomisation test (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018):
re-draw a trained network's weights and compare the explanations. Maps of a trained network
should differ from those of its randomised twin and should change from image to image; maps
that survive randomisation show the architecture or the input, not what was learned.

Everything here returns results and never prints. Weights are re-drawn with onnx and NumPy
only, so any exporter's graph works (initializers or ``Constant`` nodes, float32, float16,
bfloat16 or float64). Quantised weights are refused (see :func:`randomise_weights`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


# --------------------------------------------------------------------------- randomisation


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


# --------------------------------------------------------------------------- comparing maps

#: Side of the square grid magnitude maps are resampled to before they are compared.
COMPARE_SIZE = 64
_SSIM_SIGMA = 1.5  # Gaussian window of Wang et al. (2004): sigma 1.5, 11 x 11
_SSIM_RADIUS = 5
_SSIM_K1, _SSIM_K2 = 0.01, 0.03


def _check_maps(maps: Any, what: str = "maps") -> np.ndarray:
    a = np.asarray(maps)
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[0] < 1 or min(a.shape[1:3]) < 1:
        raise InputError(f"{what} must be PFV maps shaped (N, H, W, k), got shape {list(a.shape)}")
    if not np.issubdtype(a.dtype, np.number):
        raise InputError(f"{what} must hold numbers, got {a.dtype}")
    return a.astype(np.float64, copy=False)


def magnitude(maps: Any) -> np.ndarray:
    """How strongly each pixel of a set of PFV maps stands out: (N, H, W, k) -> (N, H, W) float64.

    The batch colour scaling maps "nothing special" to one colour, different for every batch
    (mid-grey when the scaled values are symmetric). The magnitude is the Euclidean distance of
    each pixel's colour from the median colour of the whole set (per component, over every pixel
    of every image), so it is comparable within one set and independent of which colour each
    component got. (N, H, W) input is taken as k = 1.
    """
    a = _check_maps(maps)
    median = np.median(a.reshape(-1, a.shape[-1]), axis=0)
    return np.sqrt(((a - median) ** 2).sum(axis=-1))


def _resample(m: np.ndarray, size: int | None) -> np.ndarray:
    """(N, H, W) maps to (N, size, size) by area averaging (bilinear when enlarging)."""
    if size is None or m.shape[1:] == (size, size):
        return m
    import cv2

    out = np.empty((m.shape[0], size, size), np.float64)
    for i, x in enumerate(m):
        shrink = size <= x.shape[0] and size <= x.shape[1]
        out[i] = cv2.resize(x, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out


def _unit_range(m: np.ndarray) -> np.ndarray:
    """Each map min-max scaled to [0, 1]; a constant map becomes zeros."""
    lo = m.min(axis=(-2, -1), keepdims=True)
    span = m.max(axis=(-2, -1), keepdims=True) - lo
    return np.where(span > 0, (m - lo) / np.where(span > 0, span, 1.0), 0.0)


def _gaussian_window() -> np.ndarray:
    x = np.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / _SSIM_SIGMA) ** 2)
    return w / w.sum()


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable correlation of the last two axes with ``w``, only where the window fits."""
    n = w.size
    h, wd = x.shape[-2:]
    rows = sum(w[i] * x[..., i : h - n + 1 + i, :] for i in range(n))
    return sum(w[i] * rows[..., :, i : wd - n + 1 + i] for i in range(n))


def ssim(a: Any, b: Any, *, data_range: float = 1.0) -> np.ndarray:
    """Structural similarity of two maps, or of two stacks of maps image by image.

    Wang et al. (2004): Gaussian window (sigma 1.5, 11 x 11), K1 = 0.01, K2 = 0.03, the mean of
    the SSIM index over the positions where the window fits entirely (no padding).

    Args:
        a, b: (H, W) or (N, H, W) arrays of the same shape, H and W at least 11.
        data_range: the span of possible values (1 for maps in [0, 1]).

    Returns:
        A float64 scalar for (H, W) inputs, (N,) for stacks; 1 means identical.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim not in (2, 3):
        raise InputError(f"SSIM needs two (H, W) or (N, H, W) arrays of one shape, got {list(x.shape)} and {list(y.shape)}")
    if min(x.shape[-2:]) < 2 * _SSIM_RADIUS + 1:
        raise InputError(f"SSIM needs maps of at least {2 * _SSIM_RADIUS + 1} x {2 * _SSIM_RADIUS + 1} pixels, got {list(x.shape[-2:])}")
    w = _gaussian_window()
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    mx, my = _filter_valid(x, w), _filter_valid(y, w)
    vx = _filter_valid(x * x, w) - mx * mx
    vy = _filter_valid(y * y, w) - my * my
    cxy = _filter_valid(x * y, w) - mx * my
    index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return index.mean(axis=(-2, -1))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks (1..n) along the last axis, ties given their average rank."""
    order = np.argsort(x, axis=-1, kind="stable")
    sorted_x = np.take_along_axis(x, order, axis=-1)
    n = x.shape[-1]
    ranks = np.empty(x.shape, np.float64)
    for idx in np.ndindex(x.shape[:-1]):
        s = sorted_x[idx]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        ends = np.r_[starts[1:], n]
        avg = (starts + ends - 1) / 2.0 + 1.0
        r = np.repeat(avg, ends - starts)
        ranks[idx][order[idx]] = r
    return ranks


def spearman(a: Any, b: Any) -> np.ndarray:
    """Spearman rank correlation of two maps (all pixels), or of two stacks image by image.

    Ties get their average rank. A constant map has no order: its correlation is NaN.

    Returns:
        A float64 scalar for (H, W) inputs, (N,) for (N, H, W) stacks; in [-1, 1].
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim not in (2, 3):
        raise InputError(f"Spearman correlation needs two (H, W) or (N, H, W) arrays of one shape, got {list(x.shape)} and {list(y.shape)}")
    lead = x.shape[:-2]
    rx = _ranks(x.reshape(*lead, -1))
    ry = _ranks(y.reshape(*lead, -1))
    rx -= rx.mean(axis=-1, keepdims=True)
    ry -= ry.mean(axis=-1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=-1) * (ry * ry).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, (rx * ry).sum(axis=-1) / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(r, -1.0, 1.0)


@dataclass(frozen=True)
class Similarity:
    """Similarity of magnitude maps over a set of pairs: means and the values per pair.

    ``ssim``: mean SSIM of the maps each scaled to [0, 1]; ``spearman``: mean Spearman rank
    correlation (pairs with a constant map left out). Both are 1 for identical maps and near 0
    for unrelated ones. NaN when there is no pair.
    """

    ssim: float
    spearman: float
    ssim_values: np.ndarray
    spearman_values: np.ndarray
    pairs: list[tuple[int, int]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ssim": _finite_or_none(self.ssim),
            "spearman": _finite_or_none(self.spearman),
            "pairs": len(self.pairs),
        }


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _nanmean(v: np.ndarray) -> float:
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _similarity(ma: np.ndarray, mb: np.ndarray, pairs: list[tuple[int, int]]) -> Similarity:
    if not pairs:
        empty = np.zeros(0)
        return Similarity(float("nan"), float("nan"), empty, empty, [])
    ia = np.array([p[0] for p in pairs])
    ib = np.array([p[1] for p in pairs])
    s = ssim(_unit_range(ma[ia]), _unit_range(mb[ib]))
    r = spearman(ma[ia], mb[ib])
    return Similarity(_nanmean(s), _nanmean(r), s, r, list(pairs))


def compare_maps(maps_a: Any, maps_b: Any, *, size: int | None = COMPARE_SIZE) -> Similarity:
    """How alike two sets of PFV maps of the same images are, image by image.

    The magnitude of each set (:func:`magnitude`, so colours need not correspond) is resampled to
    ``size`` x ``size`` (None: as they are) and image i of one set is compared with image i of
    the other.

    Args:
        maps_a, maps_b: (N, H, W, k) maps of the same N images (e.g. ``PFVResult.rgb``); the two
            sets may differ in H, W and k only when ``size`` is given.
    """
    a, b = _check_maps(maps_a, "maps_a"), _check_maps(maps_b, "maps_b")
    if a.shape[0] != b.shape[0]:
        raise InputError(f"the two sets must hold maps of the same images, got {a.shape[0]} and {b.shape[0]} maps")
    if size is None and a.shape[1:3] != b.shape[1:3]:
        raise InputError(f"maps of sizes {list(a.shape[1:3])} and {list(b.shape[1:3])} need a common size=")
    ma, mb = _resample(magnitude(a), size), _resample(magnitude(b), size)
    return _similarity(ma, mb, [(i, i) for i in range(a.shape[0])])


def between_images(maps: Any, *, size: int | None = COMPARE_SIZE) -> Similarity:
    """How alike the maps of different images in one set are: the mean over all pairs i < j.

    High values mean the maps hardly depend on the image (they show the architecture, not the
    content). A set of one image has no pair: NaN.
    """
    a = _check_maps(maps)
    m = _resample(magnitude(a), size)
    n = a.shape[0]
    return _similarity(m, m, [(i, j) for i in range(n) for j in range(i + 1, n)])


# --------------------------------------------------------------------------- the whole check

#: Mean Spearman correlation at or above which two sets of magnitude maps count as alike.
SIMILAR = 0.5


@dataclass
class SanityResult:
    """Trained and randomised PFV maps of the same images and how they compare.

    ``trained_vs_randomised``: image i of the trained model against image i of the randomised
    one; low means PFV shows what the network learned. ``between_trained`` and
    ``between_randomised``: mean similarity over all pairs of different images within one set;
    the randomised model's maps should be nearly the same for every image, the trained
    model's not.
    """

    trained: Any  # PFVResult
    randomised: Any  # PFVResult
    randomisation: Randomisation
    trained_vs_randomised: Similarity
    between_trained: Similarity
    between_randomised: Similarity
    compare_size: int | None = COMPARE_SIZE

    @property
    def maps_differ(self) -> bool:
        """The randomisation changed the maps: their Spearman correlation stays below ``SIMILAR``."""
        return bool(self.trained_vs_randomised.spearman < SIMILAR)

    @property
    def trained_more_image_dependent(self) -> bool | None:
        """The trained maps vary more between images than the randomised ones (None: one image)."""
        a, b = self.between_trained.spearman, self.between_randomised.spearman
        if not (np.isfinite(a) and np.isfinite(b)):
            return None
        return bool(a < b)

    @property
    def passed(self) -> bool:
        """The maps changed under randomisation and, with several images, depend more on the image."""
        return self.maps_differ and self.trained_more_image_dependent is not False

    def to_dict(self) -> dict[str, Any]:
        """Scores and what was randomised, as JSON-ready values (NaN as None)."""
        r = self.randomisation
        return {
            "images": int(self.trained.rgb.shape[0]),
            "compare_size": self.compare_size,
            "similar_threshold": SIMILAR,
            "trained_vs_randomised": self.trained_vs_randomised.to_dict(),
            "between_images": {
                "trained": self.between_trained.to_dict(),
                "randomised": self.between_randomised.to_dict(),
            },
            "per_image": {
                "ssim": [_finite_or_none(v) for v in self.trained_vs_randomised.ssim_values],
                "spearman": [_finite_or_none(v) for v in self.trained_vs_randomised.spearman_values],
            },
            "maps_differ": self.maps_differ,
            "trained_more_image_dependent": self.trained_more_image_dependent,
            "passed": self.passed,
            "randomisation": {
                "seed": r.seed,
                "init": "He-normal, std = sqrt(2 / fan_in)",
                "weights": len(r.weights),
                "parameters": r.n_parameters,
                "zeroed_biases": len(r.zeroed_biases),
                "skipped": [{"node": n, "reason": why} for n, why in r.skipped],
            },
            "feature_maps": list(self.trained.feature_maps),
        }

    def summary(self) -> list[str]:
        """Lines that say what the scores mean, for people."""
        t = self.trained_vs_randomised
        lines = [
            f"trained vs randomised, image by image: Spearman {_fmt(t.spearman)}, SSIM {_fmt(t.ssim)} "
            f"(1 = the same maps, 0 = unrelated)",
        ]
        if self.maps_differ:
            lines.append(
                "  -> the maps change when the weights are re-drawn: they depend on what the network learned"
            )
        else:
            lines.append(
                f"  -> the maps survive re-drawing the weights (Spearman >= {SIMILAR}): they show the architecture "
                "or the input more than what the network learned"
            )
        bt, br = self.between_trained, self.between_randomised
        if self.trained_more_image_dependent is None:
            lines.append("between images: needs at least two images")
        else:
            lines.append(
                f"between images (mean over {len(bt.pairs)} pairs): trained Spearman {_fmt(bt.spearman)}, SSIM {_fmt(bt.ssim)}; "
                f"randomised Spearman {_fmt(br.spearman)}, SSIM {_fmt(br.ssim)}"
            )
            if self.trained_more_image_dependent:
                lines.append("  -> the trained maps follow the image content more than the randomised ones do")
            else:
                lines.append("  -> the trained maps vary between images no more than the randomised ones: suspicious")
        lines.append(f"sanity check {'passed' if self.passed else 'FAILED'}")
        return lines


def _fmt(x: float) -> str:
    return f"{x:.2f}" if np.isfinite(x) else "n/a"


def sanity_check(
    model: Any,
    batch: Any,
    *,
    seed: int | None = 0,
    biases: str = "zero",
    compare_size: int | None = COMPARE_SIZE,
    batch_size: int | None = None,
    save_randomised: str | os.PathLike[str] | None = None,
    **pfv_options: Any,
) -> SanityResult:
    """Model-randomisation check of PFV on ``batch``: trained vs re-drawn weights, same images.

    Args:
        model: the trained ONNX model file, or a :class:`pfv_onnx.PFV` built on it (its provider,
            k, weighting variant, n_sigma, input and layout are then used for both models).
        batch: preprocessed images in the model's layout, as for ``PFV.explain``.
        seed, biases: see :func:`randomise_weights`.
        compare_size: grid the magnitude maps are compared on (see :func:`compare_maps`).
        batch_size: images per forward pass (default: all at once).
        save_randomised: also keep the randomised model at this path (default: a temporary file).
        pfv_options: with a model file, passed to :class:`pfv_onnx.PFV` (``provider``, ``k``,
            ``layer``, ``weight_layers``, ...).

    The randomised model decomposes exactly the tensors the trained run used.
    """
    import tempfile

    from .pipeline import PFV

    if isinstance(model, PFV):
        if pfv_options:
            raise InputError(f"give PFV options ({', '.join(sorted(pfv_options))}) either to the PFV object or here, not both")
        trained_pfv = model
    else:
        trained_pfv = PFV(model, **pfv_options)
    trained = trained_pfv.explain(batch, batch_size=batch_size)
    with tempfile.TemporaryDirectory(prefix="pfv-sanity-") as tmp:
        target = Path(save_randomised) if save_randomised is not None else Path(tmp) / "randomised.onnx"
        randomisation = randomise_model_file(trained_pfv.model_path, target, seed=seed, biases=biases)
        # The same settings and tensors as the trained run, tensors by exact name (the graph is unchanged).
        random_pfv = PFV(
            target,
            provider=trained_pfv.provider,
            k=trained_pfv.k,
            hierarchical=trained_pfv.hierarchical,
            n_sigma=trained_pfv.n_sigma,
            input_name=trained_pfv.input_name,
            layout=trained_pfv.input_layout,
            layer=trained.feature_maps[-1],
            weight_layers=list(trained.feature_maps[:-1]),
        )
        randomised = random_pfv.explain(batch, batch_size=batch_size)
        del random_pfv
    return SanityResult(
        trained=trained,
        randomised=randomised,
        randomisation=randomisation,
        trained_vs_randomised=compare_maps(trained.rgb, randomised.rgb, size=compare_size),
        between_trained=between_images(trained.rgb, size=compare_size),
        between_randomised=between_images(randomised.rgb, size=compare_size),
        compare_size=compare_size,
    )
