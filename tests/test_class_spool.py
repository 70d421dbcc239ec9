"""``run --group-by class`` in bounded memory: the forward passes wait on disk until each
class group takes its files' rows, and every group comes out as the in-memory
decomposition of its images, bit for bit."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

import graphs
from pfv_onnx import PFV
from pfv_onnx.pipeline import ForwardPass
from pfv_onnx.inputs import collect_images, make_preprocessing
from pfv_onnx.inputs.decode import decode_image
from pfv_onnx.inputs.preprocess import preprocess, stack_batch
from pfv_onnx.runplan import RunJob, execute

BATCH = 3


def _pictures(folder: Path, channels: list[int], seed: int = 5) -> None:
    """One picture per class in ``channels``: the model's class is its strongest channel (0, 1, 2: R, G, B)."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i, ch in enumerate(channels):
        pic = rng.integers(0, 90, (24 + (i % 4), 30, 3)).astype(np.uint8)
        pic[:, :, 2 - ch] = np.clip(pic[:, :, 2 - ch].astype(int) + 120 + 4 * i, 0, 255).astype(np.uint8)  # BGR
        cv2.imwrite(str(folder / f"img{i:03d}.png"), pic)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("classspool") / "colour.onnx"
    onnx.save(graphs.colour_classifier(), str(path))
    return path


def _run(pfv: PFV, images: Path, out: Path, batch: int = BATCH) -> dict:
    prep = make_preprocessing("imagenet", size=pfv.default_size, layout="NCHW")
    report = {"pfv": {"groups": 0}, "groups": [], "images": [], "failures": [], "outputs": {}, "notes": []}
    job = RunJob(
        pfv=pfv, files=collect_images([images]).files, prep=prep, outdir=out, report=report, fingerprint="class",
        batch_size=batch, by_class=True, html=False, npz_precision="full",
    )  # fmt: skip
    summary = execute(job)
    assert summary.report["status"] == "complete"
    assert not [p for p in out.iterdir() if p.name.startswith(".pfv-tmp-")]  # the spools are gone
    return summary.report


def test_class_groups_equal_the_in_memory_decomposition_of_their_images(model, tmp_path):
    """Each class group's rows of pfv.npz and report values are those of ``PFV.decompose``
    of the group's forward passes held in memory (the same batches as the run's)."""
    channels = [2, 1, 0, 1, 2, 2, 0, 1, 1, 2, 0, 1, 2]  # classes interleaved across batches
    _pictures(tmp_path / "images", channels)
    pfv = PFV(str(model))
    report = _run(pfv, tmp_path / "images", tmp_path / "out")

    files = collect_images([tmp_path / "images"]).files
    prep = make_preprocessing("imagenet", size=pfv.default_size, layout="NCHW")
    tensors = [preprocess(decode_image(f).bgr, prep) for f in files]
    passes = [pfv.forward(stack_batch(tensors[a : a + BATCH], "NCHW")) for a in range(0, len(files), BATCH)]
    classes = np.concatenate([np.argmax(fp.outputs[next(iter(fp.outputs))].reshape(fp.n, -1), axis=1) for fp in passes])
    assert list(classes) == channels, list(classes)  # the model's class is the strongest channel, as drawn
    with np.load(tmp_path / "out" / "pfv.npz") as z:
        npz = {k: z[k] for k in z.files}
    counts = np.bincount(classes)
    assert [g["class"]["class"] for g in report["groups"]] == sorted(range(3), key=lambda c: (-counts[c], c))  # the largest class first
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    for g, group in enumerate(report["groups"]):
        members = [i for i, c in enumerate(classes) if c == group["class"]["class"]]
        mine = [fp.take([i - a for i in members if a <= i < a + fp.n]) for a, fp in zip(range(0, len(files), BATCH), passes)]
        ref = pfv.decompose([fp for fp in mine if fp.n])
        rows = np.flatnonzero(npz["group"] == g)
        assert [Path(f).name for f in npz["files"][rows]] == [files[i].name for i in members]
        assert np.array_equal(npz["rgb"][rows], ref.rgb)
        assert np.array_equal(npz["components"][rows], ref.components)
        assert np.array_equal(npz["eigenvalues"][g], ref.eigenvalues)
        assert np.array_equal(npz["explained_variance_ratio"][g], ref.explained_variance_ratio)
        for name, value in ref.outputs.items():
            assert np.array_equal(npz[f"output/{name}"][rows], value)
        assert np.array_equal(np.asarray(saved["groups"][g]["eigenvalues"], dtype=np.float64), ref.eigenvalues)
        assert [(Path(im["file"]).name, im["prediction"]["class"]) for im in saved["images"] if im["group"] == g] == [(files[i].name, int(classes[i])) for i in members]


class _Counting(PFV):
    """A PFV that counts the forward passes alive whenever a group is decomposed."""

    live: list[int]

    def decompose(self, passes, **kw):  # type: ignore[no-untyped-def]
        gc.collect()
        self.live.append(sum(isinstance(o, ForwardPass) for o in gc.get_objects()))
        return super().decompose(passes, **kw)


@pytest.mark.parametrize("n", [8, 32])
def test_a_class_run_does_not_keep_the_forward_passes(model, tmp_path, n):
    """While the groups are decomposed at most the pass being moved to disk is alive,
    however many images there are (keeping them would be n / 2 passes at batch 2)."""
    _pictures(tmp_path / "images", [i % 3 for i in range(n)], seed=n)
    pfv = _Counting(str(model))
    pfv.live = []
    report = _run(pfv, tmp_path / "images", tmp_path / "out", batch=2)
    assert len(report["groups"]) == 3 and len(report["images"]) == n
    assert len(pfv.live) == 3
    assert max(pfv.live) <= 1
