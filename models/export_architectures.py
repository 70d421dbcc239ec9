"""Export tiny random-weight torchvision classifiers to ONNX, with the ground truth for E_L.

For each classification family of torchvision (ResNet, VGG, DenseNet, GoogLeNet,
Inception-v3, MobileNetV2/V3, EfficientNet/V2, RegNet, ConvNeXt, ViT, Swin/Swin-V2,
MaxViT), a configuration with few channels and layers is built with random weights and
exported with both of PyTorch's exporters (TorchScript, ``dynamo=False``; and dynamo)
where each works. Beside each ``.onnx`` file a JSON manifest records the ground truth
for the decomposed map E_L, found from the PyTorch module, not from the graph's names:

- a hook on the module whose activation feeds the head's global pooling (or the
  class-token selection) takes that activation, for two random images;
- the grid (h, w) and the number of special tokens come from the module's own
  configuration (patch size, class token, window layout);
- every tensor of the ONNX graph is made an output and run with onnxruntime on the
  same images; the tensors whose values equal the hooked activation (as NCHW, NHWC
  or a token sequence, special tokens removed) are the ground truth, by name.

Also exported: a CNN whose PyTorch export pads the input image explicitly
(``F.pad`` before a valid 7x7 stride-2 convolution and before the max-pool), and the
same network with the same weights as a channels-last graph in the shape tf2onnx
writes for a Keras model (NHWC input, Pad on the NHWC tensor, then a Transpose),
built here with onnx.helper: TensorFlow and tf2onnx are not installed for this.

torchvision's wheel needs its C++ operators, which a CPU-only torch lacks; their
schemas are declared as stubs with ``torch.library`` before the import
(classification models never call them).

    pip install torch==2.13.0 torchvision onnxscript
    python models/export_architectures.py            # writes tests/fixtures/architectures/
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tests" / "fixtures" / "architectures"
OPSET = 17
NUM_CLASSES = 10

# Schemas of torchvision's C++ operators (torchvision/csrc/ops/*.cpp), declared so that
# ``import torchvision`` finds them when the wheel's compiled library does not load.
_TORCHVISION_OPS = [
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, bool aligned) -> Tensor",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) -> (Tensor, Tensor)",
    "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) -> (Tensor, Tensor)",
    "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
]


def import_torchvision():
    """torchvision, with its C++ operator schemas declared first when torch lacks them."""
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018
    except (AttributeError, RuntimeError):
        lib = torch.library.Library("torchvision", "DEF")
        for schema in _TORCHVISION_OPS:
            lib.define(schema)
        import_torchvision._lib = lib  # keep the registration alive
    import torchvision

    return torchvision


@contextlib.contextmanager
def narrow(torch, factor: int, keep_out: int = NUM_CLASSES):
    """Build torchvision modules with every channel count divided by ``factor``.

    Conv2d, BatchNorm2d and Linear constructors see c -> max(1, c // factor) (the image's 3
    channels and a Linear's ``keep_out`` classes stay); a depthwise convolution stays
    depthwise. For architectures whose widths are fixed in code (ResNet, VGG, GoogLeNet,
    Inception-v3, MobileNet): the concatenations still add up because every width maps the same way.
    """
    nn = torch.nn
    saved = nn.Conv2d.__init__, nn.BatchNorm2d.__init__, nn.Linear.__init__

    def c(n: int) -> int:
        return n if n == 3 else max(1, n // factor)

    def conv_init(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, *a, **k):
        depthwise = groups == in_channels and groups > 1
        ci, co = c(in_channels), c(out_channels)
        saved[0](self, ci, co, kernel_size, stride, padding, dilation, ci if depthwise else groups, *a, **k)

    def bn_init(self, num_features, *a, **k):
        saved[1](self, c(num_features), *a, **k)

    def linear_init(self, in_features, out_features, *a, **k):
        saved[2](self, c(in_features), out_features if out_features == keep_out else c(out_features), *a, **k)

    nn.Conv2d.__init__, nn.BatchNorm2d.__init__, nn.Linear.__init__ = conv_init, bn_init, linear_init
    try:
        yield
    finally:
        nn.Conv2d.__init__, nn.BatchNorm2d.__init__, nn.Linear.__init__ = saved


@dataclass
class Family:
    """One architecture: how to build it and where its E_L is in the PyTorch module."""

    name: str
    title: str
    build: Callable[[Any, Any], Any]  # (torch, torchvision) -> module
    size: tuple[int, int]
    # (model) -> (module, "input" | "output"): the hooked activation is this module's input or output
    hook: Callable[[Any], tuple[Any, str]]
    kind: str = "NCHW"  # the hooked activation: "NCHW", "NHWC" (Swin) or "tokens" (N, T, C)
    relu_after: bool = False  # the forward applies F.relu to the hooked output (DenseNet)
    grid: Callable[[Any], tuple[int, int]] | None = None  # token grid from the module's configuration
    special: Callable[[Any], int] | None = None  # special tokens (at the front) from the module


def _families() -> list[Family]:
    def resnet(torch, tv):
        from torchvision.models.resnet import Bottleneck, ResNet

        with narrow(torch, 16):
            return ResNet(Bottleneck, [1, 1, 1, 1], num_classes=NUM_CLASSES)

    def vgg(torch, tv):
        from torchvision.models.vgg import VGG, cfgs, make_layers

        with narrow(torch, 16):
            m = VGG(make_layers(cfgs["A"], batch_norm=True), num_classes=NUM_CLASSES)
        nn = torch.nn
        # the 4096-wide classifier would dominate the file: same structure, 8 wide
        m.classifier = nn.Sequential(nn.Linear(32 * 7 * 7, 8), nn.ReLU(True), nn.Dropout(), nn.Linear(8, 8),
                                     nn.ReLU(True), nn.Dropout(), nn.Linear(8, NUM_CLASSES))  # fmt: skip
        return m

    def densenet(torch, tv):
        from torchvision.models.densenet import DenseNet

        return DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, bn_size=2, num_classes=NUM_CLASSES)

    def googlenet(torch, tv):
        from torchvision.models.googlenet import GoogLeNet

        with narrow(torch, 16):
            return GoogLeNet(num_classes=NUM_CLASSES, aux_logits=False, transform_input=False, init_weights=False)

    def inception(torch, tv):
        from torchvision.models.inception import Inception3

        with narrow(torch, 32):
            return Inception3(num_classes=NUM_CLASSES, aux_logits=False, transform_input=False, init_weights=False)

    def mobilenet_v2(torch, tv):
        from torchvision.models.mobilenetv2 import MobileNetV2

        setting = [[1, 16, 1, 1], [6, 24, 1, 2], [6, 32, 1, 2], [6, 64, 1, 2], [6, 96, 1, 1], [6, 160, 1, 2], [6, 320, 1, 1]]
        with narrow(torch, 8):
            return MobileNetV2(num_classes=NUM_CLASSES, inverted_residual_setting=setting)

    def mobilenet_v3(torch, tv):
        from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf

        setting, last = _mobilenet_v3_conf("mobilenet_v3_small")
        with narrow(torch, 8):
            return MobileNetV3(setting, last, num_classes=NUM_CLASSES)

    def efficientnet(torch, tv):
        from torchvision.models.efficientnet import EfficientNet, MBConvConfig

        s = [MBConvConfig(1, 3, 1, 32, 16, 1), MBConvConfig(6, 3, 2, 16, 24, 1), MBConvConfig(6, 5, 2, 24, 40, 1),
             MBConvConfig(6, 3, 2, 40, 80, 1), MBConvConfig(6, 5, 1, 80, 112, 1), MBConvConfig(6, 5, 2, 112, 192, 1),
             MBConvConfig(6, 3, 1, 192, 320, 1)]  # fmt: skip
        with narrow(torch, 8):
            return EfficientNet(s, dropout=0.2, num_classes=NUM_CLASSES)

    def efficientnet_v2(torch, tv):
        from torchvision.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConvConfig

        s = [FusedMBConvConfig(1, 3, 1, 24, 24, 1), FusedMBConvConfig(4, 3, 2, 24, 48, 1), FusedMBConvConfig(4, 3, 2, 48, 64, 1),
             MBConvConfig(4, 3, 2, 64, 128, 1), MBConvConfig(6, 3, 1, 128, 160, 1), MBConvConfig(6, 3, 2, 160, 256, 1)]  # fmt: skip
        with narrow(torch, 8):
            return EfficientNet(s, dropout=0.2, num_classes=NUM_CLASSES, last_channel=1280)

    def regnet(torch, tv):
        from torchvision.models.regnet import BlockParams, RegNet

        params = BlockParams.from_init_params(depth=5, w_0=8, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
        return RegNet(params, num_classes=NUM_CLASSES, stem_width=8)

    def convnext(torch, tv):
        from torchvision.models.convnext import CNBlockConfig, ConvNeXt

        cfg = [CNBlockConfig(8, 16, 1), CNBlockConfig(16, 24, 1), CNBlockConfig(24, 32, 1), CNBlockConfig(32, None, 1)]
        # layer_scale 1 (torchvision's default 1e-6 makes each block's output equal its input to 1e-6)
        return ConvNeXt(cfg, layer_scale=1.0, num_classes=NUM_CLASSES)

    def vit(torch, tv):
        from torchvision.models.vision_transformer import VisionTransformer

        return VisionTransformer(image_size=64, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=NUM_CLASSES)

    def swin(block: str):
        def build(torch, tv):
            from torchvision.models import swin_transformer as st

            extra = {} if block == "v1" else {"block": st.SwinTransformerBlockV2, "downsample_layer": st.PatchMergingV2}
            return st.SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2, 2, 2], num_heads=[1, 2, 2], window_size=[4, 4],
                                      stochastic_depth_prob=0.0, num_classes=NUM_CLASSES, **extra)  # fmt: skip

        return build

    def maxvit(torch, tv):
        from torchvision.models.maxvit import MaxVit

        return MaxVit(input_size=(64, 64), stem_channels=16, partition_size=4, block_channels=[16, 32], block_layers=[1, 1],
                      head_dim=8, stochastic_depth_prob=0.0, num_classes=NUM_CLASSES)  # fmt: skip

    def avgpool_in(m):
        return m.avgpool, "input"

    def swin_grid(m):
        # patch embedding stride (4), then one PatchMerging (stride 2) per later stage
        n_merge = sum(type(f).__name__.startswith("PatchMerging") for f in m.features)
        s = 4 * 2**n_merge
        return (64 // s, 64 // s)

    return [
        Family("resnet", "ResNet (Bottleneck, ResNet-50 style)", resnet, (128, 128), avgpool_in),
        Family("vgg", "VGG-11 (batch norm)", vgg, (224, 224), lambda m: (m.features[-1], "input")),
        Family("densenet", "DenseNet", densenet, (128, 128), lambda m: (m.features, "output"), relu_after=True),
        Family("googlenet", "GoogLeNet", googlenet, (128, 128), avgpool_in),
        Family("inception_v3", "Inception-v3", inception, (171, 171), avgpool_in),
        Family("mobilenet_v2", "MobileNetV2", mobilenet_v2, (128, 128), lambda m: (m.features, "output")),
        Family("mobilenet_v3", "MobileNetV3 (small)", mobilenet_v3, (128, 128), avgpool_in),
        Family("efficientnet", "EfficientNet (B0 style)", efficientnet, (128, 128), avgpool_in),
        Family("efficientnet_v2", "EfficientNetV2 (S style)", efficientnet_v2, (128, 128), avgpool_in),
        Family("regnet", "RegNet (Y style, squeeze-excite)", regnet, (128, 128), avgpool_in),
        Family("convnext", "ConvNeXt", convnext, (128, 128), avgpool_in),
        Family("vit", "ViT (class token)", vit, (64, 64), lambda m: (m.encoder, "output"), kind="tokens",
               grid=lambda m: (m.image_size // m.patch_size,) * 2, special=lambda m: 1),  # fmt: skip
        Family("swin", "Swin", swin("v1"), (64, 64), lambda m: (m.norm, "output"), kind="NHWC", grid=swin_grid, special=lambda m: 0),
        Family("swin_v2", "Swin-V2", swin("v2"), (64, 64), lambda m: (m.norm, "output"), kind="NHWC", grid=swin_grid, special=lambda m: 0),
        Family("maxvit", "MaxViT", maxvit, (64, 64), lambda m: (m.classifier[0], "input")),
    ]


# --------------------------------------------------------------------------- explicit-Pad CNN


def pad_cnn(torch):
    """Stem like a TensorFlow "SAME" port: the image padded by 3 before a valid 7x7 stride-2
    convolution, padded by 1 before a valid 3x3 stride-2 max-pool; then three conv stages."""
    nn, F = torch.nn, torch.nn.functional

    class PadNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 7, 2)
            self.conv2 = nn.Conv2d(8, 16, 3, 1, 1)
            self.conv3 = nn.Conv2d(16, 24, 3, 2, 1)
            self.conv4 = nn.Conv2d(24, 32, 3, 2, 1)
            self.fc = nn.Linear(32, NUM_CLASSES)

        def forward(self, x):
            x = F.relu(self.conv1(F.pad(x, (3, 3, 3, 3))))
            x = F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 2)
            x = F.relu(self.conv2(x))
            x = F.relu(self.conv3(x))
            x = F.relu(self.conv4(x))
            return self.fc(x.mean(dim=(2, 3)))

    return PadNet()


def pad_cnn_nhwc(model, size: tuple[int, int]):
    """The PadNet with the same weights as a channels-last graph, written the way tf2onnx
    converts a Keras model: NHWC input, ZeroPadding2D as Pad on the NHWC tensor, one
    Transpose to NCHW before the first convolution, ReduceMean over H and W, MatMul + Add."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    p = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    inits = [numpy_helper.from_array(v, k.replace(".", "/")) for k, v in p.items() if not k.startswith("fc.")]
    inits += [
        numpy_helper.from_array(p["fc.weight"].T.copy(), "fc/kernel"),
        numpy_helper.from_array(p["fc.bias"], "fc/bias"),
        numpy_helper.from_array(np.array([0, 3, 3, 0, 0, 3, 3, 0], np.int64), "pad1"),
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pad2"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "hw_axes"),
    ]
    n = helper.make_node
    nodes = [
        n("Pad", ["input_1", "pad1"], ["model/zero_padding2d/Pad:0"], name="model/zero_padding2d/Pad"),
        n("Transpose", ["model/zero_padding2d/Pad:0"], ["model/conv1/Conv2D__6:0"], perm=[0, 3, 1, 2], name="model/conv1/Conv2D__6"),
        n("Conv", ["model/conv1/Conv2D__6:0", "conv1/weight", "conv1/bias"], ["model/conv1/BiasAdd:0"], kernel_shape=[7, 7], strides=[2, 2], name="model/conv1/Conv2D"),
        n("Relu", ["model/conv1/BiasAdd:0"], ["model/conv1/Relu:0"], name="model/conv1/Relu"),
        n("Pad", ["model/conv1/Relu:0", "pad2"], ["model/zero_padding2d_1/Pad:0"], name="model/zero_padding2d_1/Pad"),
        n("MaxPool", ["model/zero_padding2d_1/Pad:0"], ["model/max_pooling2d/MaxPool:0"], kernel_shape=[3, 3], strides=[2, 2], name="model/max_pooling2d/MaxPool"),
    ]  # fmt: skip
    prev = "model/max_pooling2d/MaxPool:0"
    for name, stride in (("conv2", 1), ("conv3", 2), ("conv4", 2)):
        nodes += [
            n("Conv", [prev, f"{name}/weight", f"{name}/bias"], [f"model/{name}/BiasAdd:0"], kernel_shape=[3, 3], strides=[stride] * 2, pads=[1, 1, 1, 1], name=f"model/{name}/Conv2D"),
            n("Relu", [f"model/{name}/BiasAdd:0"], [f"model/{name}/Relu:0"], name=f"model/{name}/Relu"),
        ]  # fmt: skip
        prev = f"model/{name}/Relu:0"
    nodes += [
        n("ReduceMean", [prev, "hw_axes"], ["model/global_average_pooling2d/Mean:0"], keepdims=0, name="model/global_average_pooling2d/Mean"),
        n("MatMul", ["model/global_average_pooling2d/Mean:0", "fc/kernel"], ["model/fc/MatMul:0"], name="model/fc/MatMul"),
        n("Add", ["model/fc/MatMul:0", "fc/bias"], ["fc"], name="model/fc/BiasAdd"),
    ]  # fmt: skip
    h, w = size
    graph = helper.make_graph(
        nodes, "tf2onnx", [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["unk__1", h, w, 3])],
        [helper.make_tensor_value_info("fc", TensorProto.FLOAT, ["unk__1", NUM_CLASSES])], inits,
    )  # fmt: skip
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="tf2onnx-style (onnx.helper)")
    m.ir_version = 8
    return m


# --------------------------------------------------------------------------- export and ground truth


def export(torch, model, size: tuple[int, int], path: pathlib.Path, dynamo: bool) -> None:
    import onnx

    x = torch.randn(2, 3, *size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = pathlib.Path(tmp) / "m.onnx"
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=64)
            torch.onnx.export(model, (x,), str(tmp_path), input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: batch},), dynamo=True, external_data=False, opset_version=18)  # fmt: skip
        else:
            torch.onnx.export(model, (x,), str(tmp_path), input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=OPSET, do_constant_folding=True, dynamo=False)  # fmt: skip
        m = onnx.load(str(tmp_path))
    strip_node_metadata(m)
    onnx.save(m, str(path))


def strip_node_metadata(model) -> None:
    """Drop the dynamo exporter's per-node metadata (source stack traces, module paths): two
    thirds of a small model's file, and nothing that running or analysing the graph uses."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""


def all_tensors(path: pathlib.Path, feed: dict[str, Any]) -> dict[str, Any]:
    """Every float tensor of the graph, by name, for ``feed`` (onnxruntime, optimisations off)."""
    import onnx
    import onnxruntime as ort

    m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    typed = {vi.name: vi for vi in [*m.graph.value_info, *m.graph.output]}
    outputs = [o.name for o in m.graph.output]
    for node in m.graph.node:
        for name in node.output:
            vi = typed.get(name)
            if name and name not in outputs and vi is not None and vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
                m.graph.output.append(vi)
                outputs.append(name)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return dict(zip(outputs, sess.run(outputs, feed)))


def _views(t, n: int, c: int, h: int, w: int, t_total: int, special: int):
    """Ways ``t`` may hold the (n, c, h, w) patch grid: NCHW, NHWC / (n, h*w, c), or tokens."""
    if t.size == n * c * h * w and t.shape[0] == n:
        yield "NCHW", t.reshape(n, c, h, w)
        yield "NHWC", t.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    if special and t.size == n * t_total * c and t.shape[0] == n:
        yield f"tokens[{special}:]", t.reshape(n, t_total, c)[:, special:].reshape(n, h, w, c).transpose(0, 3, 1, 2)


def ground_truth(torch, fam: Family, model) -> dict[str, Any]:
    """Hook E_L on the module (two random images); its grid and special tokens from the module."""
    import numpy as np

    module, where = fam.hook(model)
    got: list[Any] = []
    if where == "input":
        handle = module.register_forward_pre_hook(lambda mod, args: got.append(args[0].detach().clone()))
    else:
        handle = module.register_forward_hook(lambda mod, args, out: got.append(out.detach().clone()))
    x = torch.randn(2, 3, *fam.size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    handle.remove()
    act = got[-1]
    if fam.relu_after:
        act = torch.relu(act)
    act = act.numpy().astype(np.float64)
    if fam.kind == "tokens":
        h, w = fam.grid(model)
        s = fam.special(model)
        n, t_total, c = act.shape
        assert t_total == s + h * w, (t_total, s, h, w)
        grid = act[:, s:].reshape(n, h, w, c).transpose(0, 3, 1, 2)
    elif fam.kind == "NHWC":
        n, h, w, c = act.shape
        assert (h, w) == fam.grid(model), ((h, w), fam.grid(model))
        s, t_total = 0, h * w
        grid = act.transpose(0, 3, 1, 2)
    else:
        n, c, h, w = act.shape
        s, t_total = 0, h * w
        grid = act
    return {"x": x.numpy(), "logits": logits.numpy(), "grid_values": grid, "shape": list(act.shape),
            "h": h, "w": w, "c": c, "special": s, "tokens": t_total}  # fmt: skip


def match(path: pathlib.Path, truth: dict[str, Any], feed: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The ONNX tensors whose values are the hooked activation (in some view of the grid)."""
    import numpy as np
    import onnx

    values = all_tensors(path, feed or {"input": truth["x"]})
    producer = {o: nd.op_type for nd in onnx.load(str(path)).graph.node for o in nd.output}
    g = truth["grid_values"]
    tol = 1e-4 * float(np.abs(g).max())
    found = []
    for name, t in values.items():
        for view, v in _views(np.asarray(t, np.float64), len(g), truth["c"], truth["h"], truth["w"], truth["tokens"], truth["special"]):
            if float(np.abs(v - g).max()) <= tol:
                found.append({"name": name, "op": producer.get(name, ""), "shape": list(t.shape), "view": view})
                break
    return found


def write_fixture(torch, fam: Family, model, out_dir: pathlib.Path, exporters: list[str]) -> list[str]:
    import numpy as np
    import onnxruntime as ort

    truth = ground_truth(torch, fam, model)
    written = []
    for exporter in exporters:
        stem = f"{fam.name}_{exporter}"
        path = out_dir / f"{stem}.onnx"
        try:
            export(torch, model, fam.size, path, dynamo=exporter == "dynamo")
        except Exception as exc:  # an exporter that cannot take this model is recorded, not fatal
            print(f"{stem}: export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            path.unlink(missing_ok=True)
            continue
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        diff = float(np.abs(sess.run(None, {"input": truth["x"]})[0] - truth["logits"]).max())
        tensors = match(path, truth)
        manifest = {
            "family": fam.name,
            "title": fam.title,
            "exporter": exporter,
            "file": path.name,
            "input": {"name": "input", "layout": "NCHW", "size": list(fam.size)},
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "torch": torch.__version__.split("+")[0],
            "max_logit_difference": diff,
            "ground_truth": {
                "how": f"{'pre-' if fam.hook(model)[1] == 'input' else ''}forward hook on {type(fam.hook(model)[0]).__name__}"
                + (" (its output, through ReLU)" if fam.relu_after else "") + f", activation {fam.kind}",
                "shape": truth["shape"],
                "kind": fam.kind,
                "channels": truth["c"],
                "grid": [truth["h"], truth["w"]],
                "stride": [fam.size[0] / truth["h"], fam.size[1] / truth["w"]],
                "special_tokens": truth["special"],
                "tokens": truth["tokens"],
                "tensors": tensors,
            },
        }
        (out_dir / f"{stem}.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        print(f"{stem}: {path.stat().st_size / 1e3:.0f} kB, logits diff {diff:.1e}, E_L {truth['shape']} = "
              f"{[t['name'] for t in tensors] or 'NOT FOUND'}")  # fmt: skip
        if not tensors or diff > 1e-3:
            raise SystemExit(f"{stem}: ground truth not found in the graph, or the export differs from torch")
        written.append(stem)
    return written


def write_pad_fixtures(torch, out_dir: pathlib.Path) -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort

    torch.manual_seed(0)
    model = pad_cnn(torch).eval()
    fam = Family("pad_cnn", "CNN with explicit input Pad", lambda t, v: model, (128, 128), lambda m: (m.conv4, "output"), relu_after=True)
    write_fixture(torch, fam, model, out_dir, ["torchscript", "dynamo"])
    twin = pad_cnn_nhwc(model, fam.size)
    onnx.checker.check_model(twin, full_check=True)
    path = out_dir / "pad_cnn_tf2onnx.onnx"
    onnx.save(twin, str(path))
    truth = ground_truth(torch, fam, model)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x_nhwc = np.ascontiguousarray(truth["x"].transpose(0, 2, 3, 1))
    diff = float(np.abs(sess.run(None, {"input_1": x_nhwc})[0] - truth["logits"]).max())
    tensors = match(path, truth, {"input_1": x_nhwc})
    manifest = json.loads((out_dir / "pad_cnn_torchscript.json").read_text())
    manifest.update(exporter="tf2onnx-style", file=path.name, input={"name": "input_1", "layout": "NHWC", "size": list(fam.size)},
                    max_logit_difference=diff)  # fmt: skip
    manifest["ground_truth"]["tensors"] = tensors
    manifest["note"] = "hand-built with onnx.helper in tf2onnx's shape (TensorFlow and tf2onnx were not installed); same weights"
    (out_dir / "pad_cnn_tf2onnx.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    print(f"pad_cnn_tf2onnx: logits diff {diff:.1e}, E_L = {[t['name'] for t in tensors]}")
    if not tensors or diff > 1e-3:
        raise SystemExit("pad_cnn_tf2onnx: ground truth not found, or the graph differs from torch")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=OUT_DIR)
    parser.add_argument("--only", nargs="*", help="family names (default: all)")
    parser.add_argument("--exporters", nargs="*", default=["torchscript", "dynamo"])
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    tv = import_torchvision()
    args.out.mkdir(parents=True, exist_ok=True)
    for i, fam in enumerate(_families()):
        if args.only and fam.name not in args.only:
            continue
        torch.manual_seed(i)
        model = fam.build(torch, tv).eval()
        write_fixture(torch, fam, model, args.out, args.exporters)
    if not args.only or "pad_cnn" in args.only:
        write_pad_fixtures(torch, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
