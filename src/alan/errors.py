"""The project's exceptions. The CLI turns any `AlanError` into one line and exit code 2."""

from __future__ import annotations

from pathlib import Path


class AlanError(Exception):
    """A user-facing error: its message is one line that says what is wrong and where."""


class DataError(AlanError):
    """Bad input data: names the offending file and the problem."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)

    def __reduce__(self):  # picklable, so that an error in a worker process reaches the parent intact
        return type(self), (self.path, self.problem)


class ArtifactError(AlanError):
    """A model artifact that is missing, corrupt, or incompatible with what it is used with."""


class DataWarning(UserWarning):
    """Data that can be used but look wrong (an unknown split, a value read as missing); names the file."""
