"""Which token map and which weighting localise the objects in a trained single-resolution ViT?

Runs on the two small ViTs of ``models/train_vit.py`` (class-token head and mean-pooled head)
and the held-out synthetic images with masks that ``tests/test_evidence.py`` uses (seed 1234,
48 images, 1-3 objects). PFV is computed here in plain NumPy on tensors fetched with
onnxruntime, for every combination of

- E_L: the final LayerNorm's patch tokens (what the head reads), each block's output, the
  patch embedding;
- weighting of the upsampling (flat, as the method's step 2): none; the stem's channel sums
  (the CNN rule on the conv stem's ReLU maps, one per resolution); the patch embedding's channel sum;
  the token norms of the earlier blocks' outputs; the attention the class token pays to each
  patch in the last block (class-token model only); the attention each patch receives, averaged
  over heads and queries;

and scored with test_evidence's own metrics (pointing game within 2 px and strictly, per-image
ROC AUC of the map magnitude, class-colour ratio), for the trained model and its randomised copy
(``pfv_onnx.sanity.randomise_model_file``, seed 0). Figures go to docs/TOKEN_MODELS.md.

    python tools/vit_localisation.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

import cv2
import numpy as np
import onnx
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "models"))

import synthetic  # noqa: E402
from test_evidence import _class_distance_ratio, _localisation, _object_colours  # noqa: E402

from pfv_onnx import sanity  # noqa: E402

MODELS = {"class token": ROOT / "models" / "synthetic_vit.onnx", "mean-pooled": ROOT / "models" / "synthetic_vit_mean.onnx"}
DEPTH = 4
GRID = 8


def fetch(path: pathlib.Path, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    del model.graph.output[:]
    for name in names:
        vi = onnx.helper.make_empty_tensor_value_info(name)
        vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        model.graph.output.append(vi)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, sess.run(names, {"input": x})))


def patch_grid(tokens: np.ndarray, special: int) -> np.ndarray:
    """(N, T, C) tokens -> (N, C, h, w) patch tokens (special tokens at the front dropped)."""
    n, _, c = tokens.shape
    return tokens[:, special:].reshape(n, GRID, GRID, c).transpose(0, 3, 1, 2)


def pfv(E: np.ndarray, weights: list[np.ndarray], size: int) -> np.ndarray:
    """Plain PFV: PCA over the batch, flat activation-weighted upsampling, batch colour scaling."""
    n, c, h, w = E.shape
    X = E.transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float64)
    X -= X.mean(axis=0)
    _, vecs = np.linalg.eigh(X.T @ X)
    P = (X @ vecs[:, ::-1][:, :3]).reshape(n, h, w, 3)

    def up(a: np.ndarray) -> np.ndarray:
        return cv2.resize(a.astype(np.float64), (size, size), interpolation=cv2.INTER_LINEAR)

    out = np.stack([up(p) for p in P])
    if weights:
        A = sum(np.stack([up(s) for s in S]) for S in weights)
        out = out * A[..., None]
    z = np.clip((out - out.mean()) / out.std(), -1, 1)
    return (z - z.min()) / (z.max() - z.min())


def names_for(path: pathlib.Path) -> dict[str, str]:
    g = onnx.load(str(path), load_external_data=False).graph
    outs = {o for n in g.node for o in n.output}
    stem = [n.output[0] for n in g.node if n.op_type == "Relu" and n.output[0].startswith("/stem/")]
    names = {
        **{f"stem {i}": name for i, name in enumerate(stem)},
        "patch embedding": "/patch_embed/Conv_output_0",
        "final norm": "/norm/LayerNormalization_output_0",
        **{f"block {i}": f"/blocks/blocks.{i}/Add_1_output_0" for i in range(DEPTH)},
        **{f"attention {i}": f"/blocks/blocks.{i}/attn/Softmax_output_0" for i in range(DEPTH)},
    }
    missing = [v for v in names.values() if v not in outs]
    if missing:
        raise SystemExit(f"{path.name}: tensors not found: {missing}")
    return names


def configurations(t: dict[str, np.ndarray], names: dict[str, str], special: int) -> dict[str, tuple[np.ndarray, list[np.ndarray]]]:
    """name -> (E_L as (N, C, h, w), weighting maps as (N, H_l, W_l))."""
    final = patch_grid(t[names["final norm"]], special)
    norms = [np.linalg.norm(patch_grid(t[names[f"block {i}"]], special), axis=1) for i in range(DEPTH - 1)]
    stem = [t[v].sum(axis=1) for k, v in names.items() if k.startswith("stem ")]
    last_attn = t[names[f"attention {DEPTH - 1}"]]  # (N, heads, T, T)
    received = last_attn[:, :, :, special:].mean(axis=(1, 2)).reshape(-1, GRID, GRID)
    configs = {
        "final norm, none": (final, []),
        "final norm, stem channel sums": (final, stem),
        "final norm, patch-embedding channel sum": (final, [t[names["patch embedding"]].sum(axis=1)]),
        "final norm, earlier blocks' token norms": (final, norms),
        "final norm, attention received": (final, [received]),
    }
    if special:
        cls_attn = last_attn[:, :, 0, special:].mean(axis=1).reshape(-1, GRID, GRID)
        configs["final norm, class-token attention"] = (final, [cls_attn])
    for i in range(DEPTH):
        configs[f"block {i} output, none"] = (patch_grid(t[names[f"block {i}"]], special), [])
    configs["patch embedding, none"] = (t[names["patch embedding"]], [])
    return configs


def measure(path: pathlib.Path, x: np.ndarray, masks, special: int) -> dict[str, dict[str, float]]:
    names = names_for(path)
    t = fetch(path, x, list(names.values()))
    out = {}
    for label, (E, weights) in configurations(t, names, special).items():
        rgb = pfv(E, weights, x.shape[-1])
        loc = _localisation(rgb, masks)
        ratio = _class_distance_ratio(*_object_colours(rgb, masks))[2]
        out[label] = {**loc, "class_colour_ratio": ratio}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    images, labels, masks = synthetic.make_dataset(48, seed=1234, size=64, min_objects=1, max_objects=3)
    x = synthetic.to_input(images)
    results = {}
    for head, path in MODELS.items():
        special = 1 if head == "class token" else 0
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        acc = float(((sess.run(None, {"input": x})[0] > 0) == (labels > 0.5)).all(1).mean())
        with tempfile.TemporaryDirectory() as tmp:
            rnd = pathlib.Path(tmp) / "randomised.onnx"
            sanity.randomise_model_file(path, rnd, seed=0)
            results[head] = {"accuracy_on_these_48": acc, "trained": measure(path, x, masks, special),
                             "randomised": measure(rnd, x, masks, special)}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    for head, r in results.items():
        print(f"\n### {head} head (exact-match accuracy on these 48 images {r['accuracy_on_these_48']:.2f})\n")
        print("| E_L, weighting | pointing (2 px) | strict | AUC | class-colour ratio | randomised: pointing | AUC | ratio |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for label, m in r["trained"].items():
            q = r["randomised"][label]
            print(f"| {label} | {m['pointing_tolerant']:.2f} | {m['pointing']:.2f} | {m['auc']:.2f} | {m['class_colour_ratio']:.2f} "
                  f"| {q['pointing_tolerant']:.2f} | {q['auc']:.2f} | {q['class_colour_ratio']:.2f} |")  # fmt: skip
        any_m = next(iter(r["trained"].values()))
        print(f"\nchance: pointing (2 px) {any_m['chance_tolerant']:.2f}, strict {any_m['chance']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
