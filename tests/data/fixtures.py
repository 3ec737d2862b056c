"""Tiny look-alikes of each public dataset, written in the exact on-disk format.

Arrays are written with the formats' own libraries (OpenCV lossless FFV1 AVI, SimpleITK mhd,
nibabel NIfTI, PNG, pydicom) so readers can be checked against what was written.
Images are deliberately non-square (H != W) so that a transposed read cannot pass.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import SimpleITK as sitk


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def random_frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return rng(seed).integers(0, 256, size=(t, h, w), dtype=np.uint8)


def write_avi(path: Path, frames: np.ndarray, fps: float = 50.0, fourcc: str = "FFV1") -> Path:
    """Gray (T, H, W) uint8 frames as a colour AVI (lossless FFV1 by default)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w = frames.shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h), True)
    assert writer.isOpened(), f"cannot write {path} with {fourcc}"
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


# --------------------------------------------------------------------------- EchoNet
def ellipse_tracing(cx: float, cy: float, half_len: float, half_width: float, chords: int = 20) -> np.ndarray:
    """(chords + 1, 4) X1,Y1,X2,Y2 rows: the long axis, then chords across an upright ellipse."""
    rows = [(cx, cy - half_len, cx, cy + half_len)]
    for y in np.linspace(cy - half_len, cy + half_len, chords + 2)[1:-1]:
        dx = half_width * np.sqrt(max(0.0, 1 - ((y - cy) / half_len) ** 2))
        rows.append((cx - dx, y, cx + dx, y))
    return np.asarray(rows, dtype=float)


def write_echonet(root: Path, videos: list[dict]) -> Path:
    """`videos`: dicts with name, frames (T,H,W), split, ef/esv/edv/fps, tracings {frame: (n,4)}.

    `tracings_order` (optional) lists traced frames in the order their rows are written.
    """
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "FileList.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"])
        for v in videos:
            t, h, wd = v["frames"].shape
            w.writerow([v["name"], v.get("ef", 55.0), v.get("esv", 30.0), v.get("edv", 70.0), h, wd,
                        v.get("fps", 50), t, v.get("split", "TRAIN")])
            write_avi(root / "Videos" / f"{v['name']}.avi", v["frames"])
    with open(root / "VolumeTracings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["FileName", "X1", "Y1", "X2", "Y2", "Frame"])
        for v in videos:
            tracings = v.get("tracings", {})
            for frame in v.get("tracings_order", list(tracings)):
                for x1, y1, x2, y2 in tracings[frame]:
                    w.writerow([f"{v['name']}.avi", x1, y1, x2, y2, frame])
    return root


def echonet_example(root: Path) -> tuple[Path, list[dict]]:
    """Three videos: ES traced before ED in the file, ED traced first, and one untraced."""
    big, small = ellipse_tracing(20, 18, 12, 8), ellipse_tracing(21, 19, 9, 5)
    videos = [
        dict(name="0X1A", frames=random_frames(6, 36, 44, 1), split="TRAIN", ef=61.5,
             tracings={4: small, 1: big}, tracings_order=[4, 1]),
        dict(name="0X2B", frames=random_frames(5, 36, 44, 2), split="VAL", ef=40.0,
             tracings={0: big, 3: small}),
        dict(name="0X3C", frames=random_frames(4, 36, 44, 3), split="TEST", ef=50.0),
    ]
    return write_echonet(root, videos), videos


# --------------------------------------------------------------------------- CAMUS
def camus_labels(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """(n, H, W) label images with LV (1), MYO (2) and LA (3) blobs that move over time."""
    out = np.zeros((n, h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for t in range(n):
        cy, cx = h * 0.4 + t, w * 0.5
        r = np.hypot((yy - cy) / (h * 0.25), (xx - cx) / (w * 0.15))
        out[t][r < 1.4] = 2
        out[t][r < 1] = 1
        out[t][(np.hypot((yy - h * 0.8) / (h * 0.1), (xx - cx) / (w * 0.15)) < 1)] = 3
    return out


def camus_patient(n: int = 5, h: int = 30, w: int = 22, ed: int = 0, es: int = 4, seed: int = 0,
                  spacing: tuple[float, float] = (0.31, 0.154), cfg: dict | None = None) -> dict:
    """One view: `seq` (N,H,W) uint8, `gt` (N,H,W) labels, 0-based ed/es, (row, col) spacing."""
    return dict(seq=random_frames(n, h, w, seed), gt=camus_labels(n, h, w), ed=ed, es=es,
                spacing=spacing, cfg=cfg or {})


def _write_cfg(path: Path, values: dict) -> None:
    path.write_text("".join(f"{k}: {v}\n" for k, v in values.items()))


def _sitk_write(path: Path, arr: np.ndarray, spacing_rc: tuple[float, float]) -> None:
    img = sitk.GetImageFromArray(arr)
    row, col = spacing_rc
    img.SetSpacing((col, row, 1.0) if arr.ndim == 3 else (col, row))
    sitk.WriteImage(img, str(path))


def _nib_write(path: Path, arr: np.ndarray, spacing_rc: tuple[float, float]) -> None:
    """Row-major ([N,] H, W) array stored the way nibabel stores it: (W, H[, N])."""
    row, col = spacing_rc
    data = arr.T
    img = nib.Nifti1Image(np.ascontiguousarray(data), np.diag([col, row, 1.0, 1.0]))
    img.header.set_zooms((col, row, 1.0)[: data.ndim])
    nib.save(img, str(path))


def write_camus_2019(root: Path, patients: dict[str, dict[str, dict]], folder: str = "training",
                     with_gt: bool = True) -> Path:
    """`patients`: {patientXXXX: {"4CH": camus_patient(...), "2CH": ...}}."""
    for pid, views in patients.items():
        pdir = root / folder / pid
        pdir.mkdir(parents=True, exist_ok=True)
        for view, d in views.items():
            seq, gt, ed, es = d["seq"], d["gt"], d["ed"], d["es"]
            _sitk_write(pdir / f"{pid}_{view}_sequence.mhd", seq, d["spacing"])
            for phase, i in (("ED", ed), ("ES", es)):
                _sitk_write(pdir / f"{pid}_{view}_{phase}.mhd", seq[i], d["spacing"])
                if with_gt:
                    _sitk_write(pdir / f"{pid}_{view}_{phase}_gt.mhd", gt[i], d["spacing"])
            _write_cfg(pdir / f"Info_{view}.cfg", {"ED": ed + 1, "ES": es + 1, "NbFrame": len(seq),
                                                   "Sex": "F", "Age": 60, "ImageQuality": "Good",
                                                   "LVedv": 90.0, "LVesv": 40.0, "LVef": 55.6, **d["cfg"]})
    return root


def write_camus_nifti(root: Path, patients: dict[str, dict[str, dict]], splits: dict[str, str] | None = None,
                      with_sequence_gt: bool = True) -> Path:
    """Current release; `splits` maps patient -> training|validation|testing."""
    base = root / "database_nifti"
    for pid, views in patients.items():
        pdir = base / pid
        pdir.mkdir(parents=True, exist_ok=True)
        for view, d in views.items():
            seq, gt, ed, es = d["seq"], d["gt"], d["ed"], d["es"]
            _nib_write(pdir / f"{pid}_{view}_half_sequence.nii.gz", seq, d["spacing"])
            if with_sequence_gt:
                _nib_write(pdir / f"{pid}_{view}_half_sequence_gt.nii.gz", gt, d["spacing"])
            for phase, i in (("ED", ed), ("ES", es)):
                _nib_write(pdir / f"{pid}_{view}_{phase}.nii.gz", seq[i], d["spacing"])
                _nib_write(pdir / f"{pid}_{view}_{phase}_gt.nii.gz", gt[i], d["spacing"])
            _write_cfg(pdir / f"Info_{view}.cfg", {"ED": ed + 1, "ES": es + 1, "NbFrame": len(seq),
                                                   "Sex": "M", "Age": 70, "ImageQuality": "Medium",
                                                   "EF": 55, "FrameRate": 40, **d["cfg"]})
    if splits is not None:
        (root / "database_split").mkdir(parents=True, exist_ok=True)
        for group in ("training", "validation", "testing"):
            names = [p for p, g in splits.items() if g == group]
            (root / "database_split" / f"subgroup_{group}.txt").write_text("".join(f"{n}\n" for n in names))
    return root


# --------------------------------------------------------------------------- TMED-2
TMED2_FOLDERS = ("view_and_diagnosis_labeled_set/labeled", "view_labeled_set/labeled")


def write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def write_tmed2(root: Path, images: list[dict], dev: str = "DEV479", folds: tuple[int, ...] = (0,)) -> Path:
    """`images`: dicts with key, img (H,W) uint8 (or (H,W,3) BGR), view, diagnosis, folder index,
    split (per fold: a str, or a tuple of one split per fold)."""
    for im in images:
        write_png(root / TMED2_FOLDERS[im.get("folder", 0)] / im["key"], im["img"])
    with open(root / "labels_per_image.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["query_key", "view_label", "diagnosis_label"])
        for im in images:
            w.writerow([im["key"], im["view"], im.get("diagnosis", "no_AS")])
    (root / dev).mkdir(parents=True, exist_ok=True)
    for fold in folds:
        with open(root / dev / f"TMED2_fold{fold}_labeledpart.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["query_key", "SourceFolder", "view_label", "diagnosis_label",
                        "diagnosis_classifier_split", "view_classifier_split"])
            for im in images:
                split = im["split"] if isinstance(im["split"], str) else im["split"][fold]
                w.writerow([im["key"], TMED2_FOLDERS[im.get("folder", 0)], im["view"],
                            im.get("diagnosis", "no_AS"), split, split])
    return root


def tmed2_example(root: Path) -> tuple[Path, list[dict]]:
    g = rng(5)
    images = [
        dict(key="101s1_0.png", img=g.integers(0, 256, (24, 32), dtype=np.uint8), view="PLAX",
             diagnosis="no_AS", split=("train", "val"), folder=0),
        dict(key="101s1_1.png", img=g.integers(0, 256, (24, 32), dtype=np.uint8), view="A4C",
             diagnosis="mild_AS", split=("train", "train"), folder=0),
        dict(key="202s2_0.png", img=g.integers(0, 256, (20, 28, 3), dtype=np.uint8), view="PSAX",
             diagnosis="Not_Provided", split=("val", "test"), folder=1),
        dict(key="303s1_4.png", img=g.integers(0, 256, (24, 32), dtype=np.uint8), view="A2C",
             diagnosis="severe_AS", split=("test", "train"), folder=1),
        dict(key="303s1_5.png", img=g.integers(0, 256, (24, 32), dtype=np.uint8), view="A4CorA2CorOther",
             split=("train", "train"), folder=0),
        dict(key="404s1_0.png", img=g.integers(0, 256, (24, 32), dtype=np.uint8), view="Not_Provided",
             split=("test", "test"), folder=1),
    ]
    return write_tmed2(root, images, folds=(0, 1)), images


# --------------------------------------------------------------------------- ACDC
def acdc_patient(x: int = 18, y: int = 14, z: int = 3, t: int = 6, ed: int = 0, es: int = 3,
                 group: str = "DCM", seed: int = 0, zooms=(1.5, 1.25, 10.0, 1.0),
                 dtype=np.int16, with_gt: bool = True) -> dict:
    """Cine (X,Y,Z,T) as nibabel holds it, gt labels (X,Y,Z) at ED and ES, 0-based ed/es."""
    g = rng(seed)
    cine = g.integers(0, 900, size=(x, y, z, t)).astype(dtype)
    gts = {}
    if with_gt:
        for k, frame in enumerate((ed, es)):
            lab = np.zeros((x, y, z), np.uint8)
            lab[2 + k: x // 2, 3: y - 2, :] = 3
            lab[x // 2: x - 2, 3: y - 4, 1:] = 1
            lab[1: 3, 2: y - 1, :] = 2
            gts[frame] = lab
    return dict(cine=cine, gts=gts, ed=ed, es=es, group=group, zooms=zooms)


def write_acdc(root: Path, patients: dict[str, dict], folder: str = "training") -> Path:
    for pid, d in patients.items():
        pdir = root / folder / pid
        pdir.mkdir(parents=True, exist_ok=True)
        zooms = d["zooms"]
        affine = np.diag([*zooms[:3], 1.0])
        cine = nib.Nifti1Image(d["cine"], affine)
        cine.header.set_zooms(zooms)
        nib.save(cine, str(pdir / f"{pid}_4d.nii.gz"))
        for frame in (d["ed"], d["es"]):
            img = nib.Nifti1Image(np.ascontiguousarray(d["cine"][..., frame]), affine)
            img.header.set_zooms(zooms[:3])
            nib.save(img, str(pdir / f"{pid}_frame{frame + 1:02d}.nii.gz"))
            if frame in d["gts"]:
                gt = nib.Nifti1Image(d["gts"][frame], affine)
                gt.header.set_zooms(zooms[:3])
                nib.save(gt, str(pdir / f"{pid}_frame{frame + 1:02d}_gt.nii.gz"))
        _write_cfg(pdir / "Info.cfg", {"ED": d["ed"] + 1, "ES": d["es"] + 1, "Group": d["group"],
                                       "Height": 180.0, "NbFrame": d["cine"].shape[3], "Weight": 80.0})
    return root


# --------------------------------------------------------------------------- DICOM
def write_dicom(path: Path, arr: np.ndarray, photometric: str = "MONOCHROME2", multiframe: bool = True,
                **attrs) -> Path:
    """Uncompressed (T,H,W) or (T,H,W,3) uint8 pixel data; RGB input is stored as `photometric`."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.pixels import convert_color_space
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # US multi-frame image
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID = attrs.pop("PatientID", "P001")
    color = arr.ndim == 4 or (not multiframe and arr.ndim == 3)
    if photometric.startswith("YBR"):
        arr = convert_color_space(arr, "RGB", photometric)
    if multiframe:
        ds.NumberOfFrames = arr.shape[0]
        ds.Rows, ds.Columns = arr.shape[1:3]
    else:
        ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = photometric
    if color:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path
