"""Nothing lost: a run killed midway (SIGKILL) and started again with the same arguments
finishes the remaining groups, leaves no half-written file, and ends with exactly the files
of an uninterrupted run; ``--overwrite`` redoes everything; equal inputs give equal bytes.

The kills are real SIGKILLs of a child process, placed deterministically by a small wrapper
that patches one function of the run to kill the process at a chosen moment (in the middle
of writing a named file, right after a group is saved, ...); one more test kills at a
moment it does not choose.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

import bad_inputs
import graphs
from pfv_onnx.cli import main

GROUP = ["--group-size", "2", "--batch-size", "1", "--no-html"]  # the page: see test_killed_while_writing_the_page
GOOD = [f"im{i}.png" for i in range(7)]  # groups: [im0 im1] [im2 im3] [im4 im5] [im6]
TEMP = re.compile(r"^\.pfv-tmp-")

_WRAPPER = r"""
import contextlib, os, signal, sys, tempfile
import pfv_onnx.outputs as outputs
from pfv_onnx.cli import main
from pfv_onnx.runplan import progress

mode, arg = sys.argv[1], sys.argv[2]
argv = sys.argv[3:]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if mode == "write":  # killed in the middle of writing the file named `arg` (any file, pictures to archives)
    real = outputs.atomic_file
    @contextlib.contextmanager
    def atomic_file(path, **options):
        if os.path.basename(str(path)) == arg:
            fd, _ = tempfile.mkstemp(prefix=".pfv-tmp-", suffix=".tmp", dir=os.path.dirname(str(path)))
            os.write(fd, b"PK\x03\x04" + b"\x00" * 4096)  # half of something
            die()
        with real(path, **options) as f:
            yield f
    outputs.atomic_file = atomic_file
elif mode == "saved":  # killed right after group number `arg` was saved
    real_save = progress.Progress.save
    def save(self, saved, start):
        real_save(self, saved, start)
        if saved.index == int(arg):
            die()
    progress.Progress.save = save
elif mode == "finish":  # killed after the final report, before the saved groups are removed
    progress.Progress.finish = lambda self: die()
sys.exit(main(argv))
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Seven images of different sizes and one unreadable file; the model; a reference run."""
    root = tmp_path_factory.mktemp("resume")
    images = root / "images"
    images.mkdir()
    for i, name in enumerate(GOOD):
        cv2.imwrite(str(images / name), bad_inputs.pattern_rgb(24 + 3 * i, 32 + 2 * i, seed=i)[:, :, ::-1])
    (images / "bad.png").write_bytes(b"not a picture")
    model = root / "vgg.onnx"
    onnx.save(graphs.vgg().model, str(model))
    ref = root / "reference"
    assert main(["run", str(model), str(images), "-o", str(ref), "-q", *GROUP]) == 1
    return {"root": root, "images": images, "model": model, "ref": ref}


def _args(setup, out: Path, *extra: str) -> list[str]:
    return ["run", str(setup["model"]), str(setup["images"]), "-o", str(out), "-q", *GROUP, *extra]


def _killed(setup, out: Path, mode: str, arg: str = "-") -> int:
    p = subprocess.run([sys.executable, "-c", _WRAPPER, mode, arg, *_args(setup, out)], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode


def _files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _without_volatile(report: dict) -> dict:
    """A report without what differs between equal runs: timings, and how the run was resumed."""
    return {k: v for k, v in report.items() if k not in ("timings", "resume")}


def _page(path: Path) -> str:
    """The page without what differs between equal runs: the timings and the time it was made."""
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "DATE", path.read_text())
    return re.sub(r"\d+(\.\d+)? s\b", "T s", text)


def assert_same_results(ref: Path, out: Path) -> None:
    a, b = _files(ref), _files(out)
    assert sorted(a) == sorted(b), set(a) ^ set(b)
    for name, p in a.items():
        if name == "report.json":
            assert _without_volatile(json.loads(p.read_text())) == _without_volatile(json.loads(b[name].read_text()))
        elif name == "report.html":
            assert _page(p) == _page(b[name])
        else:
            assert p.read_bytes() == b[name].read_bytes(), name


def assert_nothing_half_written(out: Path) -> None:
    """Every file a reader can see is complete: temporary files aside, each one parses whole."""
    for name, p in _files(out).items():
        if TEMP.match(p.name):
            continue
        if p.suffix == ".png" or p.suffix == ".jpg":
            data = np.frombuffer(p.read_bytes(), np.uint8)
            assert cv2.imdecode(data, cv2.IMREAD_UNCHANGED) is not None, name
            if p.suffix == ".png":
                assert p.read_bytes().endswith(b"IEND\xaeB`\x82"), name
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                for k in z.files:
                    z[k]


def _no_leftovers(out: Path) -> None:
    assert not [p for p in out.rglob("*") if TEMP.match(p.name)]
    assert not (out / ".pfv-progress").exists()


# --------------------------------------------------------------------------- killed and resumed


@pytest.mark.parametrize(
    "mode, arg, reused",
    [
        ("write", "im0.overlay.png", 0),  # in the first group's pictures
        ("saved", "0", 1),  # right after the first group was saved
        ("write", "im4.pfv.png", 2),  # in the third group, two saved
        ("write", "group-000001.npz", 1),  # while the second group was being saved
        ("write", "pfv.npz", 3),  # while writing pfv.npz: the last group is not saved, it is redone
    ],
)
def test_killed_run_resumes_to_the_same_files(mode, arg, reused, setup, tmp_path):
    out = tmp_path / "out"
    assert _killed(setup, out, mode, arg) == -signal.SIGKILL
    assert_nothing_half_written(out)
    assert main(_args(setup, out)) == 1  # the unreadable file still fails; all else done
    report = json.loads((out / "report.json").read_text())
    assert report["resume"]["groups_reused"] == reused
    assert report["status"] == "complete"
    _no_leftovers(out)
    assert_same_results(setup["ref"], out)


@pytest.fixture(scope="module")
def with_page(setup):
    """The arguments with the HTML page (thumbnails, legend pictures) on, and their reference run."""
    args = [a for a in _args(setup, setup["root"] / "reference_page") if a != "--no-html"]
    assert main(args) == 1
    return args


@pytest.mark.parametrize("name, reused", [("im2.map.jpg", 1), ("report.html", 3)])
def test_killed_while_writing_the_page(name, reused, setup, with_page, tmp_path):
    """Killed while writing a thumbnail of the page (in report_files/thumbs) or the page itself."""
    out = tmp_path / "out"
    args = [*with_page[:4], str(out), *with_page[5:]]
    p = subprocess.run([sys.executable, "-c", _WRAPPER, "write", name, *args], capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert_nothing_half_written(out)
    assert main(args) == 1
    assert json.loads((out / "report.json").read_text())["resume"]["groups_reused"] == reused
    _no_leftovers(out)
    assert_same_results(Path(with_page[4]), out)


def test_killed_after_the_final_report_is_complete(setup, tmp_path, capsys):
    out = tmp_path / "out"
    assert _killed(setup, out, "finish") == -signal.SIGKILL
    assert (out / ".pfv-progress").exists()  # the kill came before the saved groups were removed
    assert main(_args(setup, out)[:-1 - len(GROUP)] + GROUP) == 1  # not quiet: says it is done
    assert "already done" in capsys.readouterr().err
    _no_leftovers(out)
    assert_same_results(setup["ref"], out)


def test_kill_at_an_unplanned_moment(setup, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "import sys; from pfv_onnx.cli import main; sys.exit(main())", *_args(setup, out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "im2.pfv.png").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert_nothing_half_written(out)
    assert main(_args(setup, out)) == 1
    _no_leftovers(out)
    assert_same_results(setup["ref"], out)


@pytest.fixture(scope="module")
def killed_after_group_1(setup):
    """An output folder as a run killed right after saving its second group left it."""
    out = setup["root"] / "killed_after_group_1"
    assert _killed(setup, out, "saved", "1") == -signal.SIGKILL
    return out


def _copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to, symlinks=True)
    return to


def test_kept_groups_are_reused_not_recomputed(setup, killed_after_group_1, tmp_path):
    """After a kill following group 1, the rerun takes groups 0 and 1 from what was saved:
    their pictures are not rewritten (same inodes), and a mark planted in the saved rows
    shows up in pfv.npz. --overwrite then redoes everything."""
    out = _copy(killed_after_group_1, tmp_path / "out")
    kept = {n: os.stat(out / n).st_ino for n in ("im0.pfv.png", "im1.overlay.png", "im3.pfv.png")}
    held = tmp_path / "held"  # hard links keep the old inodes alive: a new file cannot reuse their numbers
    held.mkdir()
    for n in kept:
        os.link(out / n, held / n)
    saved = out / ".pfv-progress" / "group-000000.npz"
    with np.load(saved) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["rgb"] = np.full_like(arrays["rgb"], 77)
    np.savez(saved, **arrays)
    redone = _copy(out, tmp_path / "redone")  # the same state, resumed with --overwrite: nothing kept
    assert main(_args(setup, redone, "--overwrite")) == 1
    assert json.loads((redone / "report.json").read_text())["resume"]["groups_reused"] == 0
    assert_same_results(setup["ref"], redone)
    assert main(_args(setup, out)) == 1
    assert {n: os.stat(out / n).st_ino for n in kept} == kept
    with np.load(out / "pfv.npz") as z, np.load(setup["ref"] / "pfv.npz") as r:
        assert (z["rgb"][:2] == 77).all()
        np.testing.assert_array_equal(z["rgb"][2:], r["rgb"][2:])
    assert main(_args(setup, out, "--overwrite")) == 1
    assert all(os.stat(out / n).st_ino != ino for n, ino in kept.items())
    assert_same_results(setup["ref"], out)


@pytest.mark.parametrize("change", ["argument", "image", "deleted_output", "damaged_save"])
def test_saved_groups_are_not_used_when_they_no_longer_fit(change, setup, killed_after_group_1, tmp_path):
    out = _copy(killed_after_group_1, tmp_path / "out")
    extra: list[str] = []
    images = setup["images"]
    if change == "argument":
        extra = ["--alpha", "0.3"]
    elif change == "image":
        images = tmp_path / "images"
        shutil.copytree(setup["images"], images)
        cv2.imwrite(str(images / "im0.png"), np.full((24, 32, 3), 90, np.uint8))
    elif change == "deleted_output":
        (out / "im1.pfv.png").unlink()
    else:
        (out / ".pfv-progress" / "group-000000.npz").write_bytes(b"PK\x03\x04 damaged")
    args = ["run", str(setup["model"]), str(images), "-o", str(out), "-q", *GROUP, *extra]
    assert main(args) == 1
    report = json.loads((out / "report.json").read_text())
    assert report["resume"]["groups_reused"] == 0
    fresh = setup["ref"]
    if extra or images != setup["images"]:
        fresh = tmp_path / "fresh"
        assert main(["run", str(setup["model"]), str(images), "-o", str(fresh), "-q", *GROUP, *extra]) == 1
    _no_leftovers(out)
    assert_same_results(fresh, out)


# --------------------------------------------------------------------------- complete runs


def test_complete_run_is_not_redone_and_overwrite_redoes_it(setup, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(setup["ref"], out)
    before = {n: os.stat(p).st_ino for n, p in _files(out).items()}
    assert main(_args(setup, out)) == 1  # the exit code of the finished run
    assert {n: os.stat(p).st_ino for n, p in _files(out).items()} == before
    held = tmp_path / "held"  # hard links keep the old inodes alive: a new file cannot reuse their numbers
    held.mkdir()
    for n, p in _files(out).items():
        os.link(p, held / n.replace("/", "__"))
    assert main(_args(setup, out, "--overwrite")) == 1
    after = {n: os.stat(p).st_ino for n, p in _files(out).items()}
    assert sorted(after) == sorted(before) and all(after[n] != before[n] for n in before)
    assert_same_results(setup["ref"], out)


def test_every_run_gives_the_same_bytes(setup, tmp_path):
    """An uninterrupted run again, elsewhere: every file byte-identical (reports: but for timings)."""
    out = tmp_path / "again"
    assert main(_args(setup, out)) == 1
    assert_same_results(setup["ref"], out)
    names = set(_files(out))
    assert {"pfv.npz", "mosaic.jpg", "report.json"} <= names and {f"im{i}.pfv.png" for i in range(7)} <= names


def test_reference_run_shape(setup):
    """The fixture run is what the cases above assume: four groups, one failure."""
    report = json.loads((setup["ref"] / "report.json").read_text())
    assert [g["images"] for g in report["groups"]] == [2, 2, 2, 1]
    assert [Path(f["file"]).name for f in report["failures"]] == ["bad.png"]
    assert report["resume"]["groups_reused"] == 0


_WRITES: list[tuple[str, object, object]] | None = None  # set while a test records file opens


def _record_open(event: str, args: tuple) -> None:
    if _WRITES is not None and event == "open":
        _WRITES.append(args[:3])


@pytest.fixture
def opened_for_writing():
    """Files opened for writing while the test runs: (path, mode or None, os.open flags or None)."""
    global _WRITES
    if not getattr(sys, "_pfv_test_open_hook", False):
        sys.addaudithook(_record_open)  # hooks cannot be removed; this one is idle outside the fixture
        sys._pfv_test_open_hook = True
    _WRITES = []
    yield _WRITES
    _WRITES = None


def test_every_output_is_written_through_a_temporary_file(setup, tmp_path, opened_for_writing):
    """No output file is ever opened for writing under its own name: each is written as a
    temporary file in its folder and renamed over the target, so a reader or a killed run
    sees a missing file or a complete one, never half of one."""
    out = tmp_path / "out"
    args = [a for a in _args(setup, out) if a != "--no-html"]  # the page and its pictures too
    assert main(args) == 1
    written = set()
    for path, mode, flags in opened_for_writing:
        p = Path(os.fsdecode(path)) if isinstance(path, (str, bytes, os.PathLike)) else None
        if p is None or out not in p.parents:
            continue
        writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
            flags is not None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        )
        if writing:
            written.add(p)
    assert written, "the audit hook saw no writes at all"
    assert all(TEMP.match(p.name) for p in written), sorted(p.name for p in written if not TEMP.match(p.name))
    finals = {p for p in out.rglob("*") if p.is_file()}
    assert len(finals) > 20 and not any(TEMP.match(p.name) for p in finals)
