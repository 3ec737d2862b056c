"""Unlabelled echo videos: a folder (searched recursively) of AVI/MP4 files (OpenCV) and DICOM
files (pydicom), or a single such file.

One `Record` per file, id = its path relative to the folder without the extension (kept if two
files would share an id), frames gray uint8 (T, H, W). DICOM pixel data may be (H, W), (T, H, W)
or colour (T, H, W, 3) in RGB or YBR (converted to RGB, then to gray with OpenCV's luma weights);
MONOCHROME1 is inverted. Listing opens each container for its frame count and size (OpenCV) or
reads the DICOM header without pixel data; no frame is decoded. Decoding checks the frames
against that count and size (a truncated file is an error, not a shorter video). A file or
symlink that resolves outside the folder is refused.
"""

from __future__ import annotations

import os
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np

from alan.data import Dataset
from alan.data._util import fail, inside, read_video, rgb_to_gray, to_uint8, video_info
from alan.records import Record

VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".m4v")
DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom(path: Path) -> bool:
    """A ``.dcm``/``.dicom`` file, or an extension-less file with the DICM preamble."""
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    if suffix:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def is_media(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES or is_dicom(path)


def find_media(root: Path, limit: int | None = None) -> list[Path]:
    """Video and DICOM files under `root` (sorted, hidden entries and symlinked folders skipped)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not name.startswith(".") and is_media(path):
                found.append(path)
                if limit is not None and len(found) >= limit:
                    return found
    return found


def read(root: Path) -> Dataset:
    """List the videos under `root` (or the single file `root`)."""
    root = Path(root)
    if root.is_file():
        if not is_media(root):
            raise fail(root, f"not a video or DICOM file (expected {', '.join(VIDEO_SUFFIXES + DICOM_SUFFIXES)})")
        files, base = [root], root.parent
    else:
        files, base = find_media(root), root
        if not files:
            raise fail(root, "empty folder: no AVI, MP4 or DICOM files found")
    if root.is_dir():
        for f in files:
            inside(root, f)
    rel = [f.relative_to(base) for f in files]
    stems = Counter(r.with_suffix("").as_posix() for r in rel)
    records, skipped, first_skipped = [], Counter(), None
    for path, r in zip(files, rel):
        rid = r.with_suffix("").as_posix()
        rid = rid if stems[rid] == 1 else r.as_posix()
        if is_dicom(path):
            record = _dicom_record(path, rid)
            if record is None:
                skipped["DICOM file without image data"] += 1
                first_skipped = first_skipped or r.as_posix()
                continue
        else:
            info = video_info(path)
            record = Record(id=rid, load_frames=partial(read_video, path, info["n_frames"], info["height"],
                                                        info["width"], "its container"),
                            n_frames=info["n_frames"],
                            height=info["height"], width=info["width"], patient=rid,
                            source=str(path), meta={"FPS": info["fps"]})
        records.append(record)
    if not records:
        raise fail(root, f"no video or DICOM image found ({first_skipped} and any other DICOM files "
                         "here hold no image data)")
    return Dataset(format="videos", root=root, records=records, skipped=dict(skipped))


def _dicom_record(path: Path, rid: str) -> Record | None:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as e:  # pydicom raises several types for a bad file
        raise fail(path, f"not a readable DICOM file: {e}") from None
    if "Rows" not in ds or "Columns" not in ds:
        return None
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    meta = {"FPS": _dicom_fps(ds), "PhotometricInterpretation": str(getattr(ds, "PhotometricInterpretation", ""))}
    return Record(id=rid, load_frames=partial(read_dicom, path), n_frames=n,
                  height=int(ds.Rows), width=int(ds.Columns),
                  patient=str(getattr(ds, "PatientID", "") or rid), spacing=_dicom_spacing(ds),
                  source=str(path), meta=meta)


def _dicom_fps(ds) -> float | None:
    for key in ("CineRate", "RecommendedDisplayFrameRate"):
        value = getattr(ds, key, None)
        if value:
            return float(value)
    frame_time = getattr(ds, "FrameTime", None)
    return 1000.0 / float(frame_time) if frame_time else None


def _dicom_spacing(ds) -> tuple[float, float] | None:
    """(row, col) mm from PixelSpacing, else from the first ultrasound region (cm -> mm)."""
    if "PixelSpacing" in ds:
        row, col = (float(v) for v in ds.PixelSpacing)
        return row, col
    regions = getattr(ds, "SequenceOfUltrasoundRegions", None)
    if regions:
        r = regions[0]
        if getattr(r, "PhysicalUnitsXDirection", None) == 3 and getattr(r, "PhysicalUnitsYDirection", None) == 3:
            return abs(float(r.PhysicalDeltaY)) * 10, abs(float(r.PhysicalDeltaX)) * 10
    return None


def read_dicom(path: Path) -> np.ndarray:
    """Decode a DICOM file's frames to gray uint8 (T, H, W)."""
    import pydicom
    from pydicom.pixels import convert_color_space

    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    except Exception as e:
        raise fail(path, f"cannot decode DICOM pixel data ({type(e).__name__}: {e})") from None
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1))
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if samples == 1 and photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr, samples = apply_color_lut(arr, ds), 3
    if samples == 3:
        if arr.ndim == 3:
            arr = arr[None]
        # pydicom >= 3 returns RGB for YBR data already; older versions return YBR as stored.
        if photometric.startswith("YBR") and int(pydicom.__version__.split(".")[0]) < 3:
            arr = convert_color_space(arr, photometric, "RGB")
        arr = rgb_to_gray(to_uint8(arr, path))
    else:
        if arr.ndim == 2:
            arr = arr[None]
        bits = int(getattr(ds, "BitsStored", 8))
        if arr.dtype != np.uint8 and bits > 8:
            arr = (arr.astype(np.int64) >> (bits - 8)).clip(0, 255)
        arr = arr.astype(np.uint8)
        if photometric == "MONOCHROME1":
            arr = 255 - arr
    if arr.ndim != 3 or arr.shape[0] != n:
        raise fail(path, f"pixel data has shape {arr.shape}, expected {n} frame(s)")
    return arr
