"""Validator for the parcel-to-segment model JSON, a file meant to be edited by hand.

The model of the ALAN paper (Majchrowska et al., *Unlocking the Heart Using Adaptive Locked
Agnostic Networks*, section 3.2) is K booleans over the parcel classes of one RAPTOR head.
`validate_model` checks a loaded document completely (schema, types, lengths, provenance) and
returns every problem it finds, one line each, so a hand edit gets all its mistakes at once.

``interior_parcels`` is accepted in two explicit forms:

* **K booleans** (``[false, true, ...]``, JSON ``true``/``false`` only, exactly K of them): the
  model as the paper and the README describe it; entry i says whether parcel class i is interior;
* **parcel ids** (``[3, 17]``, JSON integers in 0..K-1, no repeats): what `to_json` writes.

A list mixing booleans and integers is refused (JSON ``true`` is not the id 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from alan.downstream.parcel_to_segment import FORMAT, FORMAT_VERSION
from alan.records import LABELS

REQUIRED = ("format", "format_version", "target", "n_parcels", "interior_parcels", "provenance")
OPTIONAL = ("note", "hyperparameters", "stats", "location_prior", "bright_level", "against_priors", "source", "picked_at",
            "picked_by")
#: Free-text fields (who made the model and how, e.g. ``"source": "picked"`` from `alan pick`).
TEXT_FIELDS = ("note", "source", "picked_at", "picked_by")
#: Provenance keys a model must record: the locked artifacts its parcel ids belong to.
PROVENANCE_REQUIRED = ("backbone_hash", "head_hash")

# name -> (kind, lower bound, upper bound); kinds: "unit" float in [lo, hi], "int" integer >= lo,
# "int?" integer >= lo or null, "float" finite number, "float>0" positive number, "bool", "choice",
# "targets" a list of distinct names among lo.
_HYPER_SPEC: dict[str, tuple[str, Any, Any]] = {
    "overlap": ("unit", 0.0, 1.0),
    "hit_rate": ("unit", 0.0, 1.0),
    "presence": ("unit", 0.0, 1.0),
    "min_region_size": ("int", 1, None),
    "n_parcels": ("int?", 1, None),
    "target": ("choice", LABELS, None),
    "largest_component": ("bool", None, None),
    "component_by": ("choice", ("parcels", "regions", "prior"), None),
    "prior_size": ("int", 1, None),
    "prior_support": ("unit", 0.0, 1.0),
    "enclaves": ("bool", None, None),
    "enclave_cutoff": ("int?", 0, None),
    "closing": ("bool", None, None),
    "closing_radius": ("int", 0, None),
    "snake": ("bool", None, None),
    "snake_alpha": ("float", None, None),
    "snake_beta": ("float", None, None),
    "snake_gamma": ("float>0", None, None),
    "snake_max_num_iter": ("int", 0, None),
    "snake_w_edge": ("float", None, None),
    "snake_sigma": ("float", 0.0, None),
    "snake_method": ("choice", ("batched", "skimage"), None),
    "fill": ("bool", None, None),
    "median_radius": ("int", 0, None),
    "yields_to": ("targets", LABELS, None),
    "yield_limit": ("unit", 0.0, 1.0),
    "bright_cut": ("unit", 0.0, 1.0),
    "cut_against": ("targets", LABELS, None),
    "cut_against_weight": ("float", 0.0, None),
}

# per-parcel statistics: name -> (element kind, nullable)
_STATS_LISTS: dict[str, tuple[str, bool]] = {
    "identified": ("bool", False),
    "presence": ("unit", True),
    "hit_rate": ("unit", True),
    "mean_overlap": ("unit", True),
    "n_present": ("count", False),
    "n_overlapping": ("count", False),
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_value(name: str, v: Any, kind: str, lo: Any, hi: Any) -> str | None:
    """A problem with hyperparameter `name` = `v`, or None."""
    if kind == "bool":
        return None if isinstance(v, bool) else f"hyperparameters.{name} must be true or false, got {_short(v)}"
    if kind == "choice":
        return None if v in lo else f"hyperparameters.{name} must be one of {', '.join(lo)}, got {_short(v)}"
    if kind == "targets":
        ok = isinstance(v, list) and all(isinstance(t, str) and t in lo for t in v) and len(set(v)) == len(v)
        return None if ok else (f"hyperparameters.{name} must be a list of distinct targets among "
                                f"{', '.join(lo)}, got {_short(v)}")
    if kind in ("int", "int?"):
        if v is None and kind == "int?":
            return None
        if not _is_int(v) or (lo is not None and v < lo):
            return f"hyperparameters.{name} must be an integer >= {lo}{' or null' if kind == 'int?' else ''}, got {_short(v)}"
        return None
    if not _is_number(v):
        return f"hyperparameters.{name} must be a finite number, got {_short(v)}"
    if kind == "unit" and not lo <= v <= hi:
        return f"hyperparameters.{name} must be in [{lo:g}, {hi:g}], got {v!r}"
    if kind == "float>0" and v <= 0:
        return f"hyperparameters.{name} must be > 0, got {v!r}"
    if kind == "float" and lo is not None and v < lo:
        return f"hyperparameters.{name} must be >= {lo:g}, got {v!r}"
    return None


def interior_ids(value: Any, k: int) -> tuple[list[int] | None, list[str]]:
    """The interior parcel ids of an ``interior_parcels`` entry (K booleans or ids), and its problems."""
    if not isinstance(value, list):
        return None, [f"interior_parcels must be a list (K booleans or parcel ids), got {type(value).__name__}"]
    bools = [isinstance(v, bool) for v in value]
    if value and all(bools):
        if len(value) != k:
            return None, [f"interior_parcels has {len(value)} booleans, expected n_parcels = {k} "
                          "(or write it as a list of parcel ids)"]
        return [i for i, b in enumerate(value) if b], []
    if any(bools):
        return None, ["interior_parcels mixes booleans and integers; use K booleans or a list of parcel ids"]
    problems = []
    bad_type = [v for v in value if not _is_int(v)]
    if bad_type:
        problems.append(f"interior_parcels must hold integer parcel ids or K booleans, found {_short(bad_type[0])}")
        return None, problems
    out_of_range = [v for v in value if not 0 <= v < k]
    if out_of_range:
        problems.append(f"interior_parcels {out_of_range} outside 0..{k - 1}")
    repeated = sorted({v for v in value if value.count(v) > 1})
    if repeated:
        problems.append(f"interior_parcels repeats parcel id(s) {repeated}")
    return (None if problems else sorted(value)), problems


def _check_stats(stats: Any, k: int | None) -> list[str]:
    if not isinstance(stats, Mapping):
        return [f"stats must be an object, got {type(stats).__name__}"]
    problems = []
    for key in sorted(set(stats) - {"n_images", *_STATS_LISTS}):
        problems.append(f"stats: unknown key {key!r}")
    if "n_images" in stats and not (_is_int(stats["n_images"]) and stats["n_images"] >= 0):
        problems.append(f"stats.n_images must be an integer >= 0, got {_short(stats['n_images'])}")
    for name, (kind, nullable) in _STATS_LISTS.items():
        if name not in stats:
            continue
        values = stats[name]
        if not isinstance(values, list):
            problems.append(f"stats.{name} must be a list of {k if k else 'K'} values, got {type(values).__name__}")
            continue
        if k is not None and len(values) != k:
            problems.append(f"stats.{name} has {len(values)} values, expected n_parcels = {k}")
        for i, v in enumerate(values):
            if v is None and nullable:
                continue
            ok = (isinstance(v, bool) if kind == "bool" else _is_int(v) and v >= 0 if kind == "count"
                  else _is_number(v) and 0 <= v <= 1)
            if not ok:
                want = {"bool": "true or false", "count": "an integer >= 0", "unit": "a number in [0, 1] or null"}[kind]
                problems.append(f"stats.{name}[{i}] must be {want}, got {_short(v)}")
                break
    return problems


def validate_model(doc: Any, hyper_names: Iterable[str] | None = None) -> list[str]:
    """Every problem of a parcel-to-segment model document, one line each (empty: valid).

    `hyper_names` are the hyperparameters the estimator accepts (default: those known here);
    a name it accepts that this module does not describe is accepted with any JSON scalar.
    """
    if not isinstance(doc, Mapping):
        return [f"not a parcel-to-segment model (the file holds a JSON {type(doc).__name__}, expected an object)"]
    if doc.get("format") != FORMAT:
        return [f"not a parcel-to-segment model (format is {_short(doc.get('format'))}, expected {FORMAT!r})"]
    if doc.get("format_version") != FORMAT_VERSION:
        return [f"unsupported format_version {_short(doc.get('format_version'))} (expected {FORMAT_VERSION})"]
    problems = [f"missing key {key!r}" for key in REQUIRED if key not in doc]
    problems += [f"unknown key {key!r}" for key in doc if key not in REQUIRED + OPTIONAL]

    target = doc.get("target")
    if "target" in doc and target not in LABELS:
        problems.append(f"target must be one of {', '.join(LABELS)}, got {_short(target)}")
    k = doc.get("n_parcels")
    if "n_parcels" in doc and not (_is_int(k) and k >= 1):
        problems.append(f"n_parcels must be an integer >= 1, got {_short(k)}")
        k = None
    if "interior_parcels" in doc and k is not None:
        problems += interior_ids(doc["interior_parcels"], k)[1]
    problems += [f"{key} must be a string" for key in TEXT_FIELDS if key in doc and not isinstance(doc[key], str)]

    names = set(_HYPER_SPEC if hyper_names is None else hyper_names)
    hyper = doc.get("hyperparameters", {})
    if not isinstance(hyper, Mapping):
        problems.append(f"hyperparameters must be an object, got {type(hyper).__name__}")
        hyper = {}
    for name, v in hyper.items():
        if name not in names:
            problems.append(f"hyperparameters: unknown name {name!r}")
        elif name in _HYPER_SPEC:
            problem = _check_value(name, v, *_HYPER_SPEC[name])
            if problem:
                problems.append(problem)
        elif isinstance(v, (list, dict)):
            problems.append(f"hyperparameters.{name} must be a single value")
    if _is_int(hyper.get("n_parcels")) and k is not None and hyper["n_parcels"] != k:
        problems.append(f"hyperparameters.n_parcels = {hyper['n_parcels']} differs from n_parcels = {k}")
    if "target" in hyper and target in LABELS and hyper["target"] in LABELS and hyper["target"] != target:
        problems.append(f"hyperparameters.target = {hyper['target']!r} differs from target = {target!r}")
    for name in ("yields_to", "cut_against"):
        if isinstance(hyper.get(name), list) and target in hyper[name]:
            problems.append(f"hyperparameters.{name} names the model's own target {target!r}")

    if "provenance" in doc:
        prov = doc["provenance"]
        if not isinstance(prov, Mapping):
            problems.append(f"provenance must be an object naming backbone_hash and head_hash, got {type(prov).__name__}")
        else:
            for key in PROVENANCE_REQUIRED:
                v = prov.get(key)
                if not isinstance(v, str) or not v.strip():
                    what = "missing" if key not in prov else f"empty or not a string ({_short(v)})"
                    problems.append(f"provenance.{key} is {what}: the model cannot be matched to its "
                                    f"{key.split('_')[0]}; refit it with alan segment fit")
            ws = prov.get("work_size")
            if "work_size" in prov and not (_is_int(ws) and ws >= 1):
                problems.append(f"provenance.work_size must be an integer >= 1, got {_short(ws)}")
    if "stats" in doc:
        problems += _check_stats(doc["stats"], k)
    problems += _check_prior(doc, hyper)
    problems += _check_bright(doc, hyper)
    problems += _check_against(doc, hyper)
    return problems


def _positive(v: Any) -> bool:
    return _is_number(v) and v > 0


def _check_bright(doc: Mapping[str, Any], hyper: Mapping[str, Any]) -> list[str]:
    """``bright_level``: a finite number, present exactly when ``bright_cut`` is above 0."""
    cut = hyper.get("bright_cut", 0)
    uses = _positive(cut)
    if "bright_level" not in doc:
        return [f"bright_level is missing: bright_cut {cut} needs the fitted intensity level"] if uses else []
    if not uses:
        return ["bright_level is given but bright_cut is 0 (it would be ignored)"]
    if not _is_number(doc["bright_level"]):
        return [f"bright_level must be a finite number, got {_short(doc['bright_level'])}"]
    return []


def _check_prior(doc: Mapping[str, Any], hyper: Mapping[str, Any]) -> list[str]:
    """``location_prior``: a square grid (list of equal-length lists) of numbers in [0, 1], present
    exactly when ``component_by`` is "prior", ``prior_support`` or ``bright_cut`` is above 0."""
    support = hyper.get("prior_support", 0)
    cut = hyper.get("bright_cut", 0)
    by_prior = hyper.get("component_by") == "prior"
    uses = by_prior or _positive(support) or _positive(cut)
    if "location_prior" not in doc:
        if not uses:
            return []
        why = ("component_by 'prior'" if by_prior
               else f"prior_support {support}" if _positive(support) else f"bright_cut {cut}")
        return [f"location_prior is missing: {why} needs the fitted prior grid"]
    if not uses:
        return ["location_prior is given but neither component_by 'prior' nor a prior_support or bright_cut > 0 "
                "uses it (it would be ignored)"]
    return _grid_problems("location_prior", doc["location_prior"], hyper)


def _check_against(doc: Mapping[str, Any], hyper: Mapping[str, Any]) -> list[str]:
    """``against_priors``: {target: grid} for exactly the ``cut_against`` targets, which need a
    ``bright_cut`` above 0."""
    names = hyper.get("cut_against", [])
    names = names if isinstance(names, list) else []
    grids = doc.get("against_priors", {})
    if names and not _positive(hyper.get("bright_cut", 0)):
        return ["hyperparameters.cut_against needs bright_cut > 0 (it weighs the bright cut's pieces)"]
    if not isinstance(grids, Mapping):
        return ["against_priors must be an object {target: grid}"]
    if set(grids) != set(names):
        return [f"against_priors holds {sorted(grids)} but hyperparameters.cut_against names {sorted(names)}"]
    return [p for t in names for p in _grid_problems(f"against_priors.{t}", grids[t], hyper)]


def _grid_problems(name: str, grid: Any, hyper: Mapping[str, Any]) -> list[str]:
    """Problems of a prior grid: square, numbers in [0, 1], `prior_size` on a side."""
    if not isinstance(grid, list) or not grid or not all(isinstance(r, list) for r in grid):
        return [f"{name} must be a list of rows (a square grid of numbers in [0, 1])"]
    n = len(grid)
    if any(len(r) != n for r in grid):
        return [f"{name} must be square: {n} rows of {n} numbers"]
    if not all(_is_number(v) and 0 <= v <= 1 for r in grid for v in r):
        return [f"{name} entries must be numbers in [0, 1]"]
    if _is_int(hyper.get("prior_size")) and hyper["prior_size"] != n:
        return [f"{name} is {n} x {n} but hyperparameters.prior_size = {hyper['prior_size']}"]
    return []


__all__ = ["FORMAT", "FORMAT_VERSION", "PROVENANCE_REQUIRED", "interior_ids", "validate_model"]
