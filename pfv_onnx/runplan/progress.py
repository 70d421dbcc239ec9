"""Resuming an interrupted ``run``: finished groups are kept, an unfinished group is redone whole.

PFV colours depend on every image of a group (one PCA, one colour scaling), so the unit of
work that can be kept is a group, not an image. After each group's pictures are written,
its rows (rgb, components, model outputs), report records, failures and mosaic tiles are
saved in ``OUTDIR/.pfv-progress/group-NNNNNN.npz`` and ``.json``; the ``.json`` is written
last and is the mark that the group is complete. A class plan (``--group-by class``) is
saved in ``plan.json`` before its first group. A run started again with the same
arguments (same model bytes, images, options: the *fingerprint*) takes the longest run of
complete groups from the start whose pictures are still there and does the groups of the
plan after them: for size groups, the files after the last kept group's; for class
groups, the planned groups not kept. Groups are formed exactly as an uninterrupted run
forms them, so every file comes out byte-identical to one. When the run completes the
progress folder is removed and ``report.json`` keeps the fingerprint: the same command
again finds everything done and writes nothing. ``--overwrite`` redoes everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .plan import ClassPlan

PROGRESS_DIR = ".pfv-progress"
MANIFEST = "manifest.json"
PLAN = "plan.json"


def fingerprint(report: Mapping[str, Any], files: Sequence[Path], extra: Mapping[str, Any]) -> str:
    """A digest of everything that decides a run's outputs.

    ``report``: the run's report before any group (version, model with its sha256, PFV and
    preprocessing options); ``files``: the inputs in order, each with its size and mtime;
    ``extra``: options the report does not hold (overlay opacity, the labels' text, ...).
    """
    from ..outputs import _jsonable

    stats = []
    for f in files:
        try:
            st = os.stat(f)
            stats.append([str(f), st.st_size, st.st_mtime_ns])
        except OSError:
            stats.append([str(f), None, None])
    keys = ("pfv_onnx_version", "model", "pfv", "preprocessing")
    content = {"report": {k: report.get(k) for k in keys}, "files": stats, "extra": dict(extra)}
    text = json.dumps(_jsonable(content), sort_keys=True, ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_digest(path: str | os.PathLike[str] | None) -> str | None:
    from ..model_file import file_sha256

    try:
        return None if path is None else file_sha256(path)
    except OSError:
        return None


@dataclass
class SavedGroup:
    """One complete group as the run needs it back."""

    index: int
    end: int  # size plans: one past the last input file (index into the run's file list) this group consumed
    images: list[dict[str, Any]]  # report["images"] records
    failures: list[dict[str, str]]  # failures met while the group was filled or written, in order
    group: dict[str, Any]  # the report["groups"] entry
    files: list[str]  # the npz "files" rows
    arrays: dict[str, np.ndarray]  # the npz rows: "rgb", "components", "output/<name>"
    eigenvalues: np.ndarray
    explained_variance_ratio: np.ndarray
    tiles: list[tuple[np.ndarray, np.ndarray, dict[str, Any] | None, str, int]] = field(default_factory=list)
    feature_maps: list[str] = field(default_factory=list)
    map_records: list[dict[str, Any]] = field(default_factory=list)
    pred_output: str | None = None


class Progress:
    """The progress folder of one output folder, for one fingerprint."""

    def __init__(self, outdir: str | os.PathLike[str], fp: str, overwrite: bool = False) -> None:
        from ..outputs import clean_stale_temp_files

        self.outdir = Path(outdir)
        self.folder = self.outdir / PROGRESS_DIR
        self.fingerprint = fp
        self.overwrite = overwrite
        self.reused = 0
        manifest = self._read_json(self.folder / MANIFEST)
        if overwrite or manifest is None or manifest.get("fingerprint") != fp:
            shutil.rmtree(self.folder, ignore_errors=True)  # another run's, or asked to redo
        else:
            clean_stale_temp_files(self.folder)

    # ------------------------------------------------------------------ reading

    @staticmethod
    def _read_json(path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _outputs_present(self, images: Sequence[Mapping[str, Any]]) -> bool:
        return all((self.outdir / name).is_file() for im in images for name in (im.get("outputs") or {}).values())

    def completed(self, report_name: str) -> dict[str, Any] | None:
        """The report of a complete earlier run with this fingerprint whose files are all there, else None."""
        if self.overwrite:
            return None
        report = self._read_json(self.outdir / report_name)
        if not isinstance(report, dict) or report.get("status") != "complete":
            return None
        if (report.get("resume") or {}).get("fingerprint") != self.fingerprint:
            return None
        outputs = report.get("outputs") or {}
        listed = [outputs[k] for k in ("npz", "mosaic", "html") if isinstance(outputs.get(k), str)]
        if not all((self.outdir / name).is_file() for name in listed):
            return None
        if not self._outputs_present(report.get("images") or []):
            return None
        return report

    def class_plan(self) -> ClassPlan | None:
        """The saved class plan of this run, if any."""
        from .plan import ClassPlan, PlannedGroup

        data = self._read_json(self.folder / PLAN)
        try:
            return ClassPlan([PlannedGroup.from_dict(g) for g in data["groups"]], list(data["failures"]))
        except (TypeError, KeyError, ValueError):
            return None

    def restore(self) -> list[SavedGroup]:
        """The complete groups from the start whose pictures are still in the output folder."""
        if not self.folder.is_dir():
            return []
        groups: list[SavedGroup] = []
        end = 0
        while True:
            saved = self._load(len(groups), end)
            if saved is None:
                break
            groups.append(saved)
            end = saved.end
        for p in self.folder.glob("group-*"):  # anything after the first gap is stale
            try:
                if int(p.name.split("-")[1].split(".")[0]) >= len(groups):
                    p.unlink()
            except (ValueError, IndexError, OSError):
                pass
        self.reused = len(groups)
        return groups

    def _load(self, index: int, start: int) -> SavedGroup | None:
        meta = self._read_json(self.folder / f"group-{index:06d}.json")
        if not isinstance(meta, dict) or meta.get("index") != index or meta.get("start") != start:
            return None
        if not self._outputs_present(meta.get("images") or []):
            return None
        try:
            with open(self.folder / f"group-{index:06d}.npz", "rb") as fh, np.load(fh, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
            tiles = []
            for j, t in enumerate(meta.get("tiles") or []):
                tiles.append((data[f"tile_image/{j}"], data[f"tile_map/{j}"], t["prediction"], t["name"], int(t["group"])))
            arrays = {k: data[k] for k in meta["array_keys"]}
            return SavedGroup(
                index=index,
                end=int(meta["end"]),
                images=list(meta["images"]),
                failures=list(meta["failures"]),
                group=dict(meta["group"]),
                files=list(meta["files"]),
                arrays=arrays,
                eigenvalues=data["eigenvalues"],
                explained_variance_ratio=data["explained_variance_ratio"],
                tiles=tiles,
                feature_maps=list(meta.get("feature_maps") or []),
                map_records=list(meta.get("map_records") or []),
                pred_output=meta.get("pred_output"),
            )
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
            return None  # damaged: the group is redone

    # ------------------------------------------------------------------ writing

    def _open(self) -> None:
        from ..outputs import write_json

        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json(self.folder / MANIFEST, {"fingerprint": self.fingerprint})

    def save_class_plan(self, plan: ClassPlan) -> None:
        """Keep a class plan, before its first group is decomposed."""
        from ..outputs import write_json

        self._open()
        write_json(self.folder / PLAN, {"groups": [g.to_dict() for g in plan.groups], "failures": plan.failures})

    def save(self, saved: SavedGroup, start: int) -> None:
        """Keep one complete group; its pictures must already be written."""
        from ..outputs import sync_all, write_json, write_npz

        sync_all(self.outdir)  # the group's pictures, written unsynced, reach the disk before the group counts as done
        self._open()
        arrays: dict[str, np.ndarray] = dict(saved.arrays)
        arrays["eigenvalues"] = np.asarray(saved.eigenvalues)
        arrays["explained_variance_ratio"] = np.asarray(saved.explained_variance_ratio)
        tiles_meta = []
        for j, (img, pic, pred, name, group) in enumerate(saved.tiles):
            arrays[f"tile_image/{j}"] = np.asarray(img)
            arrays[f"tile_map/{j}"] = np.asarray(pic)
            tiles_meta.append({"prediction": pred, "name": name, "group": group})
        write_npz(self.folder / f"group-{saved.index:06d}.npz", arrays)
        meta = {
            "index": saved.index,
            "start": start,
            "end": saved.end,
            "images": saved.images,
            "failures": saved.failures,
            "group": saved.group,
            "files": saved.files,
            "array_keys": list(saved.arrays),
            "tiles": tiles_meta,
            "feature_maps": saved.feature_maps,
            "map_records": saved.map_records,
            "pred_output": saved.pred_output,
        }
        write_json(self.folder / f"group-{saved.index:06d}.json", meta)  # last: marks the group complete

    def finish(self) -> None:
        """The run is complete and its report written: the saved groups are no longer needed."""
        shutil.rmtree(self.folder, ignore_errors=True)
