"""Train the small synthetic-shapes CNN and export ``synthetic_shapes.onnx``.

Data: ``synthetic.py`` (discs, squares, triangles on cluttered backgrounds;
multi-label: one sigmoid logit per class, "present" when the logit > 0).
Training and held-out images come from different seeds.

Network (116k parameters), input 1x3x64x64 RGB in [0, 1]; module names
give the ONNX tensor names (``/relu4/Relu_output_0`` is the last map):

    64x64  conv1  3->16  3x3, BN, ReLU         -> pool1 (MaxPool 2)
    32x32  conv2 16->32  3x3, BN, ReLU         -> pool2 (MaxPool 2)
    16x16  conv3a 32->64, conv3b 64->64 (BN, ReLU) -> pool3 (MaxPool 2)
     8x8   conv4 64->96  3x3, BN, ReLU         -> gap (global average pool)
    fc     Linear 96->3 (logits)

Batch norm is folded into the convolutions at export (TorchScript exporter,
opset 17, dynamic batch). The ONNX file carries ``metadata_props``: labels,
preprocessing = raw, color_order = RGB, source. Defaults: 16000 training images,
6 epochs (one-cycle AdamW), 2 CPU threads, a few minutes:

    pip install torch==2.13.0 onnx onnxruntime numpy opencv-python-headless
    python models/train_synthetic.py            # --seed, --epochs, --n-train ...
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
if __package__ in (None, ""):
    # Run as a script: make ``synthetic`` importable from this folder.
    sys.path.insert(0, str(HERE))
    import synthetic  # noqa: E402
else:  # pragma: no cover - imported as pfv_onnx_models.train_synthetic
    from . import synthetic

SIZE = 64
OPSET = 17


def build_model(nn, num_classes: int = 3):
    """The network (``nn`` is ``torch.nn``); module names give the ONNX tensor names."""
    from collections import OrderedDict

    layers: list[tuple[str, object]] = []

    def conv(name: str, cin: int, cout: int) -> None:
        layers.extend([
            (f"conv{name}", nn.Conv2d(cin, cout, 3, padding=1, bias=False)),
            (f"bn{name}", nn.BatchNorm2d(cout)),
            (f"relu{name}", nn.ReLU(inplace=True)),
        ])

    conv("1", 3, 16)
    layers.append(("pool1", nn.MaxPool2d(2)))
    conv("2", 16, 32)
    layers.append(("pool2", nn.MaxPool2d(2)))
    conv("3a", 32, 64)
    conv("3b", 64, 64)
    layers.append(("pool3", nn.MaxPool2d(2)))
    conv("4", 64, 96)
    layers.extend([
        ("gap", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(96, num_classes)),
    ])
    return nn.Sequential(OrderedDict(layers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=16000)
    parser.add_argument("--n-val", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=6e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "synthetic_shapes.onnx")
    parser.add_argument("--labels-out", type=pathlib.Path, default=HERE / "synthetic_labels.txt")
    parser.add_argument("--min-accuracy", type=float, default=0.9,
                        help="fail when the held-out exact-match accuracy is lower")
    args = parser.parse_args(argv)

    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    t_start = time.perf_counter()

    # Data: training and held-out sets from different seeds.
    x_train, y_train, _ = synthetic.make_dataset(args.n_train, seed=2 * args.seed + 1, size=SIZE)
    x_val, y_val, _ = synthetic.make_dataset(args.n_val, seed=2 * args.seed + 2, size=SIZE)
    x_train_t = torch.from_numpy(synthetic.to_input(x_train))
    y_train_t = torch.from_numpy(y_train)
    x_val_t = torch.from_numpy(synthetic.to_input(x_val))
    t_data = time.perf_counter() - t_start
    print(f"data: {args.n_train} training + {args.n_val} held-out images in {t_data:.1f} s")

    model = build_model(nn, len(synthetic.CLASS_NAMES))
    n_params = sum(p.numel() for p in model.parameters())
    steps_per_epoch = (args.n_train + args.batch_size - 1) // args.batch_size
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch, pct_start=0.2)
    loss_fn = nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(args.seed)

    def evaluate() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(x_val_t[i:i + 512]) for i in range(0, len(x_val_t), 512)]).numpy()
        pred = logits > 0
        truth = y_val > 0.5
        return float((pred == truth).all(1).mean()), float((pred == truth).mean())

    print(f"model: {n_params} parameters; {args.epochs} epochs of {steps_per_epoch} steps, {args.threads} threads")
    t_train = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(args.n_train, generator=generator)
        total = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * args.batch_size:(step + 1) * args.batch_size]
            xb = x_train_t[idx]
            # Cheap augmentation: random flips and 90-degree turns (the classes are invariant).
            if torch.rand(1, generator=generator).item() < 0.5:
                xb = xb.flip(3)
            xb = torch.rot90(xb, int(torch.randint(0, 4, (1,), generator=generator)), dims=(2, 3))
            loss = loss_fn(model(xb), y_train_t[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        exact, per_label = evaluate()
        print(f"epoch {epoch + 1:2d}: loss {total / args.n_train:.4f}  held-out exact-match {exact:.4f}"
              f"  per-label {per_label:.4f}  ({time.perf_counter() - t_train:.0f} s)")
    train_seconds = time.perf_counter() - t_train
    exact, per_label = evaluate()

    # Export (eval mode: batch norm folded into the convolutions).
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = pathlib.Path(tmp) / "model.onnx"
        torch.onnx.export(
            model, (torch.zeros(1, 3, SIZE, SIZE),), str(tmp_path),
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )
        exported = onnx.load(str(tmp_path))
    if any(n.op_type == "BatchNormalization" for n in exported.graph.node):
        raise SystemExit("batch norm was not folded at export")
    del exported.metadata_props[:]
    meta = {
        "labels": "\n".join(synthetic.CLASS_NAMES),
        "preprocessing": "raw",
        "color_order": "RGB",
        "source": (
            f"pfv_onnx_models.train_synthetic, seed {args.seed}, {args.n_train} images x {args.epochs} epochs, "
            f"torch {torch.__version__.split('+')[0]}; multi-label sigmoid logits; "
            f"held-out exact-match accuracy {exact:.4f}"
        ),
    }
    for key, value in meta.items():
        exported.metadata_props.add(key=key, value=value)
    exported.doc_string = "Synthetic shapes (disc, square, triangle), multi-label; input RGB 64x64 in [0, 1]"
    onnx.checker.check_model(exported, full_check=True)
    onnx.save(exported, str(args.out))
    args.labels_out.write_text("\n".join(synthetic.CLASS_NAMES) + "\n", encoding="utf-8")

    # Check the file against torch.
    session = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(x_val_t[:64]).numpy()
    got = session.run(None, {"input": x_val_t[:64].numpy()})[0]
    diff = float(np.abs(got - expected).max())

    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB), {args.labels_out}")
    print(f"training time {train_seconds:.0f} s (total {time.perf_counter() - t_start:.0f} s)")
    print(f"held-out exact-match accuracy {exact:.4f}, per-label accuracy {per_label:.4f}")
    print(f"max |logit(onnxruntime) - logit(torch)|: {diff:.3e}")
    if diff >= 1e-3:
        raise SystemExit("FAILED: ONNX and PyTorch differ")
    if exact < args.min_accuracy:
        raise SystemExit(f"FAILED: held-out accuracy {exact:.4f} < {args.min_accuracy}")
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
