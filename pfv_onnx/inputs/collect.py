"""Finding image files: file names, folders (recursive) and glob patterns to a sorted,
de-duplicated list, with a reason for every argument that gave none."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .headers import _format_of

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".gif",
        ".webp", ".tif", ".tiff", ".pbm", ".pgm", ".ppm", ".pnm", ".pxm", ".pfm",
        ".jp2", ".j2k", ".avif", ".hdr", ".pic", ".sr", ".ras",
    }
)  # fmt: skip
"""File name endings picked up when a folder is searched (compared in lower case)."""


@dataclass
class Collected:
    """Result of :func:`collect_images`.

    ``files``: the image files, in a deterministic order (arguments in the order given,
    the files of one folder or pattern sorted by path), each once.
    ``missing``: ``(argument, reason)`` for each argument that named nothing.
    ``skipped``: ``(file, reason)`` for files found in folders that are not images.
    """

    files: list[Path] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


_GLOB_CHARS = frozenset("*?[")


def _key(path: str | os.PathLike[str]) -> str:
    return os.path.normcase(os.path.realpath(path))


def _walk_folder(folder: Path, exclude: frozenset[str] = frozenset()) -> tuple[list[Path], list[tuple[str, str]]]:
    """Every image below ``folder`` (hidden entries and ``exclude`` keys left out), sorted by relative path."""
    found: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and _key(Path(root) / d) not in exclude)
        for name in sorted(names):
            if name.startswith("."):
                continue  # .DS_Store, AppleDouble "._x.jpg" files and the like
            path = Path(root) / name
            if not path.is_file() or (exclude and _key(path) in exclude):
                continue
            if path.suffix.lower() in IMAGE_EXTENSIONS or _sniff_format(path) is not None:
                found.append(path)
            else:
                skipped.append((str(path), "not an image (unknown file type)"))
    order = sorted(range(len(found)), key=lambda i: found[i].relative_to(folder).parts)
    return [found[i] for i in order], skipped


def _excluded_match(match: Path, pattern: str, excluded: frozenset[str]) -> bool:
    """Whether a pattern's match is, or lies in, an excluded path below the pattern's fixed part."""
    fixed: list[str] = []
    for part in Path(pattern).parts:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    floor = _key(Path(*fixed) if fixed else Path("."))
    for p in (match, *match.parents):
        k = _key(p)
        if k == floor or floor.startswith(k.rstrip(os.sep) + os.sep):
            return False
        if k in excluded:
            return True
    return False


def _sniff_format(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError:
        return None
    return _format_of(head)


def collect_images(specs: Iterable[str | os.PathLike[str]], *, exclude: Iterable[str | os.PathLike[str]] = ()) -> Collected:
    """Find image files from file names, folders (searched recursively) and glob patterns.

    A file named directly is always kept, whatever its extension (decoding decides).
    In folders, files with an image extension (:data:`IMAGE_EXTENSIONS`) or image
    content are kept, other files are reported in ``skipped``, hidden files and folders
    (names starting with a dot) are ignored. Patterns use :mod:`glob` syntax with ``**``
    for any depth. Never raises for a missing path: it is reported in ``missing``.
    ``exclude``: files and folders that searching folders and patterns leaves out (a run's
    output folder and the files it wrote), unless an argument names them directly.
    """
    out = Collected()
    seen: set[str] = set()
    excluded = frozenset(_key(p) for p in exclude)

    def add(path: Path) -> None:
        key = _key(path)
        if key not in seen:
            seen.add(key)
            out.files.append(path)

    for spec in specs:
        text = os.fspath(spec)
        path = Path(text)
        if path.is_dir():
            files, skipped = _walk_folder(path, excluded)
            if not files and not skipped:
                out.missing.append((text, "folder holds no files"))
            for f in files:
                add(f)
            out.skipped.extend(skipped)
        elif path.is_file():
            add(path)
        elif path.exists():
            out.missing.append((text, "not a regular file or folder"))
        elif _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                out.missing.append((text, "no file matches this pattern"))
            for m in matches:
                mp = Path(m)
                if excluded and _excluded_match(mp, text, excluded):
                    continue
                if mp.is_dir():
                    files, skipped = _walk_folder(mp, excluded)
                    for f in files:
                        add(f)
                    out.skipped.extend(skipped)
                elif mp.is_file():
                    add(mp)
        else:
            out.missing.append((text, "no such file or folder"))
    return out
