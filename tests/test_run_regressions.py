"""Regressions of ``pfv-onnx run`` found by review and by a new user, each through the
command line: resuming class groups, long file names, pictures that fail, a basis of
another size, inspect and run agreeing on the size, output folders inside the input
folder, read-only and reused output folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

import graphs
from pfv_onnx.cli import main

_KILL_AFTER_SAVE = r"""
import os, signal, sys
from pfv_onnx.runplan import progress
from pfv_onnx.cli import main
real = progress.Progress.save
def save(self, saved, *a, **k):
    real(self, saved, *a, **k)
    if saved.index == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
progress.Progress.save = save
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> Path:
    """A model whose class is the image's strongest colour channel (0: R, 1: G, 2: B)."""
    path = tmp_path_factory.mktemp("colour") / "colour.onnx"
    onnx.save(graphs.colour_classifier(), str(path))
    return path


def _pictures(folder: Path, channels: list[int], prefix: str = "p") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(channels))
    paths = []
    for i, ch in enumerate(channels):
        pic = rng.integers(0, 90, (22 + 2 * i, 30, 3)).astype(np.uint8)
        pic[:, :, ch] = np.clip(pic[:, :, ch].astype(int) + 150, 0, 255).astype(np.uint8)
        paths.append(folder / f"{prefix}{i:02d}.png")
        cv2.imwrite(str(paths[-1]), pic)
    return paths


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def test_resumed_class_run_keeps_every_class_group(colour_model, tmp_path):
    """Bug: resuming --group-by class took the first group's end (the end of the file list)
    as the end of the run: 1 group and its images, status complete, exit 0."""
    folder = tmp_path / "images"
    _pictures(folder, [0, 1, 2, 0, 1, 2, 1, 0, 2, 1, 2, 1])  # four classes' worth of groups: R, G, B
    args = ["run", str(colour_model), str(folder), "--group-by", "class", "-q", "--no-html", "--batch-size", "4"]
    assert main([*args, "-o", str(tmp_path / "ref")]) == 0
    ref = _report(tmp_path / "ref")
    assert len(ref["groups"]) == 3
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-c", _KILL_AFTER_SAVE, "0", *args, "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert main([*args, "-o", str(out)]) == 0
    report = _report(out)
    assert report["status"] == "complete" and report["resume"]["groups_reused"] == 1
    assert [g["images"] for g in report["groups"]] == [g["images"] for g in ref["groups"]]
    assert len(report["images"]) == 12
    with np.load(out / "pfv.npz") as z, np.load(tmp_path / "ref" / "pfv.npz") as r:
        assert z["rgb"].shape[0] == 12
        for key in r.files:
            np.testing.assert_array_equal(z[key], r[key], err_msg=key)


def test_a_file_name_of_253_bytes_is_explained(colour_model, tmp_path):
    """Bug: names were cut at 120 characters; 83 CJK characters (249 bytes) plus
    ".overlay.png" went over the file system's 255 bytes: a traceback, all results lost."""
    folder = tmp_path / "images"
    long_name = folder / ("\u732b" * 83 + ".png")
    _pictures(folder, [0, 1])
    os.rename(folder / "p00.png", long_name)
    out = tmp_path / "out"
    assert main(["run", str(colour_model), str(folder), "-o", str(out), "-q", "--no-html"]) == 0
    report = _report(out)
    assert len(report["images"]) == 2 and not report["failures"]
    for im in report["images"]:
        for name in im["outputs"].values():
            assert (out / name).is_file() and len(Path(name).name.encode("utf-8")) <= 255


def test_rows_of_an_image_whose_pictures_failed_leave_the_archive(colour_model, tmp_path, monkeypatch):
    """Bug: an image that failed while its pictures were drawn (its file vanished) kept its
    rows in pfv.npz while the report called it failed."""
    import pfv_onnx.pipeline as pipeline

    folder = tmp_path / "images"
    paths = _pictures(folder, [0, 1, 2, 1])
    gone = paths[1]
    real = pipeline.PFV.decompose

    def decompose(self, *a, **k):  # the file vanishes after its forward pass
        gone.unlink(missing_ok=True)
        return real(self, *a, **k)

    monkeypatch.setattr(pipeline.PFV, "decompose", decompose)
    for module in ("pfv_onnx.runplan.execute", "pfv_onnx.cli.cmd_run"):  # keep no decoded image: each is read again to draw it
        if module in sys.modules and hasattr(sys.modules[module], "CACHE_BYTES"):
            monkeypatch.setattr(sys.modules[module], "CACHE_BYTES", -1)
    out = tmp_path / "out"
    assert main(["run", str(colour_model), str(folder), "-o", str(out), "-q", "--no-html"]) == 1
    report = _report(out)
    assert [f["file"] for f in report["failures"]] == [str(gone)]
    assert [im["file"] for im in report["images"]] == [str(p) for p in paths if p != gone]
    with np.load(out / "pfv.npz") as z:
        assert list(z["files"]) == [im["file"] for im in report["images"]]
        assert z["rgb"].shape[0] == z["components"].shape[0] == 3
        for im in report["images"]:
            assert str(z["files"][im["row"]]) == im["file"]


def test_a_basis_of_another_input_size_is_refused(tmp_path, capsys):
    """Bug: a basis fitted at one size was applied at another, with that size's colour statistics."""
    model = tmp_path / "dynhw.onnx"
    onnx.save(graphs.dynhw().model, str(model))  # any input size
    folder = tmp_path / "images"
    _pictures(folder, [0, 1, 2])
    basis = tmp_path / "basis.npz"
    assert main(["fit", str(model), str(folder), "-o", str(basis), "-q", "--size", "32x32"]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["run", str(model), str(folder), "-o", str(out), "-q", "--basis", str(basis), "--size", "16x24"]) == 2
    err = capsys.readouterr().err.strip()
    assert "fitted at input size" in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()


def test_inspect_and_run_analyse_the_same_size(tmp_path, capsys):
    """Bug: for a dynamic batch with a static HxW, inspect let the metadata's input_size
    override the static size; run did not."""
    model = graphs.vgg().model  # dynamic batch, static 24x32
    onnx.helper.set_model_props(model, {"input_size": "48x64"})
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert main(["inspect", str(path), "--json"]) == 0
    inspected = json.loads(capsys.readouterr().out)["size"]
    folder = tmp_path / "images"
    _pictures(folder, [0, 1])
    assert main(["run", str(path), str(folder), "-o", str(tmp_path / "out"), "-q", "--no-html"]) == 0
    assert inspected == _report(tmp_path / "out")["preprocessing"]["size"] == [24, 32]


@pytest.mark.parametrize("inside", ["pfv", "."])
def test_output_folder_inside_the_input_folder(colour_model, tmp_path, inside):
    """Bug: `run DIR -o DIR/pfv` (or -o DIR) twice explained its own pictures the second time."""
    folder = tmp_path / "images"
    _pictures(folder, [0, 1, 2])
    out = folder / inside
    args = ["run", str(colour_model), str(folder), "-o", str(out), "-q"]
    assert main(args) == 0
    first = _report(out)
    assert main([*args, "--overwrite"]) == 0
    second = _report(out)
    assert [im["file"] for im in second["images"]] == [im["file"] for im in first["images"]] == [str(folder / f"p{i:02d}.png") for i in range(3)]
    assert not second["skipped"]


def test_read_only_output_folder_fails_in_one_line_before_any_work(colour_model, tmp_path, capsys):
    """Bug: all the forward passes, then a 25-line traceback and exit 1."""
    folder = tmp_path / "images"
    _pictures(folder, [0, 1])
    if os.geteuid() == 0:  # root writes through permission bits: a folder of a read-only file system
        locked = Path("/sys/kernel")
        if not locked.is_dir():
            pytest.skip("no read-only folder for root here")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
    for out in (locked, locked / "sub"):
        assert main(["run", str(colour_model), str(folder), "-o", str(out), "-q"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "cannot" in err and "Traceback" not in err, err
    assert not (locked / "sub").exists()


def test_reused_output_folder_keeps_only_this_runs_files_and_the_users(colour_model, tmp_path):
    """Bug: a run in a folder used before kept the other run's pictures without a word."""
    first, second = tmp_path / "first", tmp_path / "second"
    _pictures(first, [0, 1, 2], prefix="a")
    _pictures(second, [2, 1], prefix="b")
    out = tmp_path / "out"
    assert main(["run", str(colour_model), str(first), "-o", str(out), "-q"]) == 0
    (out / "notes.txt").write_text("mine")
    assert main(["run", str(colour_model), str(second), "-o", str(out), "-q"]) == 0
    report = _report(out)
    listed = {name for im in report["images"] for name in im["outputs"].values()}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    pictures = {n for n in on_disk if n.endswith((".png", ".jpg")) and "/" not in n}  # the page's own pictures aside
    assert pictures == {n for n in listed if "/" not in n} | {"mosaic.jpg"}
    assert not any(n.startswith("a0") or "/a0" in n for n in on_disk)
    assert (out / "notes.txt").read_text() == "mine"


def test_demo_takes_overwrite(capsys):
    """Bug: demo said "--overwrite redoes them" but did not take --overwrite."""
    assert main(["demo", "--help"]) == 0
    assert "--overwrite" in capsys.readouterr().out
