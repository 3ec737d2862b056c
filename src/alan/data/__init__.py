"""Readers for the public datasets' exact on-disk formats, all yielding `Record`s.

`open_dataset(path, format="auto")` is the entry point; each format module has
``read(root: Path) -> Dataset``.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from alan.errors import DataError
from alan.records import Record

FORMATS: tuple[str, ...] = ("echonet", "camus", "tmed2", "acdc", "videos")


@dataclass
class Dataset:
    """The records a reader found under `root`, and what it skipped (reason -> count)."""

    format: str
    root: Path
    records: list[Record]
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def split(self, *names: str) -> list[Record]:
        """Records whose split is one of `names` (case-insensitive)."""
        wanted = {n.lower() for n in names}
        return [r for r in self.records if (r.split or "").lower() in wanted]

    def splits(self) -> dict[str, int]:
        return dict(Counter(r.split or "none" for r in self.records))

    def classes(self) -> dict[str, int]:
        return dict(Counter(r.label for r in self.records if r.label is not None))


def open_dataset(path: str | Path, format: str = "auto", **options: object) -> Dataset:
    """Read the dataset at `path`; `format="auto"` detects the layout; `options` go to the reader
    (e.g. ``fold=1`` for TMED-2)."""
    root = Path(path)
    if not root.exists():
        raise DataError(root, "no such file or directory")
    if format == "auto":
        from alan.data.detect import detect_format

        format = detect_format(root)
    if format not in FORMATS:
        raise DataError(root, f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    module = importlib.import_module(f"alan.data.{format}")
    return module.read(root, **options)


__all__ = ["Dataset", "FORMATS", "open_dataset"]
