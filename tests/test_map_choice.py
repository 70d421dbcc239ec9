"""Weighting maps are activations of the network's own layers: never the input image (or what it
becomes before a learned layer), never a Pad, never a grid that is not the input's over a whole
stride; and one network exported two ways gets the same maps and the same colours."""

from __future__ import annotations

import numpy as np
import pytest

import graphs
import token_graphs as tg
from pfv_onnx import PFV, inspect
from pfv_onnx.map_choice import whole_stride


def test_one_network_two_exporters_same_resolutions_and_colours(save_model):
    torch_case, _ = tg.pad_torch()
    tf_case, _ = tg.pad_tf()
    a = PFV(save_model(torch_case.model, "pad_torch"), provider="cpu")
    b = PFV(save_model(tf_case.model, "pad_tf"), provider="cpu")
    batch = torch_case.batch(n=6, seed=5)
    res_a = a.explain(batch)
    res_b = b.explain(batch.transpose(0, 2, 3, 1).copy())
    hw_a = [m.hw for m in res_a.maps]
    hw_b = [m.hw for m in res_b.maps]
    assert hw_a == hw_b == [(16, 16), (8, 8), (4, 4)]
    assert [m.op for m in res_a.maps] == ["Relu"] * 3
    # the two graphs compute the same maps: checked on the raw activations, without the engine
    _, ra = graphs.fetch(torch_case.model, torch_case.all_expected, batch)
    _, rb = graphs.fetch(tf_case.model, tf_case.all_expected, batch.transpose(0, 2, 3, 1).copy())
    for x, y in zip(torch_case.all_expected, tf_case.all_expected):
        np.testing.assert_allclose(ra[x], rb[y], rtol=1e-4, atol=1e-4)
    assert np.abs(res_a.rgb - res_b.rgb).max() < 1e-3


def test_pad_outputs_and_the_padded_image_are_never_weighting_maps(save_model):
    case, _ = tg.pad_torch()
    rep = inspect(save_model(case.model, "pad_torch"))
    names = [m.name for m in rep.candidates]
    assert "/Pad_output_0" not in names  # the padded image: no map of the network's
    assert "/Pad_1_output_0" in names  # a padded map is listed (it can be named) ...
    assert all(m.op != "Pad" for m in rep.weighting)  # ... but never weights


def test_a_map_grown_by_padding_is_no_weighting_map(save_model):
    """Pad 3 then a 1x1 conv gives a 22x22 map from a 16x16 input ("stride 0.73"): refused;
    the 8x8 activation after the strided conv weights instead."""
    n = graphs._Net(seed=40)
    t = n.op("Pad", ["image", n.const(np.array([0, 0, 3, 3, 0, 0, 3, 3], np.int64))])
    grown = n.conv_relu(t, 3, 8, k=1, out="grown")  # 22x22
    w, b = n.conv_params(8, 8, 8)
    t = n.relu(n.op("Conv", [grown, n.const(w.astype(np.float32)), n.const(b.astype(np.float32))], kernel_shape=[8, 8],
                    strides=[2, 2]), "s2")  # (22 - 8) / 2 + 1 = 8
    e = n.conv_relu(t, 8, 12, stride=2, out="e")  # 4x4
    t = n.op("Flatten", [n.op("GlobalAveragePool", [e])], axis=1)
    n.gemm(t, 12, 3, out="logits")
    m = n.model("grown", [graphs._vi("image", graphs.F32, ["N", 3, 16, 16])], [graphs._vi("logits", graphs.F32, ["N", 3])])
    rep = inspect(save_model(m, "grown"))
    assert rep.decomposed.name == "e"
    assert [w.name for w in rep.weighting] == ["s2"]
    assert "grown" in [c.name for c in rep.candidates]


@pytest.mark.parametrize("cells,pixels,ok", [
    (112, 224, True), (56, 224, True), (7, 224, True), (224, 224, True),
    (230, 224, False), (113, 224, False), (225, 224, False),
    (149, 299, True), (147, 299, True), (73, 299, True), (35, 299, True), (17, 299, True), (8, 299, True),
    (218, 224, True),  # a valid 7x7 convolution at stride 1 loses 6 cells
])
def test_whole_stride(cells, pixels, ok):
    assert whole_stride(cells, pixels) is ok
