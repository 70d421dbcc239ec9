"""pfv-onnx compare --basis: the reference's fitted colour space, the images streamed in chunks.

Checked on the bundled EfficientNet-Lite0 and the seven bundled photos: a byte copy does not
drift, the chunk size changes nothing, the streamed CKA is linear CKA computed here in NumPy
on both models' E_L, and a basis of another model or size is refused."""

from __future__ import annotations

import dataclasses
import json
import shutil

import derived_models as dm
import graphs
import numpy as np
import onnx
import pytest

from pfv_onnx import basis as B
from pfv_onnx.cli import main

REDRAWN_AT = "/_blocks.15/_depthwise_conv/Conv"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A byte copy and a copy with one late layer re-drawn (the same channels, other maps)."""
    folder = tmp_path_factory.mktemp("compare_basis_models")
    base = onnx.load(str(dm.EFFICIENTNET))
    out = {"copy": folder / "copy.onnx", "redrawn": folder / "redrawn.onnx"}
    shutil.copyfile(dm.EFFICIENTNET, out["copy"])
    onnx.save(dm.redrawn(base, dm.conv_weight(base, REDRAWN_AT)), str(out["redrawn"]))
    return out


def fit(model, out, *extra) -> str:
    assert main(["fit", str(model), *map(str, dm.PHOTOS), "-o", str(out), "--batch-size", "4", "-q", *extra]) == 0
    return str(out)


@pytest.fixture(scope="module")
def basis(tmp_path_factory):
    return fit(dm.EFFICIENTNET, tmp_path_factory.mktemp("compare_basis") / "basis.npz")


def run_compare(candidate, basis, out, *extra):
    args = ["compare", str(dm.EFFICIENTNET), str(candidate), *map(str, dm.PHOTOS), "-o", str(out), "-q", "--basis", basis, *extra]
    code = main(args)
    return code, json.loads((out / "compare.json").read_text())


def test_byte_copy_has_no_drift_in_the_fitted_basis(models, basis, tmp_path):
    code, report = run_compare(models["copy"], basis, tmp_path / "o", "--batch-size", "3")
    assert code == 0 and len(dm.PHOTOS) == 7
    assert [r["drift"] for r in report["images"]] == [0.0] * 7
    assert report["summary"]["channels"] == "same" and report["summary"]["basis"]["n_images"] == 7
    assert all((tmp_path / "o" / r["picture"]).is_file() for r in report["images"])
    assert (tmp_path / "o" / "compare_mosaic.png").is_file()


def test_streaming_changes_nothing_and_cka_is_linear_cka(models, basis, tmp_path):
    _, two = run_compare(models["redrawn"], basis, tmp_path / "two", "--batch-size", "2", "--channels", "same")
    _, seven = run_compare(models["redrawn"], basis, tmp_path / "seven", "--batch-size", "7", "--channels", "same")
    drift_two = np.array([r["drift"] for r in two["images"]])
    drift_seven = np.array([r["drift"] for r in seven["images"]])
    assert [r["name"] for r in two["images"]] == [r["name"] for r in seven["images"]]
    assert drift_two.min() > 0.01  # a real change, so the agreement below means something
    np.testing.assert_allclose(drift_two, drift_seven, atol=1e-6)
    ev_two, ev_seven = two["summary"]["channel_evidence"], seven["summary"]["channel_evidence"]
    assert ev_two["matched_share"] == ev_seven["matched_share"] and abs(ev_two["median_correlation"] - ev_seven["median_correlation"]) < 1e-6
    # linear CKA of the two E_L over all images and positions, in plain NumPy
    batch = dm.photo_batch()
    _, ref = graphs.fetch(onnx.load(str(dm.EFFICIENTNET)), [dm.EFFICIENTNET_EL], batch)
    _, cand = graphs.fetch(onnx.load(str(models["redrawn"])), [dm.EFFICIENTNET_EL], batch)
    X, Y = (m[dm.EFFICIENTNET_EL].astype(np.float64).transpose(0, 2, 3, 1).reshape(-1, 1280) for m in (ref, cand))
    X, Y = X - X.mean(axis=0), Y - Y.mean(axis=0)
    Kx, Ky = X @ X.T, Y @ Y.T
    want = (Kx * Ky).sum() / (np.linalg.norm(Kx) * np.linalg.norm(Ky))
    assert 0.05 < want < 0.999
    assert abs(two["summary"]["cka"] - want) < 1e-6 and abs(seven["summary"]["cka"] - want) < 1e-6


def test_a_basis_of_another_model_or_size_is_refused(models, basis, tmp_path, capsys):
    other_model = fit(models["redrawn"], tmp_path / "other_model.npz")
    # EfficientNet-Lite0 takes 224x224 only: the same statistics, recorded as fitted at 160x160
    other_size = str(dataclasses.replace(B.load(basis), input_size=(160, 160)).save(tmp_path / "other_size.npz"))
    capsys.readouterr()
    for bad, words in ((other_model, "another model"), (other_size, "input size")):
        code = main(["compare", str(dm.EFFICIENTNET), str(models["copy"]), *map(str, dm.PHOTOS), "-o", str(tmp_path / "o"), "-q", "--basis", bad])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and words in err, err
    code = main(["compare", str(dm.EFFICIENTNET), str(models["copy"]), *map(str, dm.PHOTOS), "-o", str(tmp_path / "o"), "-q", "--basis", basis, "--channels", "procrustes"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "same channels" in err, err
