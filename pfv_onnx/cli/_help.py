"""Help text and usage errors: examples for each command, one-line errors that point at --help."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "run": [
        ("pfv-onnx run model.onnx photos/ -o out", "maps, overlays, mosaic, report.json and report.html in out/"),
        ("pfv-onnx run model.onnx 'photos/**/*.jpg' -o out --group-size 64", "one decomposition per 64 images"),
        ("pfv-onnx run model.onnx photos/ -o out --preset imagenet --size 224 --labels classes.txt", "when the model's metadata lacks them"),
        ("pfv-onnx run model.onnx photos/ -o out --group-by class", "contrast the features within each predicted class"),
        ("pfv-onnx run model.onnx photos/ -o out --basis basis.npz", "colours that mean the same in every run (see 'pfv-onnx fit')"),
    ],
    "compare": [
        ("pfv-onnx compare model.onnx model_int8.onnx photos/ -o compare-out", "drift per image, pictures side by side, compare.html"),
        ("pfv-onnx compare model.onnx model_int8.onnx val/ -o out --fail-over 0.15", "a CI gate: exit 3 when an image drifts more"),
        ("pfv-onnx compare model.onnx retrained.onnx photos/ -o out --candidate-preset imagenet", "the candidate's preprocessing differs"),
    ],
    "fit": [
        ("pfv-onnx fit model.onnx photos/ -o basis.npz", "a basis over all the photos, in two streaming passes"),
        ("pfv-onnx run model.onnx new_photos/ -o out --basis basis.npz", "then project new images onto it"),
    ],
    "inspect": [
        ("pfv-onnx inspect model.onnx", "the spatial maps and the automatic choice, with reasons"),
        ("pfv-onnx inspect model.onnx --layer '*layer4*' --json", "what a pattern picks, as JSON"),
    ],
    "surgery": [
        ("pfv-onnx surgery model.onnx -o tapped.onnx", "the model with the feature maps as extra outputs"),
    ],
    "demo": [
        ("pfv-onnx demo", "EfficientNet-Lite0 on the bundled photos, results in pfv-demo/"),
        ("pfv-onnx demo --model ppocr-cls -o ppocr-demo", "the text-direction classifier on bundled text lines"),
        ("pfv-onnx demo --model synthetic-shapes -o shapes-demo", "the synthetic-shapes model on bundled shapes"),
    ],
    "sanity": [
        ("pfv-onnx sanity model.onnx photos/ -o sanity-out", "maps of the model beside those of a randomised copy"),
    ],
}
"""Per command: (command line, what it does), shown at the end of ``COMMAND --help``."""

QUIET_HELP = "print only errors on stderr: no preamble, warnings (report.json keeps them), progress bar or summary"
"""The one meaning of -q/--quiet in every command (results a command prints on stdout stay)."""


def epilog(command: str) -> str:
    lines = ["examples:"]
    for line, what in EXAMPLES.get(command, []):
        lines += [f"  {line}", f"      {what}"]
    return "\n".join(lines)


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line and a pointer to ``--help``."""

    def error(self, message: str) -> NoReturn:
        prog = self.prog
        sys.stderr.write(f"{prog}: error: {message}\nsee '{prog} --help'\n")
        sys.exit(2)
