"""Peak memory of a streaming basis fit against the number of images.

Each count runs in a fresh Python process (so every peak is its own): it builds a small
convolutional network with onnx.helper (or loads --model), streams that many random
images through ``basis.fit`` in batches, and reports the process's resident memory after
loading the model and its peak (ru_maxrss) after the fit. A flat peak across counts shows
that memory does not grow with the number of images.

    python tools/fit_memory.py                      # 1000, 5000, 10000 images
    python tools/fit_memory.py --counts 500 2000 --batch-size 64 --model model.onnx
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def small_cnn(path: Path, size: int = 64) -> Path:
    """conv-relu(3->16), maxpool, conv-relu(16->32), maxpool, conv-relu(32->64), GAP, Gemm(10)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []

    def conv_relu(x: str, cin: int, cout: int, name: str) -> str:
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        b = (0.1 * rng.standard_normal(cout)).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}_conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"{name}_conv"], [f"{name}_relu"]))
        return f"{name}_relu"

    t = conv_relu("input", 3, 16, "c1")
    nodes.append(helper.make_node("MaxPool", [t], ["p1"], kernel_shape=[2, 2], strides=[2, 2]))
    t = conv_relu("p1", 16, 32, "c2")
    nodes.append(helper.make_node("MaxPool", [t], ["p2"], kernel_shape=[2, 2], strides=[2, 2]))
    t = conv_relu("p2", 32, 64, "c3")
    nodes.append(helper.make_node("GlobalAveragePool", [t], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    inits.append(numpy_helper.from_array((rng.standard_normal((10, 64)) / 8).astype(np.float32), "fc.w"))
    inits.append(numpy_helper.from_array(np.zeros(10, np.float32), "fc.b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child(model: str, count: int, batch_size: int) -> dict:
    """One fit over ``count`` random images, streamed; memory and time as a dict."""
    sys.path.insert(0, str(ROOT))
    from pfv_onnx import PFV
    from pfv_onnx import basis as B

    pfv = PFV(model, provider="cpu")
    c = pfv.input_channels or 3
    h, w = pfv.default_size
    shape = (c, h, w) if pfv.input_layout.value == "NCHW" else (h, w, c)

    def batches():
        for start in range(0, count, batch_size):
            n = min(batch_size, count - start)
            rng = np.random.default_rng(start)  # the same images in both passes
            yield rng.standard_normal((n, *shape), dtype=np.float32)

    pfv.forward(next(batches())[:1])  # warm the session before the baseline
    before = rss_mib()
    t0 = time.perf_counter()
    fitted = B.fit(pfv, batches, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "images": fitted.n_images,
        "rss_before_fit_mib": round(before, 1),
        "peak_rss_mib": round(peak, 1),
        "seconds": round(seconds, 1),
        "channels": int(fitted.directions.shape[0]),
        "decomposed": fitted.decomposed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[1000, 5000, 10000])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--model", help="an ONNX model (default: a small CNN at 64x64 built here)")
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "COUNT", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), int(args.child[2]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(small_cnn(Path(tmp) / "small_cnn.onnx"))
        print(f"{'images':>8} {'RSS before fit (MiB)':>21} {'peak RSS (MiB)':>15} {'seconds':>8}")
        for count in args.counts:
            out = subprocess.run(
                [sys.executable, __file__, "--child", model, str(count), str(args.batch_size)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{r['images']:>8} {r['rss_before_fit_mib']:>21} {r['peak_rss_mib']:>15} {r['seconds']:>8}", flush=True)


if __name__ == "__main__":
    main()
