"""ACDC reader (Bernard et al., "Deep learning techniques for automatic MRI cardiac multi-structures
segmentation and diagnosis: is the problem solved?", IEEE TMI 2018;
https://www.creatis.insa-lyon.fr/Challenge/acdc/).

Layout::

    training|testing/patientNNN/Info.cfg                  ED, ES (1-based), Group, Height, NbFrame, Weight
                               patientNNN_4d.nii.gz       cine, voxel array (X, Y, Z, T)
                               patientNNN_frameXX.nii.gz  ED and ES volumes (X, Y, Z)
                               patientNNN_frameXX_gt.nii.gz  labels 0 bg, 1 RV, 2 MYO, 3 LV

One `Record` per (patient, short-axis slice z): id ``patientNNN_sZZ``, frames (T, H, W) in the
file's own dtype, masks "RV", "MYO", "LV" at ED and ES (from the ``_gt`` files, XX = the cfg's ED
and ES), label = Group (NOR, DCM, HCM, MINF, RV), split train/test from the folder.

Orientation: nibabel's voxel array is indexed (X, Y, Z, T) with X fastest on disk; a slice's
(H, W) image is the transpose of its (X, Y) plane, i.e. rows follow Y and columns follow X. This
equals SimpleITK's ``GetArrayFromImage(ReadImage(f))[t, z]`` for the same file (SimpleITK reverses
the axis order), so CMR images here are row-major like every other reader. No reorientation by
the affine is applied. Spacing (row, col) = (pixdim Y, pixdim X). Listing reads headers only; a
patient's 4-D volume is decoded once and cached while its slices are read in turn. Every file
must resolve inside the dataset root (a symlink out of it is refused).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from alan.data import Dataset
from alan.data._util import (cfg_index, check_shape, fail, inside, label_masks, nifti_array_cached,
                             nifti_header, patient_dirs, read_cfg, require_file)
from alan.records import Record

GROUPS = ("NOR", "DCM", "HCM", "MINF", "RV")
LABELS = {1: "RV", 2: "MYO", 3: "LV"}
FOLDERS = (("training", "train"), ("testing", "test"))


def read(root: Path) -> Dataset:
    """List an ACDC folder (``training/`` and/or ``testing/``) without decoding any volume."""
    root = Path(root)
    if not any((root / sub).is_dir() for sub, _ in FOLDERS):
        raise fail(root, "not an ACDC folder (expected training/ or testing/ with patientNNN/ folders)")
    records = []
    for sub, split in FOLDERS:
        if (root / sub).is_dir():
            for pdir in patient_dirs(root / sub):
                records.extend(_patient(root, pdir, split))
    if not records:
        raise fail(root, "empty folder: no patientNNN/ folders under training/ or testing/")
    return Dataset(format="acdc", root=root, records=records)


def _patient(root: Path, pdir: Path, split: str) -> list[Record]:
    pid = pdir.name
    cfg_path = inside(root, pdir / "Info.cfg")
    cfg = read_cfg(cfg_path, required=("ED", "ES"))
    group = cfg.get("Group")
    if group is not None and group not in GROUPS:
        raise fail(cfg_path, f"unknown Group {group!r} (expected {', '.join(GROUPS)})")
    cine = inside(root, require_file(pdir / f"{pid}_4d.nii.gz", cfg_path))
    img = nifti_header(cine)
    if len(img.shape) != 4:
        raise fail(cine, f"expected a 4-D (X, Y, Z, T) image, got shape {img.shape}")
    x, y, z, t = img.shape
    ed, es = cfg_index(cfg, "ED", t, cfg_path), cfg_index(cfg, "ES", t, cfg_path)
    gts = {ed: pdir / f"{pid}_frame{ed + 1:02d}_gt.nii.gz", es: pdir / f"{pid}_frame{es + 1:02d}_gt.nii.gz"}
    present = [p for p in gts.values() if p.is_file()]
    if present:
        for p in gts.values():
            inside(root, require_file(p, cfg_path))
    else:
        gts = {}
    zooms = img.header.get_zooms()
    records = []
    for s in range(z):
        records.append(Record(
            id=f"{pid}_s{s:02d}",
            load_frames=partial(_frames, cine, s),
            n_frames=t, height=y, width=x,
            load_masks=partial(_masks, gts, s, (x, y, z), cine) if gts else None,
            annotated=tuple(sorted(gts)),
            ed=ed, es=es, label=group, split=split, patient=pid,
            spacing=(float(zooms[1]), float(zooms[0])),
            source=str(cine),
            meta={**cfg, "slice": s, "n_slices": z, "slice_thickness": float(zooms[2])},
        ))
    return records


def _frames(cine: Path, s: int) -> np.ndarray:
    vol = nifti_array_cached(cine)
    return vol[:, :, s, :].transpose(2, 1, 0).copy(order="C")  # a copy: the cache is read-only


def _masks(gts: dict[int, Path], s: int, shape: tuple[int, int, int], cine: Path) -> dict[int, dict[str, np.ndarray]]:
    out = {}
    for frame, path in sorted(gts.items()):
        vol = nifti_array_cached(path)
        check_shape(vol.shape, shape, path, cine)
        out[frame] = label_masks(np.ascontiguousarray(vol[:, :, s].T), LABELS, path)
    return out
