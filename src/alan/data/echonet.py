"""EchoNet-Dynamic reader (Ouyang et al., "Video-based AI for beat-to-beat assessment of cardiac
function", Nature 2020; https://echonet.github.io/dynamic/).

Layout::

    FileList.csv        FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split
                        (FileName without ".avi"; Split TRAIN/VAL/TEST)
    VolumeTracings.csv  FileName,X1,Y1,X2,Y2,Frame (FileName with ".avi"); per traced frame the
                        first row is the long axis, the others are chords across the cavity
    Videos/<FileName>.avi

One `Record` per FileList row (id = FileName, label "A4C"). Frames are decoded with OpenCV
(BGR -> gray uint8). The LV mask of a traced frame is the polygon
``concat(X1[1:], reversed X2[1:])``, ``concat(Y1[1:], reversed Y2[1:])`` rasterised with
`skimage.draw.polygon` on rounded coordinates (rows from Y, columns from X), exactly as the
official EchoNet code does. ED and ES are the traced frames with the largest and smallest traced
area (not the row order). Listing reads only the two CSV files and the Videos/ folder listing.
"""

from __future__ import annotations

import os
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np

from alan.data import Dataset
from alan.data._util import fail, inside, numeric_column, read_csv, read_video, safe_join, split_names
from alan.records import Record

FILELIST_COLUMNS = ("FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS",
                    "NumberOfFrames", "Split")
TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
VIEW = "A4C"


def tracing_polygon(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the LV polygon of one traced frame; `coords` is (n, 4) X1,Y1,X2,Y2."""
    x1, y1, x2, y2 = np.asarray(coords, dtype=float).T
    x = np.concatenate((x1[1:], x2[1:][::-1]))
    y = np.concatenate((y1[1:], y2[1:][::-1]))
    return np.rint(y).astype(np.int64), np.rint(x).astype(np.int64)


def lv_mask(coords: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) LV mask of one traced frame (EchoNet's rule)."""
    from skimage.draw import polygon

    rows, cols = tracing_polygon(coords)
    mask = np.zeros(shape, dtype=bool)
    rr, cc = polygon(rows, cols, shape)
    mask[rr, cc] = True
    return mask


def traced_area(coords: np.ndarray) -> float:
    """Shoelace area (pixels) of the rounded polygon `lv_mask` rasterises."""
    rows, cols = tracing_polygon(coords)
    if len(rows) < 3:
        return 0.0
    return 0.5 * abs(float(np.dot(cols, np.roll(rows, -1)) - np.dot(rows, np.roll(cols, -1))))


def read(root: Path) -> Dataset:
    """List an EchoNet-Dynamic folder without decoding any video."""
    root = Path(root)
    filelist = root / "FileList.csv"
    df = read_csv(inside(root, filelist), FILELIST_COLUMNS, text_columns=("FileName", "Split"))
    if len(df) == 0:
        raise fail(filelist, "no rows")
    videos_dir = root / "Videos"
    if not videos_dir.is_dir():
        raise fail(videos_dir, "folder not found (EchoNet videos are expected in Videos/)")
    present = {e.name for e in os.scandir(videos_dir)}

    heights = numeric_column(df, "FrameHeight", filelist, integer=True, positive=True)
    widths = numeric_column(df, "FrameWidth", filelist, integer=True, positive=True)
    counts = numeric_column(df, "NumberOfFrames", filelist, integer=True, positive=True)
    meta_cols = {c: numeric_column(df, c, filelist, allow_nan=True) for c in ("EF", "ESV", "EDV", "FPS")}

    splits = split_names(df["Split"].tolist(), filelist, "Split")
    skipped: Counter[str] = Counter()
    tracings = _read_tracings(inside(root, root / "VolumeTracings.csv"))
    names = [_video_id(n) for n in df["FileName"].tolist()]
    dup = [n for n, c in Counter(names).items() if c > 1]
    if dup:
        raise fail(filelist, f"duplicate FileName {dup[0]!r}")
    for name in set(tracings) - set(names):
        skipped["tracings of a video not in FileList.csv"] += 1

    records = []
    for i, (raw, name) in enumerate(zip(df["FileName"].tolist(), names)):
        path = safe_join(videos_dir, f"{name}.avi", filelist, "FileName")
        rel = f"{name}.avi"
        if (rel not in present) if "/" not in rel else not path.is_file():
            raise fail(path, f"file not found (listed in {filelist.name} line {i + 2})")
        h, w, n = int(heights[i]), int(widths[i]), int(counts[i])
        inside(root, path, filelist)
        traces = tracings.get(name, {})
        beyond = sorted(f for f in traces if f >= n)
        if beyond:
            raise fail(root / "VolumeTracings.csv", f"{name} is traced at frame {beyond[0]}, but the video has "
                                                    f"{n} frames (0..{n - 1}) according to {filelist.name}")
        ed, es = _ed_es(traces)
        records.append(Record(
            id=name,
            load_frames=partial(_load_frames, path, n, h, w, filelist),
            n_frames=n, height=h, width=w,
            load_masks=partial(_load_masks, traces, (h, w)) if traces else None,
            annotated=tuple(sorted(traces)),
            ed=ed, es=es, label=VIEW,
            split=splits[i],
            patient=name, source=str(path),
            meta={k: float(v[i]) for k, v in meta_cols.items()},
        ))
    return Dataset(format="echonet", root=root, records=records, skipped=dict(skipped))


def _video_id(file_name: str) -> str:
    name = str(file_name).strip()
    return name[:-4] if name.lower().endswith(".avi") else name


def _read_tracings(path: Path) -> dict[str, dict[int, np.ndarray]]:
    """{video id: {frame: (n, 4) X1,Y1,X2,Y2 in file order}}; empty if the file is absent."""
    if not path.exists():
        return {}
    df = read_csv(path, TRACING_COLUMNS, text_columns=("FileName",))
    if len(df) == 0:
        return {}
    coords = np.stack([numeric_column(df, c, path, allow_nan=True) for c in ("X1", "Y1", "X2", "Y2")], 1)
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise fail(path, f"line {i + 2}: NaN coordinate for {df['FileName'].iloc[i]} frame {df['Frame'].iloc[i]}")
    frames = numeric_column(df, "Frame", path, integer=True)
    if (frames < 0).any():
        i = int(np.argmax(frames < 0))
        raise fail(path, f"line {i + 2}: negative Frame {frames[i]}")
    names = df["FileName"].astype(str).map(_video_id).to_numpy()
    out: dict[str, dict[int, np.ndarray]] = {}
    # Stable sort keeps the file order of rows within each (video, frame) group.
    order = np.lexsort((frames, names))
    names, frames, coords = names[order], frames[order], coords[order]
    starts = np.flatnonzero(np.r_[True, (names[1:] != names[:-1]) | (frames[1:] != frames[:-1])])
    ends = np.r_[starts[1:], len(names)]
    for s, e in zip(starts, ends):
        out.setdefault(names[s], {})[int(frames[s])] = coords[s:e]
    return out


def _ed_es(traces: dict[int, np.ndarray]) -> tuple[int | None, int | None]:
    """ED = traced frame with the largest area, ES = the smallest (ties: earlier frame)."""
    if len(traces) < 2:
        return None, None
    areas = {f: traced_area(c) for f, c in sorted(traces.items())}
    ed = max(areas, key=lambda f: areas[f])
    es = min(areas, key=lambda f: areas[f])
    return (ed, es) if ed != es else (None, None)


def _load_frames(path: Path, n_frames: int, height: int, width: int, filelist: Path) -> np.ndarray:
    return read_video(path, n_frames, height, width, listed_in=filelist.name)


def _load_masks(traces: dict[int, np.ndarray], shape: tuple[int, int]) -> dict[int, dict[str, np.ndarray]]:
    return {f: {"LV": lv_mask(c, shape)} for f, c in sorted(traces.items())}
