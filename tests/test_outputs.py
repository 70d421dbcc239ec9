"""Atomic writes, npz archives, output names (pfv_onnx.outputs) and the onnxruntime install check."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from pfv_onnx.errors import DependencyError
from pfv_onnx.outputs import (
    atomic_write_bytes,
    clean_stale_temp_files,
    npz_bytes,
    unique_names,
    write_json,
    write_npz,
)
from pfv_onnx.runtime_check import check_onnxruntime_install, onnxruntime_builds


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_clean_stale_temp_files(tmp_path):
    (tmp_path / ".pfv-tmp-abc.tmp").write_bytes(b"half")
    (tmp_path / "keep.png").write_bytes(b"x")
    assert clean_stale_temp_files(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_npz_deterministic_and_loads_without_pickle(tmp_path):
    arrays = {
        "rgb": np.random.default_rng(0).random((2, 4, 4, 3)).astype(np.float32),
        "files": np.asarray(["a/cat.jpg", "b/ünïcode.png"]),
        "output/logits": np.arange(6, dtype=np.float32).reshape(2, 3),
    }
    first = npz_bytes(arrays)
    assert first == npz_bytes(arrays)
    path = write_npz(tmp_path / "pfv.npz", arrays)
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(arrays)
        for k, v in arrays.items():
            np.testing.assert_array_equal(z[k], v)
    with pytest.raises(TypeError, match="dtype object"):
        npz_bytes({"bad": np.asarray([{"a": 1}], dtype=object)})


def test_write_json_converts_numpy_and_nan(tmp_path):
    path = write_json(tmp_path / "r.json", {"a": np.float64(0.5), "b": np.arange(3), "c": float("nan"), "d": tmp_path})
    data = json.loads(path.read_text())
    assert data == {"a": 0.5, "b": [0, 1, 2], "c": None, "d": str(tmp_path)}


@pytest.mark.parametrize(
    "paths, expected",
    [
        (["x/cat.jpg", "y/dog.png"], ["cat", "dog"]),
        (["a/cat.jpg", "b/cat.jpg", "dog.png"], ["a__cat", "b__cat", "dog"]),
        (["p/a/cat.jpg", "q/a/cat.jpg"], ["p__a__cat", "q__a__cat"]),
        (["a/cat.jpg", "a/cat.png"], ["cat_jpg", "cat_png"]),
        (["a/Cat.jpg", "b/cat.jpg"], ["a__Cat", "b__cat"]),  # case-insensitive file systems
        (["a/cat.jpg", "a/Cat.jpg"], ["cat", "Cat-2"]),
        ([".hidden.jpg", "..jpg", "we:ird*.png"], ["hidden", "_", "we_ird_"]),
    ],
)
def test_unique_names(paths, expected):
    assert unique_names(paths) == expected


def test_unique_names_always_unique():
    paths = [f"{d}/{n}.{e}" for d in ("a", "b", "A") for n in ("x", "X", "y") for e in ("jpg", "png")]
    names = unique_names(paths)
    assert len({n.casefold() for n in names}) == len(paths)
    assert names == unique_names(paths)


def test_long_names_are_cut_in_bytes_and_can_be_created(tmp_path):
    """83 CJK characters are 249 UTF-8 bytes: a name cut at 120 characters plus
    ".overlay.jpg" went over the 255 bytes a file system allows (a regression)."""
    stem, dog, bird = "\u732b" * 83, "\u72ac" * 90, "\u9ce5" * 90
    paths = [f"{stem}.jpg", f"{dog}/{stem}.png", f"{bird}/{stem}.png", "x/" + "e" * 300 + ".jpeg"]
    names = unique_names(paths)
    assert len({n.casefold() for n in names}) == len(names)
    for name in names:
        assert len(name.encode("utf-8")) <= 200
        for ending in (".overlay.jpg", ".overlay.png", ".pfv.png"):
            (tmp_path / f"{name}{ending}").write_bytes(b"x")  # raises ENAMETOOLONG if too long
    assert names[0] == "\u732b" * 40  # cut on a character boundary: 120 bytes


def _fake_dist(root, name, version, top_level):
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(top_level + "\n")


def test_runtime_check_detects_two_builds(tmp_path):
    _fake_dist(tmp_path, "onnxruntime", "1.32.0", "onnxruntime")
    _fake_dist(tmp_path, "onnxruntime-gpu", "1.32.0", "onnxruntime")
    _fake_dist(tmp_path, "onnxruntime-extensions", "0.14.0", "onnxruntime_extensions")  # another module
    assert onnxruntime_builds([str(tmp_path)]) == [("onnxruntime", "1.32.0"), ("onnxruntime-gpu", "1.32.0")]
    with pytest.raises(DependencyError) as info:
        check_onnxruntime_install([str(tmp_path)])
    msg = str(info.value)
    assert "onnxruntime 1.32.0, onnxruntime-gpu 1.32.0" in msg
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in msg


def test_runtime_check_one_build_or_none(tmp_path):
    _fake_dist(tmp_path, "onnxruntime-gpu", "1.32.0", "onnxruntime")
    assert check_onnxruntime_install([str(tmp_path)]) == "onnxruntime-gpu"
    with pytest.raises(DependencyError, match="not installed"):
        check_onnxruntime_install([str(tmp_path / "empty")])
    assert check_onnxruntime_install() in ("onnxruntime", "onnxruntime-gpu")  # this environment


def test_row_spool_matches_npz_bytes_and_cleans_up(tmp_path):
    from pfv_onnx.outputs import RowSpool

    rng = np.random.default_rng(1)
    parts = [rng.random((n, 3, 4)).astype(np.float32) for n in (2, 1, 3)]
    logits = [rng.random((n, 5)) for n in (2, 1, 3)]
    spool = RowSpool(tmp_path)
    for p, q in zip(parts, logits):
        spool.append("rgb", p)
        spool.append("output/logits", q)
    with pytest.raises(ValueError, match="shape"):
        spool.append("rgb", np.zeros((1, 3, 5), np.float32))
    small = {"files": np.asarray(["a", "b", "c", "d", "e", "f"])}
    write_npz(tmp_path / "pfv.npz", {"rgb": spool.rows("rgb"), **small, "output/logits": spool.rows("output/logits")}, deflate=["files"])
    spool.close()
    expected = {"rgb": np.concatenate(parts), "files": small["files"], "output/logits": np.concatenate(logits)}
    assert (tmp_path / "pfv.npz").read_bytes() == npz_bytes(expected, deflate=["files"])
    with np.load(tmp_path / "pfv.npz", allow_pickle=False) as z:
        assert list(z.files) == list(expected)
        for key, value in expected.items():
            np.testing.assert_array_equal(z[key], value)
    assert [p.name for p in tmp_path.iterdir()] == ["pfv.npz"]  # temporary files removed


def test_atomic_write_syncs_only_when_durable(tmp_path, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    atomic_write_bytes(tmp_path / "a.bin", b"abc")
    assert len(calls) == 1
    atomic_write_bytes(tmp_path / "b.bin", b"def", durable=False)
    assert len(calls) == 1
    assert (tmp_path / "b.bin").read_bytes() == b"def"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]


def test_sync_all_falls_back_to_a_global_sync(tmp_path, monkeypatch):
    from pfv_onnx import outputs

    calls = []
    monkeypatch.setattr(outputs, "_syncfs", lambda folder: False)
    monkeypatch.setattr(os, "sync", lambda: calls.append("sync"), raising=False)
    outputs.sync_all(tmp_path)
    assert calls == ["sync"]
    monkeypatch.setattr(outputs, "_syncfs", lambda folder: True)
    outputs.sync_all(tmp_path)
    assert calls == ["sync"]


def test_without_a_later_sync_every_file_is_synced(tmp_path, monkeypatch):
    """Where the system has no sync (Windows), durable=False cannot be made good later: each file syncs."""
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    monkeypatch.delattr(os, "sync", raising=False)
    atomic_write_bytes(tmp_path / "c.bin", b"ghi", durable=False)
    assert len(calls) == 1 and (tmp_path / "c.bin").read_bytes() == b"ghi"


# --------------------------------------------------------------------------- a run's files


def _colour_model(path) -> None:
    """A classifier of the dominant colour: 1x1 convolutions give relu(x) and relu(-x) of each
    input channel, a 3x3 convolution keeps them (E_L), and the logits are 20 times the mean
    positive part of R, G and B. An image at the preprocessing mean (input zero) scores 1/3
    on every class; a saturated red, green or blue one scores near 1 on its colour."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1 = np.zeros((6, 3, 1, 1), np.float32)
    for c in range(3):
        w1[2 * c, c], w1[2 * c + 1, c] = 1.0, -1.0
    w2 = np.zeros((6, 6, 3, 3), np.float32)
    w2[np.arange(6), np.arange(6), 1, 1] = 1.0
    w2[np.arange(6), np.arange(6), 0, 1] = 0.25
    head = np.zeros((6, 3), np.float32)
    head[[0, 2, 4], [0, 1, 2]] = 20.0
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[0, 0, 0, 0]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "head"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "colours",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(head, "head")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    """A run over saturated red, green and blue pictures and one planted at the ImageNet mean
    colour (the model's least confident input), full-precision rgb in pfv.npz."""
    import cv2

    from pfv_onnx.cli import main

    root = tmp_path_factory.mktemp("colours")
    _colour_model(root / "colours.onnx")
    rng = np.random.default_rng(5)
    folder = root / "images"
    folder.mkdir()
    y, x = np.mgrid[0:40, 0:56]
    for i, (name, bgr) in enumerate([("red", (0, 0, 255)), ("green", (0, 255, 0)), ("blue", (255, 0, 0))] * 2):
        pic = np.zeros((40, 56, 3), np.uint8)
        pic[...] = bgr
        pic[(x // (6 + i) + y // 7) % 2 == 0] //= 3  # a pattern, so that the maps vary across each image
        cv2.imwrite(str(folder / f"{name}{i}.png"), pic)
    mean = np.full((40, 56, 3), (104, 116, 124), np.uint8)  # ImageNet mean, B, G, R
    mean += rng.integers(0, 2, mean.shape, dtype=np.uint8)
    cv2.imwrite(str(folder / "planted.png"), mean)
    out = root / "out"
    assert main(["run", str(root / "colours.onnx"), str(folder), "-o", str(out), "-q", "--npz-precision", "full", "--weight-layers", "none"]) == 0
    return out


def test_report_records_the_audit_flags(colour_run):
    """The planted picture, and only it, is flagged as low confidence in report.json; every
    image's flag agrees with a softmax of the logits in pfv.npz computed here."""
    report = json.loads((colour_run / "report.json").read_text())
    with np.load(colour_run / "pfv.npz") as z:
        logits, files = z["output/logits"].astype(np.float64), list(z["files"])
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    top = (p / p.sum(axis=1, keepdims=True)).max(axis=1)
    flagged = {im["name"] for im in report["images"] if im["flags"]["low_confidence"]}
    assert flagged == {"planted"}
    for im in report["images"]:
        assert im["flags"]["low_confidence"] == (top[files.index(im["file"])] < report["audit"]["low_confidence_below"])
        assert set(im["flags"]) == {"atypicality", "atypicality_rank", "atypical", "low_confidence"}
    assert 'class="flag low"' in (colour_run / "report.html").read_text()  # the page shows what report.json records


def test_map_file_holds_exactly_the_rendered_map(colour_run):
    """Each map file decodes to the picture of pfv.npz's rgb exactly (a lossless file), and to
    within one level of a bilinear resize computed here."""
    import cv2

    from pfv_onnx import render

    report = json.loads((colour_run / "report.json").read_text())
    with np.load(colour_run / "pfv.npz") as z:
        rgb, files = z["rgb"], list(z["files"])
    assert rgb.dtype == np.float32
    for im in report["images"]:
        pic = cv2.imread(str(colour_run / im["outputs"]["map"]), cv2.IMREAD_UNCHANGED)
        m = rgb[files.index(im["file"])]
        h, w = im["size"]
        np.testing.assert_array_equal(pic, render.map_picture(m, (h, w), tuple(im["crop_box"])))
        x0, y0, x1, y1 = im["crop_box"]
        assert (x0, y0, x1, y1) == (0, 0, w, h)
        mine = np.rint(cv2.resize(np.ascontiguousarray(m[:, :, ::-1]), (w, h), interpolation=cv2.INTER_LINEAR) * 255)
        assert np.abs(pic.astype(np.float64) - np.clip(mine, 0, 255)).max() <= 1


def test_labels_that_do_not_fit_are_one_warning(vgg_model, tmp_path):
    """3 labels for the 10 classes: one warning in report.json (none in the notes), and no names."""
    import cv2

    from pfv_onnx.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(8)
    for i in range(5):
        cv2.imwrite(str(folder / f"im{i}.png"), rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    out = tmp_path / "out"
    assert main(["run", str(vgg_model), str(folder), "-o", str(out), "-q", "--labels", str(labels), "--no-html"]) == 0
    report = json.loads((out / "report.json").read_text())
    about_labels = [w for w in report["warnings"] + report["notes"] if "labels" in w]
    assert len(about_labels) == 1 and about_labels[0] in report["warnings"] and about_labels[0].startswith("3 labels")
    assert all(im["prediction"]["label"] is None for im in report["images"])


def test_deflated_npz_entries_read_back_with_zlib(tmp_path):
    """A deflated entry (ISA-L where installed) is a plain deflate stream: Python's zipfile
    (zlib) checks its CRC and inflates it to the same array."""
    import zipfile

    rng = np.random.default_rng(3)
    rgb = (np.add.outer(np.arange(40), np.arange(50))[None, :, :, None] + rng.integers(0, 3, (6, 40, 50, 3))).astype(np.uint8)
    arrays = {"rgb": rgb, "files": np.asarray([f"f{i}.jpg" for i in range(6)])}
    path = write_npz(tmp_path / "pfv.npz", arrays, deflate=["rgb"])
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        info = zf.getinfo("rgb.npy")
        assert info.compress_type == zipfile.ZIP_DEFLATED and info.compress_size < info.file_size
        assert zf.getinfo("files.npy").compress_type == zipfile.ZIP_STORED
    with np.load(path, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["rgb"], rgb)
        np.testing.assert_array_equal(z["files"], arrays["files"])
    assert npz_bytes(arrays, deflate=["rgb"]) == path.read_bytes()  # deterministic


def test_deflated_npz_entries_come_from_isal_when_installed(tmp_path, monkeypatch):
    """With isal installed the deflated entry is ISA-L's stream, not what zlib writes without
    it (the point of the hook: it must not fall back silently on this Python); both inflate,
    with zlib, to the same array."""
    import sys
    import zipfile
    import zlib

    pytest.importorskip("isal.isal_zlib")
    rgb = np.add.outer(np.arange(64), np.arange(64)).astype(np.uint8)[None, :, :, None].repeat(3, axis=3)

    def raw_entry(path):
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo("rgb.npy")
        with open(path, "rb") as f:  # the stream after the local header (30 bytes, the name, the extra field)
            f.seek(info.header_offset + 26)
            name_len, extra_len = np.frombuffer(f.read(4), dtype="<u2")
            f.seek(info.header_offset + 30 + int(name_len) + int(extra_len))
            return f.read(info.compress_size)

    with_isal = raw_entry(write_npz(tmp_path / "a.npz", {"rgb": rgb}, deflate=["rgb"]))
    monkeypatch.setitem(sys.modules, "isal", None)  # as if not installed
    without = raw_entry(write_npz(tmp_path / "b.npz", {"rgb": rgb}, deflate=["rgb"]))
    assert with_isal != without
    assert zlib.decompress(with_isal, -15) == zlib.decompress(without, -15)
    with np.load(tmp_path / "a.npz") as z:
        np.testing.assert_array_equal(z["rgb"], rgb)
