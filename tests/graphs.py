"""Small ONNX classifiers built with ``onnx.helper`` for the engine's tests.

Every factory returns a :class:`GraphCase`: the model, the concrete input shape the
tests run at, and what the automatic feature-map choice *should* pick according to
the engine issue's rules (written down here by hand, never computed by the engine):

- E_L (``expected_decomposed``): the deepest activation that still has a spatial
  extent just before the network collapses space; when the collapse is preceded by a
  pooling that only downsamples, that pooling's input.
- weighting maps (``expected_weighting``, earliest first): one per spatial resolution
  above E_L's, the stage output there (the input of the next downsampling op),
  post-activation; the graph input is never one.

Weights are random but seeded; every model is tiny so a forward pass takes
milliseconds. :func:`fetch` adds tensors as extra graph outputs with plain
``onnx.helper`` and runs onnxruntime, so the tests read activations without going
through the engine.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


@dataclass
class GraphCase:
    name: str
    model: onnx.ModelProto
    input_name: str
    input_shape: tuple[int, ...]  # concrete shape used in tests, batch first, in ``layout``
    layout: str  # "NCHW" or "NHWC": layout of the image input
    expected_decomposed: str | None  # None: the engine must raise PfvError
    expected_weighting: list[str] = field(default_factory=list)  # earliest first
    # layout of each expected map as the graph holds it (default NCHW)
    map_layouts: dict[str, str] = field(default_factory=dict)
    # quantized maps: name -> (scale, zero_point) to get the float map as (q - zp) * scale
    dequant: dict[str, tuple[float, int]] = field(default_factory=dict)
    # further input shapes (same layout) the model must also work at (dynamic H/W)
    alt_shapes: list[tuple[int, ...]] = field(default_factory=list)
    fixed_batch: int | None = None  # static batch size of the input, None when dynamic
    static_size: tuple[int | None, int | None] | None = None  # (H, W) as the graph declares them
    channels: int | None = None  # input channels
    # tolerance on rgb after aligning signs (fp16: the engine may sum channels in fp16)
    rgb_tol: float = 1e-4
    # tolerance on the original outputs compared with a plain onnxruntime run
    out_rtol: float = 1e-5
    out_atol: float = 1e-5
    input_gains: tuple[float, ...] | None = None  # per-channel factors on the test batch (NCHW)
    notes: str = ""

    @property
    def image_hw(self) -> tuple[int, int]:
        return hw_of(self.input_shape, self.layout)

    @property
    def is_error(self) -> bool:
        return self.expected_decomposed is None

    @property
    def all_expected(self) -> list[str]:
        return [*self.expected_weighting, self.expected_decomposed]

    def batch(self, n: int | None = None, seed: int = 0, shape: tuple[int, ...] | None = None) -> np.ndarray:
        shape = tuple(shape or self.input_shape)
        if n is not None:
            shape = (n, *shape[1:])
        x = make_batch(shape, seed)
        if self.input_gains is not None:
            x = x * np.asarray(self.input_gains, dtype=np.float32)[None, :, None, None]
        return x


def hw_of(shape: tuple[int, ...], layout: str) -> tuple[int, int]:
    return (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])


def make_batch(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A float32 batch with some spatial structure (smooth blobs plus noise)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    # add a smooth per-image pattern so maps are not pure noise
    if len(shape) == 4:
        n = shape[0]
        a = rng.uniform(0.5, 2.0, size=(n, 1, 1, 1))
        yy = np.linspace(-1, 1, shape[1] * shape[2] * shape[3]).reshape(1, *shape[1:])
        x = x + a * np.sin(3.0 * yy + rng.uniform(0, 3, size=(n, 1, 1, 1)))
    return x.astype(np.float32)


# ---------------------------------------------------------------------------
# a tiny graph builder
# ---------------------------------------------------------------------------


class _Net:
    def __init__(self, seed: int, fdtype=np.float32):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.fdtype = fdtype
        self._count = 0

    def fresh(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    def const(self, arr, name: str | None = None) -> str:
        name = name or self.fresh("const")
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def op(self, op_type: str, inputs, out: str | None = None, **attrs) -> str:
        out = out or self.fresh(f"{op_type}_out")
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=self.fresh(op_type), **attrs))
        return out

    def conv_params(self, cin, cout, k, gains=None, group=1, bias=True):
        fan_in = (cin // group) * k * k
        w = self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in)
        b = 0.1 * self.rng.standard_normal(cout) if bias else None
        if gains is not None:
            g = np.asarray(gains, dtype=np.float64)
            w = w * g[:, None, None, None]
            if b is not None:
                b = b * g
        return w, b

    def conv(self, x, cin, cout, k=3, stride=1, out=None, gains=None, bias=True, group=1, w=None, b=None):
        if w is None:
            w, b = self.conv_params(cin, cout, k, gains, group, bias)
        ins = [x, self.const(w.astype(self.fdtype))]
        if b is not None:
            ins.append(self.const(b.astype(self.fdtype)))
        pad = k // 2
        return self.op("Conv", ins, out, kernel_shape=[k, k], strides=[stride, stride],
                       pads=[pad, pad, pad, pad], group=group)

    def relu(self, x, out=None):
        return self.op("Relu", [x], out)

    def conv_relu(self, x, cin, cout, k=3, stride=1, out=None, gains=None, bias=True):
        return self.relu(self.conv(x, cin, cout, k, stride, gains=gains, bias=bias), out)

    def maxpool(self, x, out=None, k=2, s=2):
        return self.op("MaxPool", [x], out, kernel_shape=[k, k], strides=[s, s])

    def gemm(self, x, cin, cout, out=None):
        w = (self.rng.standard_normal((cout, cin)) / np.sqrt(cin)).astype(self.fdtype)
        b = (0.1 * self.rng.standard_normal(cout)).astype(self.fdtype)
        return self.op("Gemm", [x, self.const(w), self.const(b)], out, transB=1)

    def matmul_add(self, x, cin, cout, out=None):
        w = (self.rng.standard_normal((cin, cout)) / np.sqrt(cin)).astype(self.fdtype)
        b = (0.1 * self.rng.standard_normal(cout)).astype(self.fdtype)
        return self.op("Add", [self.op("MatMul", [x, self.const(w)]), self.const(b)], out)

    def model(self, name, inputs, outputs, value_info=()) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, name, inputs, outputs, self.inits, value_info=list(value_info))
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pfv-onnx-tests")
        m.ir_version = IR_VERSION
        onnx.checker.check_model(m)
        return m


def _gains(c: int, base: float = 0.8) -> np.ndarray:
    """Per-channel gains that spread the eigenvalues of a map (well separated PCs)."""
    return base ** np.arange(c)


def _vi(name, elem, dims):
    return helper.make_tensor_value_info(name, elem, dims)


F32 = TensorProto.FLOAT


# ---------------------------------------------------------------------------
# the cases
# ---------------------------------------------------------------------------


VGG_LABELS = [f"thing {i}" for i in range(10)]  # a name for each of vgg()'s 10 classes


def vgg(bias: bool = True, last_scale: float = 1.0, name: str = "vgg") -> GraphCase:
    """VGG-like, as the PyTorch exporter writes it: conv-relu-conv-relu-maxpool stages,
    the last MaxPool, an AveragePool(k=1) standing in for the adaptive pool, Flatten, Gemm.
    E_L is the last MaxPool's input. ``last_scale`` multiplies the last conv's weights and
    bias (scales E_L alone); ``bias=False`` makes every map positively homogeneous in the input."""
    n = _Net(seed=1)
    x = "input"
    f = "/features/features.{}/{}_output_0"
    t = n.conv(x, 3, 8, bias=bias, out=f.format(0, "Conv"))
    t = n.relu(t, f.format(1, "Relu"))
    t = n.conv(t, 8, 8, bias=bias, out=f.format(2, "Conv"))
    t = n.relu(t, f.format(3, "Relu"))
    t = n.maxpool(t, f.format(4, "MaxPool"))
    t = n.conv(t, 8, 12, bias=bias, out=f.format(5, "Conv"))
    t = n.relu(t, f.format(6, "Relu"))
    t = n.conv(t, 12, 12, bias=bias, out=f.format(7, "Conv"))
    t = n.relu(t, f.format(8, "Relu"))
    t = n.maxpool(t, f.format(9, "MaxPool"))
    t = n.conv(t, 12, 16, bias=bias, out=f.format(10, "Conv"))
    t = n.relu(t, f.format(11, "Relu"))
    w, b = n.conv_params(16, 16, 3, gains=_gains(16), bias=bias)
    w = w * last_scale
    b = None if b is None else b * last_scale
    t = n.conv(t, 16, 16, w=w, b=b, out=f.format(12, "Conv"))
    t = n.relu(t, f.format(13, "Relu"))
    t = n.maxpool(t, f.format(14, "MaxPool"))
    t = n.op("AveragePool", [t], "/avgpool/AveragePool_output_0", kernel_shape=[1, 1], strides=[1, 1])
    t = n.op("Flatten", [t], "/Flatten_output_0", axis=1)
    n.gemm(t, 16 * 3 * 4, 10, out="logits")
    m = n.model(name, [_vi(x, F32, ["batch", 3, 24, 32])], [_vi("logits", F32, ["batch", 10])])
    return GraphCase(
        name, m, x, (4, 3, 24, 32), "NCHW",
        expected_decomposed=f.format(13, "Relu"),
        expected_weighting=[f.format(3, "Relu"), f.format(8, "Relu")],
        static_size=(24, 32), channels=3,
        notes="E_L is the last MaxPool's input (6x8), not its 3x4 output",
    )


def resnet() -> GraphCase:
    """ResNet-like: strided stem conv + relu, a basic block, a strided block with a strided
    1x1 projection shortcut, an identity block, GlobalAveragePool + Flatten + Gemm, and a
    second output (Softmax) to check that every original output is kept."""
    n = _Net(seed=2)
    x = "x"
    stem = n.conv_relu(x, 3, 8, stride=2, out="stem_relu")  # 16x16; 32x32 holds only the input
    t = n.conv_relu(stem, 8, 8)
    t = n.conv(t, 8, 8)
    t = n.op("Add", [t, stem], "layer1_add")
    l1 = n.relu(t, "layer1_out")
    t = n.conv_relu(l1, 8, 16, stride=2)
    t = n.conv(t, 16, 16)
    sc = n.conv(l1, 8, 16, k=1, stride=2, out="layer2_downsample")
    t = n.op("Add", [t, sc], "layer2_add")
    l2 = n.relu(t, "layer2_out")  # 8x8
    t = n.conv_relu(l2, 16, 16)
    t = n.conv(t, 16, 16, gains=_gains(16, 0.75))
    t = n.op("Add", [t, l2], "layer3_add")
    l3 = n.relu(t, "layer3_out")
    t = n.op("GlobalAveragePool", [l3], "gap")
    t = n.op("Flatten", [t], "flat", axis=1)
    logits = n.gemm(t, 16, 10, out="logits")
    n.op("Softmax", [logits], "probs", axis=1)
    m = n.model("resnet", [_vi(x, F32, ["batch_size", 3, 32, 32])],
                [_vi("logits", F32, ["batch_size", 10]), _vi("probs", F32, ["batch_size", 10])])
    return GraphCase(
        "resnet", m, x, (4, 3, 32, 32), "NCHW",
        expected_decomposed="layer3_out", expected_weighting=["layer1_out"],
        static_size=(32, 32), channels=3,
        notes="32x32 holds only the graph input, so it gets no weighting map",
    )


def tf2onnx_nhwc() -> GraphCase:
    """Keras via tf2onnx: NHWC input, one Transpose to NCHW, NCHW convs, a Transpose back to
    NHWC before Reshape (Keras flattens in NHWC order), MatMul + Add."""
    n = _Net(seed=3)
    x = "input_1"
    t = n.op("Transpose", [x], "StatefulPartitionedCall/model/conv1/Conv2D__6:0", perm=[0, 3, 1, 2])
    r1 = n.conv_relu(t, 3, 8, out="StatefulPartitionedCall/model/conv1/Relu:0")  # 20x28
    r2 = n.conv_relu(r1, 8, 12, stride=2, out="StatefulPartitionedCall/model/conv2/Relu:0")  # 10x14
    r3 = n.relu(n.conv(r2, 12, 16, gains=_gains(16)), "StatefulPartitionedCall/model/conv3/Relu:0")
    t = n.op("Transpose", [r3], "StatefulPartitionedCall/model/conv3/Relu__20:0", perm=[0, 2, 3, 1])
    t = n.op("Reshape", [t, n.const(np.array([-1, 10 * 14 * 16], np.int64), "const_fold_opt__31")],
             "StatefulPartitionedCall/model/flatten/Reshape:0")
    n.matmul_add(t, 10 * 14 * 16, 5, out="dense")
    m = n.model("tf2onnx", [_vi(x, F32, ["unk__95", 20, 28, 3])], [_vi("dense", F32, ["unk__96", 5])])
    return GraphCase(
        "tf2onnx_nhwc", m, x, (4, 20, 28, 3), "NHWC",
        expected_decomposed=r3, expected_weighting=[r1],
        static_size=(20, 28), channels=3,
        notes="Transposes are plumbing: E_L is the NCHW Relu before the Transpose back",
    )


def nhwc_body() -> GraphCase:
    """A body that stays NHWC: each Conv wrapped in Transposes, activations NHWC, head a
    ReduceMean over the NHWC spatial axes (1, 2)."""
    n = _Net(seed=4)
    x = "image"

    def conv_nhwc(t, cin, cout, stride, out, gains=None):
        t = n.op("Transpose", [t], perm=[0, 3, 1, 2])
        t = n.conv(t, cin, cout, stride=stride, gains=gains)
        t = n.op("Transpose", [t], perm=[0, 2, 3, 1])
        return n.relu(t, out)

    r1 = conv_nhwc(x, 3, 8, 1, "block1/relu")  # (N, 20, 28, 8)
    r2 = conv_nhwc(r1, 8, 12, 2, "block2/relu")  # (N, 10, 14, 12)
    r3 = conv_nhwc(r2, 12, 16, 1, "block3/relu", gains=_gains(16))  # (N, 10, 14, 16)
    t = n.op("ReduceMean", [r3], "head/mean", axes=[1, 2], keepdims=0)
    n.matmul_add(t, 16, 5, out="scores")
    m = n.model("nhwc_body", [_vi(x, F32, ["N", 20, 28, 3])], [_vi("scores", F32, ["N", 5])])
    return GraphCase(
        "nhwc_body", m, x, (4, 20, 28, 3), "NHWC",
        expected_decomposed=r3, expected_weighting=[r1],
        map_layouts={r1: "NHWC", r2: "NHWC", r3: "NHWC"},
        static_size=(20, 28), channels=3,
    )


def dynbatch() -> GraphCase:
    """Batch dimension without value or name; a MaxPool stage; ReduceMean(keepdims=1) head."""
    n = _Net(seed=5)
    x = "pixel_values"
    r1 = n.conv_relu(x, 3, 8, out="conv1/relu")  # 16x16
    t = n.maxpool(r1, "pool1")
    t = n.conv_relu(t, 8, 12, out="conv2/relu")
    r3 = n.relu(n.conv(t, 12, 16, gains=_gains(16)), "conv3/relu")  # 8x8
    t = n.op("ReduceMean", [r3], "pooled", axes=[2, 3], keepdims=1)
    t = n.op("Flatten", [t], "flat")
    n.gemm(t, 16, 7, out="logits")
    inp = helper.make_tensor_value_info(x, F32, [None, 3, 16, 16])
    out = helper.make_tensor_value_info("logits", F32, [None, 7])
    m = n.model("dynbatch", [inp], [out])
    return GraphCase(
        "dynbatch", m, x, (5, 3, 16, 16), "NCHW",
        expected_decomposed=r3, expected_weighting=[r1],
        static_size=(16, 16), channels=3,
    )


def dynhw() -> GraphCase:
    """Symbolic batch, height and width; two strided convs; GlobalAveragePool head."""
    n = _Net(seed=6)
    x = "images"
    r1 = n.conv_relu(x, 3, 8, out="s1/relu")
    r2 = n.conv_relu(r1, 8, 8, stride=2)
    r3 = n.conv_relu(r2, 8, 12, out="s2/relu")
    r4 = n.conv_relu(r3, 12, 16, stride=2)
    r5 = n.relu(n.conv(r4, 16, 16, gains=_gains(16)), "s3/relu")
    t = n.op("GlobalAveragePool", [r5])
    t = n.op("Flatten", [t])
    n.gemm(t, 16, 4, out="out")
    m = n.model("dynhw", [_vi(x, F32, ["N", 3, "H", "W"])], [_vi("out", F32, ["N", 4])])
    return GraphCase(
        "dynhw", m, x, (3, 3, 16, 16), "NCHW",
        expected_decomposed=r5, expected_weighting=[r1, r3],
        alt_shapes=[(3, 3, 20, 36)],
        static_size=(None, None), channels=3,
    )


def fixed1() -> GraphCase:
    """Input with a fixed batch of 1 (model-zoo style); GlobalMaxPool head."""
    n = _Net(seed=7)
    x = "data"
    r1 = n.conv_relu(x, 3, 8, out="relu0")
    t = n.maxpool(r1, "pool0")
    r2 = n.relu(n.conv(t, 8, 12, gains=_gains(12)), "relu1")
    t = n.op("GlobalMaxPool", [r2], "gmp")
    t = n.op("Flatten", [t], "flatten0")
    n.gemm(t, 12, 6, out="prob")
    m = n.model("fixed1", [_vi(x, F32, [1, 3, 16, 16])], [_vi("prob", F32, [1, 6])])
    return GraphCase(
        "fixed1", m, x, (4, 3, 16, 16), "NCHW",
        expected_decomposed=r2, expected_weighting=[r1], fixed_batch=1,
        static_size=(16, 16), channels=3,
    )


def fp16() -> GraphCase:
    """Half precision body with float32 I/O (keep_io_types style): Cast in, Cast out."""
    n = _Net(seed=8, fdtype=np.float16)
    x = "input"
    t = n.op("Cast", [x], "input_fp16", to=TensorProto.FLOAT16)
    r1 = n.conv_relu(t, 3, 8, out="r1")
    r2 = n.conv_relu(r1, 8, 12, stride=2, out="r2")
    r3 = n.relu(n.conv(r2, 12, 16, gains=_gains(16)), "r3")
    t = n.op("GlobalAveragePool", [r3])
    t = n.op("Flatten", [t])
    t = n.gemm(t, 16, 5)
    n.op("Cast", [t], "logits", to=TensorProto.FLOAT)
    m = n.model("fp16", [_vi(x, F32, ["N", 3, 16, 16])], [_vi("logits", F32, ["N", 5])])
    return GraphCase(
        "fp16", m, x, (4, 3, 16, 16), "NCHW",
        expected_decomposed=r3, expected_weighting=[r1],
        static_size=(16, 16), channels=3,
        # fp16 maps: a channel sum taken in fp16 inside the graph rounds to ~5e-4 relative
        rgb_tol=5e-4,
        notes="maps are float16",
    )


def se() -> GraphCase:
    """PP-LCNet-like with a squeeze-excite block in the middle: its GlobalAveragePool is not
    the head. HardSwish activations, HardSigmoid gate, head GAP + Reshape to rank 2 + Gemm."""
    n = _Net(seed=9)
    x = "x"
    r1 = n.conv_relu(x, 3, 8, out="stem/relu")  # 24x24
    t = n.op("HardSwish", [n.conv(r1, 8, 12, stride=2)], "blk1/hardswish")  # 12x12
    s = n.op("GlobalAveragePool", [t], "se/pool")
    s = n.conv_relu(s, 12, 4, k=1)
    s = n.op("HardSigmoid", [n.conv(s, 4, 12, k=1)], "se/gate", alpha=1.0 / 6, beta=0.5)
    t = n.op("Mul", [t, s], "se/mul")
    h2 = n.op("HardSwish", [n.conv(t, 12, 12, k=1)], "blk2/hardswish")  # stage output at 12x12
    t = n.op("HardSwish", [n.conv(h2, 12, 16, stride=2)], "blk3/hardswish")  # 6x6
    h4 = n.op("HardSwish", [n.conv(t, 16, 16, k=1, gains=_gains(16))], "blk4/hardswish")
    t = n.op("GlobalAveragePool", [h4], "head/pool")
    t = n.op("Reshape", [t, n.const(np.array([0, -1], np.int64))], "head/flat")
    n.gemm(t, 16, 6, out="logits")
    m = n.model("se", [_vi(x, F32, ["N", 3, 24, 24])], [_vi("logits", F32, ["N", 6])])
    return GraphCase(
        "se", m, x, (4, 3, 24, 24), "NCHW",
        expected_decomposed=h4, expected_weighting=[r1, h2],
        static_size=(24, 24), channels=3,
        notes="the squeeze-excite GAP in the middle is not the head",
    )


def aux_head() -> GraphCase:
    """An auxiliary classifier (GAP + Flatten + Gemm, its own output, listed first) branching
    off the 8x8 stage, besides the main head at 4x4. The aux head's nodes come last in the
    node list (a valid topological order): E_L is the deepest map before a collapse, not the
    input of the collapse that happens to be listed last."""
    n = _Net(seed=17)
    x = "input"
    s1 = n.conv_relu(x, 3, 8, out="stage1/relu")  # 16x16
    t = n.conv_relu(s1, 8, 12, stride=2)
    s2 = n.conv_relu(t, 12, 12, out="stage2/relu")  # 8x8, read by the aux head and the main path
    t = n.conv_relu(s2, 12, 16, stride=2)
    s4 = n.relu(n.conv(t, 16, 16, gains=_gains(16)), "stage3/relu")  # 4x4
    t = n.op("GlobalAveragePool", [s4], "head/gap")
    t = n.op("Flatten", [t], "head/flatten")
    n.gemm(t, 16, 10, out="logits")
    t = n.op("GlobalAveragePool", [s2], "aux/gap")
    t = n.op("Flatten", [t], "aux/flatten")
    n.gemm(t, 12, 10, out="aux_logits")
    m = n.model("aux_head", [_vi(x, F32, ["N", 3, 16, 16])],
                [_vi("aux_logits", F32, ["N", 10]), _vi("logits", F32, ["N", 10])])
    return GraphCase(
        "aux_head", m, x, (4, 3, 16, 16), "NCHW",
        expected_decomposed=s4, expected_weighting=[s1, s2],
        static_size=(16, 16), channels=3,
        notes="two heads; the main one is the deepest",
    )


def _float_ranges(model: onnx.ModelProto, names: list[str], batch: np.ndarray) -> dict[str, float]:
    vals = fetch(model, names, batch)[1]
    return {k: float(np.abs(v).max()) for k, v in vals.items()}


def _pow2(x: float) -> float:
    """Nearest power of two at or above x (exact scales keep float and integer kernels equal)."""
    return float(2.0 ** np.ceil(np.log2(x)))


def _calibrated_float_twin(seed: int, shape: tuple[int, ...]):
    """Conv specs, their float weights, and the activation ranges of a float twin of the
    quantized nets (conv-relu x3, the middle one strided), used to calibrate their scales."""
    specs = [(3, 8, 1), (8, 12, 2), (12, 16, 1)]
    fn = _Net(seed=seed)
    params = [fn.conv_params(ci, co, 3, gains=_gains(co) if i == 2 else None) for i, (ci, co, s) in enumerate(specs)]
    t = "x"
    outs = []
    for i, ((ci, co, s), (w, b)) in enumerate(zip(specs, params)):
        t = fn.relu(fn.conv(t, ci, co, stride=s, w=w, b=b), f"f{i}")
        outs.append(t)
    twin = fn.model("twin", [_vi("x", F32, ["N", 3, 16, 16])], [_vi(outs[-1], F32, ["N", 16, 8, 8])])
    return specs, params, _float_ranges(twin, outs, make_batch(shape, 0))


def qdq() -> GraphCase:
    """QDQ: QuantizeLinear/DequantizeLinear around every conv, int8 weights through
    DequantizeLinear, int32 biases; the first ReLU kept, the others folded into the uint8
    range. The float maps are the DequantizeLinear outputs."""
    shape = (4, 3, 16, 16)
    rng_seed = 10
    specs, params, ranges = _calibrated_float_twin(rng_seed, shape)

    n = _Net(seed=rng_seed + 100)
    x = "x"
    in_scale, in_zp = 1.0 / 32, 128  # covers [-4, 4)
    q = n.op("QuantizeLinear", [x, n.const(np.float32(in_scale)), n.const(np.uint8(in_zp))], "x_quantized")
    t = n.op("DequantizeLinear", [q, n.const(np.float32(in_scale)), n.const(np.uint8(in_zp))], "x_dequantized")
    x_scale = in_scale
    dq_names = []
    for i, ((ci, co, s), (w, b)) in enumerate(zip(specs, params)):
        w_scale = _pow2(np.abs(w).max() / 127)
        wq = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
        wd = n.op("DequantizeLinear", [n.const(wq, f"conv{i}.weight_quantized"), n.const(np.float32(w_scale)),
                                       n.const(np.int8(0))], f"conv{i}.weight_dequantized")
        b_scale = x_scale * w_scale
        bq = np.round(b / b_scale).astype(np.int32)
        bd = n.op("DequantizeLinear", [n.const(bq, f"conv{i}.bias_quantized"), n.const(np.float32(b_scale)),
                                       n.const(np.int32(0))], f"conv{i}.bias_dequantized")
        c = n.op("Conv", [t, wd, bd], f"conv{i}/Conv_output_0", kernel_shape=[3, 3], strides=[s, s],
                 pads=[1, 1, 1, 1])
        if i == 0:
            c = n.relu(c, f"conv{i}/Relu_output_0")
        y_scale = _pow2(ranges[f"f{i}"] / 255)
        qy = n.op("QuantizeLinear", [c, n.const(np.float32(y_scale)), n.const(np.uint8(0))],
                  f"conv{i}/output_quantized")
        t = n.op("DequantizeLinear", [qy, n.const(np.float32(y_scale)), n.const(np.uint8(0))],
                 f"conv{i}/output_dequantized")
        dq_names.append(t)
        x_scale = y_scale
    t = n.op("GlobalAveragePool", [t], "gap")
    t = n.op("Flatten", [t], "flat")
    n.gemm(t, 16, 5, out="logits")
    m = n.model("qdq", [_vi(x, F32, ["N", 3, 16, 16])], [_vi("logits", F32, ["N", 5])])
    return GraphCase(
        "qdq", m, x, shape, "NCHW",
        expected_decomposed=dq_names[2], expected_weighting=[dq_names[0]],
        static_size=(16, 16), channels=3,
        notes="maps are DequantizeLinear outputs",
    )


def qop() -> GraphCase:
    """QOperator: QuantizeLinear on the input, QLinearConv with uint8 activations and int8
    weights, MaxPool and Flatten on uint8, QLinearMatMul, DequantizeLinear on the logits.
    No float map exists: the engine must dequantize the uint8 maps itself."""
    shape = (4, 3, 16, 16)
    specs, params, ranges = _calibrated_float_twin(11, shape)

    n = _Net(seed=111)
    x = "x"
    in_scale, in_zp = 1.0 / 32, 128
    t = n.op("QuantizeLinear", [x, n.const(np.float32(in_scale)), n.const(np.uint8(in_zp))], "x_quantized")
    x_scale, x_zp = in_scale, in_zp
    names, dequant = [], {}
    zps = [4, 0, 3]  # non-zero zero points: a weighting map dequantized without them is wrong
    for i, ((ci, co, s), (w, b)) in enumerate(zip(specs, params)):
        w_scale = _pow2(np.abs(w).max() / 127)
        wq = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
        bq = np.round(b / (x_scale * w_scale)).astype(np.int32)
        y_scale, y_zp = _pow2(ranges[f"f{i}"] / 250), zps[i]
        out = f"conv{i}_quantized"
        t = n.op("QLinearConv", [t, n.const(np.float32(x_scale)), n.const(np.uint8(x_zp)),
                                 n.const(wq, f"conv{i}.weight_quantized"), n.const(np.float32(w_scale)),
                                 n.const(np.int8(0)), n.const(np.float32(y_scale)), n.const(np.uint8(y_zp)),
                                 n.const(bq, f"conv{i}.bias_quantized")],
                 out, kernel_shape=[3, 3], strides=[s, s], pads=[1, 1, 1, 1])
        names.append(out)
        dequant[out] = (y_scale, y_zp)
        x_scale, x_zp = y_scale, y_zp
    t = n.maxpool(t, "pool_quantized")  # 4x4, uint8
    t = n.op("Flatten", [t], "flat_quantized")
    fc_in = 16 * 4 * 4
    wf = n.rng.integers(0, 256, size=(fc_in, 5)).astype(np.uint8)
    yq = n.op("QLinearMatMul", [t, n.const(np.float32(x_scale)), n.const(np.uint8(x_zp)),
                                n.const(wf, "fc.weight_quantized"), n.const(np.float32(1 / 256)),
                                n.const(np.uint8(128)), n.const(np.float32(0.05)), n.const(np.uint8(128))],
              "fc_quantized")
    n.op("DequantizeLinear", [yq, n.const(np.float32(0.05)), n.const(np.uint8(128))], "logits")
    m = n.model("qop", [_vi(x, F32, ["N", 3, 16, 16])], [_vi("logits", F32, ["N", 5])])
    return GraphCase(
        "qop", m, x, shape, "NCHW",
        expected_decomposed=names[2], expected_weighting=[names[0]], dequant=dequant,
        static_size=(16, 16), channels=3,
        notes="uint8 maps; E_L is the MaxPool's input",
    )


def mlp() -> GraphCase:
    """No spatial map at all: the engine must raise PfvError."""
    n = _Net(seed=12)
    t = n.relu(n.gemm("features", 48, 32))
    n.gemm(t, 32, 3, out="logits")
    m = n.model("mlp", [_vi("features", F32, ["N", 48])], [_vi("logits", F32, ["N", 3])])
    return GraphCase("mlp", m, "features", (4, 48), "NCHW", expected_decomposed=None)


def flatten_mlp() -> GraphCase:
    """An image input flattened straight away: the only spatial tensor is the input itself,
    which is never a feature map, so the engine must raise PfvError."""
    n = _Net(seed=13)
    t = n.op("Flatten", ["image"], "flat")
    t = n.relu(n.gemm(t, 3 * 8 * 8, 16))
    n.gemm(t, 16, 3, out="logits")
    m = n.model("flatten_mlp", [_vi("image", F32, ["N", 3, 8, 8])], [_vi("logits", F32, ["N", 3])])
    return GraphCase("flatten_mlp", m, "image", (4, 3, 8, 8), "NCHW", expected_decomposed=None)


def linear_probe(channels: int = 4, size: tuple[int, int] = (6, 5), name: str = "linear_probe") -> GraphCase:
    """E_L is exactly the input: a 1x1 Conv with identity weights and no bias, then GAP,
    Flatten, Gemm. With no earlier map there is no weighting, so the tests control X fully."""
    n = _Net(seed=14)
    w = np.eye(channels, dtype=np.float32)[:, :, None, None]
    e = n.op("Conv", ["x", n.const(w, "identity.weight")], "features", kernel_shape=[1, 1])
    t = n.op("GlobalAveragePool", [e], "pooled")
    t = n.op("Flatten", [t], "flat")
    n.gemm(t, channels, 3, out="logits")
    h, w_ = size
    m = n.model(name, [_vi("x", F32, ["N", channels, h, w_])], [_vi("logits", F32, ["N", 3])])
    return GraphCase(name, m, "x", (4, channels, h, w_), "NCHW", expected_decomposed="features",
                     expected_weighting=[], static_size=size, channels=channels)


def linear_two(channels: int = 5) -> GraphCase:
    """Two identity 1x1 Convs around an AveragePool(2, 2): the weighting map is the input
    itself (through the identity conv), E_L its 2x2 average. Every map is linear in the input."""
    n = _Net(seed=15)
    w = np.eye(channels, dtype=np.float32)[:, :, None, None]
    s0 = n.op("Conv", ["x", n.const(w, "id0.weight")], "stage0", kernel_shape=[1, 1])
    t = n.op("AveragePool", [s0], "pool", kernel_shape=[2, 2], strides=[2, 2])
    e = n.op("Conv", [t, n.const(w.copy(), "id1.weight")], "stage1", kernel_shape=[1, 1])
    t = n.op("GlobalAveragePool", [e], "pooled")
    t = n.op("Flatten", [t], "flat")
    n.gemm(t, channels, 3, out="logits")
    m = n.model("linear_two", [_vi("x", F32, ["N", channels, 8, 12])], [_vi("logits", F32, ["N", 3])])
    return GraphCase("linear_two", m, "x", (4, channels, 8, 12), "NCHW", expected_decomposed="stage1",
                     expected_weighting=["stage0"], static_size=(8, 12), channels=channels,
                     input_gains=tuple(float(g) for g in 1.5 ** -np.arange(channels)))


def colour_classifier() -> onnx.ModelProto:
    """A model whose class is the image's strongest colour channel (0, 1, 2 for the fed
    channels R, G, B): the linear_two graph with its Gemm made the identity, so the logits
    are the channel means."""
    model = linear_two(channels=3).model
    gemm = next(node for node in model.graph.node if node.op_type == "Gemm")
    for init in model.graph.initializer:
        if init.name == gemm.input[1]:
            init.CopyFrom(numpy_helper.from_array(np.eye(3, dtype=np.float32), init.name))
        elif init.name == gemm.input[2]:
            init.CopyFrom(numpy_helper.from_array(np.zeros(3, np.float32), init.name))
    return model


def two_inputs() -> GraphCase:
    """Two inputs (an image and a scalar gain): without input_name the engine must refuse."""
    n = _Net(seed=16)
    t = n.op("Mul", ["image", "gain"], "scaled")
    r1 = n.conv_relu(t, 3, 8, out="r1")
    r2 = n.conv_relu(r1, 8, 8, stride=2, out="r2")
    t = n.op("GlobalAveragePool", [r2])
    t = n.op("Flatten", [t])
    n.gemm(t, 8, 3, out="logits")
    m = n.model("two_inputs", [_vi("image", F32, ["N", 3, 16, 16]), _vi("gain", F32, [1])],
                [_vi("logits", F32, ["N", 3])])
    return GraphCase("two_inputs", m, "image", (2, 3, 16, 16), "NCHW", expected_decomposed="r2",
                     expected_weighting=["r1"], static_size=(16, 16), channels=3)


#: the graphs of the issue that the engine must handle, by name
CASE_FACTORIES = {
    "vgg": vgg,
    "resnet": resnet,
    "tf2onnx_nhwc": tf2onnx_nhwc,
    "nhwc_body": nhwc_body,
    "dynbatch": dynbatch,
    "dynhw": dynhw,
    "fixed1": fixed1,
    "qdq": qdq,
    "qop": qop,
    "fp16": fp16,
    "se": se,
    "aux_head": aux_head,
    "linear_two": linear_two,
}
#: graphs on which the engine must raise PfvError
ERROR_FACTORIES = {"mlp": mlp, "flatten_mlp": flatten_mlp}


@lru_cache(maxsize=None)
def case(name: str) -> GraphCase:
    factory = {**CASE_FACTORIES, **ERROR_FACTORIES}[name]
    return factory()


# ---------------------------------------------------------------------------
# reading activations without the engine
# ---------------------------------------------------------------------------


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # pragma: no cover - all test graphs infer
        inferred = model
    g = inferred.graph
    types = {}
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    return types


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` with ``names`` appended to the graph outputs (typed, no shapes)."""
    m = copy.deepcopy(model)
    types = _elem_types(m)
    have = {o.name for o in m.graph.output}
    for name in names:
        if name in have:
            continue
        if name not in types:
            raise KeyError(f"{name!r} is not a tensor of the graph")
        m.graph.output.append(helper.make_tensor_value_info(name, types[name], None))
        have.add(name)
    return m


def session(model: onnx.ModelProto, optimize: bool = True) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], fixed_batch: int | None = None,
        optimize: bool = True) -> dict[str, np.ndarray]:
    """Run a model on CPU; with a fixed batch of one, image by image, concatenated."""
    sess = session(model, optimize)
    names = [o.name for o in sess.get_outputs()]
    if fixed_batch == 1:
        (key,) = [k for k, v in feeds.items() if v.ndim >= 1]
        parts = [sess.run(names, {**feeds, key: feeds[key][i:i + 1]}) for i in range(feeds[key].shape[0])]
        return {n_: np.concatenate([p[j] for p in parts], axis=0) for j, n_ in enumerate(names)}
    return dict(zip(names, sess.run(names, feeds)))


def fetch(model: onnx.ModelProto, names: list[str], batch: np.ndarray, input_name: str | None = None,
          fixed_batch: int | None = None, optimize: bool = True):
    """(original outputs, {name: raw activation}) for ``batch`` with ``names`` marked as outputs."""
    input_name = input_name or model.graph.input[0].name
    orig = [o.name for o in model.graph.output]
    res = run(with_outputs(model, names), {input_name: batch}, fixed_batch, optimize)
    return {k: res[k] for k in orig}, {k: res[k] for k in names}


def original_outputs(c: GraphCase, batch: np.ndarray) -> dict[str, np.ndarray]:
    return run(c.model, {c.input_name: batch}, c.fixed_batch)


def float_nchw(c: GraphCase, name: str, arr: np.ndarray) -> np.ndarray:
    """A raw activation as float64 NCHW: dequantized and transposed per the case's records."""
    a = np.asarray(arr)
    if name in c.dequant:
        scale, zp = c.dequant[name]
        a = (a.astype(np.float64) - zp) * scale
    a = a.astype(np.float64)
    if c.map_layouts.get(name, "NCHW") == "NHWC":
        a = a.transpose(0, 3, 1, 2)
    return a


def case_maps(c: GraphCase, batch: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Float64 NCHW activations of ``names`` (default: the expected maps) for ``batch``."""
    names = list(names if names is not None else c.all_expected)
    _, raw = fetch(c.model, names, batch, c.input_name, c.fixed_batch)
    return {k: float_nchw(c, k, v) for k, v in raw.items()}
