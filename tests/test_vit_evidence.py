"""Evidence on the two trained token models (models/train_vit.py): a conv-stem ViT with a
class-token head and one with a mean-pooled head, on the synthetic shapes with masks.

- The bundled files are what the registry says, and classify held-out images (accuracy computed
  here with onnxruntime) as well as the script's 0.8 exact-match criterion asks.
- Fixed criterion of the project (not read off the result): through the real engine, the
  class-colour ratio of the trained model beats its randomised copy's by at least 0.15.
- The engine decomposes the patch tokens of the final LayerNorm (what the head reads), and
  the localisation of its maps, scored here with test_evidence's metrics, is the figure
  measured with the plain-NumPy PFV of tools/vit_localisation.py for the same choice
  (docs/TOKEN_MODELS.md).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from test_evidence import _class_distance_ratio, _localisation, _object_colours, _randomised_twin, _report, _synthetic_set

from pfv_onnx import PFV, inspect

bundled = pytest.importorskip("pfv_onnx_models")

HEADS = {"synthetic-vit": 1, "synthetic-vit-mean": 0}  # registry key -> special tokens
#: The conv stem's ReLU maps, the engine's weighting maps on these hybrids (finer than the patch grid).
STEM = {
    "synthetic-vit": ["/stem/stem.2/Relu_output_0", "/stem/stem.6/Relu_output_0", "/stem/stem.10/Relu_output_0"],  # 64, 32, 16 px
    "synthetic-vit-mean": ["/stem/stem.2/Relu_output_0", "/stem/stem.6/Relu_output_0", "/stem/stem.10/Relu_output_0"],
}
#: Known failures (strict: a case that starts passing fails until its entry goes).
XFAIL: dict[str, str] = {}

#: Measured with tools/vit_localisation.py's plain-NumPy PFV (docs/TOKEN_MODELS.md) for the
#: engine's choice on these hybrids: E_L = the final LayerNorm's patch tokens, weighted by the
#: conv stem's channel sums. Pointing game within 2 px, mean per-image AUC.
MEASURED: dict[str, dict[str, float]] = {
    "synthetic-vit": {"pointing_tolerant": 0.5625, "auc": 0.776},
    "synthetic-vit-mean": {"pointing_tolerant": 0.458, "auc": 0.661},
}


def _marks(test: str):
    return [pytest.mark.xfail(strict=True, reason=XFAIL[test])] if test in XFAIL else []


@pytest.mark.parametrize("key", HEADS)
def test_bundled_vit_is_registered_and_classifies(key):
    entry = bundled.MODELS[key]
    path = bundled.model_path(key)
    assert path.stat().st_size < 2_000_000
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["labels"].split("\n") == bundled.labels(key)
    assert (meta["preprocessing"], meta["color_order"]) == (entry.preset, entry.color_order)
    # held-out images of another seed than training (11/12): exact-match accuracy computed here
    synthetic = pytest.importorskip("pfv_onnx_models.synthetic")
    images, labels, _ = synthetic.make_dataset(400, seed=4321, size=64)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": synthetic.to_input(images)})[0]
    truth = labels > 0.5
    per_label = float(((logits > 0) == truth).mean())
    majority = float(np.maximum(truth.mean(axis=0), 1 - truth.mean(axis=0)).mean())  # one constant answer per class
    exact = float(((logits > 0) == truth).all(axis=1).mean())
    print(f"\n{key}: held-out per-label accuracy {per_label:.3f}, exact-match {exact:.3f}, majority answer {majority:.3f}")
    # Measured (400 images, seed 4321): per label 0.993 (class token), 0.973 (mean-pooled)
    # against 0.587; exact-match 0.983 and 0.923.
    assert per_label >= majority + 0.05
    assert exact >= 0.8  # train_vit.py's own criterion, on other held-out images
    # the class-token model has one more token than patches in its first block
    names = {o for n in model.graph.node for o in n.output}
    assert "/norm/LayerNormalization_output_0" in names


@pytest.fixture(scope="module")
def vit_maps(tmp_path_factory):
    batch, masks = _synthetic_set()
    out = {}
    for key in HEADS:
        trained = PFV(bundled.model_path(key), provider="cpu")
        twin = _randomised_twin(trained, tmp_path_factory.mktemp(key) / "randomised.onnx")
        out[key] = (trained, trained.explain(batch).rgb.astype(np.float64), twin.explain(batch).rgb.astype(np.float64))
    return out, masks


@pytest.mark.parametrize("key", [pytest.param(k, marks=_marks(f"colours-{k}")) for k in HEADS])
def test_trained_vit_colours_beat_randomised(vit_maps, key):
    """The issue's fixed criterion: ratio(trained) - ratio(randomised) >= 0.15, where ratio is
    the mean colour distance between objects of different classes over that within a class."""
    maps, masks = vit_maps
    _, trained, randomised = maps[key]
    b_t, w_t, r_t = _class_distance_ratio(*_object_colours(trained, masks))
    b_r, w_r, r_r = _class_distance_ratio(*_object_colours(randomised, masks))
    _report(f"{key} class colours", ratio_trained=r_t, ratio_randomised=r_r)
    assert r_t - r_r >= 0.15


@pytest.mark.parametrize("key", [pytest.param(k, marks=_marks(f"tokens-{k}")) for k in HEADS])
def test_engine_decomposes_the_tokens_the_head_reads(key):
    report = inspect(bundled.model_path(key))
    assert report.decomposed.name == "/norm/LayerNormalization_output_0"
    assert tuple(report.decomposed.hw) == (8, 8)


@pytest.mark.parametrize("key", [pytest.param(k, marks=_marks(f"localisation-{k}")) for k in HEADS])
def test_engine_localisation_is_the_measured_figure(vit_maps, key):
    maps, masks = vit_maps
    pfv, trained, _ = maps[key]
    assert pfv.feature_maps() == [*STEM[key], "/norm/LayerNormalization_output_0"]
    loc = _localisation(trained, masks)
    _report(f"{key} localisation", **loc)
    assert loc["pointing_tolerant"] == pytest.approx(MEASURED[key]["pointing_tolerant"], abs=0.05)
    assert loc["auc"] == pytest.approx(MEASURED[key]["auc"], abs=0.03)
