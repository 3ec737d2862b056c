"""Small helpers shared by the readers: safe paths, CSV/cfg parsing, image and video decoding.

Every problem becomes a one-line `DataError` that names the offending file.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from alan.errors import DataError, DataWarning

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


def inside(root: Path, path: Path, listed_in: Path | None = None) -> Path:
    """`path` if it (after following every symlink) lies under the dataset `root`, else a `DataError`.

    A symlink or a header reference that leaves the root is refused, never followed silently.
    """
    real, base = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    if real != base and base not in real.parents:
        via = f" (referenced by {listed_in.name})" if listed_in is not None else ""
        raise fail(path, f"points outside the dataset root {root} (to {real}){via}; refusing to read it")
    return path


def mhd_data_files(header: Path) -> list[Path]:
    """The data files a MetaImage (.mhd) header names in ``ElementDataFile`` (none if LOCAL).

    Handles a single file, ``LIST`` (one file per following line) and the printf form
    ``pattern min max step``; names are relative to the header's folder unless absolute.
    """
    try:
        lines = header.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise fail(header, f"cannot read: {e}") from None
    for i, line in enumerate(lines):
        key, sep, value = line.partition("=")
        if not sep or key.strip() != "ElementDataFile":
            continue
        value = value.strip()
        if value.upper() == "LOCAL":
            return []
        if value.upper().startswith("LIST"):
            names = [ln.strip() for ln in lines[i + 1:] if ln.strip()]
        elif "%" in value and len(value.split()) == 4:
            pattern, lo, hi, step = value.split()
            try:
                names = [pattern % k for k in range(int(lo), int(hi) + 1, int(step) or 1)]
            except (TypeError, ValueError):
                raise fail(header, f"cannot parse ElementDataFile {value!r}") from None
        else:
            names = [value]
        return [header.parent / n for n in names]
    raise fail(header, "MetaImage header has no ElementDataFile")


def require_file(path: Path, listed_in: Path | None = None) -> Path:
    if not path.is_file():
        where = f" (referenced by {listed_in.name})" if listed_in is not None else ""
        raise fail(path, f"file not found{where}")
    return path


def patient_dirs(folder: Path) -> list[Path]:
    """Sorted ``patientNNN`` sub-folders of `folder`."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and PATIENT_DIR.match(p.name))


SPLITS = ("train", "val", "test")


def split_names(values: Iterable[object], path: Path, column: str, known: Iterable[str] = SPLITS) -> list[str | None]:
    """Split cells in lower case (None if empty); a value outside `known` is kept as its own split,
    with one `DataWarning` per such value naming the file, the column and the first line."""
    known = tuple(known)
    out = [v.strip().lower() if isinstance(v, str) and v.strip() else None for v in values]
    first: dict[str, int] = {}
    for i, name in enumerate(out):
        if name is not None and name not in known:
            first.setdefault(name, i)
    for name, i in first.items():
        n = out.count(name)
        warn(path, f"line {i + 2}: unknown {column} {name!r} ({n} row{'s' if n > 1 else ''}; expected "
                   f"{', '.join(known)}); kept as a split of its own")
    return out


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


def warn(path: str | Path | None, problem: str) -> None:
    """A `DataWarning` naming the file: the data are usable, but something in them is off."""
    warnings.warn(f"{path}: {one_line(problem)}" if path is not None else one_line(problem), DataWarning, stacklevel=3)


def numeric_column(df, column: str, path: Path, *, integer: bool = False,
                   positive: bool = False, allow_nan: bool = False) -> np.ndarray:
    """Column as float (or int) array; a bad cell is reported with its CSV line number.

    With `allow_nan`, empty cells become NaN, and so does text that is not a number, with a
    `DataWarning` naming the file, the line and the value.
    """
    import pandas as pd

    values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
    if allow_nan:
        text = df[column].astype(str).str.strip()
        garbled = np.isnan(values) & df[column].notna().to_numpy() & ~text.str.lower().isin(["", "nan"]).to_numpy()
        if garbled.any():
            i = int(np.argmax(garbled))
            more = f" and {int(garbled.sum()) - 1} more" if garbled.sum() > 1 else ""
            warn(path, f"line {i + 2}: {column} is not a number ({df[column].iloc[i]!r}{more}); read as missing")
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


def check_frames(frames: np.ndarray, path: Path, n_frames: int | None, height: int | None, width: int | None,
                 listed_in: str) -> np.ndarray:
    """`frames` (T, H, W) if they match what `listed_in` (a file name, "its header") says, else a `DataError`."""
    got = tuple(frames.shape)
    if len(got) != 3:
        raise fail(path, f"decoded frames have shape {got}, expected (frames, height, width)")
    if (height is not None and got[1] != height) or (width is not None and got[2] != width):
        raise fail(path, f"decoded frames are {got[1]}x{got[2]} but {listed_in} says {height}x{width}")
    if n_frames is not None and got[0] != n_frames:
        why = "truncated or corrupt" if got[0] < n_frames else "the listed count is wrong"
        raise fail(path, f"decodes to {got[0]} frame{'s' if got[0] != 1 else ''} but {listed_in} says {n_frames} ({why})")
    return frames


def read_video(path: Path, n_frames: int | None = None, height: int | None = None, width: int | None = None,
               listed_in: str = "its header") -> np.ndarray:
    """Decode a video with OpenCV into gray uint8 frames (T, H, W) (BGR -> gray).

    Given `n_frames`/`height`/`width` (what the metadata in `listed_in` claims), the decoded
    frames must match them: a truncated or mislabelled file is a `DataError`, not fewer frames.
    """
    import cv2

    if not path.is_file():
        raise fail(path, "file not found")
    check_container(path)
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
    if len({f.shape for f in frames}) > 1:
        raise fail(path, "frames of different sizes (corrupt or not a video)")
    return check_frames(to_uint8(np.stack(frames), path), path, n_frames, height, width, listed_in)


def write_video(path: Path, frames: np.ndarray, fps: float, codec: str = "FFV1") -> Path:
    """Write gray uint8 frames (T, H, W) with OpenCV and check the result by decoding it back.

    OpenCV's writer reports no failed write (a full disk only prints a warning), so the file is
    read back: a frame count or size other than what was written is a `DataError`.
    """
    import cv2

    frames = np.asarray(frames)
    T, H, W = frames.shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), (W, H))
    if not writer.isOpened():
        raise fail(path, f"OpenCV cannot write a video with fourcc {codec!r}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    finally:
        writer.release()
    try:
        back = read_video(path)
    except DataError:
        back = np.empty((0, H, W), np.uint8)
    if back.shape != frames.shape:
        raise fail(path, f"writing the video failed (disk full or quota?): {T} frames of {H}x{W} written, "
                         f"{back.shape[0]} of {back.shape[1]}x{back.shape[2]} read back")
    return path


_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
_IMAGE_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
                (b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"))


def check_container(path: Path) -> None:
    """Refuse a file whose bytes are not the container its suffix names (e.g. an image renamed .avi)."""
    suffix = path.suffix.lower()
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as e:
        raise fail(path, f"cannot read: {e}") from None
    if suffix == ".avi":
        ok = head[:4] == b"RIFF" and head[8:12] == b"AVI "
    elif suffix in (".mp4", ".mov", ".m4v"):
        ok = head[4:8] in _MP4_BOXES
    else:
        return
    if not ok:
        what = next((name for magic, name in _IMAGE_MAGIC if head.startswith(magic)), "not recognised" if head else "empty")
        raise fail(path, f"cannot open video: not a valid {suffix} file (its content is {what})")


def video_info(path: Path) -> dict[str, Any]:
    """Frame count, size and FPS from the container (opens it; decodes no frame)."""
    import cv2

    check_container(path)
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
        raise fail(path, f"cannot read image header: {sitk_message(e)}") from None
    return {"size": tuple(reader.GetSize()), "spacing": tuple(reader.GetSpacing())}


def sitk_array(path: Path) -> np.ndarray:
    """SimpleITK's row-major array ((N,) H, W) of an image file."""
    import SimpleITK as sitk

    require_file(path)
    try:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as e:
        raise fail(path, f"cannot read image: {sitk_message(e)}") from None


def sitk_message(e: Exception) -> str:
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
