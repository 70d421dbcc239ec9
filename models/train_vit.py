"""Train two small vision transformers on the synthetic shapes and export them to ONNX.

Data: ``synthetic.py`` (discs, squares, triangles on cluttered backgrounds, multi-label,
one sigmoid logit per class), the task of ``synthetic_shapes.onnx``.

Network (about 0.16 M parameters), input 1x3x64x64 RGB in [0, 1]:

    stem     conv 3x3  3->16, BN, ReLU, max-pool 2     64x64 ReLU map, then 32x32
             conv 3x3 16->32, BN, ReLU, max-pool 2     32x32 ReLU map, then 16x16
             conv 3x3 32->32, BN, ReLU                 16x16 ReLU map
    patches  conv 2x2 s2 32->64 (the patch embedding)   8x8 grid, 64 tokens of width 64
    tokens   [class token] + patch tokens + learned position embedding
    blocks   4 pre-norm transformer blocks (4 heads, MLP 128, GELU); attention is
             written out (MatMul, Softmax), so each block's attention probabilities
             are a tensor of the graph: ``/blocks/blocks.{i}/attn/Softmax_output_0``
    norm     final LayerNorm
    head     ``cls``:  Linear on the class token       -> synthetic_vit.onnx
             ``mean``: Linear on the mean of the tokens -> synthetic_vit_mean.onnx
                       (no class token at all)

A plain ViT does not train on two CPU cores in minutes; a CNN-like stem (3x3 convolutions
and max-pools at full resolution) does most of the work of finding the shapes, and the
transformer blocks on the 8x8 patch grid combine it. Training: 16000 images, batch 64,
one-cycle AdamW (lr 2e-3; weight decay 0.05 on weight matrices only), random flips and
quarter turns. ``--plain-share`` mixes in images repainted on one flat background colour
in the first epochs (a curriculum; off by default). ``synthetic_vit.onnx`` was trained with
``--head cls --epochs 14`` and ``synthetic_vit_mean.onnx`` with ``--head mean --epochs 14``,
each on one CPU thread:

    pip install torch==2.13.0 onnx onnxruntime numpy opencv-python-headless
    python models/train_vit.py --head cls --epochs 14
    python models/train_vit.py --head mean --epochs 14
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
if __package__ in (None, ""):
    sys.path.insert(0, str(HERE))
    import synthetic  # noqa: E402
else:  # pragma: no cover
    from . import synthetic

SIZE = 64
OPSET = 17
OUT = {"cls": HERE / "synthetic_vit.onnx", "mean": HERE / "synthetic_vit_mean.onnx"}


def build_model(torch, head: str, num_classes: int = 3, dim: int = 64, depth: int = 4, heads: int = 4, mlp: int = 128):
    """The network; module names give the ONNX tensor names (``/blocks.3/Add_1_output_0`` ...)."""
    nn = torch.nn

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.scale = (dim // heads) ** -0.5

        def forward(self, x):
            n, t, c = x.shape
            qkv = self.qkv(x).reshape(n, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(n, t, c))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim)
            self.attn = Attention()
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            )
            self.patch_embed = nn.Conv2d(32, dim, 2, 2)
            self.n_special = 1 if head == "cls" else 0
            grid = (SIZE // 8) ** 2
            if self.n_special:
                self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(torch.randn(1, self.n_special + grid, dim) * 0.02)
            self.blocks = nn.Sequential(*[Block() for _ in range(depth)])
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, num_classes)

        def forward(self, x):
            x = self.patch_embed(self.stem(x))  # (N, dim, 8, 8)
            x = x.flatten(2).transpose(1, 2)  # (N, 64, dim), row-major grid
            if self.n_special:
                x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            x = self.norm(self.blocks(x + self.pos_embed))
            return self.head(x[:, 0] if self.n_special else x.mean(dim=1))

    return ViT()


def plain_backgrounds(images, masks, rng):
    """The same objects and masks on one flat background colour each, objects flat too."""
    import numpy as np

    out = np.empty_like(images)
    for i, objs in enumerate(masks):
        bg = rng.uniform(0, 255, 3)
        out[i] = bg
        for _, m in objs:
            for _ in range(30):
                colour = rng.uniform(0, 255, 3)
                if np.linalg.norm(colour - bg) >= 90:
                    break
            out[i][m] = colour
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head", choices=sorted(OUT), default="cls")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=16000)
    parser.add_argument("--n-val", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plain-share", type=float, default=0.0,
                        help="share of flat-background images in the first epoch, falling to zero by the middle")
    parser.add_argument("--out", type=pathlib.Path)
    parser.add_argument("--min-accuracy", type=float, default=0.8)
    args = parser.parse_args(argv)
    out = args.out or OUT[args.head]

    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed + 100)
    t_start = time.perf_counter()
    x_train, y_train, m_train = synthetic.make_dataset(args.n_train, seed=2 * args.seed + 11, size=SIZE)
    x_easy = plain_backgrounds(x_train, m_train, rng)
    x_val, y_val, _ = synthetic.make_dataset(args.n_val, seed=2 * args.seed + 12, size=SIZE)
    x_train_t = torch.from_numpy(synthetic.to_input(x_train))
    x_easy_t = torch.from_numpy(synthetic.to_input(x_easy))
    y_train_t = torch.from_numpy(y_train)
    x_val_t = torch.from_numpy(synthetic.to_input(x_val))
    print(f"data: {args.n_train} training + {args.n_val} held-out images in {time.perf_counter() - t_start:.1f} s")

    model = build_model(torch, args.head, len(synthetic.CLASS_NAMES))
    n_params = sum(p.numel() for p in model.parameters())
    steps = (args.n_train + args.batch_size - 1) // args.batch_size
    decay = [p for p in model.parameters() if p.ndim > 1 and p.shape[0] > 1]
    no_decay = [p for p in model.parameters() if not (p.ndim > 1 and p.shape[0] > 1)]
    groups = [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}]
    optimiser = torch.optim.AdamW(groups, lr=args.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps, pct_start=0.15)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(args.seed)

    def evaluate() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(x_val_t[i : i + 500]) for i in range(0, len(x_val_t), 500)]).numpy()
        pred, truth = logits > 0, y_val > 0.5
        return float((pred == truth).all(1).mean()), float((pred == truth).mean())

    print(f"model ({args.head} head): {n_params} parameters; {args.epochs} epochs of {steps} steps, {args.threads} thread(s)")
    t_train = time.perf_counter()
    half = max(1, args.epochs // 2)
    for epoch in range(args.epochs):
        model.train()
        easy_share = args.plain_share * max(0.0, 1.0 - epoch / half)
        order = torch.randperm(args.n_train, generator=gen)
        total = 0.0
        for step in range(steps):
            idx = order[step * args.batch_size : (step + 1) * args.batch_size]
            use_easy = torch.rand(len(idx), generator=gen) < easy_share
            xb = torch.where(use_easy[:, None, None, None], x_easy_t[idx], x_train_t[idx])
            if torch.rand(1, generator=gen).item() < 0.5:
                xb = xb.flip(3)
            xb = torch.rot90(xb, int(torch.randint(0, 4, (1,), generator=gen)), dims=(2, 3))
            loss = loss_fn(model(xb), y_train_t[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        exact, per_label = evaluate()
        print(f"epoch {epoch + 1:2d} (plain share {easy_share:.2f}): loss {total / args.n_train:.4f}  "
              f"held-out exact-match {exact:.4f}  per-label {per_label:.4f}  ({time.perf_counter() - t_train:.0f} s)", flush=True)
    train_seconds = time.perf_counter() - t_train
    exact, per_label = evaluate()

    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = pathlib.Path(tmp) / "model.onnx"
        torch.onnx.export(
            model, (torch.zeros(1, 3, SIZE, SIZE),), str(tmp_path),
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )  # fmt: skip
        exported = onnx.load(str(tmp_path))
    del exported.metadata_props[:]
    head_text = "class-token head" if args.head == "cls" else "mean-pooled head (no class token)"
    meta = {
        "labels": "\n".join(synthetic.CLASS_NAMES),
        "preprocessing": "raw",
        "color_order": "RGB",
        "source": (
            f"pfv_onnx_models.train_vit --head {args.head}, seed {args.seed}, {args.n_train} images x {args.epochs} epochs, "
            f"torch {torch.__version__.split('+')[0]}; conv-stem ViT, {head_text}; multi-label sigmoid logits; "
            f"held-out exact-match accuracy {exact:.4f}"
        ),
    }
    for key, value in meta.items():
        exported.metadata_props.add(key=key, value=value)
    exported.doc_string = f"Synthetic shapes (disc, square, triangle), small ViT with a {head_text}; input RGB 64x64 in [0, 1]"
    onnx.checker.check_model(exported, full_check=True)
    onnx.save(exported, str(out))

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(x_val_t[:64]).numpy()
    diff = float(np.abs(session.run(None, {"input": x_val_t[:64].numpy()})[0] - expected).max())
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB)")
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
