"""Errors a user can fix. Anything else is a bug and keeps its traceback."""

from __future__ import annotations


class PfvError(Exception):
    """A problem the user can fix; the CLI prints it as one line, no traceback."""


class ModelError(PfvError):
    """The model file cannot be used: unreadable, unsafe, unsupported or without feature maps."""


class InputError(PfvError):
    """A batch, image or option does not fit the model or the method."""


class DependencyError(PfvError):
    """An optional package is missing or two incompatible builds are installed."""


def one_line(text: str) -> str:
    """``text`` as one line (a reason in a report or a failure list): runs of whitespace,
    newlines included, become one space."""
    return " ".join(str(text).split()) or "unknown error"
