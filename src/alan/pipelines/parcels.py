"""Parcel maps: locked backbone + RAPTOR head -> one parcel id per pixel, at input resolution.

`alan.models.parcellator.compute_parcels(backbone, head, frames)` (the one inference path) makes the maps.
Frames go through the backbone in batches; the K logits per token are bilinearly upsampled
to the frames' own (H, W) and the argmax taken there (ALAN paper, section 3), in chunks small
enough that K x H x W logits of large frames never all sit in memory at once.

`write_parcels` stores a map as compressed ``.npz`` (``parcels`` uint8/uint16 (T, H, W),
``record_id``, ``K``, ``head_hash``, ``backbone_hash``) or NIfTI (``.nii.gz`` with the array as
(W, H, T), i.e. x = column, y = row, plus a ``.json`` sidecar with the same fields); both
written atomically, and a failed write (disk full, quota) raises instead of leaving a short file.
`run_parcels` writes the whole output folder atomically: the maps appear under ``--out`` only
when every record succeeded; a failed or killed run leaves nothing there (its hidden temporary
folder is removed at once, or by the next run if the process was killed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from alan.artifacts import atomic_dir, atomic_file, atomic_write_json
from alan.errors import AlanError
from alan.models.parcellator import compute_parcels, parcel_dtype
from alan.models.raptor import RaptorHead
from alan.records import Record

FORMATS = ("npz", "nifti")
KIND = "parcels"
"""The output kind of a `run_parcels` folder (an existing folder is replaced only if it is one)."""
OVERLAYS = ("png", "mp4", "both", "none")


def safe_name(record_id: str) -> str:
    """A record id as a file name (path separators and odd characters replaced)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in record_id).strip(".") or "record"


def write_parcels(path: str | Path, parcels: np.ndarray, record_id: str, n_parcels: int, head_hash: str | None,
                  backbone_hash: str | None, as_: str = "npz", spacing: tuple[float, float] | None = None) -> Path:
    """Write one parcel map atomically; returns the written path (suffix added if missing)."""
    path = Path(path)
    try:
        return _write_parcels(path, parcels, record_id, n_parcels, head_hash, backbone_hash, as_, spacing)
    except OSError as e:
        raise AlanError(f"{e.filename or path}: writing the parcel map failed ({e.strerror or e})") from None


def _write_parcels(path: Path, parcels: np.ndarray, record_id: str, n_parcels: int, head_hash: str | None,
                   backbone_hash: str | None, as_: str, spacing: tuple[float, float] | None) -> Path:
    parcels = np.asarray(parcels).astype(parcel_dtype(n_parcels), copy=False)
    info = {"record_id": record_id, "K": int(n_parcels), "head_hash": head_hash, "backbone_hash": backbone_hash}
    if as_ == "npz":
        path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, parcels=parcels, record_id=np.str_(record_id), K=np.int32(n_parcels),
                                head_hash=np.str_(head_hash or ""), backbone_hash=np.str_(backbone_hash or ""))
            f.flush()
            os.fsync(f.fileno())
        return path
    if as_ == "nifti":
        import nibabel as nib

        path = path if path.name.endswith(".nii.gz") else path.with_name(path.name + ".nii.gz")
        affine = np.diag([spacing[1], spacing[0], 1.0, 1.0]) if spacing else np.eye(4)
        img = nib.Nifti1Image(np.ascontiguousarray(parcels.transpose(2, 1, 0)), affine)
        img.header["descrip"] = f"alan parcels K={n_parcels}".encode()[:79]
        with atomic_file(path) as tmp:
            nib.save(img, str(tmp))
        atomic_write_json(path.with_name(path.name[: -len(".nii.gz")] + ".json"), {**info, "axes": "x=column, y=row, t"})
        return path
    raise AlanError(f"unknown parcel file format {as_!r}; expected one of {', '.join(FORMATS)}")


def read_parcels(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a map written by `write_parcels`: (parcels (T, H, W), {record_id, K, head_hash, backbone_hash})."""
    path = Path(path)
    if path.name.endswith(".nii.gz"):
        import nibabel as nib

        arr = np.asarray(nib.load(str(path)).dataobj).transpose(2, 1, 0)
        info = json.loads(path.with_name(path.name[: -len(".nii.gz")] + ".json").read_text())
        return arr, info
    with np.load(path) as z:
        info = {"record_id": str(z["record_id"]), "K": int(z["K"]), "head_hash": str(z["head_hash"]) or None,
                "backbone_hash": str(z["backbone_hash"]) or None}
        return z["parcels"], info


@dataclass
class ParcelRun:
    """What `run_parcels` wrote."""

    maps: list[Path] = field(default_factory=list)
    overlays: list[Path] = field(default_factory=list)
    parcels_per_frame: list[float] = field(default_factory=list)


def overlay_frames(record: Record, n_frames: int, count: int = 4) -> list[int]:
    """Frames to show in a PNG overlay: the annotated ones (ED/ES) if any, else `count` evenly spaced."""
    annotated = [i for i in record.annotated if 0 <= i < n_frames]
    if annotated:
        return sorted(set(annotated))
    return sorted(set(np.linspace(0, n_frames - 1, min(count, n_frames)).round().astype(int).tolist()))


def run_parcels(records: Sequence[Record], backbone: Any, head: RaptorHead, out_dir: str | Path, *, as_: str = "npz",
                overlay: str = "png", batch_size: int = 32, progress: bool = True, fps: float = 25.0) -> ParcelRun:
    """Parcel maps (and overlays) for every record, written under `out_dir`."""
    from alan.reports.overlays import save_overlay_mp4, save_overlay_png

    if overlay not in OVERLAYS:
        raise AlanError(f"unknown overlay {overlay!r}; expected one of {', '.join(OVERLAYS)}")
    if as_ not in FORMATS:
        raise AlanError(f"unknown parcel file format {as_!r}; expected one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    result = ParcelRun()
    names: set[str] = set()
    with atomic_dir(out_dir, KIND) as tmp:
        for record in _progress(records, progress):
            frames = np.asarray(record.frames)
            if frames.ndim == 2:
                frames = frames[None]
            parcels = compute_parcels(backbone, head, frames, batch_size)
            name = safe_name(record.id)
            while name in names:
                name += "_"
            names.add(name)
            written = write_parcels(tmp / "maps" / name, parcels, record.id, head.n_parcels, head.hash,
                                    getattr(backbone, "hash", None), as_, record.spacing)
            result.maps.append(out_dir / written.relative_to(tmp))
            result.parcels_per_frame.append(float(np.mean([len(np.unique(p)) for p in parcels])))
            if overlay in ("png", "both"):
                idx = overlay_frames(record, len(frames))
                masks = record.masks if record.load_masks is not None else {}
                png = save_overlay_png(tmp / "overlays" / f"{name}.png", frames[idx], parcels[idx],
                                       masks=[masks.get(i) for i in idx], titles=[_title(record, i) for i in idx])
                result.overlays.append(out_dir / Path(png).relative_to(tmp))
            if overlay in ("mp4", "both"):
                rate = float(record.meta.get("fps") or record.meta.get("FPS") or fps)
                mp4 = save_overlay_mp4(tmp / "overlays" / f"{name}.mp4", frames, parcels, fps=rate)
                result.overlays.append(out_dir / Path(mp4).relative_to(tmp))
    return result


def _title(record: Record, i: int) -> str:
    phase = " (ED)" if record.ed == i else " (ES)" if record.es == i else ""
    return f"frame {i}{phase}"


def _progress(items: Sequence[Record], enabled: bool) -> Iterable[Record]:
    if not enabled:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("parcels"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=False) as bar:
        task = bar.add_task("parcels", total=len(items))
        for item in items:
            yield item
            bar.advance(task)
