"""Every torchvision classification family, exported by PyTorch's two exporters, gets the right E_L.

The fixtures in ``fixtures/architectures`` come from ``models/export_architectures.py``:
tiny random-weight configurations of ResNet, VGG, DenseNet, GoogLeNet, Inception-v3,
MobileNetV2/V3, EfficientNet/V2, RegNet, ConvNeXt, ViT, Swin, Swin-V2 and MaxViT, each
exported with the TorchScript exporter and with dynamo, plus a CNN that pads its input
image explicitly (PyTorch exports, and the same weights as a tf2onnx-style NHWC graph).
Each fixture's JSON manifest holds the ground truth found from the PyTorch module (a hook
on the activation that feeds the head's pooling or class-token selection, matched by value
against every tensor of the ONNX graph), never from what pfv-onnx chooses.

Checked here:
- the decomposed map is one of the ground-truth tensors, on the ground-truth grid;
- the principal components pfv-onnx computes are those of the ground-truth activation
  (a NumPy PCA here of that tensor, fetched with onnxruntime);
- weighting maps are activations of the network at whole strides of the input, never a
  Pad output or the input image;
- two exports of one network (TorchScript and dynamo; PyTorch and tf2onnx-style) give maps
  at the same resolutions and the same rgb to 1e-3.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from pfv_onnx import PFV, inspect

FIXTURES = Path(__file__).parent / "fixtures" / "architectures"
MANIFESTS = {p.stem: json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))}
N_IMAGES = 4

#: (test, family) -> what fails on the current engine. Strict: a case that starts passing fails
#: until its entry is removed.
XFAIL: dict[tuple[str, str], str] = {}


def _param(test: str, stem: str):
    fam = MANIFESTS[stem]["family"]
    marks = [pytest.mark.xfail(strict=True, reason=XFAIL[test, fam])] if (test, fam) in XFAIL else []
    return pytest.param(stem, id=stem, marks=marks)


def _pairs() -> list[tuple[str, str]]:
    """(reference, other) exports of one network."""
    by_family: dict[str, list[str]] = {}
    for stem, m in MANIFESTS.items():
        by_family.setdefault(m["family"], []).append(stem)
    out = []
    for fam, stems in sorted(by_family.items()):
        ref = f"{fam}_torchscript"
        out += [(ref, s) for s in sorted(stems) if s != ref and ref in MANIFESTS]
    return out


def test_every_family_is_covered():
    families = {m["family"] for m in MANIFESTS.values()}
    expected = {"resnet", "vgg", "densenet", "googlenet", "inception_v3", "mobilenet_v2", "mobilenet_v3", "efficientnet",
                "efficientnet_v2", "regnet", "convnext", "vit", "swin", "swin_v2", "maxvit", "pad_cnn"}  # fmt: skip
    assert expected <= families
    exporters = {(m["family"], m["exporter"]) for m in MANIFESTS.values()}
    assert all((f, "torchscript") in exporters for f in expected)
    assert ("pad_cnn", "tf2onnx-style") in exporters
    for m in MANIFESTS.values():
        assert m["ground_truth"]["tensors"], m["file"]
        assert (FIXTURES / m["file"]).is_file()


@lru_cache(maxsize=None)
def _batch(stem: str) -> np.ndarray:
    """The same random images for every export of one family, in the fixture's input layout."""
    m = MANIFESTS[stem]
    h, w = m["input"]["size"]
    x = np.random.default_rng(7).uniform(0, 1, size=(N_IMAGES, 3, h, w)).astype(np.float32)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if m["input"]["layout"] == "NHWC" else x


@lru_cache(maxsize=None)
def _inspected(stem: str):
    return inspect(FIXTURES / MANIFESTS[stem]["file"])


@lru_cache(maxsize=None)
def _explained(stem: str):
    pfv = PFV(FIXTURES / MANIFESTS[stem]["file"], provider="cpu")
    return pfv, pfv.explain(_batch(stem))


def _tensor(stem: str, name: str) -> np.ndarray:
    """One tensor of the fixture's graph, by onnxruntime, for the test batch."""
    model = onnx.load(str(FIXTURES / MANIFESTS[stem]["file"]))
    del model.graph.output[:]
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    model.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {MANIFESTS[stem]["input"]["name"]: _batch(stem)})[0]


def _as_grid(t: np.ndarray, view: str, c: int, h: int, w: int, tokens: int) -> np.ndarray:
    """The ground-truth tensor as (N, C, h, w), from the manifest's description of its layout."""
    n = t.shape[0]
    if view == "NCHW":
        return t.reshape(n, c, h, w)
    if view == "NHWC":
        return t.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    assert view.startswith("tokens[")
    special = int(view[len("tokens[") : -2])
    return t.reshape(n, tokens, c)[:, special:].reshape(n, h, w, c).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("stem", [_param("decomposed", s) for s in MANIFESTS])
def test_decomposed_map_is_the_ground_truth(stem):
    gt = MANIFESTS[stem]["ground_truth"]
    report = _inspected(stem)
    names = {t["name"] for t in gt["tensors"]}
    assert report.decomposed.name in names, f"decomposed {report.decomposed.name!r}, ground truth {sorted(names)}"
    assert tuple(report.decomposed.hw) == tuple(gt["grid"])


@pytest.mark.parametrize("stem", [_param("components", s) for s in MANIFESTS])
def test_components_are_those_of_the_ground_truth_activation(stem):
    """A NumPy PCA of the ground-truth tensor (centred over the batch, top 3 eigenvectors of
    the covariance) gives the engine's projections up to each component's sign."""
    gt = MANIFESTS[stem]["ground_truth"]
    ref = gt["tensors"][0]
    h, w = gt["grid"]
    E = _as_grid(_tensor(stem, ref["name"]).astype(np.float64), ref["view"], gt["channels"], h, w, gt["tokens"])
    X = E.transpose(0, 2, 3, 1).reshape(-1, gt["channels"])
    X = X - X.mean(axis=0)
    vals, vecs = np.linalg.eigh(X.T @ X)
    P = X @ vecs[:, ::-1][:, :3]
    _, res = _explained(stem)
    got = res.components.astype(np.float64).transpose(0, 2, 3, 1).reshape(-1, 3)
    assert got.shape == P.shape
    for i in range(3):
        corr = abs(np.corrcoef(got[:, i], P[:, i])[0, 1])
        assert corr > 0.999, f"component {i}: |correlation| {corr:.4f} with the ground truth's"


@pytest.mark.parametrize("stem", [_param("weighting", s) for s in MANIFESTS])
def test_weighting_maps_are_activations_at_whole_strides(stem):
    m = MANIFESTS[stem]
    model = onnx.load(str(FIXTURES / m["file"]))
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    H, W = m["input"]["size"]
    report = _inspected(stem)
    for fm in report.weighting:
        assert fm.name != m["input"]["name"]
        assert fm.name in producer, f"{fm.name!r} is not produced by a node"
        assert producer[fm.name] != "Pad", f"{fm.name!r} is a Pad output"
        h, w = fm.hw
        # The input divided by a whole stride s: ceil(n / s) cells for a "same" layer, or a few
        # fewer for what unpadded ("valid") convolutions lose at the border (Inception-v3: 83 from
        # 171 at stride 2), never more (a padded copy of the input: 230 from 224).
        for cells, n in ((h, H), (w, W)):
            s = n // cells
            assert s >= 1 and cells <= -(-n // s), f"{fm.name!r} is {h}x{w} for a {H}x{W} input: larger than n / {s}"
            assert cells >= n // s - max(4, (n // s) // 8), f"{fm.name!r} is {h}x{w} for a {H}x{W} input: not n / {s}"
    # weighting maps are finer than E_L, but for the attention a single-resolution ViT's patch tokens receive
    assert all(fm.hw[0] > report.decomposed.hw[0] or (fm.op == "Softmax" and fm.hw == report.decomposed.hw) for fm in report.weighting)


@pytest.mark.parametrize(
    "ref,other",
    [pytest.param(a, b, id=f"{a}-vs-{b.rsplit('_', 1)[1]}",
                  marks=[pytest.mark.xfail(strict=True, reason=XFAIL["exporters", MANIFESTS[a]["family"]])]
                  if ("exporters", MANIFESTS[a]["family"]) in XFAIL else [])
     for a, b in _pairs()],
)  # fmt: skip
def test_exporters_agree(ref, other):
    pa, ra = _explained(ref)
    pb, rb = _explained(other)
    assert [fm.hw for fm in ra.maps] == [fm.hw for fm in rb.maps]
    np.testing.assert_allclose(ra.rgb, rb.rgb, atol=1e-3, rtol=0)
