"""TMED-2 reader (Huang et al., "TMED 2: a dataset for semi-supervised classification of
echocardiograms", 2022; https://tmed.cs.tufts.edu/).

Layout::

    labels_per_image.csv                         query_key,view_label,diagnosis_label
    view_and_diagnosis_labeled_set/labeled/*.png
    view_labeled_set/labeled/*.png
    DEV479/TMED2_fold{0,1,2}_labeledpart.csv     query_key,SourceFolder,view_label,
                                                 diagnosis_label,view_classifier_split,...

One `Record` per still image: frames (1, H, W) uint8, label = view (PLAX, PSAX, A4C, A2C),
patient = study id (the query_key up to its first "_"). By default the split comes from
``DEV479/TMED2_fold0_labeledpart.csv`` (``view_classifier_split``); ``read(root, fold=None)``
reads ``labels_per_image.csv`` instead (split None). Images whose view is A4CorA2CorOther or
Not_Provided are skipped and counted in ``Dataset.skipped``. Listing reads each PNG's header only.
"""

from __future__ import annotations

import os
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np

from alan.data import Dataset
from alan.data._util import fail, inside, png_size, read_csv, read_image_gray, safe_join, split_names
from alan.records import Record

VIEWS = ("PLAX", "PSAX", "A4C", "A2C")
SKIPPED_VIEWS = ("A4CorA2CorOther", "Not_Provided")
LABELED_FOLDERS = ("view_and_diagnosis_labeled_set/labeled", "view_labeled_set/labeled")
FOLD_COLUMNS = ("query_key", "SourceFolder", "view_label", "view_classifier_split")
LABEL_COLUMNS = ("query_key", "view_label", "diagnosis_label")


def fold_file(root: Path, fold: int = 0, dev: str = "DEV479") -> Path:
    return Path(root) / dev / f"TMED2_fold{fold}_labeledpart.csv"


def read(root: Path, fold: int | None = 0, dev: str = "DEV479") -> Dataset:
    """List TMED-2's labelled images; `fold`/`dev` pick the split file (None: no split)."""
    root = Path(root)
    if fold is None:
        table = root / "labels_per_image.csv"
        df = read_csv(inside(root, table), LABEL_COLUMNS, text_columns=LABEL_COLUMNS)
        folders, splits = None, [None] * len(df)
    else:
        table = fold_file(root, fold, dev)
        df = read_csv(inside(root, table), FOLD_COLUMNS, text_columns=(*FOLD_COLUMNS, "diagnosis_label"))
        folders = df["SourceFolder"].tolist()
        splits = split_names(df["view_classifier_split"].tolist(), table, "view_classifier_split")
    if len(df) == 0:
        raise fail(table, "no rows")
    listings: dict[Path, set[str]] = {}

    def listing(folder: Path) -> set[str]:
        if folder not in listings:
            listings[folder] = {e.name for e in os.scandir(folder)} if folder.is_dir() else set()
        return listings[folder]

    diagnoses = df["diagnosis_label"].tolist() if "diagnosis_label" in df.columns else [None] * len(df)
    records, skipped, seen = [], Counter(), set()
    for i, (key, view) in enumerate(zip(df["query_key"].tolist(), df["view_label"].tolist())):
        view = view.strip() if isinstance(view, str) else view
        if view in SKIPPED_VIEWS:
            skipped[f"view {view}"] += 1
            continue
        if view not in VIEWS:
            raise fail(table, f"line {i + 2}: unknown view label {view!r} for {key} "
                              f"(expected {', '.join(VIEWS + SKIPPED_VIEWS)})")
        if folders is None:
            candidates = [safe_join(root, f, table, "folder") for f in LABELED_FOLDERS]
        else:
            folder = safe_join(root, folders[i], table, "SourceFolder")
            candidates = [folder, folder / "labeled"]
        path = None
        for c in candidates:
            p = safe_join(c, key, table, "query_key")
            if p.parent == c and p.name in listing(c) or p.parent != c and p.is_file():
                path = p
                break
        if path is None:
            raise fail(candidates[0] / str(key), f"file not found (listed in {table.name} line {i + 2})")
        if key in seen:
            raise fail(table, f"line {i + 2}: duplicate query_key {key!r}")
        seen.add(key)
        h, w = png_size(inside(root, path, table))
        diagnosis = diagnoses[i]
        records.append(Record(
            id=Path(key).stem if key.lower().endswith(".png") else key,
            load_frames=partial(_load, path, h, w),
            n_frames=1, height=h, width=w,
            label=view, split=splits[i], patient=key.split("_", 1)[0],
            source=str(path),
            meta={"diagnosis": diagnosis if isinstance(diagnosis, str) else None,
                  "query_key": key, "fold": fold, "dev": dev if fold is not None else None},
        ))
    if not records:
        raise fail(table, "no image with a PLAX, PSAX, A4C or A2C view label")
    return Dataset(format="tmed2", root=root, records=records, skipped=dict(skipped))


def _load(path: Path, height: int, width: int) -> np.ndarray:
    img = read_image_gray(path)
    if img.shape != (height, width):
        raise fail(path, f"decoded image is {img.shape[0]}x{img.shape[1]} but its header says {height}x{width}")
    return img[None]
