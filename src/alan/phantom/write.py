"""Writers that lay the phantoms out in the four public formats (EchoNet-Dynamic, CAMUS, TMED-2, ACDC).

Each writer builds the whole dataset in a temporary sibling folder and renames it into place
at the end, so OUT is either absent, the previous content, or the complete new dataset. A
``phantom.json`` at the root records the generator, seed, size, options and per-record truth
(the formats' own files stay standard). Every record draws from its own child seed, so the
output is a pure function of (format, seed, size, options): same inputs, same bytes.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from alan.phantom.cmr import GROUPS, CMRCine, cmr_patient
from alan.phantom.echo import (
    AS_GRADES,
    QUALITIES,
    EchoPatient,
    echo_sequence,
    lv_disks,
)
from alan.phantom.shapes import biplane_volume
from alan.phantom.sizes import preset
from alan.artifacts import MARKER, atomic_dir
from alan.data._util import sitk_message, write_video
from alan.errors import ArtifactError, DataError

DATASET_KIND = "phantom-dataset"

Progress = Callable[[int, int], None]
MANIFEST = "phantom.json"
CAMUS_RELEASES: tuple[str, ...] = ("nifti", "2019")


# ------------------------------------------------------------------------------ plumbing


@contextlib.contextmanager
def staging(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder of `out`; on success it replaces `out` atomically.

    A non-empty `out` is refused unless `force`; even with `force`, only an earlier phantom
    dataset written by alan (its hidden output marker says so) is replaced, never anything else.
    """
    out = Path(out).absolute()
    if out.exists() and out.is_dir() and any(out.iterdir()) and not force:
        raise DataError(out, "folder exists and is not empty (use --force to replace an earlier phantom dataset)")
    if (out / MANIFEST).is_file() and not (out / MARKER).exists():  # written before the marker existed
        try:
            legacy = {"format", "seed", "size"} <= set(json.loads((out / MANIFEST).read_text()))
        except (OSError, ValueError, TypeError):
            legacy = False
        if legacy:
            (out / MARKER).write_text(json.dumps({"kind": DATASET_KIND, "complete": True}) + "\n")
    try:
        with atomic_dir(out, DATASET_KIND) as tmp:
            try:
                yield tmp
            except OSError as e:  # disk full, quota, file size limit
                where = f" ({_inside_tmp(e.filename, tmp)})" if getattr(e, "filename", None) else ""
                raise DataError(out, f"writing the dataset failed{where}: {e.strerror or e}; nothing was written") from None
            except DataError as e:  # name the file as it would have been in `out`, not in the temporary
                if e.path is None or tmp not in e.path.parents:
                    raise
                raise DataError(out, f"{_inside_tmp(e.path, tmp)}: {e.problem}; nothing was written") from None
    except ArtifactError as e:
        raise DataError(out, str(e).removeprefix(f"{out}: ")) from None


def _inside_tmp(path: str | Path, tmp: Path) -> str:
    path = Path(path)
    return path.relative_to(tmp).as_posix() if tmp in path.parents else path.name


def _top_rng(seed: int) -> np.random.Generator:
    """Dataset-level draws (splits, orders), independent of the per-record streams."""
    return np.random.default_rng([seed, 0x5EED])


def record_seeds(seed: int, n: int) -> list[np.random.SeedSequence]:
    """One independent seed per record (record i of a dataset always uses the i-th)."""
    return np.random.SeedSequence(seed).spawn(n)


def _run(fn: Callable[..., Any], tasks: list[tuple], workers: int, progress: Progress | None) -> list[Any]:
    """fn(*task) for every task, in order, on `workers` processes (1: in this process)."""
    out: list[Any] = []
    if workers <= 1 or len(tasks) < 8:  # a pool costs ~1-2 s to start
        for i, t in enumerate(tasks):
            out.append(fn(*t))
            if progress:
                progress(i + 1, len(tasks))
        return out
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # forkserver: workers fork from a clean single-threaded server, never from a caller that
    # may hold OpenMP / OpenCV / torch threads (forking those can deadlock).
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method)) as pool:
        for i, r in enumerate(pool.map(fn, *zip(*tasks), chunksize=1)):
            out.append(r)
            if progress:
                progress(i + 1, len(tasks))
    return out


def default_workers() -> int:
    """Processes used by the writers: the CPUs this process may use, at most 2."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, min(2, n))


def _splits(n: int, fractions: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Split indices 0..n-1 into len(fractions) groups (every group non-empty when n allows)."""
    counts = np.floor(np.asarray(fractions) * n).astype(int)
    for i in np.argsort(-np.asarray(fractions)):
        if counts.sum() >= n:
            break
        counts[i] += 1
    for i in range(len(counts)):  # make small sets still have one of each
        if counts[i] == 0 and n >= len(counts):
            counts[i] = 1
            counts[int(np.argmax(counts))] -= 1
    labels = np.repeat(np.arange(len(fractions)), counts)
    return labels[rng.permutation(n)]


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _fmt(x: float, nd: int = 6) -> str:
    return f"{float(x):.{nd}f}"


def _manifest(root: Path, fmt: str, seed: int, size: str, options: dict[str, Any], records: list[dict[str, Any]]) -> None:
    from alan import __version__

    doc = {
        "generator": "alan.phantom",
        "version": __version__,
        "format": fmt,
        "seed": seed,
        "size": size,
        "options": options,
        "records": records,
    }
    (root / MANIFEST).write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _save_nifti(path: Path, data: np.ndarray, zooms: tuple[float, ...], level: int = 1) -> None:
    """Write a .nii.gz whose bytes depend only on the data (gzip without a timestamp)."""
    import nibabel as nib

    affine = np.diag([*zooms[:3], *([1.0] * (3 - len(zooms[:3]))), 1.0])
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.header.set_zooms(tuple(float(z) for z in zooms))
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=level, mtime=0))


def _save_mhd(path: Path, data: np.ndarray, spacing: tuple[float, ...]) -> None:
    """Write an uncompressed .mhd/.raw pair with SimpleITK (`data` in SimpleITK's axis order)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(data))
    img.SetSpacing(tuple(float(s) for s in spacing))
    try:
        sitk.WriteImage(img, str(path), False)
    except RuntimeError as e:
        raise OSError(f"SimpleITK cannot write {path.name} ({sitk_message(e)})") from None


def _write_cfg(path: Path, items: list[tuple[str, Any]]) -> None:
    path.write_text("".join(f"{k}: {v}\n" for k, v in items))


def _hexname(rng: np.random.Generator) -> str:
    return "0X" + "".join(f"{int(b):02X}" for b in rng.integers(0, 256, 8))


# ------------------------------------------------------------------------------ EchoNet


def echonet_video(seq_seed: np.random.SeedSequence, size: str = "default") -> dict[str, Any]:
    """One EchoNet-style A4C video (in memory): name, `EchoSequence`, FPS, tracing row order."""
    cfg = preset("echonet", size)
    rng = np.random.default_rng(seq_seed)
    name = _hexname(rng)
    n_frames = int(rng.integers(cfg["frames"][0], cfg["frames"][1] + 1))
    fps = 50.0
    quality = str(rng.choice(QUALITIES, p=[0.5, 0.35, 0.15]))
    seq = echo_sequence("A4C", rng, n_frames=n_frames, size=tuple(cfg["image"]), fps=fps, quality=quality)
    es_first = bool(rng.random() < 0.5)  # real EchoNet rows are not ED-first; readers decide by area
    return {"name": name, "seq": seq, "fps": fps, "quality": quality, "es_rows_first": es_first}


def echonet_plan(seed: int, size: str) -> list[tuple[np.random.SeedSequence, str]]:
    """(record seed, Split) per video, TRAIN/VAL/TEST ~ 60/20/20."""
    n = preset("echonet", size)["videos"]
    split = _splits(n, (0.6, 0.2, 0.2), _top_rng(seed))
    return [(q, ("TRAIN", "VAL", "TEST")[split[i]]) for i, q in enumerate(record_seeds(seed, n))]


def _echonet_video(seq_seed: np.random.SeedSequence, root: Path, size: str, codec: str, split: str):
    v = echonet_video(seq_seed, size)
    seq, name, fps = v["seq"], v["name"], v["fps"]
    T, H, W = seq.frames.shape
    write_video(root / "Videos" / f"{name}.avi", seq.frames, fps, codec)  # read back: a failed write raises
    row = [name, _fmt(seq.ef), _fmt(seq.esv), _fmt(seq.edv), H, W, int(fps), T, split]
    order = [seq.es, seq.ed] if v["es_rows_first"] else [seq.ed, seq.es]
    traces = [[f"{name}.avi", _fmt(x1), _fmt(y1), _fmt(x2), _fmt(y2), f] for f in order for x1, y1, x2, y2 in seq.tracings[f]]
    p = seq.meta["patient"]
    truth = {"id": name, "split": split.lower(), "ed": seq.ed, "es": seq.es, "ef": seq.ef, "ef_target": 100 * p.ef_target,
             "es_rows_first": v["es_rows_first"], "quality": v["quality"]}
    return row, traces, truth


def write_echonet(root: Path, seed: int, size: str, progress: Progress | None = None, codec: str = "FFV1",
                  workers: int = 1) -> list[dict[str, Any]]:
    """EchoNet-Dynamic layout: Videos/*.avi, FileList.csv, VolumeTracings.csv."""
    (root / "Videos").mkdir()
    tasks = [(s, root, size, codec, split) for s, split in echonet_plan(seed, size)]
    results = _run(_echonet_video, tasks, workers, progress)
    names = [r[0][0] for r in results]
    if len(set(names)) != len(names):  # 64-bit names: practically never; refuse rather than overwrite
        raise DataError(root, "duplicate generated video name; use another seed")
    _write_csv(root / "FileList.csv", ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"],
               [r[0] for r in results])
    _write_csv(root / "VolumeTracings.csv", ["FileName", "X1", "Y1", "X2", "Y2", "Frame"], [t for r in results for t in r[1]])
    return [r[2] for r in results]


# ------------------------------------------------------------------------------ CAMUS


def camus_patient(rng: np.random.Generator, size: tuple[int, int]) -> dict[str, Any]:
    """Both apical views of one CAMUS-style patient: half sequences, ED/ES, biplane volumes."""
    patient = EchoPatient.random(rng)
    quality = str(rng.choice(QUALITIES, p=[0.4, 0.4, 0.2]))
    views = {}
    disks = {}
    for view, camus_view in (("A2C", "2CH"), ("A4C", "4CH")):
        frame_rate = float(rng.uniform(20, 40))
        period_s = 60.0 / patient.hr
        reverse = bool(rng.random() < 0.25)  # ES -> ED (diastole): ES comes first
        span = (1.0 - patient.systole) if reverse else patient.systole
        n = max(5, int(round(span * period_s * frame_rate)) + 1)
        phases = np.linspace(patient.systole, 1.0, n) if reverse else np.linspace(0.0, patient.systole, n)
        seq = echo_sequence(view, rng, phases=phases, size=size, patient=patient, quality=quality)
        ed, es = (n - 1, 0) if reverse else (0, n - 1)
        seq.ed, seq.es = ed, es
        pose = seq.meta["pose"]
        sp = seq.spacing_mm
        disks[view] = {name: lv_disks(patient, view, c, pose, size) for name, c in (("ED", 0.0), ("ES", 1.0))}
        for name in ("ED", "ES"):
            ch, axis, vol, length = disks[view][name]
            disks[view][name] = (ch * sp, length * sp)
        views[camus_view] = {"seq": seq, "ed": ed, "es": es, "frame_rate": frame_rate, "reverse": reverse}
    vol = {}
    for name in ("ED", "ES"):
        (c2, l2), (c4, l4) = disks["A2C"][name], disks["A4C"][name]
        vol[name] = biplane_volume(c2, c4, max(l2, l4)) / 1000.0
    ef = 100.0 * (vol["ED"] - vol["ES"]) / vol["ED"]
    return {"patient": patient, "quality": quality, "views": views, "edv": vol["ED"], "esv": vol["ES"], "ef": ef}


def camus_labels(seq) -> np.ndarray:
    """Echo phantom label map -> CAMUS values (1 LV, 2 MYO, 3 LA; RV is background)."""
    lut = np.array([0, 1, 2, 3, 0], np.uint8)
    return lut[seq.labels]


def _camus_write_patient(seq_seed: np.random.SeedSequence, pid: str, pdir: Path, image: tuple[int, int], release: str,
                         split: str, has_gt: bool) -> dict[str, Any]:
    data = camus_patient(np.random.default_rng(seq_seed), image)
    p = data["patient"]
    pdir.mkdir(parents=True)
    for view, v in data["views"].items():
        seq = v["seq"]
        frames, labels = seq.frames, camus_labels(seq)
        sp = seq.spacing_mm
        ed, es = v["ed"], v["es"]
        stem = pdir / f"{pid}_{view}"
        items: list[tuple[str, Any]] = [("ED", ed + 1), ("ES", es + 1), ("NbFrame", len(frames)), ("Sex", p.sex),
                                        ("Age", p.age), ("ImageQuality", data["quality"])]
        if release == "nifti":
            # nibabel stores the transpose (W, H, N) of SimpleITK's (N, H, W).
            _save_nifti(Path(f"{stem}_half_sequence.nii.gz"), frames.T, (sp, sp, 1.0))
            _save_nifti(Path(f"{stem}_half_sequence_gt.nii.gz"), labels.T, (sp, sp, 1.0))
            for name, f in (("ED", ed), ("ES", es)):
                _save_nifti(Path(f"{stem}_{name}.nii.gz"), frames[f].T, (sp, sp))
                _save_nifti(Path(f"{stem}_{name}_gt.nii.gz"), labels[f].T, (sp, sp))
            items += [("EF", round(data["ef"], 1)), ("FrameRate", round(v["frame_rate"], 1))]
        else:
            _save_mhd(Path(f"{stem}_sequence.mhd"), frames, (sp, sp, 1.0))
            for name, f in (("ED", ed), ("ES", es)):
                _save_mhd(Path(f"{stem}_{name}.mhd"), frames[f][None], (sp, sp, 1.0))
                if has_gt:
                    _save_mhd(Path(f"{stem}_{name}_gt.mhd"), labels[f][None], (sp, sp, 1.0))
            if has_gt:
                items += [("LVedv", round(data["edv"], 1)), ("LVesv", round(data["esv"], 1)), ("LVef", round(data["ef"], 1))]
        _write_cfg(pdir / f"Info_{view}.cfg", items)
    return {"id": pid, "split": split, "ef": data["ef"], "edv": data["edv"], "esv": data["esv"],
            "ef_target": 100 * p.ef_target, "quality": data["quality"],
            "views": {view: {"ed": v["ed"], "es": v["es"], "n_frames": len(v["seq"].frames), "es_first": v["reverse"]}
                      for view, v in data["views"].items()}}


def write_camus(root: Path, seed: int, size: str, progress: Progress | None = None, release: str = "nifti",
                workers: int = 1) -> list[dict[str, Any]]:
    """CAMUS layout, current NIfTI release (default) or the 2019 mhd/raw release.

    NIfTI: database_nifti/ with every patient, database_split/subgroup_*.txt ~ 70/15/15.
    2019: training/ (train + val share, with ground truth and LVedv/LVesv/LVef) and testing/
    (images and cfg only, like the public 2019 test set).
    """
    if release not in CAMUS_RELEASES:
        raise ValueError(f"unknown CAMUS release {release!r}; expected one of {CAMUS_RELEASES}")
    image = tuple(preset("camus", size)["image"])
    plan = camus_plan(seed, size)
    tasks = []
    for q, pid, split in plan:
        if release == "nifti":
            pdir = root / "database_nifti" / pid
        else:
            pdir = root / ("testing" if split == "test" else "training") / pid
        has_gt = release == "nifti" or split != "test"
        tasks.append((q, pid, pdir, image, release, split, has_gt))
    truth = _run(_camus_write_patient, tasks, workers, progress)
    if release == "nifti":
        (root / "database_split").mkdir(parents=True)
        for split, stem in (("train", "training"), ("val", "validation"), ("test", "testing")):
            listed = [pid for _, pid, sp in plan if sp == split]
            (root / "database_split" / f"subgroup_{stem}.txt").write_text("".join(f"{x}\n" for x in listed))
    return truth


def camus_plan(seed: int, size: str) -> list[tuple[np.random.SeedSequence, str, str]]:
    """(record seed, patient name, split) per patient, train/val/test ~ 70/15/15."""
    n = preset("camus", size)["patients"]
    split = _splits(n, (0.7, 0.15, 0.15), _top_rng(seed))
    return [(q, f"patient{i + 1:04d}", ("train", "val", "test")[split[i]]) for i, q in enumerate(record_seeds(seed, n))]


# ------------------------------------------------------------------------------ TMED-2

TMED_VIEWS: tuple[str, ...] = ("PLAX", "PSAX", "A4C", "A2C")
TMED_SETS: tuple[str, ...] = ("view_and_diagnosis_labeled_set/labeled", "view_labeled_set/labeled")


def tmed2_study(seq_seed: np.random.SeedSequence, s: int, size: str = "default") -> list[dict[str, Any]]:
    """The still images of study number `s` (in memory): query_key, labels, folder, frame."""
    cfg = preset("tmed2", size)
    per = cfg["images_per_study"]
    rng = np.random.default_rng(seq_seed)
    study = 1000 + 17 * s + int(rng.integers(0, 17))
    diagnosed = s % 3 != 2  # two thirds of the studies carry an AS diagnosis
    grade = int(rng.integers(0, len(AS_GRADES)))
    patient = EchoPatient.random(rng, as_grade=grade)
    folder = TMED_SETS[0] if diagnosed else TMED_SETS[1]
    views = [TMED_VIEWS[(k + s) % 4] for k in range(per)]
    rng.shuffle(views)
    out = []
    for k in range(per):
        view_label = views[k]
        u = rng.random()
        if u < 0.04:
            view_label = "A4CorA2CorOther"
        elif u < 0.06:
            view_label = "Not_Provided"
        render = view_label if view_label in TMED_VIEWS else str(rng.choice(["A4C", "A2C"]))
        quality = str(rng.choice(QUALITIES, p=[0.5, 0.35, 0.15]))
        seq = echo_sequence(render, rng, phases=np.array([rng.random()]), size=tuple(cfg["image"]), patient=patient, quality=quality)
        out.append({"query_key": f"{study}s1_{k}.png", "view_label": view_label, "rendered": render, "study": study,
                    "diagnosis_label": AS_GRADES[grade] if diagnosed else "Not_Provided", "folder": folder,
                    "study_index": s, "frame": seq.frames[0], "labels": seq.labels[0]})
    return out


def _tmed2_study(seq_seed: np.random.SeedSequence, s: int, root: Path, size: str):
    import cv2

    items = tmed2_study(seq_seed, s, size)
    rows, truth = [], []
    for it in items:
        ok, png = cv2.imencode(".png", it["frame"])
        if not ok:
            raise DataError(root / it["folder"] / it["query_key"], "OpenCV cannot encode the image as PNG")
        (root / it["folder"] / it["query_key"]).write_bytes(png.tobytes())
        rows.append((it["query_key"], it["view_label"], it["diagnosis_label"], it["folder"], s))
        truth.append({"id": it["query_key"], "view": it["view_label"], "rendered": it["rendered"], "study": it["study"],
                      "diagnosis": it["diagnosis_label"]})
    return rows, truth


def tmed2_folds(seed: int, size: str) -> list[np.ndarray]:
    """Per fold 0..2, the split index (0 train, 1 val, 2 test) of every study (~60/20/20)."""
    n = preset("tmed2", size)["studies"]
    top = _top_rng(seed)
    return [_splits(n, (0.6, 0.2, 0.2), top) for _ in range(3)]


def write_tmed2(root: Path, seed: int, size: str, progress: Progress | None = None, workers: int = 1) -> list[dict[str, Any]]:
    """TMED-2 layout: labelled PNGs, labels_per_image.csv and DEV479 fold files.

    Studies are split per fold (study-level, ~60/20/20); about 4% of the images are labelled
    A4CorA2CorOther and 2% Not_Provided (readers skip them); images of the view-only set have
    diagnosis Not_Provided.
    """
    cfg = preset("tmed2", size)
    n_studies = cfg["studies"]
    for folder in TMED_SETS:
        (root / folder).mkdir(parents=True)
    (root / "DEV479").mkdir()
    folds = tmed2_folds(seed, size)
    tasks = [(q, s, root, size) for s, q in enumerate(record_seeds(seed, n_studies))]
    results = _run(_tmed2_study, tasks, workers, progress)
    rows = [r for res in results for r in res[0]]
    _write_csv(root / "labels_per_image.csv", ["query_key", "view_label", "diagnosis_label"],
               [[k, v, d] for k, v, d, _, _ in rows])
    names = ("train", "val", "test")
    for f in range(3):
        out = [[key, view, diag, folder, names[folds[f][s]], names[folds[f][s]]] for key, view, diag, folder, s in rows]
        _write_csv(root / "DEV479" / f"TMED2_fold{f}_labeledpart.csv",
                   ["query_key", "view_label", "diagnosis_label", "SourceFolder", "diagnosis_classifier_split", "view_classifier_split"], out)
    return [t for res in results for t in res[1]]


# ------------------------------------------------------------------------------ ACDC

ACDC_TRAIN_ORDER: tuple[str, ...] = ("DCM", "HCM", "MINF", "NOR", "RV")  # real ACDC's blocks of 20


def acdc_cine(seq_seed: np.random.SeedSequence, group: str, size: str = "default", mode: str | None = None,
              spurious_p: float = 0.9) -> CMRCine:
    """One ACDC-style patient (in memory)."""
    cfg = preset("acdc", size)
    rng = np.random.default_rng(seq_seed)
    n_frames = int(rng.integers(cfg["frames"][0], cfg["frames"][1] + 1))
    return cmr_patient(group, rng, size=tuple(cfg["image"]), n_slices=cfg["slices"], n_frames=n_frames,
                       spurious=mode, spurious_p=spurious_p)


def _acdc_patient(seq_seed: np.random.SeedSequence, pid: str, pdir: Path, group: str, size: str,
                  mode: str | None, spurious_p: float) -> dict[str, Any]:
    cine = acdc_cine(seq_seed, group, size, mode, spurious_p)
    pdir.mkdir(parents=True)
    sr, sc, sz = cine.spacing
    # Image rows/cols (H, W) are the transpose of nibabel's (X, Y): (Z, T, H, W) -> (X, Y, Z, T).
    _save_nifti(pdir / f"{pid}_4d.nii.gz", cine.image.transpose(3, 2, 0, 1), (sc, sr, sz, 1.0))
    for f in (cine.ed, cine.es):
        _save_nifti(pdir / f"{pid}_frame{f + 1:02d}.nii.gz", cine.image[:, f].transpose(2, 1, 0), (sc, sr, sz))
        _save_nifti(pdir / f"{pid}_frame{f + 1:02d}_gt.nii.gz", cine.labels[:, f].transpose(2, 1, 0), (sc, sr, sz))
    p = cine.patient
    _write_cfg(pdir / "Info.cfg", [("ED", cine.ed + 1), ("ES", cine.es + 1), ("Group", group),
                                   ("Height", f"{p.height:.1f}"), ("NbFrame", cine.image.shape[1]),
                                   ("Weight", f"{p.weight:.1f}")])
    lv_ed, lv_es = cine.volume_ml("LV", cine.ed), cine.volume_ml("LV", cine.es)
    return {"id": pid, "split": "train" if pdir.parent.name == "training" else "test", "group": group,
            "ed": cine.ed, "es": cine.es, "lv_edv": lv_ed, "lv_esv": lv_es,
            "lv_ef": 100 * (lv_ed - lv_es) / lv_ed if lv_ed else None,
            "rv_edv": cine.volume_ml("RV", cine.ed), "spurious": cine.spurious}


def write_acdc(root: Path, seed: int, size: str, progress: Progress | None = None, spurious: bool = False,
               broken_test: bool = False, spurious_p: float = 0.9, workers: int = 1) -> list[dict[str, Any]]:
    """ACDC layout: training/ (blocks per group, like ACDC) and testing/ (shuffled) patientNNN/.

    `spurious` plants the class-correlated blob (cmr.SPURIOUS_SITES) in every patient;
    `broken_test` makes it independent of the class in testing/ (the shortcut is broken).
    """
    if broken_test and not spurious:
        raise ValueError("broken_test needs spurious=True")
    tasks = [(q, pid, root / folder / pid, group, size, mode, spurious_p)
             for q, pid, folder, group, mode in acdc_plan(seed, size, spurious, broken_test)]
    return _run(_acdc_patient, tasks, workers, progress)


def acdc_plan(seed: int, size: str, spurious: bool = False, broken_test: bool = False):
    """(record seed, patient name, folder, group, spurious mode) per patient.

    training/ holds blocks of each group in ACDC's order (DCM, HCM, MINF, NOR, RV); testing/
    the groups shuffled, numbered on after training like ACDC's patient101-150.
    """
    cfg = preset("acdc", size)
    ntr, nte = cfg["train_per_group"], cfg["test_per_group"]
    plan = [("training", g) for g in ACDC_TRAIN_ORDER for _ in range(ntr)]
    test_groups = [g for g in GROUPS for _ in range(nte)]
    plan += [("testing", test_groups[i]) for i in _top_rng(seed).permutation(len(test_groups))]
    out = []
    for i, q in enumerate(record_seeds(seed, len(plan))):
        folder, group = plan[i]
        mode = None
        if spurious:
            mode = "broken" if (folder == "testing" and broken_test) else "train"
        out.append((q, f"patient{i + 1:03d}", folder, group, mode))
    return out


# ------------------------------------------------------------------------------ entry point

WRITERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "echonet": write_echonet,
    "camus": write_camus,
    "tmed2": write_tmed2,
    "acdc": write_acdc,
}


def synthesize(format: str, out: str | Path, seed: int = 0, size: str = "default", *, force: bool = False,
               progress: Progress | None = None, workers: int | None = None, **options: Any) -> Path:
    """Write a phantom dataset of `format` to `out` and return its path.

    Options: camus ``release="nifti"|"2019"``; acdc ``spurious=False``, ``broken_test=False``,
    ``spurious_p=0.9``; echonet ``codec="FFV1"`` (lossless; "MJPG" also works).
    `workers` > 1 generates records in that many processes (started with forkserver/spawn,
    so a calling script needs the ``if __name__ == "__main__":`` guard); default 1. The output
    does not depend on it.
    """
    if format not in WRITERS:
        raise ValueError(f"unknown phantom format {format!r}; expected one of {', '.join(WRITERS)}")
    preset(format, size)  # validates the size name
    workers = 1 if workers is None else int(workers)
    with staging(out, force) as tmp:
        records = WRITERS[format](tmp, int(seed), size, progress, workers=workers, **options)
        _manifest(tmp, format, int(seed), size, {**options, **{"image": list(preset(format, size)["image"])}}, records)
    return Path(out)


def generate(format: str, seed: int = 0, size: str = "small", **options: Any) -> list[dict[str, Any]]:
    """The records `synthesize` writes, in memory, in the same order (for tests and other code).

    echonet: {name, split, seq (EchoSequence), ...}; camus: {id, split, views {2CH, 4CH}:
    {seq, ed, es, ...}, edv, esv, ef, ...}; tmed2: one dict per image {query_key, view_label,
    diagnosis_label, folder, frame, labels, ...}; acdc: {id, split, group, cine (CMRCine)}.
    """
    if format == "echonet":
        return [{**echonet_video(q, size), "split": split} for q, split in echonet_plan(seed, size)]
    if format == "camus":
        image = tuple(preset("camus", size)["image"])
        return [{**camus_patient(np.random.default_rng(q), image), "id": pid, "split": split}
                for q, pid, split in camus_plan(seed, size)]
    if format == "tmed2":
        folds = tmed2_folds(seed, size)
        out = []
        for s, q in enumerate(record_seeds(seed, preset("tmed2", size)["studies"])):
            for item in tmed2_study(q, s, size):
                out.append({**item, "splits": [("train", "val", "test")[f[s]] for f in folds]})
        return out
    if format == "acdc":
        spurious_p = options.get("spurious_p", 0.9)
        return [{"id": pid, "split": "train" if folder == "training" else "test", "group": group,
                 "cine": acdc_cine(q, group, size, mode, spurious_p)}
                for q, pid, folder, group, mode in acdc_plan(seed, size, options.get("spurious", False),
                                                              options.get("broken_test", False))]
    raise ValueError(f"unknown phantom format {format!r}; expected one of {', '.join(WRITERS)}")


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The ``phantom.json`` of a phantom dataset."""
    return json.loads((Path(root) / MANIFEST).read_text())


__all__ = ["CAMUS_RELEASES", "MANIFEST", "WRITERS", "camus_patient", "generate", "read_manifest", "staging", "synthesize"]
