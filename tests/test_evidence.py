"""Evidence that PFV maps mean what the method claims, on the bundled real models.

1. Model randomisation (Adebayo et al., 2018) on EfficientNet-Lite0 and the bundled photos:
   the trained model's maps differ from those of its randomised twin and change from image
   to image; the randomised model's maps are nearly the same for every image.
2. Localisation on the synthetic-shapes model, whose images come with object masks: the
   map's magnitude falls on the objects (pointing game, ROC AUC); the randomised model fails.
3. Class-consistent colours: objects of one class get similar colours, different classes
   different ones (synthetic model; EfficientNet-Lite0 on cat photos against other photos).
4. Framework coverage: the PyTorch export, the Paddle export and an NHWC graph go end to
   end through the command line.

Thresholds were set from the values measured when these tests were written (in each test's
docstring), with a margin; the figures a test measures are printed (``pytest -s``). Every
figure is computed here in plain NumPy from the maps; pfv_onnx.sanity supplies only the
map magnitude (its definition is tested in test_sanity.py) and the randomised models.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import graphs
from pfv_onnx import PFV, sanity
from pfv_onnx.cli import main

bundled = pytest.importorskip("pfv_onnx_models")

SEED = 0  # seed of every randomised model


def _model(name: str) -> Path:
    try:
        return bundled.model_path(name)
    except (FileNotFoundError, KeyError) as exc:
        pytest.skip(f"bundled model {name!r} missing: {exc}")


def _report(title: str, **figures: float) -> None:
    print(f"\n{title}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _randomised_twin(trained: PFV, out: Path) -> PFV:
    """PFV on the model with re-drawn weights, decomposing the same tensors as ``trained``."""
    sanity.randomise_model_file(trained.model_path, out, seed=SEED)
    maps = trained.feature_maps()
    return PFV(out, provider="cpu", layer=maps[-1], weight_layers=maps[:-1])


# --------------------------------------------------------------------------- 1. randomisation


@pytest.fixture(scope="module")
def efficientnet_sanity(tmp_path_factory):
    """``pfv-onnx sanity`` on EfficientNet-Lite0 and the bundled photos, once for the module."""
    out = tmp_path_factory.mktemp("sanity_efficientnet")
    photos = [str(p) for p in bundled.demo_images()]
    if len(photos) < 3:
        pytest.skip("fewer than three bundled photos")
    code = main(["sanity", str(_model("efficientnet-lite0")), *photos, "-o", str(out), "-q", "--seed", str(SEED), "--provider", "cpu"])
    assert code == 0
    return out


def test_randomised_efficientnet_maps_differ_and_ignore_the_image(efficientnet_sanity):
    """Measured (7 photos, seed 0): between-image share of the map variance 0.79 trained,
    0.025 randomised; Pearson correlation of trained and randomised contrast maps -0.07 on
    average (per image -0.19..0.10). The command's own scores: trained vs randomised
    Spearman -0.42, SSIM -0.01; between images Spearman 0.46 trained, 0.92 randomised
    (seeds 0-4: -0.38..-0.49 and 0.86..0.94)."""
    z = np.load(efficientnet_sanity / "sanity.npz")
    trained = z["rgb_trained"].astype(np.float64)
    randomised = z["rgb_randomised"].astype(np.float64)
    assert trained.shape == randomised.shape and trained.shape[0] == len(bundled.demo_images())

    def between_image_share(rgb):
        """Variance across images at each pixel, as a share of the variance of all values."""
        return rgb.var(axis=0).mean() / rgb.reshape(-1, rgb.shape[-1]).var(axis=0).mean()

    def contrast(rgb):
        """How far each pixel's colour is from its image's mean colour."""
        return np.linalg.norm(rgb - rgb.mean(axis=(1, 2), keepdims=True), axis=-1)

    share_t, share_r = between_image_share(trained), between_image_share(randomised)
    corr = [_pearson(a, b) for a, b in zip(contrast(trained), contrast(randomised))]
    scores = json.loads((efficientnet_sanity / "sanity.json").read_text())
    _report(
        "EfficientNet-Lite0 randomisation",
        between_image_share_trained=share_t,
        between_image_share_randomised=share_r,
        contrast_correlation=float(np.mean(corr)),
        spearman_trained_vs_randomised=scores["trained_vs_randomised"]["spearman"],
        ssim_trained_vs_randomised=scores["trained_vs_randomised"]["ssim"],
        spearman_between_trained=scores["between_images"]["trained"]["spearman"],
        spearman_between_randomised=scores["between_images"]["randomised"]["spearman"],
    )
    # randomised maps are nearly the same for every image, trained ones are not
    assert share_r < 0.15
    assert share_t > 0.5
    # trained and randomised maps of the same image are unrelated
    assert abs(float(np.mean(corr))) < 0.3
    # the command's scores say the same
    assert scores["trained_vs_randomised"]["spearman"] < 0.1
    assert scores["trained_vs_randomised"]["ssim"] < 0.3
    assert scores["between_images"]["randomised"]["spearman"] > 0.75
    assert scores["between_images"]["trained"]["spearman"] < 0.65
    assert scores["passed"] is True


def test_sanity_command_outputs_on_efficientnet(efficientnet_sanity):
    import cv2

    scores = json.loads((efficientnet_sanity / "sanity.json").read_text())
    # every convolution and the classifier were re-drawn: count them in the graph itself
    graph = onnx.load(str(_model("efficientnet-lite0")), load_external_data=False).graph
    assert scores["randomisation"]["weights"] == sum(n.op_type in ("Conv", "Gemm", "MatMul") for n in graph.node)
    assert scores["randomisation"]["skipped"] == []
    # the trained model still recognises the cat: top class is one of ImageNet's domestic cats (281-285)
    cat = [im for im in scores["images_used"] if "chelsea" in Path(im["file"]).name]
    if cat:
        assert 281 <= cat[0]["trained_prediction"]["class"] <= 285
    for name in ("trained.png", "randomised.png", "sanity.png"):
        assert cv2.imread(str(efficientnet_sanity / name)) is not None


# --------------------------------------------------------------------------- synthetic model


@lru_cache(maxsize=1)
def _synthetic_set():
    """Held-out images (seed 1234; training used seeds 1 and 2) with one to three objects each."""
    synthetic = pytest.importorskip("pfv_onnx_models.synthetic")
    images, _, masks = synthetic.make_dataset(48, seed=1234, size=64, min_objects=1, max_objects=3)
    return synthetic.to_input(images), masks


@pytest.fixture(scope="module")
def synthetic_maps(tmp_path_factory):
    """PFV rgb maps of the synthetic set from the trained model and its randomised twin."""
    batch, masks = _synthetic_set()
    trained = PFV(_model("synthetic-shapes"), provider="cpu")
    twin = _randomised_twin(trained, tmp_path_factory.mktemp("synthetic") / "randomised.onnx")
    return trained.explain(batch).rgb.astype(np.float64), twin.explain(batch).rgb.astype(np.float64), masks


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties get their average rank)."""
    from scipy.stats import rankdata

    r = rankdata(scores.ravel())
    pos = positive.ravel()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


#: Pointing-game tolerance in pixels of the 64 x 64 image: a hit is the brightest point within
#: this distance of an object (Zhang et al. 2016 allow 15 px on ImageNet-sized images). The
#: colour scaling clips the strongest responses to a plateau that spills slightly over the
#: object's edge, and argmax takes the plateau's first pixel, often just outside.
POINTING_TOLERANCE = 2.0


def _localisation(rgb: np.ndarray, masks) -> dict[str, float]:
    """Pointing-game hit rates (strict, and within POINTING_TOLERANCE), their chance levels
    (the share of pixels that would count as a hit), and the mean per-image ROC AUC of the
    map magnitude against the objects' pixels."""
    mag = sanity.magnitude(rgb)
    strict, tolerant, auc, area, near_area = [], [], [], [], []
    for m, objs in zip(mag, masks):
        union = np.zeros(m.shape, bool)
        for _, mask in objs:
            union |= mask
        ys, xs = np.nonzero(union)
        yy, xx = np.mgrid[0 : m.shape[0], 0 : m.shape[1]]
        dist = np.min(np.hypot(yy[..., None] - ys, xx[..., None] - xs), axis=-1)  # to the nearest object pixel
        y, x = np.unravel_index(np.argmax(m), m.shape)
        strict.append(bool(union[y, x]))
        tolerant.append(bool(dist[y, x] <= POINTING_TOLERANCE))
        auc.append(_auc(m, union))
        area.append(union.mean())
        near_area.append((dist <= POINTING_TOLERANCE).mean())
    return {
        "pointing": float(np.mean(strict)),
        "pointing_tolerant": float(np.mean(tolerant)),
        "chance": float(np.mean(area)),
        "chance_tolerant": float(np.mean(near_area)),
        "auc": float(np.mean(auc)),
    }


def test_synthetic_maps_point_at_the_objects(synthetic_maps):
    """Measured (48 held-out images, 1-3 objects each): the brightest point of the trained
    model's map lies on an object (within 2 px) in 0.85 of the images (strictly inside 0.56;
    chance 0.16, strictly 0.11); per-image AUC of magnitude against the object pixels 0.93.
    The randomised model (seed 0): 0.15 (0.08), AUC 0.44; seeds 1 and 2: 0.25 and 0.15, AUC
    0.53 and 0.49."""
    trained, randomised, masks = synthetic_maps
    t = _localisation(trained, masks)
    r = _localisation(randomised, masks)
    _report("synthetic localisation, trained", **t)
    _report("synthetic localisation, randomised", **r)
    assert t["pointing_tolerant"] >= 0.7
    assert t["auc"] >= 0.8
    # the randomised model fails the same test, staying near chance
    assert r["pointing_tolerant"] < 0.45
    assert r["auc"] < 0.65


def _object_colours(rgb: np.ndarray, masks) -> tuple[np.ndarray, np.ndarray]:
    """Mean colour inside each object's mask, and the object's class."""
    colours, classes = [], []
    for img, objs in zip(rgb, masks):
        for class_id, mask in objs:
            colours.append(img[mask].mean(axis=0))
            classes.append(class_id)
    return np.asarray(colours), np.asarray(classes)


def _class_distance_ratio(colours: np.ndarray, classes: np.ndarray) -> tuple[float, float, float]:
    """(mean distance between objects of different classes, within one class, their ratio)."""
    d = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    iu = np.triu_indices(len(classes), 1)
    same = (classes[:, None] == classes[None])[iu]
    between, within = d[iu][~same].mean(), d[iu][same].mean()
    return float(between), float(within), float(between / within)


def test_synthetic_objects_get_class_consistent_colours(synthetic_maps):
    """Mean colour inside each object's mask (one decomposition over the 48 images, about 95
    objects). Measured: mean distance between objects of different classes / within one class
    4.3 trained (0.97 / 0.23); randomised 1.02 (seeds 1, 2: 1.00, 0.98)."""
    trained, randomised, masks = synthetic_maps
    b_t, w_t, ratio_t = _class_distance_ratio(*_object_colours(trained, masks))
    b_r, w_r, ratio_r = _class_distance_ratio(*_object_colours(randomised, masks))
    _report("synthetic class colours", between_trained=b_t, within_trained=w_t, ratio_trained=ratio_t,
            between_randomised=b_r, within_randomised=w_r, ratio_randomised=ratio_r)
    assert ratio_t > 2.5
    assert ratio_r < 1.5


# --------------------------------------------------------------------------- cats


def _cat_and_other_photos():
    """The bundled cat photo as five separate images (itself, mirrored, two corner crops, a
    mirrored crop: the bundled photos hold only one cat) and every other bundled photo."""
    from pfv_onnx.inputs import decode_image

    photos = {p.stem: decode_image(p).bgr for p in bundled.demo_images()}
    cat_keys = [k for k in photos if "cat" in k]
    if len(cat_keys) != 1 or len(photos) < 4:
        pytest.skip("needs the one bundled cat photo and at least three others")
    cat = photos.pop(cat_keys[0])
    h, w = cat.shape[:2]
    cats = [
        cat,
        cat[:, ::-1],
        cat[: int(h * 0.85), : int(w * 0.85)],
        cat[int(h * 0.15) :, int(w * 0.15) :],
        cat[int(h * 0.1) : int(h * 0.95), int(w * 0.05) : int(w * 0.9)][:, ::-1],
    ]
    return [np.ascontiguousarray(c) for c in cats], list(photos.values())


def test_efficientnet_colours_cats_alike_and_other_photos_differently(tmp_path):
    """Mean colour of each whole map (a cat fills its photo), one decomposition over cats and
    other photos. Measured: between cats and others / within cats 15.1 trained, 1.3 randomised
    (seed 0; seeds 1, 2: 0.93, 0.99). The cat images are crops and mirror images of one photo,
    so the within-cat distance is that of one cat seen five ways, not of five different cats."""
    from pfv_onnx.inputs import make_preprocessing, preprocess, stack_batch

    cats, others = _cat_and_other_photos()
    prep = make_preprocessing("inception", size=224)  # the model's preprocessing (metadata: inception, RGB)
    batch = stack_batch([preprocess(im, prep) for im in cats + others])
    is_cat = np.array([True] * len(cats) + [False] * len(others))
    trained = PFV(_model("efficientnet-lite0"), provider="cpu")
    twin = _randomised_twin(trained, tmp_path / "randomised.onnx")

    def ratio(rgb):
        colours = rgb.astype(np.float64).mean(axis=(1, 2))
        d = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
        within = d[np.ix_(is_cat, is_cat)][np.triu_indices(len(cats), 1)].mean()
        between = d[np.ix_(is_cat, ~is_cat)].mean()
        return float(between), float(within), float(between / within)

    res = trained.explain(batch)
    b_t, w_t, r_t = ratio(res.rgb)
    b_r, w_r, r_r = ratio(twin.explain(batch).rgb)
    _report("EfficientNet-Lite0 cat colours", between_trained=b_t, within_trained=w_t, ratio_trained=r_t,
            between_randomised=b_r, within_randomised=w_r, ratio_randomised=r_r)
    # the trained model sees a cat in every cat image (ImageNet classes 281-285 are domestic cats)
    top = res.outputs[trained.output_names[0]].argmax(axis=1)
    assert all(281 <= c <= 285 for c in top[is_cat])
    assert r_t > 5.0
    assert r_r < 2.5


# --------------------------------------------------------------------------- 4. frameworks


def test_pytorch_export_end_to_end(tmp_path):
    """EfficientNet-Lite0 (PyTorch, TorchScript exporter) through ``pfv-onnx run``: the
    preprocessing comes from the model's metadata and the logits equal a plain onnxruntime
    run on images preprocessed here."""
    import cv2

    photos = bundled.demo_images()[:3]
    model = _model("efficientnet-lite0")
    out = tmp_path / "out"
    assert main(["run", str(model), *map(str, photos), "-o", str(out), "-q", "--provider", "cpu"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["preprocessing"]["preset"] == "inception"
    z = np.load(out / "pfv.npz")
    assert z["rgb"].shape == (3, 224, 224, 3)
    x = []
    for p in photos:
        rgb = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        small = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32)
        x.append(((small / 255.0 - 0.5) / 0.5).transpose(2, 0, 1))
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (logits,) = sess.run(None, {sess.get_inputs()[0].name: np.stack(x)})
    np.testing.assert_allclose(z[f"output/{sess.get_outputs()[0].name}"], logits, rtol=1e-4, atol=1e-4)


def _text_line(text: str):
    import cv2

    img = np.full((48, 192, 3), 255, np.uint8)
    cv2.putText(img, text, (4, 32), cv2.FONT_HERSHEY_SIMPLEX, 0.62, (0, 0, 0), 2, cv2.LINE_AA)
    return img


def test_paddle_export_end_to_end(tmp_path):
    """PaddleOCR's text-direction classifier (paddle2onnx, Constant-node weights, batch norm,
    hard-swish, squeeze-excite) through ``pfv-onnx run`` with its own preprocessing (BGR,
    inception, 48x192), on text lines drawn here upright and turned by 180 degrees: the
    outputs equal a plain onnxruntime run, and the lines' orientation is recognised
    (measured: 8 of 8 right)."""
    import cv2

    lines = ["Principal features", "ONNX runtime 1.32", "Sanity checks", "Hello world 2018"]
    folder = tmp_path / "text"
    folder.mkdir()
    x, truth, files = [], [], []
    for i, text in enumerate(lines):
        up = _text_line(text)
        for turn, img in ((0, up), (1, np.ascontiguousarray(up[::-1, ::-1]))):
            path = folder / f"line{i}_{turn}.png"
            cv2.imwrite(str(path), img)
            files.append(path)
            truth.append(turn)
            x.append(((img.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1))  # BGR as read
    out = tmp_path / "out"
    args = ["run", str(_model("ppocr-cls")), *map(str, files), "-o", str(out), "-q", "--provider", "cpu",
            "--preset", "inception", "--bgr", "--size", "48x192"]  # fmt: skip
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    z = np.load(out / "pfv.npz")
    assert z["rgb"].shape == (8, 48, 192, 3)
    assert report["model"]["input_layout"] == "NCHW"
    sess = ort.InferenceSession(str(_model("ppocr-cls")), providers=["CPUExecutionProvider"])
    (probs,) = sess.run(None, {sess.get_inputs()[0].name: np.stack(x)})
    order = [str(f) for f in z["files"]]
    got = z[f"output/{sess.get_outputs()[0].name}"][[order.index(str(f)) for f in files]]
    np.testing.assert_allclose(got, probs, rtol=1e-4, atol=1e-5)
    correct = int((probs.argmax(axis=1) == np.array(truth)).sum())
    print(f"\nPaddle text direction: {correct} of {len(truth)} right")
    assert correct >= 6


def test_nhwc_graph_end_to_end(tmp_path):
    """A graph whose body stays NHWC (Transposes around each Conv, ReduceMean over axes 1, 2)
    through ``pfv-onnx run`` and ``pfv-onnx sanity``: the input layout is found in the graph,
    images are fed channels-last, and the outputs equal a plain run on NHWC images made here."""
    import cv2

    case = graphs.nhwc_body()
    model = tmp_path / "nhwc.onnx"
    onnx.save(case.model, str(model))
    h, w = case.image_hw
    photos = bundled.demo_images()[:3]
    out = tmp_path / "out"
    assert main(["run", str(model), *map(str, photos), "-o", str(out), "-q", "--provider", "cpu", "--preset", "raw"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["input_layout"] == "NHWC"
    z = np.load(out / "pfv.npz")
    assert z["rgb"].shape == (3, h, w, 3)
    x = []
    for p in photos:
        rgb = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        x.append(cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (scores,) = sess.run(None, {case.input_name: np.stack(x)})
    np.testing.assert_allclose(z["output/scores"], scores, rtol=1e-4, atol=1e-5)
    # the sanity command takes the same graph
    out2 = tmp_path / "sanity"
    assert main(["sanity", str(model), *map(str, photos), "-o", str(out2), "-q", "--provider", "cpu", "--preset", "raw"]) == 0
    s = json.loads((out2 / "sanity.json").read_text())
    assert s["images"] == 3
    assert s["randomisation"]["weights"] == sum(n.op_type in ("Conv", "Gemm", "MatMul") for n in case.model.graph.node)
