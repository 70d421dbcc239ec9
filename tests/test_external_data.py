"""Untrusted model files: external data is read only from inside the model's folder.

How "never opened" is shown: the secret file outside the folder holds exactly the weights
the model needs, so a read would succeed silently; a Linux inotify watch on its inode
(:class:`bad_inputs.OpenWatch`) records every open or read of it by any code in the
process (Python, onnx's C++ loader, onnxruntime), whichever path or link leads there, while
the checks themselves (string tests, ``realpath``, ``stat``) open nothing. The watch is
itself checked: it sees onnxruntime open a data file inside the folder, and an open made
through a symbolic link.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import bad_inputs
import graphs
from pfv_onnx import PFV, inspect
from pfv_onnx.cli import main
from pfv_onnx.errors import ModelError
from pfv_onnx.model_io import check_external_data, load_model

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the open witness uses Linux inotify")

ESCAPES = ["dotdot", "sub_dotdot", "absolute", "symlink_file", "symlink_folder", "hardlink"]


@pytest.fixture
def planted(tmp_path):
    """``make(kind)`` -> (model path, secret path): a model folder whose external data location
    leads, by ``kind``, to a secret file outside it holding the model's real weights."""

    def make(kind: str) -> tuple[Path, Path]:
        outside = tmp_path / "outside"
        folder = tmp_path / "models" / kind
        model = bad_inputs.save_with_external_data(graphs.vgg().model, folder, location="weights.bin")
        outside.mkdir(exist_ok=True)
        secret = outside / "secret.bin"
        os.replace(folder / "weights.bin", secret)  # the real weights now live outside
        location = {
            "dotdot": "../../outside/secret.bin",
            "sub_dotdot": "sub/../../../outside/secret.bin",
            "absolute": str(secret),
            "symlink_file": "weights.bin",
            "symlink_folder": "data/secret.bin",
            "hardlink": "weights.bin",
        }[kind]
        (folder / "sub").mkdir()
        if kind == "symlink_file":
            os.symlink(secret, folder / "weights.bin")
        elif kind == "symlink_folder":
            os.symlink(outside, folder / "data")
        elif kind == "hardlink":
            os.link(secret, folder / "weights.bin")
        bad_inputs.relocate_external_data(model, location)
        return model, secret

    return make


def _expect(kind: str) -> str:
    return {
        "dotdot": r"points outside the model's folder",
        "sub_dotdot": r"points outside the model's folder",
        "absolute": r"absolute path",
        "symlink_file": r"resolves outside the model's folder through a symbolic link",
        "symlink_folder": r"resolves outside the model's folder through a symbolic link",
        "hardlink": r"hard links",
    }[kind]


@pytest.mark.parametrize("kind", ESCAPES)
def test_escape_is_refused_and_the_secret_never_opened(kind, planted, tmp_path, capsys):
    model, secret = planted(kind)
    image = tmp_path / "img.png"
    import cv2

    cv2.imwrite(str(image), bad_inputs.pattern_rgb(24, 32))
    with bad_inputs.OpenWatch([secret]) as watch:
        with pytest.raises(ModelError, match=_expect(kind)):
            load_model(model)
        with pytest.raises(ModelError, match=_expect(kind)):
            PFV(str(model), provider="cpu")
        with pytest.raises(ModelError, match=_expect(kind)):
            inspect(str(model))
        assert main(["run", str(model), str(image), "-o", str(tmp_path / "out"), "-q"]) == 2
        assert main(["surgery", str(model), "-o", str(tmp_path / "cut.onnx")]) == 2
        opened = watch.events()
    assert opened == [], f"the file outside the model folder was opened: {opened}"
    err = capsys.readouterr().err
    assert re.search(_expect(kind), err) and "Traceback" not in err
    assert not (tmp_path / "cut.onnx").exists()


@pytest.mark.parametrize("kind", ESCAPES)
def test_escape_is_refused_before_any_onnxruntime_session(kind, planted, monkeypatch):
    """pfv-onnx's own check refuses it; onnxruntime's checks are never relied upon."""
    import onnxruntime

    model, _ = planted(kind)

    def no_session(*a, **k):
        raise AssertionError("onnxruntime was handed a model whose external data escapes its folder")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_session)
    with pytest.raises(ModelError, match=_expect(kind)):
        PFV(str(model), provider="cpu")


def test_the_witness_sees_opens_by_onnxruntime_and_through_links(tmp_path):
    """Control: a data file inside the folder is read (by onnxruntime's C++ code) and the
    watch records it; an open through a symbolic link is recorded on the target."""
    model = bad_inputs.save_with_external_data(graphs.vgg().model, tmp_path / "ok")
    data = model.parent / "weights.bin"
    with bad_inputs.OpenWatch([data]) as watch:
        load_model(model)  # checks only: nothing opened
        assert watch.events() == []
        pfv = PFV(str(model), provider="cpu")
        assert (str(data), "open") in watch.events()
    res = pfv.explain(graphs.make_batch((2, 3, 24, 32)))
    assert np.isfinite(res.rgb).all()
    os.symlink(data, tmp_path / "link.bin")
    with bad_inputs.OpenWatch([data]) as watch:
        with open(tmp_path / "link.bin", "rb") as fh:
            fh.read(1)
        assert (str(data), "open") in watch.events()


def test_external_data_inside_the_folder_gives_the_same_maps(tmp_path):
    """A model stored with external data gives exactly what the same model in one file gives."""
    case = graphs.vgg()
    one = tmp_path / "one.onnx"
    onnx.save(case.model, str(one))
    split = bad_inputs.save_with_external_data(case.model, tmp_path / "split", location="w.bin")
    batch = graphs.make_batch((3, 3, 24, 32), seed=2)
    a = PFV(str(one), provider="cpu").explain(batch)
    b = PFV(str(split), provider="cpu").explain(batch)
    np.testing.assert_array_equal(a.rgb, b.rgb)


# --------------------------------------------------------------------------- external data elsewhere in the model


def _external(tensor: TensorProto, location: str, offset: int = 0, length: int | None = None) -> TensorProto:
    raw = tensor.raw_data or numpy_helper.to_array(tensor).tobytes()
    t = TensorProto()
    t.CopyFrom(tensor)
    t.ClearField("raw_data")
    del t.float_data[:]
    del t.int64_data[:]
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(len(raw) if length is None else length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def _tiny(kind: str, location: str) -> onnx.ModelProto:
    """A model whose only external tensor sits in a sparse initializer, a Constant's attribute,
    or an initializer of an If branch."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(1, 4), "w")
    if kind == "sparse":
        values = _external(numpy_helper.from_array(np.arange(4, dtype=np.float32), "w_values"), location)
        sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.arange(4, dtype=np.int64), "w_idx"), [1, 4])
        g = helper.make_graph([helper.make_node("Add", ["x", "w_values"], ["y"])], "g", [x], [y], sparse_initializer=[sparse])
    elif kind == "attribute":
        node = helper.make_node("Constant", [], ["w"], value=_external(w, location))
        g = helper.make_graph([node, helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y])
    else:  # subgraph
        branch = helper.make_graph([helper.make_node("Identity", ["w"], ["wb"])], "b", [],
                                   [helper.make_tensor_value_info("wb", TensorProto.FLOAT, [1, 4])], [_external(w, location)])  # fmt: skip
        cond = numpy_helper.from_array(np.array(True), "cond")
        node = helper.make_node("If", ["cond"], ["w2"], then_branch=branch, else_branch=branch)
        g = helper.make_graph([node, helper.make_node("Add", ["x", "w2"], ["y"])], "g", [x], [y], [cond])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("kind", ["sparse", "attribute", "subgraph"])
def test_escapes_hidden_deeper_in_the_model_are_refused(kind, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.bin"
    secret.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "m.onnx"
    path.write_bytes(_tiny(kind, "../outside/secret.bin").SerializeToString())
    with bad_inputs.OpenWatch([secret]) as watch:
        with pytest.raises(ModelError, match="points outside the model's folder"):
            load_model(path)
        assert watch.events() == []


@pytest.mark.parametrize(
    "offset, length, pattern",
    [(0, 10**12, r"asks for bytes 0\.\.1000000000000"), (10**9, 16, r"asks for bytes"),
     (-4, 16, r"negative"), ("x1", 16, r"not a number")],
)  # fmt: skip
def test_extent_outside_the_data_file_is_refused_before_reading(offset, length, pattern, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    data = folder / "w.bin"
    data.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    model = _tiny("attribute", "w.bin")
    t = model.graph.node[0].attribute[0].t
    for e in t.external_data:
        if e.key == "offset":
            e.value = str(offset)
        if e.key == "length":
            e.value = str(length)
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with bad_inputs.OpenWatch([data]) as watch:
        with pytest.raises(ModelError, match=pattern):
            load_model(path)
        assert watch.events() == []


def test_location_with_a_nul_character(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(_tiny("attribute", "w\x00.bin").SerializeToString())
    with pytest.raises(ModelError, match="NUL"):
        load_model(path)


def test_checks_only_stat_the_files(tmp_path, monkeypatch):
    """check_external_data itself opens nothing, even for valid data (Python-level audit)."""
    model = bad_inputs.save_with_external_data(graphs.vgg().model, tmp_path / "ok")
    proto = onnx.load(str(model), load_external_data=False)
    seen: list[str] = []

    def hook(event, args):
        if event == "open":
            seen.append(str(args[0]))

    sys.addaudithook(hook)  # audit hooks cannot be removed; this one only appends to a list
    before = len(seen)
    files = check_external_data(proto, model.parent)
    opened = seen[before:]
    seen.clear()
    assert set(files) == {(model.parent / "weights.bin").resolve()}
    assert not any("weights.bin" in p for p in opened)


def test_model_path_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    """Opening a FIFO for reading would wait for a writer forever; the model path is refused first."""
    import subprocess

    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    code = "import sys; from pfv_onnx.model_io import load_model\ntry:\n load_model(sys.argv[1])\nexcept Exception as e: print(type(e).__name__, e)"
    p = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=60)
    assert p.stdout.startswith("ModelError") and "not a regular file" in p.stdout
    cli = "import sys; from pfv_onnx.cli import main; sys.exit(main(sys.argv[1:]))"
    for argv in (["inspect", str(fifo)], ["run", str(fifo), str(fifo), "-o", str(tmp_path / "out")]):
        p = subprocess.run([sys.executable, "-c", cli, *argv], capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and "regular" in p.stderr, (argv, p.stderr)


def test_onnx_requirement_keeps_the_fixed_releases():
    """onnx releases before 1.21 have external-data path traversal CVEs."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    meta = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    (spec,) = [d for d in meta["project"]["dependencies"] if re.match(r"onnx\b(?!-|runtime)", d)]
    low = re.search(r">=\s*([0-9]+)\.([0-9]+)", spec)
    assert low, f"onnx must carry a lower bound: {spec}"
    assert (int(low.group(1)), int(low.group(2))) >= (1, 21)
    assert tuple(int(x) for x in onnx.__version__.split(".")[:2]) >= (1, 21)
