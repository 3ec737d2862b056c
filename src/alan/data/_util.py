"""Small helpers shared by the readers: safe paths, CSV/cfg parsing, image and video decoding.

Every problem becomes a one-line `DataError` that names the offending file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from alan.errors import DataError

PATIENT_DIR = re.compile(r"^patient\d+$")


def one_line(text: object) -> str:
    """`text` on one line (library messages sometimes span several)."""
    return " ".join(str(text).split())


def fail(path: str | Path | None, problem: str) -> DataError:
    return DataError(path, one_line(problem))


# --------------------------------------------------------------------------- paths
def safe_join(root: Path, name: object, listed_in: Path, what: str = "file name") -> Path:
    """``root / name`` for a relative `name` from a table; refuse absolute names and ``..``."""
    text = "" if name is None else str(name)
    if not text.strip() or text.lower() == "nan":
        raise fail(listed_in, f"empty {what}")
    posix = PurePosixPath(text.replace("\\", "/"))
    if posix.is_absolute() or PureWindowsPath(text).drive or ".." in posix.parts:
        raise fail(listed_in, f"{what} {text!r} escapes the dataset root")
    return root.joinpath(*posix.parts)


def require_file(path: Path, listed_in: Path | None = None) -> Path:
    if not path.is_file():
        where = f" (referenced by {listed_in.name})" if listed_in is not None else ""
        raise fail(path, f"file not found{where}")
    return path


def patient_dirs(folder: Path) -> list[Path]:
    """Sorted ``patientNNN`` sub-folders of `folder`."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and PATIENT_DIR.match(p.name))


# --------------------------------------------------------------------------- tables
def read_csv(path: Path, required: Iterable[str], text_columns: Iterable[str] = ()):
    """Read a CSV with pandas; every column in `required` must be present."""
    import pandas as pd

    if not path.is_file():
        raise fail(path, "file not found")
    try:
        df = pd.read_csv(path, dtype={c: str for c in text_columns}, keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise fail(path, "empty file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise fail(path, f"cannot parse CSV: {e}") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise fail(path, f"missing column(s) {', '.join(missing)}")
    return df


def numeric_column(df, column: str, path: Path, *, integer: bool = False,
                   positive: bool = False, allow_nan: bool = False) -> np.ndarray:
    """Column as float (or int) array; a bad cell is reported with its CSV line number."""
    import pandas as pd

    values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) if not allow_nan else np.isinf(values)
    if integer:
        bad |= np.isfinite(values) & (values != np.round(values))
    if positive:
        bad |= np.isfinite(values) & (values <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        kind = "a positive integer" if (integer and positive) else "an integer" if integer else "a number"
        raise fail(path, f"line {i + 2}: {column} is not {kind} ({df[column].iloc[i]!r})")
    return values.astype(np.int64) if integer else values


def parse_value(text: str) -> Any:
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def read_cfg(path: Path, required: Iterable[str] = ()) -> dict[str, Any]:
    """Parse a ``Key: value`` file (CAMUS ``Info_*.cfg``, ACDC ``Info.cfg``)."""
    if not path.is_file():
        raise fail(path, "file not found")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise fail(path, f"cannot read: {e}") from None
    cfg: dict[str, Any] = {}
    for line in text.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            if key.strip():
                cfg[key.strip()] = parse_value(value)
    for key in required:
        if key not in cfg:
            raise fail(path, f"missing key {key}")
    return cfg


def cfg_index(cfg: Mapping[str, Any], key: str, n_frames: int, path: Path) -> int:
    """A 1-based frame number from a cfg as a 0-based index, checked against `n_frames`."""
    value = cfg[key]
    if not isinstance(value, int):
        raise fail(path, f"{key} is not an integer frame number ({value!r})")
    if not 1 <= value <= n_frames:
        raise fail(path, f"{key} = {value} is outside the sequence's frames 1..{n_frames}")
    return value - 1


# --------------------------------------------------------------------------- masks
def label_masks(labels: np.ndarray, names: Mapping[int, str], path: Path) -> dict[str, np.ndarray]:
    """Split an integer label image into ``{name: bool mask}``; unknown values are an error."""
    values = np.unique(labels)
    unknown = [v for v in values.tolist() if v != 0 and v not in names]
    if unknown:
        known = ", ".join(f"{k} {v}" for k, v in sorted(names.items()))
        raise fail(path, f"unknown label value {unknown[0]:g} (expected 0 background, {known})")
    return {name: labels == value for value, name in sorted(names.items())}


def check_shape(shape: tuple[int, ...], expected: tuple[int, ...], path: Path, image: Path | str) -> None:
    if tuple(shape) != tuple(expected):
        got = "x".join(map(str, shape))
        want = "x".join(map(str, expected))
        raise fail(path, f"mask shape {got} differs from image shape {want} of {Path(image).name}")


# --------------------------------------------------------------------------- decoding
def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) RGB uint8 -> (..., H, W) uint8 with OpenCV's luma weights."""
    import cv2

    lead, (h, w) = rgb.shape[:-3], rgb.shape[-3:-1]
    flat = np.ascontiguousarray(rgb.reshape(-1, w, 3))
    return cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY).reshape(*lead, h, w)


def read_video(path: Path) -> np.ndarray:
    """Decode a video with OpenCV into gray uint8 frames (T, H, W) (BGR -> gray)."""
    import cv2

    if not path.is_file():
        raise fail(path, "file not found")
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        if not cap.isOpened():
            raise fail(path, "cannot open video (corrupt or unsupported)")
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if frame.ndim == 3:
                frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY if frame.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise fail(path, "video has no decodable frames (corrupt or empty)")
    return to_uint8(np.stack(frames), path)


def video_info(path: Path) -> dict[str, Any]:
    """Frame count, size and FPS from the container (opens it; decodes no frame)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise fail(path, "cannot open video (corrupt or unsupported)")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
    finally:
        cap.release()
    return {"n_frames": n if n > 0 else None, "height": h or None, "width": w or None,
            "fps": fps if fps > 0 else None}


def to_uint8(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    raise fail(path, f"unsupported pixel type {arr.dtype} (expected 8-bit)")


def png_size(path: Path) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk, without decoding the image."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as e:
        raise fail(path, f"cannot read: {e}") from None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise fail(path, "not a PNG file (corrupt or empty)")
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return height, width


def read_image_gray(path: Path) -> np.ndarray:
    """Decode a still image into gray uint8 (H, W)."""
    import cv2

    if not path.is_file():
        raise fail(path, "file not found")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise fail(path, "cannot decode image (corrupt or empty)")
    if img.ndim == 3:
        code = {3: cv2.COLOR_BGR2GRAY, 4: cv2.COLOR_BGRA2GRAY}.get(img.shape[2])
        img = img[..., 0] if code is None else cv2.cvtColor(img, code)
    return to_uint8(img, path)


# --------------------------------------------------------------------------- medical volumes
def sitk_info(path: Path) -> dict[str, Any]:
    """Size (x, y[, z]) and spacing from an image header (SimpleITK; pixel data not read)."""
    import SimpleITK as sitk

    require_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise fail(path, f"cannot read image header: {_sitk_message(e)}") from None
    return {"size": tuple(reader.GetSize()), "spacing": tuple(reader.GetSpacing())}


def sitk_array(path: Path) -> np.ndarray:
    """SimpleITK's row-major array ((N,) H, W) of an image file."""
    import SimpleITK as sitk

    require_file(path)
    try:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as e:
        raise fail(path, f"cannot read image: {_sitk_message(e)}") from None


def _sitk_message(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "Exception thrown" not in ln and not ln.startswith("sitk::")]
    return (useful or lines or ["unknown error"])[-1]


def nifti_header(path: Path):
    """nibabel image with its data still on disk (only the header is read)."""
    import nibabel as nib

    require_file(path)
    try:
        return nib.load(str(path))
    except Exception as e:  # nibabel raises several unrelated types for a bad file
        raise fail(path, f"cannot read NIfTI header: {e}") from None


def nifti_array(path: Path) -> np.ndarray:
    """nibabel's voxel array (x fastest, i.e. (X, Y, ...)) in the file's own dtype when unscaled."""
    img = nifti_header(path)
    try:
        return np.asanyarray(img.dataobj)
    except Exception as e:
        raise fail(path, f"cannot read NIfTI data: {e}") from None


@lru_cache(maxsize=4)
def cached_nifti_array(path: str, mtime_ns: int) -> np.ndarray:
    """`nifti_array` for readers that slice one volume many times (ACDC slices)."""
    arr = nifti_array(Path(path))
    arr.setflags(write=False)
    return arr


def nifti_array_cached(path: Path) -> np.ndarray:
    require_file(path)
    return cached_nifti_array(str(path), os.stat(path).st_mtime_ns)
