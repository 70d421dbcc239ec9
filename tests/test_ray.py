"""Fitting and running on Ray (a local cluster of 2 CPUs) give the single-process results.

The tests marked ``ray`` start Ray (about 15 s) and skip when Ray is not installed;
deselect them with ``-m 'not ray'``. A missing Ray must give a DependencyError that names
the extra to install, which is checked without Ray.
"""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest

import graphs
from pfv_onnx import PFV
from pfv_onnx import basis as B
from pfv_onnx import distributed
from pfv_onnx.cli import main
from pfv_onnx.errors import DependencyError

K = 3


@pytest.fixture(scope="module")
def case() -> graphs.GraphCase:
    return graphs.vgg()


@pytest.fixture(scope="module")
def model(save_model, case) -> str:
    return save_model(case.model, "ray_vgg")


def test_missing_ray_names_the_extra(monkeypatch, model, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(DependencyError, match=r"pfv-onnx\[ray\]"):
        distributed.import_ray()
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.full((20, 20, 3), 128, np.uint8))
    code = main(["fit", model, str(img), "-o", str(tmp_path / "b.npz"), "--ray", "-q", "--provider", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "pfv-onnx[ray]" in err
    out = tmp_path / "run"
    code = main(["run", model, str(img), "-o", str(out), "--ray", "-q", "--provider", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "pfv-onnx[ray]" in err
    assert not out.exists()  # told before anything is written


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024**2)
    yield ray
    ray.shutdown()


def _assert_same_basis(got: B.FittedBasis, want: B.FittedBasis) -> None:
    assert got.n_images == want.n_images and got.n_observations == want.n_observations
    assert got.tensors == want.tensors and got.model_sha256 == want.model_sha256
    for name in ("mean", "directions", "eigenvalues"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-6, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(got.weight_peaks, want.weight_peaks, rtol=1e-6)
    for v in B.VARIANTS:
        np.testing.assert_allclose(got.colour[v], want.colour[v], rtol=1e-6, err_msg=v)


@pytest.mark.ray
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")  # Ray's own notices about its settings
def test_ray_fit_equals_single_process_fit(ray_cluster, tmp_path, case, model, capsys):
    # preprocessed arrays
    images = case.batch(30, seed=11)
    pfv = PFV(model, provider="cpu")
    local = B.fit(pfv, images, k=K, batch_size=4)
    on_ray, skipped = distributed.fit(model, images, k=K, batch_size=4, actors=2, pfv_options={"provider": "cpu"})
    assert skipped == []
    _assert_same_basis(on_ray, local)

    # image files decoded by the actors, one of them unreadable, through the command line
    rng = np.random.default_rng(2)
    paths = []
    for i in range(9):
        img = (rng.random((28 + i, 36, 3)) * 200).astype(np.uint8)
        cv2.circle(img, (6 + 3 * i, 12), 5, (255, 30 * i, 0), -1)
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), img)
        paths.append(str(p))
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    common = [model, *paths, str(bad), "--batch-size", "4", "--provider", "cpu"]
    # one actor here (two above): the command line's route, not the merging of several actors, is what is new
    for out, extra in (("local.npz", []), ("ray.npz", ["--ray", "--actors", "1"])):
        capsys.readouterr()
        assert main(["fit", *common, "-o", str(tmp_path / out), *extra]) == 1  # 1: a file failed
        assert "failed: " + str(bad) in capsys.readouterr().err
    files_local, files_on_ray = B.load(tmp_path / "local.npz"), B.load(tmp_path / "ray.npz")
    assert files_local.n_images == 9
    _assert_same_basis(files_on_ray, files_local)
    assert files_on_ray.preprocessing == files_local.preprocessing


@pytest.mark.ray
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")
def test_ray_run_equals_local_run(ray_cluster, tmp_path, model, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(8):
        img = (rng.random((30 + 2 * i, 40 - i, 3)) * 200).astype(np.uint8)
        cv2.rectangle(img, (3 * i, 4), (3 * i + 8, 14), (0, 255 - 20 * i, 255), -1)
        cv2.imwrite(str(folder / f"{i}.png"), img)
    bad = folder / "3b.png"  # sorted between 3.png and 4.png
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    # Groups of 4 from actor batches of 3 files: a group takes rows from several actor
    # batches, and the corrupt file's batch holds one image fewer.
    common = [model, str(folder), "--batch-size", "3", "--group-size", "4", "--provider", "cpu", "-q", "--no-html"]
    reports = {}
    for name, extra in (("local", []), ("ray", ["--ray", "--actors", "2"])):
        assert main(["run", *common, "-o", str(tmp_path / name), *extra]) == 1  # 1: a file failed
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())
    capsys.readouterr()
    for rep in reports.values():
        assert [f["file"] for f in rep["failures"]] == [str(bad)]
        assert len(rep["images"]) == 8 and len(rep["groups"]) == 2
    assert reports["ray"]["failures"] == reports["local"]["failures"]
    assert any("on Ray" in n for n in reports["ray"]["notes"]) and not any("on Ray" in n for n in reports["local"]["notes"])
    assert [im["size"] for im in reports["ray"]["images"]] == [im["size"] for im in reports["local"]["images"]]
    with np.load(tmp_path / "local" / "pfv.npz") as a, np.load(tmp_path / "ray" / "pfv.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        assert list(b["files"]) == list(a["files"]) == [str(folder / f"{i}.png") for i in range(8)]
        np.testing.assert_array_equal(b["group"], a["group"])
        compared = [k for k in a.files if k in ("rgb", "components") or k.startswith("output/")]
        assert len(compared) >= 3
        for key in compared:
            np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-5, err_msg=key)
        np.testing.assert_allclose(b["eigenvalues"], a["eigenvalues"], rtol=1e-5)


@pytest.mark.ray
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")
def test_ray_forward_holds_one_batch_on_the_driver(ray_cluster, tmp_path, model):
    """A slow first batch (a large image) must not make the driver hold every later pass:
    at most one actor batch waits there (a regression: results were buffered without bound)."""
    from pfv_onnx.inputs import make_preprocessing

    files = [tmp_path / "big.png"]
    big = np.zeros((8000, 8000, 3), np.uint8)  # small on disk, slow to decode and resize
    big[:, :, 1] = np.arange(8000, dtype=np.uint32)[:, None] * 255 // 8000
    cv2.imwrite(str(files[0]), big)
    for i in range(15):
        files.append(tmp_path / f"{i:02d}.png")
        cv2.imwrite(str(files[-1]), np.full((24, 32, 3), 10 * i, np.uint8))
    source = distributed.RunForward(
        model, files, preprocessing=make_preprocessing("imagenet", size=(24, 32)),
        pfv_options={"provider": "cpu"}, batch_size=1, actors=2,
    )  # fmt: skip
    try:
        held = []
        for image in source:
            held.append(source.buffered)
            assert image.error is None
    finally:
        source.close()
    assert len(held) == 16 and max(held) <= 1, held
