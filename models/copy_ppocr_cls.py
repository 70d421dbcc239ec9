"""Copy PaddleOCR's text-direction classifier to ``ppocr_cls.onnx``, with metadata added.

The file ``ch_ppocr_mobile_v2.0_cls_infer.onnx`` (PaddleOCR mobile v2.0
direction classifier, exported by paddle2onnx) ships inside the PyPI wheel
``rapidocr-onnxruntime==1.4.4`` (Apache-2.0). Its SHA-256 is checked; the
graph and weights are kept as they are, and ``metadata_props`` are added so
that pfv-onnx feeds it as RapidOCR does without options: ``preprocessing``
``inception``, ``color_order`` ``BGR``, ``input_size`` ``48x192``, ``labels``
"0" and "180" (one per line) and ``source``. The class names are also
written to ``ppocr_cls_labels.txt``. A short check then renders a line of text with
OpenCV and expects "0" for it and "180" for the same line turned upside down.

    pip download --no-deps rapidocr-onnxruntime==1.4.4 -d /tmp/rapidocr
    python models/copy_ppocr_cls.py --wheel /tmp/rapidocr/rapidocr_onnxruntime-1.4.4-*.whl

or, with the wheel installed (``pip install --no-deps rapidocr-onnxruntime==1.4.4``):

    python models/copy_ppocr_cls.py
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import pathlib
import sys
import zipfile

HERE = pathlib.Path(__file__).resolve().parent
MEMBER = "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
SHA256 = "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"
LABELS = ["0", "180"]
HEIGHT, WIDTH = 48, 192
METADATA = {
    "preprocessing": "inception",
    "color_order": "BGR",
    "input_size": f"{HEIGHT}x{WIDTH}",
    "labels": "\n".join(LABELS),
    "source": "PaddleOCR ch_ppocr_mobile_v2.0_cls_infer.onnx from rapidocr-onnxruntime 1.4.4 (paddle2onnx), metadata added",
}


def _read_source(wheel: pathlib.Path | None) -> bytes:
    if wheel is not None:
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(MEMBER)
    # find_spec locates the installed package without importing it (its
    # __init__ needs dependencies this script does not).
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("rapidocr-onnxruntime is not installed; pass --wheel")
    root = pathlib.Path(list(spec.submodule_search_locations)[0])
    return (root / MEMBER.split("/", 1)[1]).read_bytes()


def _with_metadata(data: bytes) -> bytes:
    """The model with METADATA as its metadata_props; graph, weights and opsets untouched."""
    import onnx

    model = onnx.load_from_string(data)
    onnx.helper.set_model_props(model, METADATA)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _text_line(text: str):
    """A dark-on-light line of text drawn by OpenCV, BGR uint8."""
    import cv2
    import numpy as np

    canvas = np.full((40, 260, 3), 235, np.uint8)
    cv2.putText(canvas, text, (6, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (20, 20, 20), 2, cv2.LINE_AA)
    return canvas


def _preprocess(line_bgr):
    """RapidOCR's preprocessing: height 48, width by aspect (at most 192), [-1, 1], zero right padding."""
    import math

    import cv2
    import numpy as np

    h, w = line_bgr.shape[:2]
    new_w = min(WIDTH, int(math.ceil(HEIGHT * w / h)))
    resized = cv2.resize(line_bgr, (new_w, HEIGHT)).astype(np.float32)
    x = (resized.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    out = np.zeros((3, HEIGHT, WIDTH), np.float32)  # right padding: zeros after normalisation
    out[:, :, :new_w] = x
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=pathlib.Path, help="rapidocr_onnxruntime-1.4.4 wheel (default: installed package)")
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "ppocr_cls.onnx")
    parser.add_argument("--labels-out", type=pathlib.Path, default=HERE / "ppocr_cls_labels.txt")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime check")
    args = parser.parse_args(argv)

    data = _read_source(args.wheel)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"unexpected SHA-256 {digest} (want {SHA256})")
    args.out.write_bytes(_with_metadata(data))
    args.labels_out.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    print(f"wrote {args.out} (source {len(data)} B, sha256 {digest}; metadata added)")
    print(f"wrote {args.labels_out}")
    if args.no_check:
        return 0

    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    failures = 0
    for text in ["Hello world", "PFV 2020", "onnxruntime"]:
        line = _text_line(text)
        batch = np.stack([_preprocess(line), _preprocess(line[::-1, ::-1])])
        prob = session.run(None, {name: batch})[0]
        got = [LABELS[i] for i in prob.argmax(1)]
        print(f"  {text!r:15s} upright -> {got[0]:>3s} (p={prob[0].max():.3f}), "
              f"upside down -> {got[1]:>3s} (p={prob[1].max():.3f})")
        failures += got != ["0", "180"]
    if failures:
        raise SystemExit(f"FAILED: {failures} rendered line(s) classified wrongly")
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
