"""CAMUS reader (Leclerc et al., "Deep learning for segmentation using an open large-scale dataset
in 2D echocardiography", IEEE TMI 2019; https://www.creatis.insa-lyon.fr/Challenge/camus/).

Both releases are read, one `Record` per (patient, view), id ``patientXXXX_4CH``, label "A4C" or
"A2C"; labels 1 LV cavity, 2 LV myocardium, 3 LA become masks "LV", "MYO", "LA".

* 2019 (mhd/raw, SimpleITK)::

      training|testing/patientXXXX/patientXXXX_{2CH,4CH}_sequence.mhd
                                  patientXXXX_{2CH,4CH}_{ED,ES}[_gt].mhd
                                  Info_{2CH,4CH}.cfg   (ED, ES 1-based, NbFrame, LVedv, LVesv, LVef ...)

  frames = ``_sequence``; masks at ED and ES from ``_{ED,ES}_gt``; split from the folder.

* current NIfTI release (nibabel)::

      database_nifti/patientXXXX/patientXXXX_{2CH,4CH}_half_sequence[_gt].nii.gz
                                 patientXXXX_{2CH,4CH}_{ED,ES}[_gt].nii.gz
                                 Info_{2CH,4CH}.cfg   (ED, ES, NbFrame, EF, FrameRate ...)
      database_split/subgroup_{training,validation,testing}.txt   (patient names)

  frames = ``_half_sequence`` (ED to ES); masks on every frame from ``_half_sequence_gt`` (or, if
  that file is absent, at ED and ES from ``_{ED,ES}_gt``); split train/val/test from the lists.

Orientation: SimpleITK's ``GetArrayFromImage`` gives (N, H, W); nibabel's voxel array is its full
transpose (W, H, N), which this reader undoes, so the same data give identical (T, H, W) arrays
in both releases. Spacing (row, col) comes from the header. ED/ES are 0-based indices into the
sequence and ES may precede ED. Listing reads headers and cfg files only; decoding checks the
frames against the header. Every file, and every data file an ``.mhd`` header names
(``ElementDataFile``), must resolve inside the dataset root.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from alan.data import Dataset
from alan.data._util import (cfg_index, check_frames, check_shape, fail, inside, label_masks, mhd_data_files,
                             nifti_array, nifti_header, patient_dirs, read_cfg, require_file, safe_join,
                             sitk_array, sitk_info)
from alan.records import Record

VIEWS = {"2CH": "A2C", "4CH": "A4C"}
LABELS = {1: "LV", 2: "MYO", 3: "LA"}
SPLIT_FILES = {"training": "train", "validation": "val", "testing": "test"}


def read(root: Path) -> Dataset:
    """List a CAMUS folder (either release) without decoding any image."""
    root = Path(root)
    if (root / "database_nifti").is_dir():
        return _read_nifti(root)
    if any((root / sub).is_dir() for sub in ("training", "testing")):
        return _read_2019(root)
    raise fail(root, "not a CAMUS folder (expected database_nifti/, or training/ and testing/)")


# --------------------------------------------------------------------------- 2019 release
def _read_2019(root: Path) -> Dataset:
    records = []
    for sub, split in (("training", "train"), ("testing", "test")):
        folder = root / sub
        if not folder.is_dir():
            continue
        for pdir in patient_dirs(folder):
            for view in _views(pdir):
                records.append(_record_2019(root, pdir, view, split))
    if not records:
        raise fail(root, "empty folder: no patientXXXX/ folders with CAMUS files under training/ or testing/")
    return Dataset(format="camus", root=root, records=records)


def _contained(root: Path, path: Path) -> Path:
    """`path` (and, for a MetaImage header, every data file it names) inside the dataset root."""
    inside(root, path)
    if path.suffix.lower() == ".mhd" and path.is_file():
        for data in mhd_data_files(path):
            inside(root, data, path)
    return path


def _record_2019(root: Path, pdir: Path, view: str, split: str) -> Record:
    pid = pdir.name
    cfg_path = _contained(root, pdir / f"Info_{view}.cfg")
    cfg = read_cfg(cfg_path, required=("ED", "ES"))
    seq = _contained(root, require_file(pdir / f"{pid}_{view}_sequence.mhd", cfg_path))
    info = sitk_info(seq)
    if len(info["size"]) != 3:
        raise fail(seq, f"expected a 3-D (x, y, frame) sequence, got size {info['size']}")
    w, h, n = info["size"]
    ed, es = cfg_index(cfg, "ED", n, cfg_path), cfg_index(cfg, "ES", n, cfg_path)
    gts = {ed: pdir / f"{pid}_{view}_ED_gt.mhd", es: pdir / f"{pid}_{view}_ES_gt.mhd"}
    gts = _both_or_none(gts)
    for p in gts.values():
        _contained(root, p)
    return Record(
        id=f"{pid}_{view}",
        load_frames=partial(_frames_sitk, seq, (n, h, w)),
        n_frames=n, height=h, width=w,
        load_masks=partial(_masks, gts, (h, w), seq, _image_sitk) if gts else None,
        annotated=tuple(sorted(gts)),
        ed=ed, es=es, label=VIEWS[view], split=split, patient=pid,
        spacing=(float(info["spacing"][1]), float(info["spacing"][0])),
        source=str(seq),
        meta={**cfg, "view": view, "release": "2019"},
    )


def _frames_sitk(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    arr = sitk_array(path)
    return check_frames(arr if arr.ndim == 3 else arr[None], path, *shape, listed_in="its header")


def _image_sitk(path: Path) -> np.ndarray:
    """A single 2-D label image (H, W) (a leading singleton frame axis is dropped)."""
    arr = sitk_array(path)
    return arr[0] if arr.ndim == 3 and arr.shape[0] == 1 else arr


# --------------------------------------------------------------------------- NIfTI release
def _read_nifti(root: Path) -> Dataset:
    base = root / "database_nifti"
    splits = _read_splits(root / "database_split", base)
    records = []
    for pdir in patient_dirs(base):
        for view in _views(pdir):
            records.append(_record_nifti(root, pdir, view, splits.get(pdir.name)))
    if not records:
        raise fail(base, "empty folder: no patientXXXX/ folders with CAMUS files")
    return Dataset(format="camus", root=root, records=records)


def _read_splits(folder: Path, base: Path) -> dict[str, str]:
    splits: dict[str, str] = {}
    if not folder.is_dir():
        return splits
    for stem, split in SPLIT_FILES.items():
        path = folder / f"subgroup_{stem}.txt"
        if not path.is_file():
            continue
        inside(folder.parent, path)
        for name in path.read_text(encoding="utf-8", errors="replace").split():
            pdir = safe_join(base, name, path, "patient name")
            if not pdir.is_dir():
                raise fail(path, f"lists {name} but {pdir} does not exist")
            splits[name] = split
    return splits


def _record_nifti(root: Path, pdir: Path, view: str, split: str | None) -> Record:
    pid = pdir.name
    cfg_path = inside(root, pdir / f"Info_{view}.cfg")
    cfg = read_cfg(cfg_path, required=("ED", "ES"))
    seq = inside(root, require_file(pdir / f"{pid}_{view}_half_sequence.nii.gz", cfg_path))
    img = nifti_header(seq)
    shape = img.shape if len(img.shape) == 3 else (*img.shape, 1) if len(img.shape) == 2 else None
    if shape is None:
        raise fail(seq, f"expected a 3-D (x, y, frame) sequence, got shape {img.shape}")
    w, h, n = shape
    ed, es = cfg_index(cfg, "ED", n, cfg_path), cfg_index(cfg, "ES", n, cfg_path)
    seq_gt = pdir / f"{pid}_{view}_half_sequence_gt.nii.gz"
    load_masks, annotated = None, ()
    if seq_gt.is_file():
        inside(root, seq_gt)
        load_masks = partial(_masks_sequence, seq_gt, (n, h, w), seq)
        annotated = tuple(range(n))
    else:
        gts = _both_or_none({ed: pdir / f"{pid}_{view}_ED_gt.nii.gz", es: pdir / f"{pid}_{view}_ES_gt.nii.gz"})
        if gts:
            for p in gts.values():
                inside(root, p)
            load_masks = partial(_masks, gts, (h, w), seq, _image_nifti)
            annotated = tuple(sorted(gts))
    zooms = img.header.get_zooms()
    return Record(
        id=f"{pid}_{view}",
        load_frames=partial(_frames_nifti, seq, (n, h, w)),
        n_frames=n, height=h, width=w,
        load_masks=load_masks, annotated=annotated,
        ed=ed, es=es, label=VIEWS[view], split=split, patient=pid,
        spacing=(float(zooms[1]), float(zooms[0])),
        source=str(seq),
        meta={**cfg, "view": view, "release": "nifti"},
    )


def nifti_to_rows(arr: np.ndarray) -> np.ndarray:
    """nibabel (W, H[, N]) -> SimpleITK's row-major ([N,] H, W)."""
    return np.ascontiguousarray(arr.T)


def _frames_nifti(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    arr = nifti_to_rows(nifti_array(path))
    return check_frames(arr if arr.ndim == 3 else arr[None], path, *shape, listed_in="its header")


def _image_nifti(path: Path) -> np.ndarray:
    arr = nifti_to_rows(nifti_array(path))
    return arr[0] if arr.ndim == 3 and arr.shape[0] == 1 else arr


def _masks_sequence(path: Path, shape: tuple[int, int, int], image: Path) -> dict[int, dict[str, np.ndarray]]:
    arr = nifti_to_rows(nifti_array(path))
    if arr.ndim == 2:
        arr = arr[None]
    check_shape(arr.shape, shape, path, image)
    masks = label_masks(arr, LABELS, path)
    return {t: {k: m[t] for k, m in masks.items()} for t in range(shape[0])}


# --------------------------------------------------------------------------- shared
def _views(pdir: Path) -> list[str]:
    """Views present in a patient folder (a cfg or any file of that view)."""
    names = [p.name for p in pdir.iterdir()]
    return [v for v in VIEWS if f"Info_{v}.cfg" in names or any(n.startswith(f"{pdir.name}_{v}_") for n in names)]


def _both_or_none(gts: dict[int, Path]) -> dict[int, Path]:
    present = [p for p in gts.values() if p.is_file()]
    if not present:
        return {}
    for p in gts.values():
        if not p.is_file():
            raise fail(p, f"file not found (its counterpart {present[0].name} exists)")
    return gts


def _masks(gts: dict[int, Path], shape: tuple[int, int], image: Path, load: Any) -> dict[int, dict[str, np.ndarray]]:
    out = {}
    for frame, path in sorted(gts.items()):
        arr = load(path)
        check_shape(arr.shape, shape, path, image)
        out[frame] = label_masks(arr, LABELS, path)
    return out
