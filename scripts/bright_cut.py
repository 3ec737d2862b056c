"""Measure an image cue beyond the parcels: cut each predicted mask at bright pixels (a shut valve
is a thin bright line between two dark pools) and keep the piece with the most location prior.

    python scripts/bright_cut.py PHANTOM_DIR [PHANTOM_DIR ...] [--percentiles 80 85 90]

Each PHANTOM_DIR holds `echonet/` and `camus/` (as `alan synth echonet|camus DIR/echonet ...`
write them). With the shipped backbone and head and the shipped rule (location prior, support
0.05), the LV is fitted on EchoNet VAL, the LV and LA on CAMUS training, and scored on the test
records. The cut is the package's (`alan.downstream.parcel_to_segment.cut_bright`): pixels of the
work-size frame brighter than a level leave the mask; of the 4-connected pieces left, the one with
the most location-prior mass is kept, grown back by one pixel inside the mask, its holes filled.
The level here is the P-th percentile of the fitting frames' pixels inside the target masks.
Prints work-size DICE ED / ES pooled over the folders, without the cut and per percentile; with
`--relative A`, also at the level `ParcelToSegment(bright_cut=A)` learns (the median inside plus
A of the way to the median of a 3-pixel ring around the masks), the option the shipped recipe
uses (docs/downstream.md, "An image cue"). With `--against W`, also the LA fitted with
`bright_cut=0.2, cut_against=("LV",), cut_against_weight=W` (the LV's prior, learnt from the
same records' LV masks, counts against a piece), per W.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from alan.data import open_dataset
from alan.downstream.parcel_to_segment import bright_level, cut_bright
from alan.metrics import dice
from alan.models.parcellator import Parcellator
from alan.pipelines.protocol import scoring_sets
from alan.pipelines.segment import annotated_parcels, collect_annotated, fit_segmenter
from alan.transforms.spatial import masks_to_work, to_work

WORK = 112


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--percentiles", nargs="*", type=float, default=[80, 85, 90])
    ap.add_argument("--relative", nargs="*", type=float, default=[],
                    help="also cut at median(inside) + A x (median(3-px ring outside) - median(inside)), per A")
    ap.add_argument("--against", nargs="*", type=float, default=[],
                    help="also the LA with the LV's prior against its pieces at this weight (A = 0.2), per W")
    args = ap.parse_args()
    parcellator = Parcellator.load()
    rows: dict[tuple[str, float | str | None, str], list[float]] = {}
    for folder in args.folders:
        for fmt, fit_split, targets in (("echonet", "val", ("LV",)), ("camus", "train", ("LV", "LA"))):
            fit_recs, test_recs, _ = scoring_sets(open_dataset(folder / fmt, fmt), (fit_split,), ("test",))
            fit_cache, test_cache = {}, {}
            for target in targets:
                fit, test = collect_annotated(fit_recs, target), collect_annotated(test_recs, target)
                model = fit_segmenter(parcellator, fit, target, component_by="prior", prior_support=0.05,
                                      cache=fit_cache)
                fit_images, fit_masks = to_work(fit.images, WORK), masks_to_work(fit.masks, WORK)
                blood = fit_images[fit_masks]
                images, truth = to_work(test.images, WORK), masks_to_work(test.masks, WORK)
                parcels = annotated_parcels(parcellator, test, test_cache)
                pred = model.predict(parcels)
                prior = model.prior_at((WORK, WORK))
                levels = {None: None, **{p: float(np.percentile(blood, p)) for p in args.percentiles},
                          **{f"A={a:g}": bright_level(fit_images, fit_masks, a) for a in args.relative}}
                cuts = {pct: pred if thr is None else cut_bright(pred, images.astype(np.float32), thr, prior)
                        for pct, thr in levels.items()}
                for w in args.against:  # the LV weighs nothing against its pieces: its rows are the A = 0.2 cut
                    cut = fit_segmenter(parcellator, fit, target, component_by="prior", prior_support=0.05,
                                        bright_cut=0.2, cut_against=("LV",) if target == "LA" else (),
                                        cut_against_weight=w, cache=fit_cache)
                    cuts[f"A=0.2, LV against {w:g}"] = cut.predict(parcels, images)
                for pct, masks in cuts.items():
                    for i, phase in enumerate(test.phases):
                        rows.setdefault((f"{fmt} {target}", pct, phase), []).append(float(dice(masks[i], truth[i])))
    print("| cut at the P-th percentile of the target's pixels | EchoNet LV | CAMUS LV | CAMUS LA |")
    print("|---|---|---|---|")
    for pct in (None, *args.percentiles, *(f"A={a:g}" for a in args.relative),
                *(f"A=0.2, LV against {w:g}" for w in args.against)):
        cells = [" / ".join(f"{np.mean(rows[(k, pct, ph)]):.2f}" for ph in ("ED", "ES"))
                 for k in ("echonet LV", "camus LV", "camus LA")]
        print(f"| {'none' if pct is None else pct if isinstance(pct, str) else f'{pct:g}'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
