"""The ALAN paper's protocol, shared by `alan reproduce alan` (real data) and `alan demo` (phantoms).

    backbone (locked)  ->  RAPTOR on EchoNet TRAIN  ->  parcel-to-segment fitted on EchoNet VAL
    (LV) and CAMUS training (LV, LA), tested on EchoNet TEST and CAMUS testing  ->  kNN bank on
    TMED-2 train, tested on TMED-2 test.

Each stage records its wall time; the result is one JSON-ready dict plus figures and an HTML report.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from alan.data import Dataset, open_dataset
from alan.errors import AlanError
from alan.models.parcellator import Parcellator
from alan.pipelines.segment import (collect_annotated, evaluate_segmenter, fit_baseline, fit_segmenter, overlay_video,
                                    segmentation_report)
from alan.training import RunOptions


@dataclass
class ProtocolConfig:
    """What the protocol trains and fits (defaults: the paper's where it gives them)."""

    n_parcels: int = 64
    raptor_epochs: int = 40
    raptor_max_steps: int = -1
    raptor_batch_size: int = 4
    raptor_preset: str = "reference"
    raptor_position: float = 0.0  # 0: the paper's head (see RaptorHead's position option)
    raptor_input_size: int | None = None  # frames at inference after training at the backbone's size (None: the same)
    component_by: str = "parcels"  # the paper's rule; "prior": a location prior picks the component
    prior_support: float = 0.0  # 0: the paper's; > 0: the target only where the location prior reaches it
    yields: dict[str, tuple[str, ...]] = field(default_factory=dict)  # target -> targets it gives way to (none: the paper's)
    yield_limit: float = 1.0  # the largest share of its mask a yielding target gives up (1: always yields)
    bright_cut: float = 0.0  # 0: the paper's; > 0: masks cut at bright pixels (the shut valve), see ParcelToSegment
    cut_against: dict[str, tuple[str, ...]] = field(default_factory=dict)  # target -> priors against its cut pieces
    cut_against_weight: float = 0.5
    view_features: str = "cls"  # the paper's CLS kNN; "grid": patch tokens on a 7 x 7 grid
    view_input_size: int | None = None  # frames for the view features (None: the backbone's own size)
    raptor_limit: int | None = None
    work_size: int = 112
    camus_targets: tuple[str, ...] = ("LV", "LA")
    ks: tuple[int, ...] = (2, 10, 20)
    view_k: int = 10  # the k whose accuracy is headlined: fixed in advance, never picked on the test split
    seed: int = 0
    progress: bool = True
    run: dict[str, Any] = field(default_factory=dict)


#: What each recipe changes in the protocol: "paper" is the ALAN paper's; "shipped" adds what the
#: shipped phantom models use, each beyond the paper and measured in docs/raptor.md and
#: docs/downstream.md on phantom patients the demo does not score: the head sees the tokens' grid
#: position and takes frames at 224 px at inference (a finer token grid), the kept component is
#: chosen by a location prior and cut to where it reaches 5 %, views use grid-pooled tokens of
#: frames at 224 px and are headlined at k=2 (the paper's k for its echo-trained backbone, and
#: the best k on those patients; the paper's recipe headlines k=10), and each mask is cut at
#: pixels brighter than a fifth of the way from the blood's to the wall's intensity, keeping the
#: piece the location prior points to (`bright_cut`: a shut valve is a bright line between the LV
#: and the LA), for the LA less half the LV's prior (`cut_against`). Neither recipe lets the LA
#: and LV give way to each other (`yields`, `yield_limit`): measured in docs/downstream.md, it helps on the built-in phantom's patients and
#: costs the LA on another generator's.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {"raptor_position": 0.0, "raptor_input_size": None, "component_by": "parcels", "prior_support": 0.0,
              "bright_cut": 0.0, "cut_against": {}, "cut_against_weight": 0.5, "yields": {}, "yield_limit": 1.0,
              "view_features": "cls", "view_input_size": None, "view_k": 10},
    "shipped": {"raptor_position": 1.0, "raptor_input_size": 224, "component_by": "prior", "prior_support": 0.05,
                "bright_cut": 0.2, "cut_against": {"LA": ("LV",)}, "cut_against_weight": 0.5, "yields": {},
                "yield_limit": 1.0, "view_features": "grid", "view_input_size": 224, "view_k": 2},
}


class Timer:
    def __init__(self, console: Console):
        self.times: dict[str, float] = {}
        self.console = console

    @contextmanager
    def stage(self, name: str):
        self.console.print(f"[bold]▸ {name}[/]")
        t0 = time.perf_counter()
        yield
        self.times[name] = round(time.perf_counter() - t0, 2)
        self.console.print(f"  done in {self.times[name]:.1f} s")


def _split(ds: Dataset, *names: str) -> list:
    recs = ds.split(*names)
    if not recs:
        raise AlanError(f"{ds.root}: no records in split {'/'.join(names)} (splits: {ds.splits()})")
    return recs


HELD_OUT_FRACTION = 0.2


def _annotated(records: list) -> list:
    return [r for r in records if any(i is not None and i in r.annotated for i in (r.ed, r.es))]


def _withheld_note(ds: Dataset, split: str) -> str:
    if ds.format == "camus" and any(r.meta.get("release") == "2019" for r in ds.records):
        return ("the CAMUS 2019 release withholds the ground truth of its testing patients (the current NIfTI "
                "release has it: pass its folder, with database_nifti/ and database_split/, to --camus to score "
                "on the official testing split)")
    return f"the {split} split of {ds.root} has no annotated ED/ES frames"


def scoring_sets(ds: Dataset, fit_split: tuple[str, ...], test_split: tuple[str, ...]) -> tuple[list, list, dict[str, Any]]:
    """(fit records, test records, what was scored): the protocol's splits, or, where the test split has
    no ground truth, the last `HELD_OUT_FRACTION` of the fitting split's patients (sorted by id) instead."""
    fit, test = _split(ds, *fit_split), _split(ds, *test_split)
    info: dict[str, Any] = {"fit": "/".join(fit_split), "test": "/".join(test_split), "note": None}
    if _annotated(test):
        return fit, test, info
    if not _annotated(fit):
        raise AlanError(f"{ds.root}: neither the {'/'.join(fit_split)} nor the {'/'.join(test_split)} split has "
                        f"annotated ED/ES frames; {_withheld_note(ds, '/'.join(test_split))}")
    patients = sorted({r.patient or r.id for r in _annotated(fit)})
    if len(patients) < 2:
        raise AlanError(f"{ds.root}: {_withheld_note(ds, '/'.join(test_split))}, and the {'/'.join(fit_split)} "
                        f"split has one annotated patient only: nothing to hold out")
    n_held = max(1, int(round(HELD_OUT_FRACTION * len(patients))))
    held = set(patients[-n_held:])
    test = [r for r in fit if (r.patient or r.id) in held]
    fit = [r for r in fit if (r.patient or r.id) not in held]
    name = "/".join(fit_split)
    info.update(fit=f"{name} minus held-out patients", test=f"held-out {name} patients ({n_held} of {len(patients)})",
                note=f"{_withheld_note(ds, '/'.join(test_split))}; scored on the last {n_held} of the {len(patients)} "
                     f"annotated {name} patients (held out, sorted by id) instead, fitted on the others")
    return fit, test, info


def run_protocol(backbone: Any, out: Path, *, echonet: Path | None, camus: Path | None, tmed2: Path | None,
                 config: ProtocolConfig, console: Console | None = None, timer: Timer | None = None,
                 head: Any = None) -> dict[str, Any]:
    """Run RAPTOR + parcel-to-segment + kNN views on the given datasets; returns the results dict.
    With a trained `head` (e.g. the one shipped with alan), RAPTOR is not trained again."""
    from alan.pipelines.views import evaluate_views, fit_views
    from alan.reports.figures import confusion

    console = console or Console()
    timer = timer or Timer(console)
    out = Path(out)
    fig_dir = out / "figures"
    results: dict[str, Any] = {"backbone": {"hash": getattr(backbone, "hash", None), "arch": backbone.config.arch},
                               "segmentation": {}, "stages_s": timer.times}
    eds = open_dataset(echonet, "echonet") if echonet else None
    cds = open_dataset(camus, "camus") if camus else None
    if eds is not None or cds is not None:
        train_ds = eds if eds is not None else cds
        if head is not None:
            results["raptor"] = {"hash": head.hash, "K": int(head.n_parcels), "trained_on": "given (not retrained)",
                                 "position": getattr(head, "position", 0.0),
                                 "input_size": getattr(head, "input_size", None)}
        else:
            head = _train_head(backbone, train_ds, out, config, timer, results)
        parcellator = Parcellator(backbone, head, work_size=config.work_size)
        results["segment_models"] = {}
        for ds, fit_split, test_split, targets in (
            (eds, ("val",), ("test",), ("LV",)),
            (cds, ("train",), ("test",), config.camus_targets),
        ):
            if ds is None:
                continue
            fit_records, test_records, scored = scoring_sets(ds, fit_split, test_split)
            if scored["note"]:
                console.print(f"[yellow]note:[/] {ds.format}: {scored['note']}")
            results.setdefault("scored_splits", {})[ds.format] = scored
            evals, fitted, baselines = {}, {}, {}
            fit_cache, test_cache = {}, {}  # an ED/ES frame's parcels, computed once for all its targets
            for target in targets:
                with timer.stage(f"parcel-to-segment {target} on {ds.format}"):
                    fit_frames = collect_annotated(fit_records, target, progress=config.progress)
                    yields_to = tuple(t for t in config.yields.get(target, ()) if t in targets)
                    against = (tuple(t for t in config.cut_against.get(target, ()) if t in targets)
                               if config.bright_cut > 0 else ())
                    model = fit_segmenter(parcellator, fit_frames, target, progress=config.progress,
                                          component_by=config.component_by,
                                          prior_support=config.prior_support, yields_to=yields_to,
                                          yield_limit=config.yield_limit if yields_to else 1.0,
                                          bright_cut=config.bright_cut, cut_against=against,
                                          cut_against_weight=config.cut_against_weight, cache=fit_cache)
                    baselines[target] = fit_baseline(fit_frames, target, config.work_size)
                    path = out / "models" / f"{ds.format}_{target}.json"
                    model.to_json(path)
                    fitted[target] = model
                    results["segment_models"][f"{ds.format}_{target}"] = str(path)
            for target in targets:  # all fitted first: a model may take pixels from another (yields)
                with timer.stage(f"scoring {target} on {ds.format}"):
                    evals[target] = evaluate_segmenter(fitted[target], parcellator, test_records,
                                                       progress=config.progress, baseline=baselines[target],
                                                       others=fitted, cache=test_cache)
            results["segmentation"][ds.format] = segmentation_report(evals, ds.format, fig_dir)
            video_record = next((r for r in test_records if (r.n_frames or 0) > 1), None)
            if video_record is not None:  # one test recording as a video for the HTML report
                video = overlay_video(parcellator, fitted, video_record, fig_dir / f"overlay_{ds.format}.mp4")
                results["segmentation"][ds.format].setdefault("figures", []).append(str(video))
    if tmed2:
        tds = open_dataset(tmed2, "tmed2")
        with timer.stage("kNN views on tmed2"):
            knn = fit_views(backbone, _split(tds, "train"), k=max(config.ks), progress=config.progress,
                            features=config.view_features, input_size=config.view_input_size)
            knn.save(out / "models" / "views_bank")
            views = evaluate_views(knn, backbone, _split(tds, "test"), ks=sorted({*config.ks, config.view_k}), progress=config.progress)
        k = str(config.view_k)
        views["k"] = config.view_k
        views["accuracy"] = views["by_k"][k]["accuracy"]
        views["figures"] = [str(confusion(np.array(views["by_k"][k]["confusion"]), views["classes"],
                                          fig_dir / "views_confusion.png", title=f"TMED-2 views, k={k}"))]
        results["views"] = views
    return results


def _train_head(backbone: Any, train_ds: Dataset, out: Path, config: ProtocolConfig, timer: Timer,
                results: dict[str, Any]) -> Any:
    from alan.models.raptor_module import train_raptor

    with timer.stage(f"RAPTOR (K={config.n_parcels}) on {train_ds.format} train"):
        records = _split(train_ds, "train")[: config.raptor_limit]
        opts = RunOptions(max_epochs=config.raptor_epochs, max_steps=config.raptor_max_steps,
                          batch_size=config.raptor_batch_size, seed=config.seed, progress=config.progress,
                          checkpoint_every_n_steps=None, **config.run)
        head = train_raptor(backbone, records, out / "raptor", n_parcels=config.n_parcels, loss=config.raptor_preset,
                            position=config.raptor_position,
                            opts=opts, data={"path": str(train_ds.root), "format": train_ds.format, "split": "train"})
    path = out / "raptor" / "head"
    if config.raptor_input_size is not None:  # same weights, frames fed larger at inference
        from alan.models.raptor import set_input_size

        path = out / "models" / "raptor_head"
        head = set_input_size(out / "raptor", config.raptor_input_size, path)
    results["raptor"] = {"hash": head.hash, "path": str(path), "K": config.n_parcels, "trained_on": train_ds.format,
                         "n_records": len(records), "position": config.raptor_position,
                         "input_size": config.raptor_input_size}
    return head


def flatten_segmentation(per_dataset: dict[str, Any]) -> dict[str, Any]:
    """results["segmentation"][target][phase]["dice_mean"], pooled over datasets (LV: EchoNet + CAMUS),
    with each dataset's own report kept under ["by_dataset"]."""
    import numpy as np

    flat: dict[str, Any] = {"by_dataset": per_dataset}
    pooled: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    for rep in per_dataset.values():
        for target, phases in rep["dice"].items():
            for phase, s in phases.items():
                if s["n"]:
                    pooled.setdefault((target, phase), []).append((s["mean"], s["std"], s["n"]))
    for (target, phase), parts in pooled.items():
        n = sum(p[2] for p in parts)
        mean = sum(p[0] * p[2] for p in parts) / n
        var = sum(p[2] * (p[1] ** 2 + (p[0] - mean) ** 2) for p in parts) / n
        flat.setdefault(target, {})[phase] = {"dice_mean": mean, "dice_std": float(np.sqrt(var)), "n": n}
    return flat
