"""The plan of a run: which input files form which group, as lists of file indices.

A group is one decomposition (one PCA, one colour scaling), so it is the unit of work a
run keeps when it is interrupted. Two kinds of plan:

- size groups (the default, and with a fitted basis): the next ``group_size`` files that
  decode, in input order; the plan grows while the files are read;
- class groups (``--group-by class``): one group per predicted class, largest first; the
  class of a file is known only after its forward pass, so this plan is made once every
  file has been run forward, and saved before the first group is decomposed.

The forward passes of a list of files are always run in the same batches
(:func:`batches`), so a group redone after an interruption gets the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SIZE = "size"
CLASS = "class"


@dataclass
class PlannedGroup:
    """One group of the plan: its number, its files (indices into the run's file list, in
    input order) and, for a class group, ``{"class", "label"}``."""

    index: int
    files: list[int]
    klass: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "files": list(self.files), "class": self.klass}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlannedGroup:
        return cls(int(d["index"]), [int(i) for i in d["files"]], d.get("class"))


@dataclass
class ClassPlan:
    """A class plan with what its forward passes found: the files that could not be read."""

    groups: list[PlannedGroup]
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def decoded(self) -> list[int]:
        """The files that were read, in input order: the order their forward passes ran in."""
        return sorted(i for g in self.groups for i in g.files)


def batches(indices: Sequence[int], batch_size: int) -> list[list[int]]:
    """``indices`` in consecutive runs of ``batch_size`` (the last one shorter)."""
    return [list(indices[i : i + batch_size]) for i in range(0, len(indices), batch_size)]


def size_groups(decoded: Sequence[int], group_size: int) -> list[list[int]]:
    """Size groups: the files that decode, ``group_size`` at a time, in input order."""
    return batches(decoded, group_size)


def class_groups(decoded: Sequence[int], classes: Sequence[int], labels: Sequence[str | None] | None = None) -> list[PlannedGroup]:
    """Class groups of the files ``decoded`` whose predicted classes are ``classes``.

    The largest class first, ties by the lower class number; files keep their input order.
    ``labels``: the label of each file's class (or None), kept with the group.
    """
    members: dict[int, list[int]] = {}
    label_of: dict[int, str | None] = {}
    for pos, (i, c) in enumerate(zip(decoded, classes)):
        members.setdefault(int(c), []).append(int(i))
        label_of.setdefault(int(c), labels[pos] if labels is not None else None)
    order = sorted(members, key=lambda c: (-len(members[c]), c))
    return [PlannedGroup(g, members[c], {"class": c, "label": label_of[c]}) for g, c in enumerate(order)]
