"""The notebook API: PFV.explain_images feeds a model as `pfv-onnx run` does, and its helpers."""

from __future__ import annotations

import base64
import re
import sys

import cv2
import numpy as np
import onnx
import pytest

import graphs
from pfv_onnx import PFV, PfvError
from pfv_onnx.cli import main
from pfv_onnx.config import resolve_config
from pfv_onnx.inputs import decode_image, make_preprocessing, preprocess, stack_batch


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three images of different sizes and content (PNG and JPEG)."""
    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    paths = []
    for i, (h, w) in enumerate([(40, 60), (50, 50), (33, 47)]):
        img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 0)
        cv2.circle(img, (w // 3, h // 2), 7 + 2 * i, (40 * i, 255, 200), -1)
        p = d / f"im{i}.{'jpg' if i == 1 else 'png'}"
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def meta_model(tmp_path_factory):
    """A model with a dynamic input whose metadata asks for caffe preprocessing, BGR, 20x36, 4 labels."""
    model = graphs.dynhw().model
    onnx.helper.set_model_props(model, {"preprocessing": "caffe", "color_order": "BGR", "labels": "w\nx\ny\nz", "input_size": "20x36"})
    path = tmp_path_factory.mktemp("meta") / "meta.onnx"
    onnx.save(model, str(path))
    return path


def test_cli_and_api_give_the_same_components(meta_model, photos, tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(meta_model), *map(str, photos), "-o", str(out), "-q", "--no-html"]) == 0
    with np.load(out / "pfv.npz") as z:
        files, components, eigen = list(z["files"]), z["components"], z["eigenvalues"][0]
    res = PFV(meta_model).explain_images(files)
    assert res.names == files
    np.testing.assert_allclose(res.components, components, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res.eigenvalues, eigen, rtol=1e-5)
    # and both follow the metadata: an independent batch made with caffe/BGR/20x36 gives them too
    prep = make_preprocessing("caffe", color_order="BGR", size=(20, 36))
    batch = stack_batch([preprocess(decode_image(f).bgr, prep) for f in files], "NCHW")
    np.testing.assert_allclose(PFV(meta_model).explain(batch).components, components, rtol=1e-4, atol=1e-5)


def test_api_options_override_metadata_and_arrays_equal_files(meta_model, photos):
    pfv = PFV(meta_model)
    from_files = pfv.explain_images(photos, preset="raw", size=16)
    assert from_files.config.preprocessing.size == (16, 16) and from_files.config.preprocessing.color_order == "RGB"
    assert from_files.config.sources["preset"] == "argument preset"
    rgb_arrays = [decode_image(p).bgr[:, :, ::-1] for p in photos]
    from_arrays = pfv.explain_images(rgb_arrays, preset="raw", size=16)
    np.testing.assert_allclose(from_arrays.components, from_files.components, rtol=1e-5, atol=1e-6)
    assert from_arrays.names == ["array 0", "array 1", "array 2"]
    floats = pfv.explain_images([a.astype(np.float32) / 255 for a in rgb_arrays], preset="raw", size=16)
    np.testing.assert_allclose(floats.components, from_files.components, rtol=1e-4, atol=1e-5)


def test_predictions_pictures_and_display(meta_model, photos):
    res = PFV(meta_model).explain_images(photos)
    logits = res.outputs["out"].astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for i, pred in enumerate(res.predictions):
        c = int(np.argmax(probs[i]))
        assert pred["class"] == c and pred["label"] == "wxyz"[c]
        assert pred["score"] == pytest.approx(probs[i, c], rel=1e-5)
        assert [t["class"] for t in pred["top5"]] == list(np.argsort(-probs[i], kind="stable")[:4])
    img = decode_image(photos[0]).bgr
    assert np.array_equal(res.image(0), img[:, :, ::-1])
    m = res.map_image(0)
    assert m.shape == img.shape and m.dtype == np.uint8
    # the map is rgb[0] upsampled, channel 0 drawn as red (first channel of an RGB picture)
    want = cv2.resize(res.rgb[0].astype(np.float32), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    assert np.abs(m.astype(np.float32) - want * 255).max() <= 1.0
    over = res.overlay_image(0, alpha=0.25)
    assert np.abs(over.astype(np.float32) - (0.25 * m + 0.75 * img[:, :, ::-1])).max() <= 1.0
    page = res._repr_html_()
    pictures = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pictures) == 3 * len(photos)
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(pictures[0]), np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and max(decoded.shape[:2]) == 160
    assert f"im0.png: {res.predictions[0]['label']}" in page


def test_show_without_matplotlib_says_what_to_install(meta_model, photos, monkeypatch):
    res = PFV(meta_model).explain_images(photos[:2])
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(PfvError, match="pip install matplotlib"):
        res.show()


def test_repr_names_model_provider_and_el(vgg_model):
    text = repr(PFV(vgg_model, provider="cpu"))
    assert text.startswith("PFV('vgg.onnx', provider='cpu', ")
    assert "E_L='/features/features.13/Relu_output_0' (16x6x8 at input 24x32)" in text


def test_bad_inputs_are_named(meta_model, tmp_path):
    pfv = PFV(meta_model)
    bad = tmp_path / "bad.png"
    bad.write_text("not a picture")
    with pytest.raises(PfvError, match=r"bad\.png: not an image"):
        pfv.explain_images([bad])
    with pytest.raises(PfvError, match="no such file"):
        pfv.explain_images([tmp_path / "missing.png"])
    with pytest.raises(PfvError, match=r"image array 0 must be \(H, W, 3\)"):
        pfv.explain_images([np.zeros((4, 4, 4), np.uint8)])
    with pytest.raises(PfvError, match=r"values must lie in \[0, 1\]"):
        pfv.explain_images([np.full((8, 8, 3), 2.0)])


def test_resolved_config_sources(meta_model, vgg_model, tmp_path):
    pfv = PFV(meta_model)
    cfg = resolve_config(pfv)
    p = cfg.preprocessing
    assert (p.preset, p.color_order, p.size, p.mean) == ("caffe", "BGR", (20, 36), (103.939, 116.779, 123.68))
    assert cfg.labels == ("w", "x", "y", "z")
    assert {k: cfg.sources[k] for k in ("size", "preset", "color_order", "labels", "resize")} == {
        "size": "model metadata", "preset": "model metadata", "color_order": "model metadata",
        "labels": "model metadata", "resize": "default",
    }  # fmt: skip
    assert cfg.sources["mean"] == "preset caffe"
    labels = tmp_path / "l.txt"
    labels.write_text("a\nb\nc\nd\n")
    cfg = resolve_config(pfv, size=(24, 24), color_order="RGB", labels=labels, named={"size": "option --size"})
    assert cfg.sources["size"] == "option --size" and cfg.sources["color_order"] == "argument color_order"
    assert cfg.labels == ("a", "b", "c", "d") and cfg.sources["labels"] == f"argument labels {labels}"
    assert cfg.preprocessing.mean == (123.68, 116.779, 103.939)  # caffe's means reordered for RGB
    vgg = resolve_config(PFV(vgg_model))
    assert (vgg.size, vgg.sources["size"], vgg.sources["preset"], vgg.labels) == ((24, 32), "model's static input shape", "default", None)
    with pytest.raises(PfvError, match="argument size 30x30 does not fit: the model takes a fixed height of 24"):
        resolve_config(PFV(vgg_model), size=30)
