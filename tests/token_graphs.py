"""Small transformer-style and exporter-twin classifiers built with ``onnx.helper``.

Each factory returns a :class:`graphs.GraphCase` whose expected E_L and weighting maps are
written by hand (the graph is built here, so the right tensor is known), plus a
:class:`TokenFacts` with what a token E_L must look like: its grid, the special tokens before
and after the patch tokens, and the patch-embedding conv that must never be E_L.

- ``vit``: patch conv (stride 4) -> Reshape -> Transpose -> Concat class token -> add
  positions -> 2 pre-norm attention blocks -> final LayerNormalization -> Gather token 0 -> Gemm.
- ``dinov2``: class token + 4 register tokens; head = class token and the mean of the patch tokens.
- ``mean_pooled``: no class token; ReduceMean over the tokens.
- ``headless``: a backbone without a head: its output is the class-token feature.
- ``hybrid``: a conv stem at strides 2 and 4, then a 1x1 patch conv and the ViT blocks.
- ``swin``: NHWC grids with LayerNormalization, window attention (partition/reverse Reshapes),
  PatchMerging as a Concat of four strided slices, a second stage, GlobalAveragePool.
- ``maxvit``: an MBConv-like block, then grid attention on a partitioned map; the departition
  Reshape feeds GlobalAveragePool.
- ``pad_torch`` / ``pad_tf``: one CNN (same weights) exported two ways: explicit Pad ops before
  valid convolutions and pools (PyTorch), or NHWC input with in-op pads (tf2onnx).
- ``ungriddable``: tokens made by splitting channels, mixed by attention: must be refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper

from graphs import F32, GraphCase, _gains, _Net, _vi

DIM = 16
HEADS = 2


@dataclass(frozen=True)
class TokenFacts:
    grid: tuple[int, int]
    before: int  # special tokens before the patch tokens
    after: int
    patch_conv: str  # the patch embedding's output: never E_L


class _Tok(_Net):
    """``graphs._Net`` with the pieces of a vision transformer."""

    def ln(self, x: str, dim: int, out: str | None = None) -> str:
        scale = self.const((1.0 + 0.1 * self.rng.standard_normal(dim)).astype(np.float32))
        bias = self.const((0.1 * self.rng.standard_normal(dim)).astype(np.float32))
        return self.op("LayerNormalization", [x, scale, bias], out, axis=-1, epsilon=1e-5)

    def linear(self, x: str, cin: int, cout: int, out: str | None = None, gains=None) -> str:
        w = self.rng.standard_normal((cin, cout)) / np.sqrt(cin)
        if gains is not None:
            w = w * np.asarray(gains)[None, :]
        b = 0.1 * self.rng.standard_normal(cout)
        return self.op("Add", [self.op("MatMul", [x, self.const(w.astype(np.float32))]), self.const(b.astype(np.float32))], out)

    def attention(self, x: str, tokens: int, dim: int, lead: tuple[int, ...] = (0,), probs: str | None = None) -> str:
        """Multi-head self-attention over axis -2 of ``x`` (shape lead + (tokens, dim)); ``probs``
        names the Softmax output (the attention probabilities)."""
        d = dim // HEADS
        q, k, v = (self.linear(x, dim, dim) for _ in range(3))
        split = self.const(np.array([*lead, tokens, HEADS, d], np.int64))
        nl = len(lead)
        perm = [*range(nl), nl + 1, nl, nl + 2]
        qh, kh, vh = (self.op("Transpose", [self.op("Reshape", [t, split])], perm=perm) for t in (q, k, v))
        kt = self.op("Transpose", [kh], perm=[*range(nl + 1), nl + 2, nl + 1])
        scores = self.op("Mul", [self.op("MatMul", [qh, kt]), self.const(np.float32(1 / np.sqrt(d)))])
        attn = self.op("Softmax", [scores], probs, axis=-1)
        ctx = self.op("Transpose", [self.op("MatMul", [attn, vh])], perm=perm)
        merged = self.op("Reshape", [ctx, self.const(np.array([*lead, tokens, dim], np.int64))])
        return self.linear(merged, dim, dim)

    def block(self, x: str, tokens: int, dim: int, out: str, lead: tuple[int, ...] = (0,)) -> str:
        """Pre-norm transformer block: x + attn(ln(x)), then + mlp(ln(.)); attention probabilities ``{out}_attention``."""
        x = self.op("Add", [x, self.attention(self.ln(x, dim), tokens, dim, lead, probs=f"{out}_attention")])
        h = self.relu(self.linear(self.ln(x, dim), dim, 2 * dim))
        return self.op("Add", [x, self.linear(h, 2 * dim, dim)], out)

    def patch_tokens(self, x: str, cin: int, patch: int, cells: int, out_conv: str) -> str:
        """Strided patch conv, Reshape (N, C, h*w), Transpose to (N, h*w, C)."""
        w, b = self.conv_params(cin, DIM, patch)
        conv = self.op("Conv", [x, self.const(w.astype(np.float32)), self.const(b.astype(np.float32))], out_conv,
                       kernel_shape=[patch, patch], strides=[patch, patch])
        flat = self.op("Reshape", [conv, self.const(np.array([0, DIM, cells], np.int64))])
        return self.op("Transpose", [flat], perm=[0, 2, 1])

    def special(self, like: str, count: int) -> str:
        """``count`` learned tokens expanded to the batch of ``like`` (N, count, DIM)."""
        param = self.const((0.5 * self.rng.standard_normal((1, count, DIM))).astype(np.float32))
        n = self.op("Gather", [self.op("Shape", [like]), self.const(np.array([0], np.int64))], axis=0)
        shape = self.op("Concat", [n, self.const(np.array([count, DIM], np.int64))], axis=0)
        return self.op("Expand", [param, shape])

    def positions(self, x: str, tokens: int) -> str:
        return self.op("Add", [x, self.const((0.2 * self.rng.standard_normal((1, tokens, DIM))).astype(np.float32))])


def _vit_body(n: _Tok, image: str, size: int, patch: int, specials: int, cin: int = 3, width: int | None = None) -> tuple[str, int]:
    gh, gw = size // patch, (width or size) // patch
    tokens = n.patch_tokens(image, cin, patch, gh * gw, "patch_embed")
    if specials:
        tokens = n.op("Concat", [n.special(tokens, specials), tokens], axis=1)
    total = gh * gw + specials
    t = n.positions(tokens, total)
    t = n.block(t, total, DIM, "block0")
    t = n.block(t, total, DIM, "block1")
    return n.ln(t, DIM, "encoder_norm"), total


def _token0(n: _Tok, x: str) -> str:
    return n.op("Gather", [x, n.const(np.array(0, np.int64))], axis=1)


def _model(n: _Tok, name: str, image: str, shape: tuple, out: str, classes: int) -> "object":
    return n.model(name, [_vi(image, F32, ["N", *shape[1:]])], [_vi(out, F32, ["N", classes])])


def _token_case(n: _Tok, name: str, out: str, classes: int, before: int, size: int = 16,
                weighting: tuple[str, ...] = (), width: int | None = None, patch: int = 4) -> tuple[GraphCase, TokenFacts]:
    """A token model's case: E_L ``encoder_norm``, ``before`` special tokens. ``weighting``: the
    finer stages of a hierarchical model; without them (a single-resolution ViT) the weighting is
    the attention the patch tokens receive in the last block, ``block1_attention``."""
    shape = (4, 3, size, width or size)
    m = _model(n, name, "pixels", shape, out, classes)
    expected = list(weighting) or ["block1_attention"]
    case = GraphCase(name, m, "pixels", shape, "NCHW", "encoder_norm", expected, static_size=shape[2:], channels=3)
    grid = (4, 4) if weighting else (size // patch, (width or size) // patch)
    return case, TokenFacts(grid, before, 0, "patch_embed")


def vit() -> tuple[GraphCase, TokenFacts]:
    n = _Tok(seed=31)
    body, _ = _vit_body(n, "pixels", 16, 4, 1)
    n.gemm(_token0(n, body), DIM, 5, out="logits")
    return _token_case(n, "vit", "logits", 5, 1)


def vit_wide() -> tuple[GraphCase, TokenFacts]:
    """A ViT on 16x28 images: a 4x7 grid, row-major."""
    n = _Tok(seed=30)
    body, _ = _vit_body(n, "pixels", 16, 4, 1, width=28)
    n.gemm(_token0(n, body), DIM, 5, out="logits")
    return _token_case(n, "vit_wide", "logits", 5, 1, width=28)


def dinov2() -> tuple[GraphCase, TokenFacts]:
    n = _Tok(seed=32)
    body, total = _vit_body(n, "pixels", 16, 4, 5)
    cls = _token0(n, body)
    patches = n.op("Slice", [body, n.const(np.array([5], np.int64)), n.const(np.array([total], np.int64)),
                             n.const(np.array([1], np.int64))])
    mean = n.op("ReduceMean", [patches], axes=[1], keepdims=0)
    feat = n.op("Concat", [cls, mean], axis=1)
    n.gemm(feat, 2 * DIM, 5, out="logits")
    return _token_case(n, "dinov2", "logits", 5, 5)


def mean_pooled() -> tuple[GraphCase, TokenFacts]:
    n = _Tok(seed=33)
    body, _ = _vit_body(n, "pixels", 16, 4, 0)
    pooled = n.op("ReduceMean", [body], axes=[1], keepdims=0)
    n.gemm(pooled, DIM, 5, out="logits")
    return _token_case(n, "mean_pooled", "logits", 5, 0)


def headless() -> tuple[GraphCase, TokenFacts]:
    n = _Tok(seed=34)
    body, _ = _vit_body(n, "pixels", 16, 4, 1)
    _token0(n, body)
    n.nodes[-1].output[0] = "features"
    return _token_case(n, "headless", "features", DIM, 1)


def hybrid() -> tuple[GraphCase, TokenFacts]:
    """Conv stem (32 -> 16 -> 8), patch conv 2x2 stride 2 (4x4 tokens), class token, two blocks."""
    n = _Tok(seed=35)
    s1 = n.conv_relu("pixels", 3, 8, stride=2, out="stem1")
    s2 = n.conv_relu(s1, 8, 8, stride=2, out="stem2")
    body, _ = _vit_body(n, s2, 8, 2, 1, cin=8)
    n.gemm(_token0(n, body), DIM, 5, out="logits")
    return _token_case(n, "hybrid", "logits", 5, 1, size=32, weighting=("stem1", "stem2",))


def pvt() -> tuple[GraphCase, TokenFacts]:
    """Two token stages (PVT-like): 8x8 tokens, back to a grid, a strided conv, 4x4 tokens, mean pool.
    The finer stage's tokens weight the upsampling as a CNN's finer stage does."""
    n = _Tok(seed=41)
    t = n.patch_tokens("pixels", 3, 2, 64, "patch_embed_1")  # 16 -> 8x8
    s1 = n.block(n.positions(t, 64), 64, DIM, "stage1_tokens")
    grid = n.op("Reshape", [n.op("Transpose", [s1], perm=[0, 2, 1]), n.const(np.array([0, DIM, 8, 8], np.int64))])
    w, b = n.conv_params(DIM, DIM, 2)
    conv = n.op("Conv", [grid, n.const(w.astype(np.float32)), n.const(b.astype(np.float32))], "patch_embed",
                kernel_shape=[2, 2], strides=[2, 2])  # 4x4
    t = n.op("Transpose", [n.op("Reshape", [conv, n.const(np.array([0, DIM, 16], np.int64))])], perm=[0, 2, 1])
    t = n.block(t, 16, DIM, "stage2_tokens")
    body = n.ln(t, DIM, "encoder_norm")
    n.gemm(n.op("ReduceMean", [body], axes=[1], keepdims=0), DIM, 5, out="logits")
    return _token_case(n, "pvt", "logits", 5, 0, weighting=("stage1_tokens",))


def _windows(n: _Tok, x: str, hw: int, win: int, dim: int) -> str:
    """Swin window attention on NHWC ``x`` (N, hw, hw, dim): partition, attend, reverse."""
    k = hw // win
    t = n.op("Reshape", [x, n.const(np.array([-1, k, win, k, win, dim], np.int64))])
    t = n.op("Transpose", [t], perm=[0, 1, 3, 2, 4, 5])
    t = n.op("Reshape", [t, n.const(np.array([-1, win * win, dim], np.int64))])
    t = n.attention(t, win * win, dim, lead=(-1,))
    t = n.op("Reshape", [t, n.const(np.array([-1, k, k, win, win, dim], np.int64))])
    t = n.op("Transpose", [t], perm=[0, 1, 3, 2, 4, 5])
    return n.op("Reshape", [t, n.const(np.array([-1, hw, hw, dim], np.int64))])


def _swin_block(n: _Tok, x: str, hw: int, win: int, dim: int, out: str) -> str:
    x = n.op("Add", [x, _windows(n, n.ln(x, dim), hw, win, dim)])
    h = n.relu(n.linear(n.ln(x, dim), dim, 2 * dim))
    return n.op("Add", [x, n.linear(h, 2 * dim, dim)], out)


def swin() -> tuple[GraphCase, TokenFacts | None]:
    n = _Tok(seed=36)
    w, b = n.conv_params(3, DIM, 4)
    conv = n.op("Conv", ["pixels", n.const(w.astype(np.float32)), n.const(b.astype(np.float32))], "patch_embed",
                kernel_shape=[4, 4], strides=[4, 4])  # 8x8
    t = n.ln(n.op("Transpose", [conv], perm=[0, 2, 3, 1]), DIM)
    s1 = _swin_block(n, t, 8, 4, DIM, "stage1")
    quads = []
    for i, j in ((0, 0), (1, 0), (0, 1), (1, 1)):
        quads.append(n.op("Slice", [s1, n.const(np.array([i, j], np.int64)), n.const(np.array([8, 8], np.int64)),
                                    n.const(np.array([1, 2], np.int64)), n.const(np.array([2, 2], np.int64))]))
    merged = n.op("Concat", quads, "merge_concat", axis=-1)  # (N, 4, 4, 4*DIM)
    t = n.linear(n.ln(merged, 4 * DIM), 4 * DIM, 2 * DIM)
    s2 = _swin_block(n, t, 4, 2, 2 * DIM, "stage2")
    t = n.ln(s2, 2 * DIM, "final_norm")
    t = n.op("Transpose", [t], perm=[0, 3, 1, 2])
    t = n.op("Flatten", [n.op("GlobalAveragePool", [t])], axis=1)
    n.gemm(t, 2 * DIM, 5, out="logits")
    m = _model(n, "swin", "pixels", (4, 3, 32, 32), "logits", 5)
    case = GraphCase("swin", m, "pixels", (4, 3, 32, 32), "NCHW", "final_norm", ["stage1"], static_size=(32, 32), channels=3,
                     map_layouts={"final_norm": "NHWC", "stage1": "NHWC"})
    return case, None


def maxvit() -> tuple[GraphCase, TokenFacts | None]:
    """Stem (32 -> 16), MBConv-like block at 8x8 ending in an Add, grid attention (partition into
    a 2x2 grid of 4x4 cells), departition Reshape -> GlobalAveragePool."""
    n = _Tok(seed=37)
    s1 = n.conv_relu("pixels", 3, 8, stride=2, out="stem")  # 16x16
    down = n.conv(s1, 8, DIM, k=1, stride=2)  # 8x8
    t = n.conv_relu(down, DIM, DIM)
    mb = n.op("Add", [n.conv(t, DIM, DIM, k=1), down], "mbconv_add")
    g, c = 2, 4
    t = n.op("Reshape", [mb, n.const(np.array([0, DIM, c, g, c, g], np.int64))])  # grid partition: stride-g cells
    t = n.op("Transpose", [t], perm=[0, 3, 5, 2, 4, 1])  # (N, g, g, c, c, C)
    win = n.op("Reshape", [t, n.const(np.array([0, g * g, c * c, DIM], np.int64))])
    x = n.op("Add", [win, n.attention(n.ln(win, DIM), c * c, DIM, lead=(0, g * g))])
    h = n.relu(n.linear(n.ln(x, DIM), DIM, 2 * DIM))
    x = n.op("Add", [x, n.linear(h, 2 * DIM, DIM, gains=_gains(DIM))])
    t = n.op("Reshape", [x, n.const(np.array([0, g, g, c, c, DIM], np.int64))])
    t = n.op("Transpose", [t], perm=[0, 5, 3, 1, 4, 2])  # (N, C, c, g, c, g)
    dep = n.op("Reshape", [t, n.const(np.array([0, DIM, 8, 8], np.int64))], "departition")
    t = n.op("Flatten", [n.op("GlobalAveragePool", [dep])], axis=1)
    n.gemm(t, DIM, 5, out="logits")
    m = _model(n, "maxvit", "pixels", (4, 3, 32, 32), "logits", 5)
    case = GraphCase("maxvit", m, "pixels", (4, 3, 32, 32), "NCHW", "departition", ["stem"], static_size=(32, 32), channels=3)
    return case, None


def ungriddable() -> tuple[GraphCase, TokenFacts | None]:
    """The patch conv's channels are split into 4 tokens ((N, 16, 6, 6) -> (N, 4, 144)): no grid."""
    n = _Tok(seed=38)
    w, b = n.conv_params(3, DIM, 4)
    conv = n.op("Conv", ["pixels", n.const(w.astype(np.float32)), n.const(b.astype(np.float32))], "patch_embed",
                kernel_shape=[4, 4], strides=[4, 4])  # 6x6 from 24
    t = n.op("Reshape", [conv, n.const(np.array([0, 4, 144], np.int64))])
    t = n.linear(t, 144, DIM)
    t = n.block(t, 4, DIM, "block0")
    n.gemm(_token0(n, n.ln(t, DIM)), DIM, 5, out="logits")
    m = _model(n, "ungriddable", "pixels", (2, 3, 24, 24), "logits", 5)
    return GraphCase("ungriddable", m, "pixels", (2, 3, 24, 24), "NCHW", None), None


# ---------------------------------------------------------------- one CNN, two exporters


def _pad_weights():
    n = _Net(seed=39)
    return [n.conv_params(3, 8, 5), n.conv_params(8, 12, 3), n.conv_params(12, 16, 3, gains=_gains(16)),
            (n.rng.standard_normal((5, 16)) / 4, 0.1 * n.rng.standard_normal(5))]


def pad_torch() -> tuple[GraphCase, None]:
    """PyTorch style: explicit Pad ops (image and maps) before valid convs and pools; NCHW input."""
    (w1, b1), (w2, b2), (w3, b3), (wf, bf) = _pad_weights()
    n = _Net(seed=0)

    def pad(x, begin, end, out=None):
        return n.op("Pad", [x, n.const(np.array([0, 0, begin, begin, 0, 0, end, end], np.int64))], out)

    def conv(x, w, b, stride, out=None):
        k = w.shape[-1]
        return n.op("Conv", [x, n.const(w.astype(np.float32)), n.const(b.astype(np.float32))], out,
                    kernel_shape=[k, k], strides=[stride, stride])

    t = pad("image", 1, 2, "/Pad_output_0")  # 35x35
    c1 = n.relu(conv(t, w1, b1, 2), "/relu1/Relu_output_0")  # 16x16
    t = n.op("MaxPool", [pad(c1, 0, 1, "/Pad_1_output_0")], kernel_shape=[3, 3], strides=[2, 2])  # 17 -> 8
    c2 = n.relu(conv(pad(t, 1, 1), w2, b2, 1), "/relu2/Relu_output_0")  # 8x8
    c3 = n.relu(conv(pad(c2, 0, 1), w3, b3, 2), "/relu3/Relu_output_0")  # 9 -> 4
    t = n.op("Flatten", [n.op("GlobalAveragePool", [c3])], axis=1)
    n.op("Gemm", [t, n.const(wf.astype(np.float32)), n.const(bf.astype(np.float32))], "logits", transB=1)
    m = n.model("pad_torch", [_vi("image", F32, ["N", 3, 32, 32])], [_vi("logits", F32, ["N", 5])])
    return GraphCase("pad_torch", m, "image", (4, 3, 32, 32), "NCHW", "/relu3/Relu_output_0",
                     ["/relu1/Relu_output_0", "/relu2/Relu_output_0"], static_size=(32, 32), channels=3), None


def pad_tf() -> tuple[GraphCase, None]:
    """tf2onnx style of the same network: NHWC input, Transpose, in-op pads, Transpose back, ReduceMean."""
    (w1, b1), (w2, b2), (w3, b3), (wf, bf) = _pad_weights()
    n = _Net(seed=0)

    def conv(x, w, b, stride, pads, out=None):
        k = w.shape[-1]
        return n.op("Conv", [x, n.const(w.astype(np.float32)), n.const(b.astype(np.float32))], out,
                    kernel_shape=[k, k], strides=[stride, stride], pads=pads)

    t = n.op("Transpose", ["input_1"], "model/conv1/Conv2D__6:0", perm=[0, 3, 1, 2])
    c1 = n.relu(conv(t, w1, b1, 2, [1, 1, 2, 2]), "model/conv1/Relu:0")
    t = n.op("MaxPool", [c1], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1])
    c2 = n.relu(conv(t, w2, b2, 1, [1, 1, 1, 1]), "model/conv2/Relu:0")
    c3 = n.relu(conv(c2, w3, b3, 2, [0, 0, 1, 1]), "model/conv3/Relu:0")
    t = n.op("Transpose", [c3], perm=[0, 2, 3, 1])
    t = n.op("ReduceMean", [t], axes=[1, 2], keepdims=0)
    t = n.op("MatMul", [t, n.const(wf.T.astype(np.float32))])
    n.op("Add", [t, n.const(bf.astype(np.float32))], "dense")
    m = n.model("pad_tf", [_vi("input_1", F32, ["unk__1", 32, 32, 3])], [_vi("dense", F32, ["unk__2", 5])])
    return GraphCase("pad_tf", m, "input_1", (4, 32, 32, 3), "NHWC", "model/conv3/Relu:0",
                     ["model/conv1/Relu:0", "model/conv2/Relu:0"], static_size=(32, 32), channels=3), None


TOKEN_CASES = {"vit": vit, "vit_wide": vit_wide, "dinov2": dinov2, "mean_pooled": mean_pooled, "headless": headless, "hybrid": hybrid, "pvt": pvt}
GRID_CASES = {"swin": swin, "maxvit": maxvit, "pad_torch": pad_torch, "pad_tf": pad_tf}
