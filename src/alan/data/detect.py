"""Recognise a dataset's layout from its files (names only; nothing is decoded)."""

from __future__ import annotations

from pathlib import Path

from alan.data._util import PATIENT_DIR, fail

TMED2_DEV_SETS = ("DEV479", "DEV165", "DEV56")


def detect_format(root: str | Path) -> str:
    """One of echonet, camus, tmed2, acdc, videos; a `DataError` if none matches."""
    from alan.data.videos import find_media, is_media

    root = Path(root)
    if not root.exists():
        raise fail(root, "no such file or directory")
    if root.is_file():
        if is_media(root):
            return "videos"
        raise fail(root, "not a dataset folder, video or DICOM file")
    if not any(root.iterdir()):
        raise fail(root, "empty folder")
    if (root / "FileList.csv").is_file():
        return "echonet"
    if (root / "database_nifti").is_dir():
        return "camus"
    if (root / "labels_per_image.csv").is_file() or any((root / d).is_dir() for d in TMED2_DEV_SETS):
        return "tmed2"
    for sub in ("training", "testing"):
        folder = root / sub
        if not folder.is_dir():
            continue
        for pdir in sorted(folder.iterdir()):
            if not (pdir.is_dir() and PATIENT_DIR.match(pdir.name)):
                continue
            if (pdir / "Info.cfg").is_file() or (pdir / f"{pdir.name}_4d.nii.gz").is_file():
                return "acdc"
            if any(p.name.startswith("Info_") or p.suffix == ".mhd" for p in pdir.iterdir()):
                return "camus"
    if find_media(root, limit=1):
        return "videos"
    raise fail(root, "unrecognised dataset layout (expected EchoNet FileList.csv, CAMUS database_nifti/ "
                     "or training/patientXXXX/, TMED-2 labels_per_image.csv or DEV479/, ACDC "
                     "training/patientNNN/Info.cfg, or AVI/MP4/DICOM files)")
