"""A model file's identity and writing: its resolved path, one hash over the file and its
external data, reloading it unchanged, and one atomic ONNX writer.

Everything that reads a model again later (a new input size, the self-check, a save) goes
through :class:`ModelFile`, whose path is absolute from the moment it is opened: a change of
working directory afterwards does not change which file is meant.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from .errors import ModelError

#: Protobuf refuses to serialise a message of 2 GiB or more; a larger model is written with
#: its tensors in a data file beside it.
PROTOBUF_LIMIT = 2**31 - 1
_TEMP_PREFIX = ".pfv-tmp-"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of one file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_sha256(path: str | os.PathLike[str], data_files: list[Path] | tuple[Path, ...] = ()) -> str:
    """One hash over a model file and its external data files.

    Without external data it is the file's own SHA-256 (as ``sha256sum`` prints it). With
    it, the hash of a manifest that lists the model file's hash and, in the order of their
    paths relative to the model's folder, each data file's path and hash: the same model
    gives the same value in any folder, and other weights give another.
    """
    own = file_sha256(path)
    if not data_files:
        return own
    base = Path(os.path.abspath(path)).parent.resolve()
    lines = [f"model {own}"]
    for f in sorted({Path(f).resolve() for f in data_files}, key=lambda p: p.relative_to(base).as_posix()):
        lines.append(f"data {f.relative_to(base).as_posix()} {file_sha256(f)}")
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ModelFile:
    """A model file as opened once: absolute path, external data files and content hash."""

    path: Path  # absolute (not following links, so external data resolves beside the name given)
    sha256: str
    data_files: tuple[Path, ...] = ()

    @property
    def folder(self) -> Path:
        """Where the external data lives (and where onnxruntime looks for it)."""
        return self.path.parent

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> tuple[ModelFile, onnx.ModelProto]:
        """Load and check the model (``model_io.load_model``) and record what it is."""
        from .model_io import check_external_data, load_model

        absolute = Path(os.path.abspath(os.fspath(path)))
        model = load_model(absolute)
        files = tuple(check_external_data(model, absolute.parent))
        return cls(absolute, model_sha256(absolute, files), files), model

    def load(self) -> onnx.ModelProto:
        """The model read again; a :class:`ModelError` when the file or its data changed since it was opened."""
        again, model = ModelFile.open(self.path)
        if again.sha256 != self.sha256:
            raise ModelError(f"{self.path} changed since it was loaded; create a new PFV for the new model")
        return model


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike[str],
    source_dir: str | os.PathLike[str] | None = None,
    *,
    check: bool = True,
    limit: int = PROTOBUF_LIMIT,
) -> Path:
    """Write ``model`` to ``path`` atomically, with its external data pulled in from ``source_dir``.

    A model under ``limit`` bytes is written as one self-contained file. A larger one, which
    protobuf cannot serialise, keeps its tensors in ``NAME.data`` beside it. Both files are
    written in a temporary folder beside the target and renamed into place, the data file
    first, so a reader never finds a half-written model. External-data paths are checked
    (they must stay inside ``source_dir``) before anything is read. ``check`` runs onnx's
    checker on the written model. ``model`` itself is not modified.
    """
    from onnx.external_data_helper import (
        load_external_data_for_model,
        uses_external_data,
    )

    from .model_io import _external_tensors, check_external_data

    target = Path(path)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    if any(uses_external_data(t) for t in _external_tensors(copy)):
        if source_dir is None:
            raise ModelError("the model keeps weights in external data files; give the folder they are in")
        check_external_data(copy, Path(source_dir))
        load_external_data_for_model(copy, str(source_dir))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=target.parent))
    try:
        staged = tmp_dir / target.name
        data_name = target.name + ".data"
        large = copy.ByteSize() > limit
        if large:
            onnx.save(copy, str(staged), save_as_external_data=True, all_tensors_to_one_file=True, location=data_name)
        else:
            onnx.save(copy, str(staged))
        del copy
        if check:
            try:  # by path: the checker reads a large model's data file itself
                onnx.checker.check_model(str(staged))
            except onnx.checker.ValidationError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ModelError(f"the model written to {target} fails onnx's checker ({first[:300]})") from None
        for staged_file in ([tmp_dir / data_name] if large else []) + [staged]:
            with open(staged_file, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(staged_file, 0o644)
            os.replace(staged_file, target.parent / staged_file.name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target
