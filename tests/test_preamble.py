"""The terminal preamble, the warnings (terminal and report.json) and the provenance record."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import onnx
import onnxruntime
import pytest

import graphs
from pfv_onnx import __version__
from pfv_onnx.cli import main


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    d = tmp_path_factory.mktemp("pics")
    rng = np.random.default_rng(5)
    for i in range(3):
        cv2.imwrite(str(d / f"p{i}.png"), cv2.GaussianBlur(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), (3, 3), 0))
    return d


def _stderr_lines(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def test_preamble_says_what_and_where_from(vgg_model, labels_file, pictures, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(vgg_model), str(pictures), "-o", str(out), "--labels", str(labels_file), "--no-html", "--preset", "raw"]) == 0
    err = _stderr_lines(capsys)
    assert err[0] == f"pfv-onnx run: {vgg_model} on cpu (default: auto, CUDA when available, else CPU)"
    text = "\n".join(err)
    assert "'input' NCHW" in text and "24x32 (model's static input shape)" in text
    assert "raw (option --preset); RGB (preset raw)" in text and "resize stretch (default)" in text
    assert "decomposed   /features/features.13/Relu_output_0 (16x6x8)" in text
    assert "weighting    /features/features.3/Relu_output_0 (8x24x32), /features/features.8/Relu_output_0 (12x12x16)" in text
    assert f"labels       10 names (option --labels {labels_file})" in text
    # the preamble comes before the work: before the progress bar's first line
    assert text.index("labels ") < text.index("pfv:")


def test_warnings_on_the_terminal_and_in_the_report(vgg_model, pictures, tmp_path, capsys):
    labels = tmp_path / "three.txt"
    labels.write_text("a\nb\nc\n")
    out = tmp_path / "out"
    argv = ["run", str(vgg_model), str(pictures), "-o", str(out), "--labels", str(labels), "--layer", "*Relu_output_0", "--no-html"]
    assert main(argv) == 0
    err = [ln for ln in _stderr_lines(capsys) if ln.startswith("warning: ")]
    report = json.loads((out / "report.json").read_text())
    assert [f"warning: {w}" for w in report["warnings"]] == err
    # --quiet: nothing on the terminal, the same warnings in the report
    assert main([*argv, "-q", "--overwrite"]) == 0
    assert _stderr_lines(capsys) == []
    assert json.loads((out / "report.json").read_text())["warnings"] == report["warnings"]
    labels_warning, layer_warning, group_warning = report["warnings"]
    assert labels_warning.startswith(f"3 labels (option --labels {labels}) for 10 classes")
    relus = [f"/features/features.{i}/Relu_output_0" for i in (1, 3, 6, 8, 11)]
    assert layer_warning.startswith("--layer '*Relu_output_0' matches 6 tensors; took '/features/features.13/Relu_output_0'")
    assert layer_warning.endswith(f"the others: {', '.join(relus)} (give a full name to choose)")
    assert group_warning.startswith("one group of 3 images: with fewer than 5")
    # a full name and enough images: no warnings
    many = tmp_path / "many"
    many.mkdir()
    for i in range(5):
        cv2.imwrite(str(many / f"m{i}.png"), np.full((20, 20, 3), 30 * i, np.uint8))
    out2 = tmp_path / "out2"
    assert main(["run", str(vgg_model), str(many), "-o", str(out2), "--layer", relus[-1], "--no-html"]) == 0
    assert not [ln for ln in _stderr_lines(capsys) if ln.startswith("warning:")]
    assert json.loads((out2 / "report.json").read_text())["warnings"] == []


def test_group_by_class_warns_of_small_classes(vgg_model, pictures, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(vgg_model), str(pictures), "-o", str(out), "--group-by", "class", "--no-html"]) == 0
    report = json.loads((out / "report.json").read_text())
    sizes = [g["images"] for g in report["groups"]]
    singles = sizes.count(1)
    [warning] = [w for w in report["warnings"] if w.startswith("--group-by class")]
    assert warning.startswith(f"--group-by class made {len(sizes)} groups, {len(sizes)} of them with fewer than 5 images")
    assert (f"({singles} of a single image)" in warning) == (singles > 0)
    assert f"warning: {warning}" in _stderr_lines(capsys)


def test_report_records_provenance(vgg_model, pictures, tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(vgg_model), str(pictures), "-o", str(out), "--no-html", "-q"]) == 0
    prov = json.loads((out / "report.json").read_text())["provenance"]
    assert prov["schema_version"] == 1
    versions = prov["versions"]
    assert (versions["pfv_onnx"], versions["onnxruntime"], versions["numpy"], versions["opencv"]) == (
        __version__, onnxruntime.__version__, np.__version__, cv2.__version__,
    )  # fmt: skip
    files = sorted(pictures.iterdir())
    assert prov["inputs"] == [{"file": str(f), "sha256": hashlib.sha256(f.read_bytes()).hexdigest()} for f in files]


def test_metadata_size_and_sources_in_the_preamble(tmp_path, pictures, capsys):
    model = graphs.dynhw().model
    onnx.helper.set_model_props(model, {"preprocessing": "inception", "color_order": "BGR", "input_size": "20x36"})
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert main(["sanity", str(path), str(pictures), "-o", str(tmp_path / "s"), "--no-html"]) == 0
    text = "\n".join(_stderr_lines(capsys))
    assert text.startswith(f"pfv-onnx sanity: {path} on cpu")
    assert "20x36 (model metadata)" in text and "inception (model metadata); BGR (model metadata)" in text
    assert "labels       none (classes shown by index)" in text
