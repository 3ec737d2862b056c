"""Helpers shared by the commands' options (kept free of heavy imports)."""

from __future__ import annotations

from pathlib import Path


def parse_devices(devices: str | int) -> str | int:
    """A ``--devices`` value as Lightning wants it: a count ("2", "-1") or a spec ("auto", "0,1")."""
    text = str(devices)
    return int(text) if text.lstrip("-").isdigit() else text


def select_records(path: Path, format: str, split: str, limit: int | None = None):
    """Records of `split` ("all" for every record) of the dataset or video at `path`."""
    from alan.data import open_dataset
    from alan.errors import DataError

    dataset = open_dataset(path, format)
    records = list(dataset.records) if split.lower() == "all" else dataset.split(*split.split(","))
    if not records:
        splits = ", ".join(f"{k} ({v})" for k, v in dataset.splits().items())
        raise DataError(path, f"no records in split {split!r} (splits: {splits}; use --split all for every record)")
    return dataset, records[:limit] if limit else records
