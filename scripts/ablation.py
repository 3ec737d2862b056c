"""Ablation of parcel-to-segment post-processing on a finished `alan demo` / `reproduce` folder.

    python scripts/ablation.py DEMO_OUT            # prints a markdown table (docs/downstream.md)

Parcels are computed once per test set; each variant switches one step off
(`ParcelToSegment.set_params`), the interior parcels stay as fitted. The oracle row is the
per-frame union of parcel regions with >= 50% of their pixels inside the truth; the class-set rows
take the K booleans that best fit the fitting split as a plain union (`class_set_oracle`, greedy)
and score them on the test set as a plain union (how well parcel classes alone can name the
target) and with the paper's post-processing (for comparison; the set is not chosen for it).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from alan.data import open_dataset
from alan.downstream.parcel_to_segment import ParcelToSegment, class_set_oracle, region_oracle
from alan.metrics import dice
from alan.models.backbones import load_backbone
from alan.models.raptor import load_head
from alan.pipelines.segment import Parcellator, collect_annotated, masks_to_native, masks_to_work, to_work

VARIANTS = {
    "full (paper defaults)": {},
    "union of interior parcels only": dict(largest_component=False, enclaves=False, closing=False, snake=False, fill=False),
    "- largest_component": dict(largest_component=False),
    "component by regions, not parcels": dict(component_by="regions"),
    "- enclaves": dict(enclaves=False),
    "- closing": dict(closing=False),
    "- snake": dict(snake=False),
    "- fill": dict(fill=False),
    "+ median_radius=3 (reference)": dict(median_radius=3),
}


ORACLES = ("oracle union of parcel regions", "oracle best class set, plain union", "oracle best class set + post-processing")
FIT_SPLIT = {"echonet": "val", "camus": "train"}  # the protocol's fitting sets


def main(out: Path) -> None:
    info = json.loads((out / "results.json").read_text())
    backbone = load_backbone(info["backbone"]["path"])
    head = load_head(out / "raptor", backbone=backbone)
    parcellator = Parcellator(backbone, head)
    columns, table, speed = [], {v: [] for v in [*VARIANTS, *ORACLES]}, {}
    for key, path in info["segment_models"].items():
        fmt, target = key.split("_")
        ds = open_dataset(out / "data" / fmt, fmt)
        frames = collect_annotated(ds.split("test"), target)
        parcels = parcellator(to_work(frames.images, parcellator.work_size))
        phases = np.asarray(frames.phases)
        shapes = [m.shape for m in frames.masks]
        for phase in ("ED", "ES"):
            columns.append(f"{fmt} {target} {phase}")
        for name, params in VARIANTS.items():
            model = ParcelToSegment.from_json(path).set_params(**params)
            t0 = time.perf_counter()
            pred = model.predict(parcels)
            speed.setdefault(name, []).append(len(parcels) / (time.perf_counter() - t0))
            scores = np.array([dice(p, t) for p, t in zip(masks_to_native(pred, shapes), frames.masks)])
            table[name] += [f"{scores[phases == ph].mean() * 100:.1f} ± {scores[phases == ph].std() * 100:.1f}" for ph in ("ED", "ES")]
        oracle = np.atleast_1d(dice(region_oracle(parcels, masks_to_work(frames.masks, parcellator.work_size)),
                                    masks_to_work(frames.masks, parcellator.work_size)))
        table[ORACLES[0]] += [f"{oracle[phases == ph].mean() * 100:.1f}" for ph in ("ED", "ES")]
        fit = collect_annotated(ds.split(FIT_SPLIT[fmt]), target)
        fit_parcels = parcellator(to_work(fit.images, parcellator.work_size))
        classes, _ = class_set_oracle(fit_parcels, masks_to_work(fit.masks, parcellator.work_size))
        post = ParcelToSegment.from_json(path).with_interior(classes).predict(parcels)
        for name, pred in zip(ORACLES[1:], (np.isin(parcels, classes), post)):
            scores = np.array([dice(p, t) for p, t in zip(masks_to_native(pred, shapes), frames.masks)])
            table[name] += [f"{scores[phases == ph].mean() * 100:.1f}" for ph in ("ED", "ES")]
    print("| variant | " + " | ".join(columns) + " | frames/s |")
    print("|---" * (len(columns) + 2) + "|")
    for name, cells in table.items():
        fps = f"{np.mean(speed[name]):.0f}" if name in speed else ""
        print(f"| {name} | " + " | ".join(cells) + f" | {fps} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
