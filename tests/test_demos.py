"""Each bundled model's demo runs on images of its own domain, fed by the model's metadata alone."""

from __future__ import annotations

import json

import onnx
import pytest

import pfv_onnx_models as bundled
from pfv_onnx import PFV
from pfv_onnx.cli import main


@pytest.mark.parametrize("name", sorted(bundled.MODELS))
def test_bundled_models_carry_their_metadata(name):
    entry = bundled.MODELS[name]
    meta = {p.key: p.value for p in onnx.load(str(bundled.model_path(name)), load_external_data=False).metadata_props}
    assert meta["preprocessing"] == entry.preset
    assert meta["color_order"] == entry.color_order
    assert meta["labels"].splitlines() == bundled.labels(name)
    if name == "ppocr-cls":  # a dynamic input: the size comes from the metadata
        assert meta["input_size"] == "48x192"


def test_text_direction_demo_on_text_lines():
    images = bundled.demo_images("ppocr-cls")
    assert len(images) >= 4 and all(p.parent.name == "text_lines" for p in images)
    res = PFV(bundled.model_path("ppocr-cls"), provider="cpu").explain_images(images)
    assert res.config.size == (48, 192) and res.config.preprocessing.color_order == "BGR"
    # the file names say which lines are upside down
    assert [p["label"] for p in res.predictions] == [p.stem.rsplit("_", 1)[1] for p in images]
    assert min(p["score"] for p in res.predictions) > 0.9


def test_synthetic_demo_on_shapes():
    images = bundled.demo_images("synthetic-shapes")
    assert len(images) >= 5 and all(p.parent.name == "shapes" for p in images)
    res = PFV(bundled.model_path("synthetic-shapes"), provider="cpu").explain_images(images)
    for path, pred in zip(images, res.predictions):
        assert pred["label"] in path.stem.split("_", 1)[1].split("-"), path.name


def test_demo_command_takes_the_models_own_images(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", "ppocr-cls", "-o", str(out), "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert sorted(im["file"] for im in report["images"]) == sorted(str(p) for p in bundled.demo_images("ppocr-cls"))
    assert report["model"]["labels"]["source"] == "model metadata"
    assert report["preprocessing"]["size"] == [48, 192]
