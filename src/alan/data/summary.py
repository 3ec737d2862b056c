"""What a dataset holds, as a plain dict (the logic behind ``alan data inspect``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from alan.data import Dataset
from alan.errors import DataError


def summarize(dataset: Dataset, items: bool = False, decode: bool = False) -> dict[str, Any]:
    """Counts of records, splits, classes, annotated frames and mask pixels.

    Masks are loaded (no video is decoded unless `decode`). With `decode`, every record's
    frames and masks are decoded once and checked against what the listing claims (frame count,
    size; the readers check them too), and every problem found is collected, one line each, in
    ``problems`` (a record with a problem is counted in ``bad_records``), instead of stopping at
    the first. ``mask_pixels`` sums foreground pixels per label over all annotated frames at the
    files' own resolution. With `items`, ``records`` lists each record's id, split, frame count,
    size, ED/ES and label.
    """
    annotated = 0
    pixels: Counter[str] = Counter()
    decoded = 0
    problems: list[str] = []
    bad = 0
    for r in dataset:
        found = len(problems)
        try:
            if r.annotated:
                masks = r.masks
                annotated += len(masks)
                for labels in masks.values():
                    for name, m in labels.items():
                        pixels[name] += int(m.sum())
                if decode and r.n_frames is not None:
                    beyond = sorted(f for f in masks if not 0 <= f < r.n_frames)
                    if beyond:
                        problems.append(f"{r.source}: mask of frame {beyond[0]}, but the record has {r.n_frames} frames")
        except DataError as e:
            if not decode:
                raise
            problems.append(str(e))
        if decode:
            try:
                frames = r.frames
                got = tuple(frames.shape)
                listed = (r.n_frames, r.height, r.width)
                if len(got) != 3 or any(w is not None and g != w for g, w in zip(got, listed)):
                    problems.append(f"{r.source}: decoded frames have shape {got}, listed as {listed}")
                else:
                    decoded += got[0]
            except DataError as e:
                problems.append(str(e))
        bad += len(problems) > found
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
        out["bad_records"] = bad
        out["problems"] = problems
    if items:
        out["records"] = [
            {"id": r.id, "split": r.split, "frames": r.n_frames, "height": r.height, "width": r.width,
             "ed": r.ed, "es": r.es, "label": r.label}
            for r in dataset
        ]
    return out
