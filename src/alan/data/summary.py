"""What a dataset holds, as a plain dict (the logic behind ``alan data inspect``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from alan.data import Dataset
from alan.errors import DataError


def summarize(dataset: Dataset, items: bool = False, decode: bool = False) -> dict[str, Any]:
    """Counts of records, splits, classes, annotated frames and mask pixels.

    Masks are loaded (no video is decoded unless `decode`, which also checks every record's
    decoded frames against its listed size). ``mask_pixels`` sums foreground pixels per label
    over all annotated frames at the files' own resolution. With `items`, ``records`` lists
    each record's id, split, frame count, size, ED/ES and label.
    """
    annotated = 0
    pixels: Counter[str] = Counter()
    decoded = 0
    for r in dataset:
        if r.annotated:
            masks = r.masks
            annotated += len(masks)
            for labels in masks.values():
                for name, m in labels.items():
                    pixels[name] += int(m.sum())
        if decode:
            frames = r.frames
            shape = (r.n_frames or frames.shape[0], r.height or frames.shape[1], r.width or frames.shape[2])
            if frames.ndim != 3 or frames.shape[1:] != shape[1:]:
                raise DataError(r.source, f"decoded frames have shape {frames.shape}, listed as {shape}")
            decoded += frames.shape[0]
    out: dict[str, Any] = {
        "format": dataset.format,
        "root": str(dataset.root),
        "items": len(dataset),
        "skipped": dict(sorted(dataset.skipped.items())),
        "splits": dict(sorted(dataset.splits().items())),
        "classes": dict(sorted(dataset.classes().items())),
        "patients": len({r.patient or r.id for r in dataset}),
        "frames": sum(r.n_frames or 0 for r in dataset),
        "annotated_frames": annotated,
        "mask_pixels": dict(sorted(pixels.items())),
    }
    if decode:
        out["decoded_frames"] = decoded
    if items:
        out["records"] = [
            {"id": r.id, "split": r.split, "frames": r.n_frames, "height": r.height, "width": r.width,
             "ed": r.ed, "es": r.es, "label": r.label}
            for r in dataset
        ]
    return out
