"""The README's architecture table: what pfv-onnx decomposes in each fixture of tests/fixtures/architectures.

Runs ``pfv_onnx.inspect`` on every fixture (models/export_architectures.py made them) and
prints one Markdown row per export: family, exporter, the decomposed tensor (its producing
op, channels and grid, and whether it is the ground truth recorded from the PyTorch module),
and the weighting maps' grids. A fixture the engine refuses shows the refusal.

    python tools/architecture_table.py > table.md
"""

from __future__ import annotations

import json
import pathlib
import sys

import onnx

from pfv_onnx import PfvError, inspect

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "architectures"
ORDER = ["resnet", "vgg", "densenet", "googlenet", "inception_v3", "mobilenet_v2", "mobilenet_v3", "efficientnet",
         "efficientnet_v2", "regnet", "convnext", "vit", "swin", "swin_v2", "maxvit", "pad_cnn"]  # fmt: skip
EXPORTERS = ["torchscript", "dynamo", "tf2onnx-style"]


def row(manifest: dict) -> str:
    path = FIXTURES / manifest["file"]
    gt = manifest["ground_truth"]
    truth = {t["name"] for t in gt["tensors"]}
    h, w = manifest["input"]["size"]
    head = f"| {manifest['title']} | {manifest['exporter']} | {h}x{w} "
    try:
        rep = inspect(path)
    except PfvError as exc:
        return head + f"| refused: {exc} | | | |"
    ops = {o: n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node for o in n.output}
    d = rep.decomposed
    special = f", {gt['special_tokens']} special token(s)" if gt["special_tokens"] else ""
    el = f"`{d.name}` ({ops.get(d.name, '?')}, {d.channels} ch{special})"
    right = "yes" if d.name in truth else f"no (ground truth: {', '.join(sorted(f'`{t}`' for t in truth))})"
    weights = ", ".join(f"{fm.hw[0]}x{fm.hw[1]}" + (" (attention received)" if fm.op == "Softmax" else "") for fm in rep.weighting) or "none"
    return head + f"| {el} | {d.hw[0]}x{d.hw[1]} | {right} | {weights} |"


def main() -> int:
    manifests = [json.loads(p.read_text()) for p in FIXTURES.glob("*.json")]
    manifests.sort(key=lambda m: (ORDER.index(m["family"]) if m["family"] in ORDER else 99, EXPORTERS.index(m["exporter"])))
    print("| architecture | exporter | input | decomposed map (E_L) | grid | E_L right? | weighting maps |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for m in manifests:
        print(row(m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
