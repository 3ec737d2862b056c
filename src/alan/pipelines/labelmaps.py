"""Masks as NIfTI label maps, the file that MONAI, nnU-Net, ITK-SNAP and 3D Slicer open.

One integer label per structure (0 background, the ids of `LABEL_IDS`), one file per record:
frames (T, H, W) are stored as the voxel array (W, H, T), i.e. x = column, y = row, z = frame,
the layout of the CAMUS NIfTI release, so SimpleITK's ``GetArrayFromImage`` gives back (T, H, W)
and nibabel's array is its full transpose. The affine carries the pixel spacing (mm) where the
record knows it (x = column spacing, y = row spacing) and 1 mm otherwise; the frame axis has
spacing 1. Written atomically, with the file mode an ordinary write gets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alan.artifacts import atomic_file
from alan.errors import DataError
from alan.records import Record

#: Label ids (nnU-Net's dataset.json style: background 0, then one id per structure).
LABEL_IDS: dict[str, int] = {"LV": 1, "LA": 2, "MYO": 3, "RV": 4}


def masks_to_labels(masks: Mapping[str, np.ndarray]) -> np.ndarray:
    """{label: bool (T, H, W)} -> uint8 (T, H, W) with `LABEL_IDS` (later labels win where masks overlap)."""
    masks = dict(masks)
    if not masks:
        raise ValueError("no masks")
    shape = next(iter(masks.values())).shape
    out = np.zeros(shape, np.uint8)
    for name in sorted(masks, key=lambda n: LABEL_IDS.get(n, 99)):
        if name not in LABEL_IDS:
            raise ValueError(f"no label id for {name!r}; known: {', '.join(LABEL_IDS)}")
        out[np.asarray(masks[name], dtype=bool)] = LABEL_IDS[name]
    return out


def write_label_map(path: str | Path, labels: np.ndarray, spacing: tuple[float, float] | None = None,
                    description: str = "alan masks") -> Path:
    """Write uint8 labels (T, H, W) (or (H, W)) as ``.nii.gz``; `spacing` = (row, col) mm."""
    import nibabel as nib

    path = Path(path)
    if not path.name.endswith((".nii.gz", ".nii")):
        path = path.with_name(path.name + ".nii.gz")
    labels = np.asarray(labels, dtype=np.uint8)
    if labels.ndim == 2:
        labels = labels[None]
    row, col = spacing if spacing else (1.0, 1.0)
    img = nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)), np.diag([float(col), float(row), 1.0, 1.0]))
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = description.encode()[:79]
    img.header.set_intent("label")
    with atomic_file(path) as tmp:
        nib.save(img, str(tmp))
    return path


def read_label_map(path: str | Path) -> tuple[np.ndarray, tuple[float, float]]:
    """(labels uint8 (T, H, W), (row, col) spacing) of a file written by `write_label_map`."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        arr = np.asarray(img.dataobj)
    except Exception as e:  # nibabel raises several types for a bad file
        raise DataError(path, f"not a readable NIfTI file ({e})") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    zooms = img.header.get_zooms()
    return arr.transpose(2, 1, 0).astype(np.uint8), (float(zooms[1]), float(zooms[0]))


def save_eval_masks(result: Any, records: Sequence[Record], out: str | Path) -> Path:
    """Predicted and ground-truth masks of every scored frame of an evaluation as NIfTI label maps.

    nnU-Net's layout: ``images/CASE_PHASE_0000.nii.gz`` (the frame), ``predictions/CASE_PHASE.nii.gz``
    and ``labels/CASE_PHASE.nii.gz``, at the file's own resolution and spacing, plus dataset.json
    with the label ids; `result` is a `SegmentationResult`. The folder is written atomically."""
    from alan.artifacts import atomic_dir, atomic_write_json
    from alan.pipelines.parcels import safe_name
    from alan.transforms.spatial import labels_to_native

    by_id = {r.id: r for r in records}
    label = LABEL_IDS.get(result.target)
    if label is None:
        raise ValueError(f"no label id for {result.target!r}; known: {', '.join(LABEL_IDS)}")
    cases = []
    with atomic_dir(out, "segment-masks") as tmp:
        cache: dict[str, tuple[np.ndarray, dict]] = {}
        for i, (rid, phase) in enumerate(zip(result.record_ids, result.phases)):
            rec = by_id[rid]
            if rid not in cache:
                cache.clear()  # one record's frames in memory at a time
                cache[rid] = (np.asarray(rec.frames), rec.masks)
            frames, masks = cache[rid]
            idx = rec.ed if phase == "ED" else rec.es
            truth = np.asarray(masks[idx][result.target], dtype=bool)
            pred = labels_to_native(np.asarray(result.pred[i]).astype(np.uint8), truth.shape) > 0
            case = f"{safe_name(rid)}_{phase}"
            image = np.asarray(frames[idx])
            _write_image(tmp / "images" / f"{case}_0000.nii.gz", image, rec.spacing)
            write_label_map(tmp / "predictions" / f"{case}.nii.gz", pred.astype(np.uint8) * label, rec.spacing,
                            f"alan predicted {result.target}")
            write_label_map(tmp / "labels" / f"{case}.nii.gz", truth.astype(np.uint8) * label, rec.spacing,
                            f"ground truth {result.target}")
            cases.append({"case": case, "record": rid, "phase": phase, "frame": int(idx),
                          "dice": float(result.dice[i])})
        atomic_write_json(tmp / "dataset.json", {"labels": {"background": 0, result.target: label},
                                                 "file_ending": ".nii.gz", "numTest": len(cases), "cases": cases})
    return Path(out)


def _write_image(path: Path, image: np.ndarray, spacing: tuple[float, float] | None) -> Path:
    import nibabel as nib

    row, col = spacing if spacing else (1.0, 1.0)
    img = nib.Nifti1Image(np.ascontiguousarray(np.asarray(image)[None].transpose(2, 1, 0)),
                          np.diag([float(col), float(row), 1.0, 1.0]))
    img.header.set_xyzt_units("mm")
    with atomic_file(path) as tmp:
        nib.save(img, str(tmp))
    return path
