"""The pfv-onnx command line, end to end: in-process ``main([...])`` and the installed console script."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

import graphs
from pfv_onnx.cli import COMMANDS, main
from pfv_onnx.cli.cmd_run import predictions

ROOT = Path(__file__).resolve().parent.parent
GOOD = ["a/cat.png", "b/cat.jpg", "gray.png"]  # in the order the run sorts them


def _console_script() -> str:
    exe = Path(sys.executable).parent / ("pfv-onnx.exe" if os.name == "nt" else "pfv-onnx")
    if not exe.exists():
        pytest.fail(f"the console script {exe} is missing: install the package first (pip install -e '.[test]')")
    return str(exe)


def _cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_console_script(), *args], capture_output=True, text=True, timeout=timeout)


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Three good images (two called 'cat' in different folders, one grayscale), a truncated
    JPEG, a text file with a .png name, and a text file that a folder search skips."""
    d = tmp_path_factory.mktemp("images")
    (d / "a").mkdir()
    (d / "b").mkdir()
    yy, xx = np.mgrid[0:40, 0:60]
    colour = np.stack([xx * 4, yy * 6, (xx + yy) * 2], axis=-1).astype(np.uint8)
    cv2.circle(colour, (20, 20), 8, (255, 255, 255), -1)
    cv2.imwrite(str(d / "a" / "cat.png"), colour)
    square = np.zeros((50, 50, 3), np.uint8)
    cv2.rectangle(square, (10, 10), (35, 40), (0, 200, 255), -1)
    cv2.imwrite(str(d / "b" / "cat.jpg"), square)
    cv2.imwrite(str(d / "gray.png"), (yy[:30, :20] * 8).astype(np.uint8))
    ok, jpg = cv2.imencode(".jpg", colour)
    (d / "corrupt.jpg").write_bytes(jpg.tobytes()[: len(jpg) // 2])
    (d / "fake.png").write_text("this is not a picture\n")
    (d / "readme.txt").write_text("notes about the pictures\n")
    return d


@pytest.fixture(scope="module")
def vgg_run(image_folder, vgg_model, labels_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    code = main(["run", str(vgg_model), str(image_folder), "-o", str(out), "--quiet", "--labels", str(labels_file)])
    return code, out


# --------------------------------------------------------------------------- run


def test_run_exit_code_and_outputs(vgg_run, image_folder):
    code, out = vgg_run
    assert code == 1  # two inputs failed, the others done
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "complete"
    assert [Path(im["file"]).relative_to(image_folder).as_posix() for im in report["images"]] == GOOD
    names = [im["name"] for im in report["images"]]
    assert names == ["a__cat", "b__cat", "gray"]  # unique although two files are called cat
    for im in report["images"]:
        h, w = cv2.imread(im["file"], cv2.IMREAD_COLOR).shape[:2]
        assert im["size"] == [h, w]
        for kind in ("map", "overlay"):
            pic = cv2.imread(str(out / im["outputs"][kind]), cv2.IMREAD_UNCHANGED)
            assert pic is not None and pic.shape == (h, w, 3) and pic.dtype == np.uint8
        assert im["group"] == 0
        assert im["prediction"]["label"] in graphs.VGG_LABELS
        assert 0.0 < im["prediction"]["score"] <= 1.0
    mosaic = cv2.imread(str(out / "mosaic.jpg"))
    assert mosaic is not None and mosaic.shape[0] > 2 * 160
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".pfv-onnx-files.json"]  # no temp files left


def test_run_reports_failures_with_reasons(vgg_run, image_folder):
    _, out = vgg_run
    report = json.loads((out / "report.json").read_text())
    failures = {Path(f["file"]).name: f["reason"] for f in report["failures"]}
    assert set(failures) == {"corrupt.jpg", "fake.png"}
    assert re.search("corrupt|truncated", failures["corrupt.jpg"], re.I)
    assert "not an image" in failures["fake.png"]
    assert all("\n" not in r for r in failures.values())
    assert [Path(s["file"]).name for s in report["skipped"]] == ["readme.txt"]


def test_report_describes_the_run(vgg_run, vgg_model, labels_file):
    import hashlib

    _, out = vgg_run
    report = json.loads((out / "report.json").read_text())
    case = graphs.vgg()
    assert report["model"]["path"] == str(vgg_model.resolve())
    assert report["model"]["sha256"] == hashlib.sha256(vgg_model.read_bytes()).hexdigest()
    assert report["model"]["labels"] == {"source": str(labels_file), "count": 10}
    used = [m["name"] for m in report["feature_maps"]]
    assert used == case.all_expected
    assert report["feature_maps"][-1]["role"] == "decomposed" and report["feature_maps"][-1]["reason"]
    assert report["preprocessing"]["preset"] == "imagenet" and report["preprocessing"]["size"] == [24, 32]
    assert len(report["groups"]) == 1 and report["groups"][0]["images"] == 3
    assert abs(sum(report["groups"][0]["explained_variance_ratio"])) <= 1.0
    assert set(report["timings"]) >= {"decode_s", "forward_s", "decompose_s", "render_s", "total_s"}


def test_npz_agrees_with_the_python_api(vgg_run, vgg_model):
    from pfv_onnx import PFV
    from pfv_onnx.inputs import load_image, make_preprocessing, stack_batch

    _, out = vgg_run
    with np.load(out / "pfv.npz", allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    files = [str(f) for f in data["files"]]
    assert len(files) == 3
    prep = make_preprocessing("imagenet", size=(24, 32))
    batch = stack_batch([load_image(f, prep)[1] for f in files], "NCHW")
    res = PFV(str(vgg_model)).explain(batch)
    assert data["rgb"].dtype == np.uint8  # by default: the maps as the pictures hold them, value / 255
    assert np.abs(data["rgb"] / 255.0 - res.rgb).max() <= 0.5 / 255 + 1e-6
    np.testing.assert_allclose(data["components"], res.components, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(data["eigenvalues"][0], res.eigenvalues, rtol=1e-5)
    np.testing.assert_allclose(data["explained_variance_ratio"][0], res.explained_variance_ratio, rtol=1e-5)
    np.testing.assert_allclose(data["output/logits"], res.outputs["logits"], rtol=1e-5, atol=1e-6)
    assert list(data["feature_maps"]) == list(res.feature_maps)
    assert data["group"].tolist() == [0, 0, 0]
    # the PNG is the rgb map, upsampled to the image size
    pic = cv2.imread(str(out / "gray.pfv.png"))
    expected = cv2.resize(res.rgb[2][:, :, ::-1].astype(np.float32), (pic.shape[1], pic.shape[0]), interpolation=cv2.INTER_LINEAR)
    assert np.abs(pic.astype(np.float32) - expected * 255).max() <= 1.0


def test_run_twice_gives_identical_files(vgg_run, vgg_model, image_folder, labels_file, tmp_path):
    _, first = vgg_run
    again = tmp_path / "again"
    assert main(["run", str(vgg_model), str(image_folder), "-o", str(again), "-q", "--labels", str(labels_file)]) == 1
    for name in ["a__cat.pfv.png", "a__cat.overlay.png", "b__cat.overlay.jpg", "gray.pfv.png", "mosaic.jpg", "pfv.npz"]:
        assert (again / name).read_bytes() == (first / name).read_bytes(), name


def test_console_script_groups_and_progress(image_folder, vgg_model, tmp_path):
    out = tmp_path / "out"
    p = _cli("run", str(vgg_model), str(image_folder / "a"), str(image_folder / "b"), str(image_folder / "*.png"),
             str(image_folder / "corrupt.jpg"), "-o", str(out), "--group-size", "2", "--batch-size", "1")  # fmt: skip
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert "2 failed" in p.stderr and "corrupt.jpg" in p.stderr
    assert "img" in p.stderr  # the progress bar
    report = json.loads((out / "report.json").read_text())
    assert [g["images"] for g in report["groups"]] == [2, 1]  # groups are filled with images that decode
    assert [im["group"] for im in report["images"]] == [0, 0, 1]
    assert {Path(f["file"]).name for f in report["failures"]} == {"corrupt.jpg", "fake.png"}
    with np.load(out / "pfv.npz") as z:
        assert z["rgb"].shape == (3, 24, 32, 3) and z["eigenvalues"].shape == (2, 3)
    for im in report["images"]:
        assert cv2.imread(str(out / im["outputs"]["overlay"])) is not None
    # captions say the group when there are several
    assert report["pfv"]["groups"] == 2


@pytest.mark.parametrize("factory, extra", [("tf2onnx_nhwc", []), ("fixed1", ["--batch-size", "2"])])
def test_run_other_layouts_and_fixed_batch(factory, extra, image_folder, tmp_path):
    case = getattr(graphs, factory)()
    model = tmp_path / f"{factory}.onnx"
    onnx.save(case.model, str(model))
    out = tmp_path / "out"
    code = main(["run", str(model), *(str(image_folder / g) for g in GOOD), "-o", str(out), "-q", *extra])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["input_layout"] == case.layout
    assert report["preprocessing"]["layout"] == case.layout
    assert [m["name"] for m in report["feature_maps"]][-1] == case.expected_decomposed
    assert len(report["images"]) == 3 and report["failures"] == []


def test_run_crop_and_options(image_folder, vgg_model, tmp_path):
    out = tmp_path / "out"
    code = main(["run", str(vgg_model), str(image_folder / "b" / "cat.jpg"), str(image_folder / "a" / "cat.png"), "-o", str(out), "-q",
                 "--resize", "crop", "--preset", "caffe", "--k", "2", "--hierarchical", "--n-sigma", "2", "--alpha", "1"])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["pfv"]["k"] == 2 and report["pfv"]["hierarchical"] is True
    assert report["preprocessing"]["color_order"] == "BGR" and report["preprocessing"]["resize"] == "crop"
    square = next(im for im in report["images"] if im["name"] == "b__cat")
    assert square["crop_box"] == [0, 6, 50, 44]  # 50x50 cropped to the 24:32 aspect
    pic = cv2.imread(str(out / "b__cat.pfv.png"))
    assert (pic[:6] == 0).all() and (pic[44:] == 0).all()  # outside the crop: not seen
    with np.load(out / "pfv.npz") as z:
        assert z["rgb"].shape[-1] == 2


# --------------------------------------------------------------------------- errors


def _one_line_error(code: int, err: str, command: str) -> str:
    assert code == 2
    lines = _error_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"pfv-onnx {command}: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_errors_are_one_line(tmp_path, image_folder, vgg_model, capsys):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(os.urandom(300))
    cases = [
        (["run", str(tmp_path / "missing.onnx"), str(image_folder), "-o", str(tmp_path / "o")], "model file not found"),
        (["run", str(junk), str(image_folder), "-o", str(tmp_path / "o")], "not a readable ONNX model"),
        (["run", str(vgg_model), str(tmp_path / "nothing-here"), "-o", str(tmp_path / "o")], "no image files found"),
        (["run", str(vgg_model), str(image_folder), "-o", str(tmp_path / "o"), "--size", "50"], "--size 50x50 does not fit"),
        (["run", str(vgg_model), str(image_folder), "-o", str(tmp_path / "o"), "--labels", str(tmp_path / "nope.txt")], "cannot read the labels file"),
        (["inspect", str(tmp_path)], "not a folder"),
    ]
    for argv, message in cases:
        code = main(argv)
        line = _one_line_error(code, capsys.readouterr().err, argv[0])
        assert message in line, line


def test_usage_error_exit_2(capsys):
    assert main(["run", "--no-such-option"]) == 2
    assert "see 'pfv-onnx run --help'" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["frobnicate"]) == 2


def test_debug_shows_traceback(tmp_path, capsys):
    assert main(["--debug", "inspect", str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "model file not found" in err
    assert main(["inspect", "--debug", str(tmp_path / "missing.onnx")]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_console_script_error_without_traceback(tmp_path):
    p = _cli("inspect", str(tmp_path / "missing.onnx"))
    _one_line_error(p.returncode, p.stderr, "inspect")


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: pfv-onnx {command}")
    assert "--debug" in text


def test_top_level_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s+\S", text, re.M), command


def test_help_does_not_import_heavy_packages():
    code = (
        "import sys\n"
        "from pfv_onnx.cli import COMMANDS, main\n"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    codes = [main(['--help'])] + [main([c, '--help']) for c in COMMANDS]\n"
        "print(codes, sorted(m for m in ('onnxruntime', 'cupy', 'onnx_graphsurgeon', 'torch') if m in sys.modules))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"{[0] * (len(COMMANDS) + 1)} []"


def test_console_script_help():
    p = _cli("--help")
    assert p.returncode == 0 and "usage: pfv-onnx" in p.stdout
    p = _cli("--version")
    assert p.returncode == 0 and p.stdout.startswith("pfv-onnx ")


# --------------------------------------------------------------------------- inspect, surgery


def test_inspect_table_and_json(vgg_model, capsys):
    case = graphs.vgg()
    assert main(["inspect", str(vgg_model)]) == 0
    text = capsys.readouterr().out
    decomposed_line = next(ln for ln in text.splitlines() if "DECOMPOSED" in ln)
    assert case.expected_decomposed in decomposed_line
    assert f"decomposed: {case.expected_decomposed}" in text
    assert "why:" in text
    assert main(["inspect", str(vgg_model), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["decomposed"] == case.expected_decomposed
    assert data["weighting"] == case.expected_weighting
    assert data["size"] == [24, 32]
    strides = {c["name"]: c["stride"] for c in data["candidates"]}
    assert strides[case.expected_decomposed] == 4


def test_inspect_layer_override(vgg_model, capsys):
    assert main(["inspect", str(vgg_model), "--json", "--layer", "*features.8/Relu*", "--weight-layers", "none"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["decomposed"] == "/features/features.8/Relu_output_0" and data["weighting"] == []


def test_inspect_model_without_image_input(tmp_path, capsys):
    path = tmp_path / "mlp.onnx"
    onnx.save(graphs.mlp().model, str(path))
    _one_line_error(main(["inspect", str(path)]), capsys.readouterr().err, "inspect")


def test_surgery_writes_a_checked_model(vgg_model, tmp_path, capsys):
    case = graphs.vgg()
    out = tmp_path / "sub" / "vgg_pfv.onnx"
    assert main(["surgery", str(vgg_model), "-o", str(out)]) == 0
    assert "3 extra outputs" in capsys.readouterr().err
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    names = [o.name for o in model.graph.output]
    assert names[0] == "logits"
    assert len(names) == 1 + len(case.all_expected)
    for source in case.all_expected:  # each tapped map is an extra output named after its tensor
        assert any(source in n for n in names[1:]), (source, names)
    _one_line_error(main(["surgery", str(vgg_model), "-o", str(vgg_model)]), capsys.readouterr().err, "surgery")


# --------------------------------------------------------------------------- predictions


def test_predictions_logits_probabilities_and_labels():
    logits = np.array([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]], np.float32)
    recs, name = predictions({"aux": np.zeros((2, 4, 4, 4), np.float32), "out": logits}, 2, ["a", "b", "c"])
    assert name == "out"
    assert [r["label"] for r in recs] == ["b", "a"]
    e = np.exp(logits[0] - logits[0].max())
    assert recs[0]["score"] == pytest.approx(float(e[1] / e.sum()), rel=1e-5)
    probs = np.array([[0.1, 0.7, 0.2]], np.float32)
    recs, _ = predictions({"p": probs}, 1, None)
    assert recs[0]["class"] == 1 and recs[0]["label"] is None and recs[0]["score"] == pytest.approx(0.7)
    recs, _ = predictions({"p": np.array([[0.0, 5.0, 1.0, 0.0]], np.float32)}, 1, ["x", "y", "z"])
    assert recs[0]["label"] == "x"  # 4 outputs, 3 labels: a leading background class
    recs, name = predictions({"maps": np.zeros((1, 3, 4, 4), np.float32)}, 1, None)
    assert recs == [None] and name is None


# --------------------------------------------------------------------------- demo, README, CI


@pytest.mark.skipif(not hasattr(os, "fork"), reason="sets a file-size limit in the child before it starts")
def test_a_full_disk_is_one_line_not_a_traceback(tmp_path):
    """A write that fails for lack of room (here a file-size limit of 300 kB, which the spool of
    the demo's forward passes exceeds) ends the command with one line saying what to do."""
    import resource
    import signal

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the child
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    p = subprocess.run(
        [_console_script(), "demo", "-o", str(tmp_path / "demo"), "-q"], capture_output=True, text=True, timeout=300, preexec_fn=limited
    )
    assert p.returncode == 2, p.stderr[-2000:]
    lines = _error_lines(p.stderr)
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert lines[0].startswith("pfv-onnx demo: error: could not write") and "run the same command again" in lines[0]


def test_demo_on_the_bundled_model(tmp_path):
    out = tmp_path / "demo"
    p = _cli("demo", "-o", str(out), "--quiet", timeout=300)
    assert p.returncode == 0, p.stderr
    assert str(out / "mosaic.jpg") in p.stdout
    report = json.loads((out / "report.json").read_text())
    import pfv_onnx_models

    assert len(report["images"]) == len(pfv_onnx_models.demo_images()) >= 3
    assert report["failures"] == []
    assert report["model"]["labels"]["source"] == "model metadata"
    assert all(im["prediction"]["label"] for im in report["images"])
    assert cv2.imread(str(out / "mosaic.jpg")) is not None
    # lean outputs: everything the demo wrote, against the photos' own bytes (6.09 with these encoders)
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    photos = sum(p.stat().st_size for p in pfv_onnx_models.demo_images())
    assert written <= 6.3 * photos, f"{written} bytes written for {photos} bytes of photos"


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.S)
    return [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_readme_set_up_commands_and_ci_agree():
    commands = _readme_commands()
    demo = [c for c in commands if c.startswith("python3 -m venv") and c.endswith("pfv-onnx demo")]
    tests = [c for c in commands if c.startswith("python3 -m venv") and "pytest" in c]
    assert len(demo) == 1 and len(tests) == 1, commands
    ci_lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    ci_commands = [ln for ln in ci_lines if ln and not ln.startswith("#")]
    assert ci_commands[-1] == tests[0], "the last command of .ci/run must be the README's test command"
    assert ci_lines[0] == "#!/usr/bin/env bash" and "set -euo pipefail" in ci_lines
    # both set up their own environment and install this package
    for c in demo + tests:
        parts = shlex.split(c.replace("&&", ";"))
        assert parts[:4] == ["python3", "-m", "venv", ".venv"], c
        assert ".venv/bin/pip" in parts, c


def _req_name(spec: str) -> str:
    return re.split(r"[<>=!~;\[ ]", spec.strip(), maxsplit=1)[0].lower()


def test_gpu_install_lists_never_hold_both_onnxruntime_builds():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {_req_name(d) for d in project["dependencies"]}
    extras = {k: {_req_name(d) for d in v} for k, v in project["optional-dependencies"].items()}
    assert "onnxruntime" in base and "onnxruntime-gpu" not in base
    for name, deps in extras.items():  # an extra on top of the base must not add the GPU build
        assert "onnxruntime-gpu" not in deps, name
    expected = (base - {"onnxruntime"}) | {"onnxruntime-gpu"} | extras["gpu"]
    req = [ln for ln in (ROOT / "requirements-gpu.txt").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert {_req_name(r) for r in req} == expected
    readme = (ROOT / "README.md").read_text()
    gpu_line = next(ln for ln in readme.splitlines() if ln.startswith("pip install") and "onnxruntime-gpu" in ln)
    assert set(gpu_line.split()[2:]) == expected
    assert "pip install --no-deps pfv-onnx" in readme


def test_defaults_come_from_model_metadata(image_folder, tmp_path, capsys):
    case = graphs.dynhw()
    model = case.model
    onnx.helper.set_model_props(
        model, {"preprocessing": "caffe", "color_order": "BGR", "labels": "w\nx\ny\nz\n", "input_size": "20x36"}
    )
    path = tmp_path / "meta.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "out"
    assert main(["run", str(path), str(image_folder / "gray.png"), "-o", str(out), "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    prep = report["preprocessing"]
    assert (prep["preset"], prep["color_order"], prep["size"]) == ("caffe", "BGR", [20, 36])
    assert prep["mean"] == [103.939, 116.779, 123.68]
    assert report["model"]["labels"] == {"source": "model metadata", "count": 4}
    assert report["images"][0]["prediction"]["label"] in ["w", "x", "y", "z"]
    # options win over the metadata
    assert main(["run", str(path), str(image_folder / "gray.png"), "-o", str(out), "-q", "--preset", "raw", "--size", "16"]) == 0
    prep = json.loads((out / "report.json").read_text())["preprocessing"]
    assert (prep["preset"], prep["color_order"], prep["size"]) == ("raw", "RGB", [16, 16])
    assert main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == [20, 36]


@pytest.mark.parametrize("fmt, for_png, for_jpeg", [("auto", ".png", ".jpg"), ("png", ".png", ".png"), ("jpg", ".jpg", ".jpg")])
def test_overlay_format(fmt, for_png, for_jpeg, vgg_model, image_folder, tmp_path):
    """Overlays are alpha * map + (1 - alpha) * image in the chosen format; auto: JPEG for JPEG images."""
    out = tmp_path / "out"
    args = ["run", str(vgg_model), *(str(image_folder / g) for g in GOOD), "-o", str(out), "-q", "--alpha", "0.4"]
    assert main([*args, "--overlay-format", fmt]) == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["images"]) == len(GOOD)
    for im in report["images"]:
        overlay = out / im["outputs"]["overlay"]
        assert overlay.suffix == (for_jpeg if im["file"].endswith(".jpg") else for_png), im
        assert overlay.name.startswith(im["name"] + ".overlay")
        image = cv2.imread(im["file"], cv2.IMREAD_COLOR).astype(np.float64)
        pic = cv2.imread(str(out / im["outputs"]["map"]), cv2.IMREAD_COLOR).astype(np.float64)
        want = 0.4 * pic + 0.6 * image
        got = cv2.imread(str(overlay), cv2.IMREAD_COLOR).astype(np.float64)
        err = np.abs(got - want)
        if overlay.suffix == ".png":
            assert err.max() <= 1.0
        else:
            assert err.mean() < 3.0 and np.percentile(err, 99) < 24
        assert im["outputs"]["overlay"] in (out / "report.html").read_text()


# Runs the command line with the calls that decide when written bytes reach the disk logged,
# in order, one JSON list per line: ["fsync", path of the file], ["replace", source, target,
# status of a report.json source], ["sync"] for os.sync, ["syncfs"] for the C library's
# syncfs (looked up through ctypes).
_DISK_CALLS = r"""
import ctypes, json, os, sys
log = open(sys.argv[1], "w")
def note(*call):
    log.write(json.dumps(call) + "\n"); log.flush()
real_fsync, real_replace, real_sync = os.fsync, os.replace, os.sync
def fsync(fd):
    note("fsync", os.readlink(f"/proc/self/fd/{fd}"))
    return real_fsync(fd)
def replace(src, dst, *a, **k):
    status = None
    if os.path.basename(dst) == "report.json":
        with open(src, encoding="utf-8") as f:
            status = json.load(f).get("status")
    note("replace", os.fspath(src), os.fspath(dst), status)
    return real_replace(src, dst, *a, **k)
def sync():
    note("sync")
    return real_sync()
os.fsync, os.replace, os.sync = fsync, replace, sync
real_item = ctypes.CDLL.__getitem__
def item(self, name):
    func = real_item(self, name)
    if name != "syncfs":
        return func
    def syncfs(*args):
        note("syncfs")
        return func(*args)
    return syncfs
ctypes.CDLL.__getitem__ = item
from pfv_onnx.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the path of a file descriptor from /proc (Linux)")
def test_run_syncs_pictures_once_not_per_file(vgg_model, image_folder, tmp_path):
    """Each image's pictures (map, overlay, thumbnails) reach their names without an fsync of
    their own; one sync of the filesystem comes after the last of them and before the report
    that calls the run complete is put in place; that report and pfv.npz are fsynced themselves."""
    out, log = tmp_path / "out", tmp_path / "calls.jsonl"
    args = ["run", str(vgg_model), *(str(image_folder / g) for g in GOOD), "-o", str(out), "-q"]
    p = subprocess.run([sys.executable, "-c", _DISK_CALLS, str(log), *args], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    report = json.loads((out / "report.json").read_text())
    per_image = [Path(rel).as_posix() for im in report["images"] for rel in im["outputs"].values()]
    assert len(per_image) == 5 * len(GOOD)  # map, overlay and three thumbnails per image

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    fsynced = {os.path.realpath(c[1]) for c in calls if c[0] == "fsync"}
    placed: dict[str, int] = {}  # file under out -> when it was last put in place
    durable: dict[str, bool] = {}  # file under out -> its content was fsynced before it was put in place
    complete_at = None
    for i, c in enumerate(calls):
        if c[0] != "replace":
            continue
        name = Path(os.path.relpath(os.path.realpath(c[2]), os.path.realpath(out))).as_posix()
        if name.startswith("../"):
            continue
        placed[name], durable[name] = i, os.path.realpath(c[1]) in fsynced
        if name == "report.json" and c[3] == "complete":
            complete_at = i
    assert {name: durable[name] for name in per_image} == {name: False for name in per_image}
    assert durable["pfv.npz"] and durable["report.json"]
    assert complete_at is not None and placed["report.json"] == complete_at
    syncs = [i for i, c in enumerate(calls) if c[0] in ("sync", "syncfs")]
    assert any(max(placed[name] for name in per_image) < i < complete_at for i in syncs), calls


def test_another_overlay_format_is_not_taken_for_a_finished_run(vgg_model, image_folder, tmp_path):
    out = tmp_path / "out"
    args = ["run", str(vgg_model), str(image_folder / "b" / "cat.jpg"), "-o", str(out), "-q"]
    assert main(args) == 0
    assert json.loads((out / "report.json").read_text())["images"][0]["outputs"]["overlay"].endswith(".jpg")
    assert main([*args, "--overlay-format", "png"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["images"][0]["outputs"]["overlay"].endswith(".png")
    assert (out / report["images"][0]["outputs"]["overlay"]).is_file()
