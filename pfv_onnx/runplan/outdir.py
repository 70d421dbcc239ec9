"""The output folder of a run: checked before any work, and a record of pfv-onnx's own files.

``OUTDIR/.pfv-onnx-files.json`` lists the files a run writes there (the per-image pictures
of every planned name, the report, the archive, the mosaic, the page and its folder). A new
run in the same folder removes the files an earlier run listed and keeps every other file;
input discovery leaves the output folder and the listed files out, so a run whose output
folder lies inside its input folder never takes its own pictures for images.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError

RECORD = ".pfv-onnx-files.json"
REPORT = "report.json"
NPZ = "pfv.npz"
MOSAIC = "mosaic.jpg"
REPORT_HTML = "report.html"
PAGE_FOLDER = "report_files"  # the page's pictures (html_report.ASSETS)
PICTURE_ENDINGS = (".pfv.png", ".overlay.png", ".overlay.jpg")


def check_writable(outdir: str | os.PathLike[str]) -> None:
    """Fail in one line, before any work, when the output folder cannot be created or written.

    Nothing is created: for a folder that does not exist yet, its nearest existing parent
    is checked."""
    folder = Path(outdir)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InputError(f"cannot create the output folder {folder}: {probe} is a file; choose another folder with -o")
    try:
        fd, name = tempfile.mkstemp(prefix=".pfv-tmp-", suffix=".tmp", dir=probe)
    except OSError as exc:
        where = folder if probe == folder else f"{folder} (in {probe})"
        raise InputError(f"cannot write in the output folder {where}: {exc.strerror or exc}; choose another folder with -o") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)


def listed(outdir: str | os.PathLike[str]) -> list[Path]:
    """The files (and the page's folder) an earlier run recorded in ``outdir``."""
    folder = Path(outdir)
    try:
        data = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        names = [str(n) for n in data["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [folder / n for n in names if n and not os.path.isabs(n) and ".." not in Path(n).parts]


def excluded_from_inputs(outdir: str | os.PathLike[str]) -> list[Path]:
    """What input discovery leaves out: the output folder itself and pfv-onnx's files in it."""
    folder = Path(outdir)
    return [folder, folder / PAGE_FOLDER, *listed(folder)]


def planned_files(names: Sequence[str]) -> list[str]:
    """Every file a run with these output base names may write in its output folder."""
    pictures = [f"{n}{ending}" for n in names for ending in PICTURE_ENDINGS]
    return [REPORT, NPZ, MOSAIC, REPORT_HTML, PAGE_FOLDER, *pictures]


def clean_earlier(outdir: str | os.PathLike[str]) -> int:
    """Remove the files an earlier run recorded (another run's pictures); other files stay. Returns how many."""
    removed = 0
    for p in listed(outdir):
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        except OSError:
            pass
    return removed


def record(outdir: str | os.PathLike[str], names: Sequence[str]) -> None:
    """List the files this run may write, before it writes any."""
    from ..outputs import write_json

    write_json(Path(outdir) / RECORD, {"files": planned_files(names)})
