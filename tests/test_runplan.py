"""``run`` as a plan: every kind of plan (size groups, class groups, a fitted basis),
stopped after any group (as a killed run would be) and run again, gives the files of an
uninterrupted run, byte for byte. Stops go through ``execute(job, stop_after=j)``, no
process is killed; tests/test_resume.py kills real processes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphs
from pfv_onnx import PFV
from pfv_onnx.basis import load_for_run
from pfv_onnx.cli import main
from pfv_onnx.inputs import collect_images, make_preprocessing
from pfv_onnx.runplan import RunJob, execute
from pfv_onnx.runplan.plan import batches, class_groups, size_groups

COLOURS = {"a_red.png": 2, "b_green.png": 1, "c_blue.png": 0, "d_green.png": 1, "e_red.png": 2, "f_green.png": 1, "g_blue.png": 0}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A model whose class is the strongest colour channel, seven pictures of three classes
    and one unreadable file, and a basis fitted on the pictures."""
    root = tmp_path_factory.mktemp("runplan")
    path = root / "colour.onnx"
    onnx.save(graphs.colour_classifier(), str(path))
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for i, (name, ch) in enumerate(COLOURS.items()):
        pic = rng.integers(0, 90, (20 + 3 * i, 28, 3)).astype(np.uint8)
        pic[:, :, ch] = np.clip(pic[:, :, ch].astype(int) + 150, 0, 255).astype(np.uint8)
        cv2.imwrite(str(images / name), pic)
    (images / "c_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)  # sorted among the others
    basis = root / "basis.npz"
    assert main(["fit", str(path), str(images), "-o", str(basis), "-q"]) == 1  # 1: the unreadable file
    return {"root": root, "model": path, "images": images, "basis": basis, "refs": {}}


def _job(world, out: Path, kind: str, batch: int, group: int | None) -> RunJob:
    pfv = PFV(str(world["model"]))
    prep = make_preprocessing("imagenet", size=pfv.default_size, layout="NCHW")
    fitted = load_for_run(str(world["basis"]), pfv, prep.to_dict(), 3)[0] if kind == "basis" else None
    report = {"pfv": {"groups": 0}, "groups": [], "images": [], "failures": [], "outputs": {}, "notes": []}
    return RunJob(
        pfv=pfv, files=collect_images([world["images"]]).files, prep=prep, outdir=out, report=report,
        fingerprint=f"{kind}-{batch}-{group}", batch_size=batch, group_size=group, by_class=kind == "class",
        basis=fitted, html=False,
    )  # fmt: skip


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _same(ref: Path, out: Path) -> None:
    a, b = _files(ref), _files(out)
    assert sorted(a) == sorted(b)
    for name in a:
        if name == "report.json":
            strip = lambda r: {k: v for k, v in r.items() if k not in ("timings", "resume")}  # noqa: E731
            assert strip(json.loads(a[name])) == strip(json.loads(b[name]))
        else:
            assert a[name] == b[name], name


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["size", "class", "basis"]),
    batch=st.integers(1, 3),
    group=st.integers(1, 4),
    stops=st.lists(st.integers(-1, 6), min_size=1, max_size=2, unique=True).map(sorted),
)
def test_stopped_and_resumed_run_equals_an_uninterrupted_one(world, tmp_path_factory, kind, batch, group, stops):
    group_size = None if kind == "class" else group
    key = (kind, batch, group_size)
    if key not in world["refs"]:
        ref = tmp_path_factory.mktemp("ref") / "out"
        summary = execute(_job(world, ref, kind, batch, group_size))
        assert not summary.stopped and summary.report["status"] == "complete"
        world["refs"][key] = ref
    ref = world["refs"][key]
    groups = len(json.loads((ref / "report.json").read_text())["groups"])
    out = tmp_path_factory.mktemp("out") / "out"
    for j in [s for s in stops if s < groups]:
        summary = execute(_job(world, out, kind, batch, group_size), stop_after=j)
        assert summary.stopped
    summary = execute(_job(world, out, kind, batch, group_size))
    assert not summary.stopped and not summary.already_done
    last = max([s for s in stops if s < groups], default=None)
    if last is not None:  # every saved group was kept (the last group is never saved: the final files follow)
        assert summary.report["resume"]["groups_reused"] == max(0, min(last + 1, groups - 1))
    assert not (out / ".pfv-progress").exists()
    _same(ref, out)


def test_reference_runs_have_the_planned_groups(world, tmp_path):
    """Class groups: one per predicted class, the largest first; size groups: the files that
    decode, group_size at a time; the unreadable file is a failure in both."""
    out = tmp_path / "class"
    report = execute(_job(world, out, "class", 2, None)).report
    names = {Path(im["file"]).name: im["group"] for im in report["images"]}
    assert [g["class"]["class"] for g in report["groups"]] == [1, 0, 2]  # G (3 images), then B and R (2 each, lower class first)
    assert {n for n, g in names.items() if g == 0} == {"b_green.png", "d_green.png", "f_green.png"}
    assert [Path(f["file"]).name for f in report["failures"]] == ["c_bad.png"]
    report = execute(_job(world, tmp_path / "size", "size", 2, 3)).report
    assert [g["images"] for g in report["groups"]] == [3, 3, 1]


def test_resumed_class_run_keeps_every_group(world, tmp_path):
    """A class run stopped after its first group, run again: every group and image is there
    (a regression: resuming took the first group's end, the end of the file list, as the end
    of the run, and reported 1 group and its images as complete)."""
    ref = tmp_path / "ref"
    full = execute(_job(world, ref, "class", 2, None)).report
    out = tmp_path / "out"
    assert execute(_job(world, out, "class", 2, None), stop_after=0).stopped
    report = execute(_job(world, out, "class", 2, None)).report
    assert report["resume"]["groups_reused"] == 1
    assert len(report["groups"]) == len(full["groups"]) == 3 and len(report["images"]) == 7
    with np.load(out / "pfv.npz") as z:
        assert z["rgb"].shape[0] == 7
    _same(ref, out)


def test_plan_functions():
    assert batches([4, 5, 7, 9, 10], 2) == [[4, 5], [7, 9], [10]]
    assert size_groups([0, 2, 3], 2) == [[0, 2], [3]]
    planned = class_groups([0, 1, 3, 4, 6], [5, 2, 5, 2, 7], ["five", "two", "five", "two", "seven"])
    assert [(g.index, g.files, g.klass) for g in planned] == [
        (0, [1, 4], {"class": 2, "label": "two"}), (1, [0, 3], {"class": 5, "label": "five"}), (2, [6], {"class": 7, "label": "seven"}),
    ]  # fmt: skip


# --------------------------------------------------------------------------- spooled groups


def _passes(n_images: int, channels: int, seed: int = 0) -> list:
    """Forward passes of synthetic maps: E_L (n, C, 4, 5), weighting maps at 8x10 and 16x20,
    outputs (n, 6); images of 32x40, in chunks of 7."""
    from pfv_onnx.decompose import ForwardPass

    rng = np.random.default_rng(seed)
    E = rng.gamma(0.6, 1.0, (n_images, channels, 4, 5)).astype(np.float32)
    E[:, :3] += np.linspace(0, 2, 20, dtype=np.float32).reshape(4, 5) * rng.uniform(0.5, 2, (n_images, 1, 1, 1)).astype(np.float32)
    S = [rng.uniform(0, 3, (n_images, 1, h, w)).astype(np.float32) for h, w in ((16, 20), (8, 10))]
    logits = rng.standard_normal((n_images, 6)).astype(np.float32)
    return [ForwardPass(E[a : a + 7], [s[a : a + 7] for s in S], {"logits": logits[a : a + 7]}, (32, 40)) for a in range(0, n_images, 7)]


def _maps() -> list:
    from types import SimpleNamespace

    return [SimpleNamespace(name=n) for n in ("S0", "S1", "E_L")]


def _spooled(tmp_path, passes, basis=None, **kw):
    from pfv_onnx.decompose import decompose
    from pfv_onnx.group_spool import GroupSpool

    with GroupSpool(tmp_path, basis=basis) as spool:
        for fp in passes:
            spool.add(fp)
        res = decompose(spool, _maps(), k=3, basis=basis, **kw)
        parts = list(res.rgb_parts(5))
        rgb = np.concatenate([p for _, p in parts])
        return {"rgb": rgb, "starts": [s for s, _ in parts], "res": res, "outputs": {k: np.array(v) for k, v in res.outputs.items()}}


@pytest.mark.parametrize("channels", [40, 300])  # 300: past the dense limit, the Krylov path over memory-mapped rows
@pytest.mark.parametrize("hierarchical", [False, True])
def test_spooled_group_equals_the_in_memory_decomposition(tmp_path, channels, hierarchical):
    """A group spooled to disk and coloured five images at a time gives the in-memory
    decomposition's numbers bit for bit (160 images of 32x40x3: the colour statistics run
    over two chunks of the whole array, cut across the parts), and the plain-NumPy
    reference within float32 error; the spool's folder is gone afterwards."""
    import reference as ref
    from pfv_onnx.decompose import decompose

    passes = _passes(160, channels)
    whole = decompose(passes, _maps(), k=3, hierarchical=hierarchical)
    got = _spooled(tmp_path, passes, hierarchical=hierarchical)
    assert got["starts"] == list(range(0, 160, 5))
    assert np.array_equal(got["rgb"], whole.rgb)
    assert np.array_equal(got["res"].components, whole.components)
    assert np.array_equal(got["res"].eigenvalues, whole.eigenvalues)
    assert np.array_equal(got["outputs"]["logits"], whole.outputs["logits"])
    E = np.concatenate([p.activations for p in passes])
    S = [np.concatenate([p.weights[i] for p in passes]) for i in range(2)]
    want = ref.pfv(E, S, (32, 40), hierarchical=hierarchical, use_sign_rule=True)
    assert np.abs(got["rgb"] - want.rgb).max() < 1e-4
    np.testing.assert_allclose(got["res"].eigenvalues, want.eigenvalues, rtol=1e-4)
    assert list(tmp_path.iterdir()) == []


def test_spooled_group_with_a_basis_projects_as_the_passes_come(tmp_path):
    """With a basis and a fitted colour scaling, the spool keeps only the projections and the
    result is the in-memory one; each image's colours are then its own (the same in any group)."""
    from pfv_onnx.decompose import FittedScaling, decompose
    from pfv_onnx.pca import fit

    passes = _passes(30, 24)
    basis = fit(np.concatenate([p.activations for p in _passes(20, 24, seed=1)]).transpose(0, 2, 3, 1).reshape(-1, 24), 3)[0]
    scaling = FittedScaling(peaks=None, mean=0.1, std=2.0)
    whole = decompose(passes, _maps(), k=3, basis=basis, scaling=scaling)
    got = _spooled(tmp_path, passes, basis=basis, scaling=scaling)
    assert np.array_equal(got["rgb"], whole.rgb)
    alone = _spooled(tmp_path, passes[1:2], basis=basis, scaling=scaling)
    assert np.array_equal(alone["rgb"], whole.rgb[7:14])


def test_spooled_group_refuses_nan_like_the_in_memory_one(tmp_path):
    from pfv_onnx.decompose import decompose
    from pfv_onnx.errors import InputError

    passes = _passes(14, 8)
    passes[1].weights[0][0, 0, 0, 0] = np.nan
    passes[0].activations[0, 0, 0, 0] = np.inf
    with pytest.raises(InputError) as whole:
        decompose(passes, _maps(), k=3)
    with pytest.raises(InputError) as spooled:
        _spooled(tmp_path, passes)
    assert str(spooled.value) == str(whole.value) and "'E_L'" in str(whole.value)


def test_run_equals_the_in_memory_computation(world, tmp_path):
    """A run (one group, batches of 2, spooled) writes the rows and pictures of the in-memory
    decomposition of the same forward passes, and leaves no temporary folder."""
    from pfv_onnx import render
    from pfv_onnx.inputs import decode_image, preprocess, stack_batch
    from pfv_onnx.runplan.writer import rgb_rows

    out = tmp_path / "out"
    report = execute(_job(world, out, "size", 2, None)).report
    job = _job(world, tmp_path / "unused", "size", 2, None)
    files = [Path(im["file"]) for im in report["images"]]
    tensors = [preprocess(decode_image(f).bgr, job.prep) for f in files]
    passes = [job.pfv.forward(stack_batch(tensors[i : i + 2], job.prep.layout)) for i in range(0, len(tensors), 2)]
    res = job.pfv.decompose(passes)
    with np.load(out / "pfv.npz") as z:
        assert np.array_equal(z["rgb"], rgb_rows(res.rgb, "uint8"))
        assert np.array_equal(z["components"], res.components)
        assert np.array_equal(z["eigenvalues"][0], res.eigenvalues)
    for j, im in enumerate(report["images"]):
        h, w = im["size"]
        pic = render.map_picture(res.rgb[j], (h, w), tuple(im["crop_box"]))
        assert np.array_equal(cv2.imread(str(out / im["outputs"]["map"]), cv2.IMREAD_UNCHANGED), pic)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".pfv-tmp-")]


@pytest.mark.parametrize("deflate", [[], ["rgb"]])
def test_npz_rows_read_in_blocks_are_the_array(tmp_path, deflate):
    from pfv_onnx.outputs import npz_row_blocks, write_npz

    rgb = np.random.default_rng(2).integers(0, 256, (23, 5, 6, 3), dtype=np.uint8)
    write_npz(tmp_path / "a.npz", {"x": np.arange(3), "rgb": rgb}, deflate=deflate)
    blocks = list(npz_row_blocks(tmp_path / "a.npz", "rgb", rows=10))
    assert [len(b) for b in blocks] == [10, 10, 3]
    assert np.array_equal(np.concatenate(blocks), rgb)


def test_a_basis_of_another_model_is_refused_before_any_pass(world, tmp_path):
    """An API caller's basis of another model whose decomposed map has more channels: one
    InputError before the first forward pass (nothing written), not a NumPy error."""
    from onnx import numpy_helper

    from pfv_onnx.basis import load
    from pfv_onnx.errors import InputError

    wider = graphs.colour_classifier()  # the same graph, its maps 4 channels wide
    shapes = {"id0.weight": np.eye(4, 3), "id1.weight": np.eye(4)}
    for init in wider.graph.initializer:
        if init.name in shapes:
            init.CopyFrom(numpy_helper.from_array(shapes[init.name].astype(np.float32)[:, :, None, None], init.name))
        elif numpy_helper.to_array(init).shape == (3, 3):  # the Gemm's weight
            init.CopyFrom(numpy_helper.from_array(np.eye(3, 4, dtype=np.float32), init.name))
    path = tmp_path / "wider.onnx"
    onnx.save(wider, str(path))
    pfv = PFV(str(path))
    prep = make_preprocessing("imagenet", size=pfv.default_size, layout="NCHW")
    report = {"pfv": {"groups": 0}, "groups": [], "images": [], "failures": [], "outputs": {}, "notes": []}
    out = tmp_path / "out"
    job = RunJob(
        pfv=pfv, files=collect_images([world["images"]]).files, prep=prep, outdir=out, report=report,
        fingerprint="wider", batch_size=4, basis=load(world["basis"]), html=False,
    )  # fmt: skip
    with pytest.raises(InputError, match="another model"):
        execute(job)
    assert not out.exists()


def test_a_basis_of_other_channels_is_refused_by_the_spool(tmp_path):
    from pfv_onnx.errors import InputError
    from pfv_onnx.group_spool import GroupSpool
    from pfv_onnx.pca import fit

    basis = fit(np.concatenate([p.activations for p in _passes(20, 24, seed=1)]).transpose(0, 2, 3, 1).reshape(-1, 24), 3)[0]
    with GroupSpool(tmp_path, basis=basis) as spool, pytest.raises(InputError, match="24 channels"):
        spool.add(_passes(8, 16)[0])


def test_npz_rows_round_as_numpy_does_at_every_boundary():
    """pfv.npz's 8-bit rgb is rint(x * 255) in float32, clipped: checked against NumPy on the
    float32 values nearest each rounding boundary (k + 0.5) / 255, on values below 0 and far above 1."""
    from pfv_onnx.runplan.writer import rgb_rows

    near = []
    for k in range(256):
        v = np.float32((k + 0.5) / 255)
        below = above = v
        for _ in range(8):
            below, above = np.nextafter(below, np.float32(-1)), np.nextafter(above, np.float32(2))
            near += [below, above]
        near.append(v)
    x = np.clip(np.asarray(near[: len(near) // 6 * 6], np.float32), 0, 1).reshape(2, 1, -1, 3)

    def numpy_rows(a):
        with np.errstate(invalid="ignore"):
            return np.clip(np.rint(a * np.float32(255.0)), 0, 255).astype(np.uint8)

    np.testing.assert_array_equal(rgb_rows(x, "uint8"), numpy_rows(x))
    odd = x.copy()
    odd[0, 0, 0] = [-0.25, 0.5, 1.75]
    np.testing.assert_array_equal(rgb_rows(odd, "uint8")[0, 0, 0], [0, 128, 255])
    big = x.copy()
    big[0, 0, 0] = [0.5, np.inf, 1e30]
    np.testing.assert_array_equal(rgb_rows(big, "uint8")[0, 0, 0], [128, 255, 255])
    assert rgb_rows(x, "full").dtype == np.float32


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="the system cannot reserve disk space")
def test_a_spools_scratch_has_its_disk_space_reserved(tmp_path):
    """pca.fit's memory-mapped scratch is allocated when made: a full disk is then an error at
    that point, not a SIGBUS when a page of the map is written later."""
    from pfv_onnx.group_spool import GroupSpool

    with GroupSpool(tmp_path) as spool:
        a = spool.scratch((2000, 512), np.float32)
        assert a.shape == (2000, 512) and a.dtype == np.float32
        st = os.stat(a.filename)
        assert st.st_size == a.nbytes and st.st_blocks * 512 >= a.nbytes  # not a sparse file
        a[-1] = 7.0
        assert float(a[-1].sum()) == 7.0 * 512
        assert spool.scratch((0, 4), np.float32).shape == (0, 4)
