"""`alan segment fit|eval`: parcel-to-segment (LV / LA) on a locked backbone + RAPTOR head."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from alan.cli._options import Device, device_option, out_dir, out_file
from alan.reports.tables import segmentation_table

segment_app = typer.Typer(help="Parcel-to-segment: LV / LA masks as unions of parcels (ALAN).", no_args_is_help=True)
console = Console()


def load_parcellator(backbone: Path | None, head: Path | None, work_size: int, batch_size: int = 32,
                     device: str = "cpu"):
    """Backbone + head artifacts on `device` as a `Parcellator` at `work_size`; with neither path,
    the pair shipped with alan (said in one line on stderr)."""
    from alan.models.parcellator import Parcellator

    parcellator = Parcellator.load(backbone, head, work_size=work_size, batch_size=batch_size, device=device)
    if parcellator.note:
        Console(stderr=True, highlight=False).print(f"note: {parcellator.note}")
    return parcellator


@segment_app.command("fit")
def fit(
    backbone: Path = typer.Option(None, "--backbone", help="Locked backbone artifact folder (default: the one shipped "
                                                           "with alan, with its head)."),
    head: Path = typer.Option(None, "--head", help="RAPTOR head artifact or raptor run folder (default: the one "
                                                   "shipped with alan)."),
    data: Path = typer.Option(..., "--data", help="Labelled dataset (EchoNet-Dynamic, CAMUS, ACDC)."),
    out: Path = out_file("Where to write the model JSON."),
    target: str = typer.Option("LV", "--target", help="Target segment: LV or LA (any label the reader gives)."),
    split: str = typer.Option("val", "--split", help="Split(s) to fit on (paper: EchoNet VAL, CAMUS training)."),
    format: str = typer.Option("auto", "--format", help="Dataset format (auto detects it)."),
    work_size: int = typer.Option(112, "--work-size", min=16, help="Square resolution for parcels and post-processing."),
    overlap: float = typer.Option(0.75, "--overlap", min=0.0, max=1.0,
                                  help="A parcel is identified with the target when this share of it lies inside the mask."),
    hit_rate: float = typer.Option(0.5, "--hit-rate", min=0.0, max=1.0,
                                   help="...in at least this share of the frames where it appears."),
    presence: float = typer.Option(0.3, "--presence", min=0.0, max=1.0,
                                   help="Only parcels present in at least this share of the frames are considered."),
    component_by: str = typer.Option("parcels", "--component-by",
                                     help="Which component is kept: parcels (most interior classes, the paper's), "
                                          "regions, or prior (most mass of a location prior learnt on the fitting "
                                          "masks, saved in the JSON; beyond the paper)."),
    prior_support: float = typer.Option(0.0, "--prior-support", min=0.0, max=1.0,
                                        help="Keep the target only where at least this share of the fitting masks "
                                             "lay (the location prior, saved in the JSON); 0: off, the paper's. "
                                             "Beyond the paper."),
    yields_to: list[str] = typer.Option([], "--yields-to",
                                        help="A target this one gives way to where both models claim a pixel (e.g. "
                                             "--target LA --yields-to LV; repeat for more). Eval and analyze then need "
                                             "that model too. Beyond the paper."),
    yield_limit: float = typer.Option(1.0, "--yield-limit", min=0.0, max=1.0,
                                      help="With --yields-to: the largest share of this target's mask it gives up "
                                           "in a frame; where the pixels both claim are more, the other target "
                                           "gives them up (1: always yield). Beyond the paper."),
    bright_cut: float = typer.Option(0.0, "--bright-cut", min=0.0, max=1.0,
                                     help="Cut the mask at pixels brighter than this fraction of the way from the "
                                          "target's median intensity to its surroundings' (a shut valve is a bright "
                                          "line), keeping the piece the location prior points to; 0: off, the "
                                          "paper's. Beyond the paper."),
    cut_against: list[str] = typer.Option([], "--cut-against",
                                          help="With --bright-cut: another target whose location prior (learnt from its "
                                               "masks on the same records) counts against a piece, e.g. --target LA "
                                               "--cut-against LV; repeat for more. Beyond the paper."),
    cut_against_weight: float = typer.Option(0.5, "--cut-against-weight", min=0.0,
                                             help="How much the --cut-against priors count against this target's own."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Frames per backbone batch."),
    device: Device = "auto",
) -> None:
    """Learn which parcels make up TARGET (the model's parameters are K booleans).

    Example:

        alan segment fit --backbone runs/dino --head runs/raptor --data data/echonet --split val --target LV --out lv.json
    """
    from alan.cli._options import select_records
    from alan.downstream.parcel_to_segment import COMPONENT_BY
    from alan.errors import AlanError
    from alan.pipelines.segment import fit_segmenter

    if component_by not in COMPONENT_BY:
        raise AlanError(f"--component-by must be one of {', '.join(COMPONENT_BY)}, got {component_by!r}")
    from alan.records import LABELS

    for name, given in (("--yields-to", yields_to), ("--cut-against", cut_against)):
        if target in given or len(set(given)) != len(given) or not set(given) <= set(LABELS):
            raise typer.BadParameter(f"must name distinct targets among {', '.join(LABELS)} other than --target {target}",
                                     param_hint=name)
    if cut_against and bright_cut <= 0:
        raise typer.BadParameter("chooses among the bright cut's pieces: give --bright-cut too", param_hint="--cut-against")
    _, records = select_records(data, format, split)
    parcellator = load_parcellator(backbone, head, work_size, batch_size, device_option(device))
    model = fit_segmenter(parcellator, records, target, progress=True, overlap=overlap, hit_rate=hit_rate, presence=presence,
                          component_by=component_by, prior_support=prior_support, yields_to=tuple(yields_to),
                          yield_limit=yield_limit, bright_cut=bright_cut, cut_against=tuple(cut_against),
                          cut_against_weight=cut_against_weight)
    model.to_json(out)
    console.print(f"{target}: interior parcels {model.interior_parcels_} of K={model.n_parcels_} "
                  f"({model.stats_['n_images']} frames) -> {out}")


@segment_app.command("eval")
def evaluate(
    model: Path = typer.Option(..., "--model", help="Model JSON from `alan segment fit`."),
    with_models: list[Path] = typer.Option([], "--with", help="Model JSON of a target MODEL yields to (its --yields-to), "
                                                              "or of one that yields to MODEL, run on the same "
                                                              "frames; repeat for more."),
    backbone: Path = typer.Option(None, "--backbone", help="Locked backbone artifact the model was fitted on "
                                                           "(default: the one shipped with alan)."),
    head: Path = typer.Option(None, "--head", help="RAPTOR head artifact the model was fitted on (default: the one "
                                                   "shipped with alan)."),
    data: Path = typer.Option(..., "--data", help="Labelled dataset to score on (any reader format)."),
    split: str = typer.Option("test", "--split", help="Split(s) to score, comma-separated, or 'all'."),
    format: str = typer.Option("auto", "--format", help="Dataset format (auto detects it)."),
    figures: Path = out_dir("Folder for the DICE histogram and best/worst overlays.", None, "--figures"),
    save_masks: Path = out_dir("Folder for NIfTI label maps of every scored frame, nnU-Net style: images/, "
                               "predictions/ and labels/ (ground truth), one CASE_PHASE.nii.gz each.", None,
                               "--save-masks"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    baseline_split: str = typer.Option("val", "--baseline-split",
                                       help="Split whose mean target mask is the constant-mask baseline shown beside "
                                            "the model (use the split the model was fitted on; 'none' to skip)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Frames per backbone batch."),
    device: Device = "auto",
) -> None:
    """DICE mean +- std per phase (ED, ES), the layout of the paper's Table 2, beside the constant-mask
    baseline (the mean target mask of --baseline-split, thresholded at 0.5, for every frame).

    Example:

        alan segment eval --model lv.json --backbone runs/dino --head runs/raptor --data data/echonet --split test --save-masks masks/
    """
    from alan.cli._options import select_records
    from alan.downstream.parcel_to_segment import ParcelToSegment
    from alan.pipelines.segment import evaluate_segmenter, segmentation_report

    seg = ParcelToSegment.from_json(model)
    others = {m.target: m for m in (ParcelToSegment.from_json(p) for p in with_models)}
    dataset, records = select_records(data, format, split)
    parcellator = load_parcellator(backbone, head, int(seg.provenance_.get("work_size", 112)), batch_size,
                                   device_option(device))
    baseline = None
    if baseline_split.lower() != "none":
        from alan.pipelines.segment import fit_baseline

        _, fit_records = select_records(data, format, baseline_split)
        baseline = fit_baseline(fit_records, seg.target, parcellator.work_size)
    result = evaluate_segmenter(seg, parcellator, records, progress=not as_json, baseline=baseline, others=others)
    report = segmentation_report({seg.target: result}, dataset.format, figures)
    if figures is not None:
        from alan.pipelines.segment import overlay_video

        video_record = next((r for r in records if (r.n_frames or 0) > 1), None)
        if video_record is not None:
            report["figures"].append(str(overlay_video(parcellator, {**others, seg.target: seg}, video_record,
                                                       Path(figures) / f"overlay_{dataset.format}_{seg.target}.mp4")))
        from alan.reports.protocol import write_segmentation_report

        report["report"] = str(write_segmentation_report(report, f"alan segment eval: {seg.target} on {dataset.format}",
                                                         Path(figures) / "report.html"))
    if save_masks is not None:
        from alan.pipelines.labelmaps import save_eval_masks

        report["saved_masks"] = str(save_masks_dir := save_eval_masks(result, records, save_masks))
        if not as_json:
            console.print(f"NIfTI label maps -> {save_masks_dir / 'predictions'}, {save_masks_dir / 'labels'}")
    if as_json:
        from alan.artifacts import dumps_json

        print(dumps_json(report))
        return
    console.print(segmentation_table(report, dataset.format))
    if report.get("ef"):
        ef = report["ef"]
        console.print(f"EF ({ef['method']}): MAE vs reference {ef['mae_pred_vs_reference']:.1f} points, median "
                      f"{ef['median_ae_pred_vs_reference']:.1f} (ground-truth masks: "
                      f"{ef['mae_truth_masks_vs_reference']:.1f}), n={ef['n']}, "
                      f"{ef['n_pred_implausible']} predicted EFs outside 0-100 %")


def register(app: typer.Typer) -> None:
    app.add_typer(segment_app, name="segment")
