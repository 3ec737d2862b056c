"""Parcel-to-segment: a segment (LV, LA) as the union of *interior* parcel classes.

ALAN paper (Majchrowska et al., *Unlocking the Heart Using Adaptive Locked Agnostic Networks*), sections 3.2 and 4.2. The only learnt parameters
are K booleans. Fit (identification), on parcel maps with ground-truth masks:

- a *region* is a 4-connected component of one parcel class in one frame;
- a region *overlaps* the target when >= `overlap` (75%) of its pixels lie inside the mask;
- a class *overlaps in a frame* when at least one of its regions there overlaps;
- a class is *interior* when it overlaps in >= `hit_rate` (50%) of the frames where it is
  present AND is present in >= `presence` (30%) of all frames of the fitting set.

Predict, each step switchable for ablations:
union of interior classes (beyond the paper: cut to where the location prior reaches
`prior_support`) -> the 4-connected component holding the most interior parcels, i.e.
distinct interior classes (`component_by="parcels"`; "regions" counts regions instead) (tie:
larger area) -> enclaves (holes of that component, i.e. groups of exterior regions bordered only
by the component and not by the image edge, made of at most `enclave_cutoff` regions) ->
binary closing with disk(`closing_radius`) -> active contour on each component's outer contour
(a Kass snake on the mask smoothed by a Gaussian of `snake_sigma`) filled as a polygon -> holes
filled. See docs/downstream.md for every interpretation choice.

Everything runs on whole stacks at once (labelling with no links across frames, bincount
statistics, one contour tracing and one snake system for all frames, `alan.downstream.snake`);
`snake_method="skimage"` runs skimage's `active_contour` per component instead (the reference).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from skimage import draw, measure, morphology
from skimage.segmentation import active_contour

from alan.artifacts import atomic_write_json
from alan.downstream import check_provenance
from alan.downstream.snake import active_contours, boundary_cycles, fill_polygons, gaussian_stack
from alan.errors import ArtifactError

FORMAT = "alan.parcel_to_segment"
FORMAT_VERSION = 1
CHUNK = 512  # frames per vectorised pass: bounds memory, keeps the arrays cache-sized
SNAKE_BATCH = 64  # frames per batched snake system (measured: 0.50 ms/frame at 64, 0.61 at 384)

#: What "the component" is chosen by (see `ParcelToSegment`).
COMPONENT_BY = ("parcels", "regions", "prior")
_HYPER = (
    "overlap", "hit_rate", "presence", "min_region_size", "n_parcels", "target",
    "largest_component", "component_by", "prior_size", "prior_support", "enclaves", "enclave_cutoff", "closing",
    "closing_radius",
    "snake", "snake_alpha", "snake_beta", "snake_gamma", "snake_max_num_iter", "snake_w_edge",
    "snake_sigma", "snake_method", "fill", "median_radius", "yields_to", "yield_limit", "bright_cut",
    "cut_against", "cut_against_weight",
)
SNAKE_METHODS = ("batched", "skimage")


class ParcelToSegment(BaseEstimator):
    """Segment a target as the union of interior parcel classes, with shape post-processing.

    Parameters (paper defaults): overlap=0.75, hit_rate=0.5, presence=0.3, enclave_cutoff=8,
    closing_radius=10, snake beta=0.2, gamma=0.01, max_num_iter=10, w_edge=1. `component_by`
    ("parcels") is what "the component containing the most interior parcels" counts: parcels
    are class ids in the paper ("parcels (based on their IDs)") and in the reference code, so
    distinct interior classes; "regions" counts 4-connected regions; "prior" (beyond the paper)
    keeps the component with the largest mass of a location prior learnt on the fitting masks
    (`prior_`, their mean on a `prior_size` x `prior_size` grid, saved in the JSON as
    ``location_prior``: how often each place lay in the target). `prior_support` (0 = off, beyond
    the paper) keeps the target where that prior is at least `prior_support`: a pixel where fewer
    than that share of the fitting masks lay is never part of it (the cut is made before the
    component step, so a parcel region it crosses becomes two). `snake_alpha`
    is skimage's default (the paper gives none; the reference code used 0), `snake_sigma`=3 the
    reference's Gaussian on the mask. `min_region_size` (1 = off; the reference used 10) ignores
    smaller regions in the overlap test. `median_radius` (0 = off; the reference used 3) adds
    a final median filter. `n_parcels` (K) is inferred as max label + 1 when None.
    `snake_method` "batched" (default) fits all snakes of a stack as one system
    (`alan.downstream.snake`, the same snakes as skimage's up to rounding); "skimage" calls
    `skimage.segmentation.active_contour` per component (the reference implementation).
    `yields_to` (empty = off, beyond the paper) names targets this one gives way to: where their
    models' masks claim a pixel, this target does not (`predict_targets`, which runs the models
    together; `predict` alone gives this model's own mask). The LA yielding to the LV puts the
    boundary between the two at the LV's edge when a parcel spans the valve plane.
    `yield_limit` (1 = always yield, beyond the paper) is the largest share of this target's own
    mask it gives up in a frame: where the pixels both claim are a larger share, the other target
    gives them up instead. An LA mask that lies mostly inside the LV's is the LV running on
    through the valve plane into the LA, not the LA running up into the LV.
    `bright_cut` (0 = off, beyond the paper) uses the frames as well as the parcels: pixels brighter
    than `bright_level_` leave the final mask, and of the pieces left the one with the most
    location-prior mass is kept, grown back by one pixel, its holes filled. A shut valve is a
    thin bright line between two dark pools, which no parcel boundary need follow. The level is
    learnt in `fit` from the frames: the median intensity inside the fitting masks plus
    `bright_cut` times the way to the median of a 3-pixel ring around them (the wall), so it
    follows the data's own contrast; it is saved in the JSON as ``bright_level``.
    `cut_against` (empty = off, beyond the paper) names other targets whose location priors count
    against a piece in that choice: the piece kept is the one with the most mass of this target's
    prior minus `cut_against_weight` times theirs (learnt in `fit` from their masks on the fitting
    split, `against`; saved as ``against_priors``). Where the LA's mask runs up into the basal LV
    and the valve cuts it in two, the LV's piece can hold more LA prior than the LA's own (the LA
    lies at a different depth in every patient); the LV's prior tells the two apart.
    """

    def __init__(
        self,
        overlap: float = 0.75,
        hit_rate: float = 0.5,
        presence: float = 0.3,
        min_region_size: int = 1,
        n_parcels: int | None = None,
        target: str = "LV",
        largest_component: bool = True,
        component_by: str = "parcels",
        prior_size: int = 16,
        prior_support: float = 0.0,
        enclaves: bool = True,
        enclave_cutoff: int | None = 8,
        closing: bool = True,
        closing_radius: int = 10,
        snake: bool = True,
        snake_alpha: float = 0.01,
        snake_beta: float = 0.2,
        snake_gamma: float = 0.01,
        snake_max_num_iter: int = 10,
        snake_w_edge: float = 1.0,
        snake_sigma: float = 3.0,
        snake_method: str = "batched",
        fill: bool = True,
        median_radius: int = 0,
        yields_to: tuple[str, ...] = (),
        yield_limit: float = 1.0,
        bright_cut: float = 0.0,
        cut_against: tuple[str, ...] = (),
        cut_against_weight: float = 0.5,
    ):
        self.overlap = overlap
        self.hit_rate = hit_rate
        self.presence = presence
        self.min_region_size = min_region_size
        self.n_parcels = n_parcels
        self.target = target
        self.largest_component = largest_component
        self.component_by = component_by
        self.prior_size = prior_size
        self.prior_support = prior_support
        self.enclaves = enclaves
        self.enclave_cutoff = enclave_cutoff
        self.closing = closing
        self.closing_radius = closing_radius
        self.snake = snake
        self.snake_alpha = snake_alpha
        self.snake_beta = snake_beta
        self.snake_gamma = snake_gamma
        self.snake_max_num_iter = snake_max_num_iter
        self.snake_w_edge = snake_w_edge
        self.snake_sigma = snake_sigma
        self.snake_method = snake_method
        self.fill = fill
        self.median_radius = median_radius
        self.yields_to = yields_to
        self.yield_limit = yield_limit
        self.bright_cut = bright_cut
        self.cut_against = cut_against
        self.cut_against_weight = cut_against_weight

    # ------------------------------------------------------------------ fit (identification)
    def fit(self, parcel_maps: Any, masks: Any, provenance: Mapping[str, Any] | None = None,
            frames: Any = None, against: Mapping[str, Any] | None = None) -> ParcelToSegment:
        """Identify the interior parcel classes from parcel maps (N,H,W) and masks (N,H,W); `frames`
        (N,H,W), the images of the parcel maps, are needed with a `bright_cut`; `against`
        ({target: masks (M,H,W)}, any frames of the same size) with a `cut_against`."""
        parcels = _as_parcels(parcel_maps)
        masks = np.asarray(masks)
        if masks.ndim == 2:
            masks = masks[None]
        if masks.shape != parcels.shape:
            raise ValueError(f"masks have shape {masks.shape}, parcel maps {parcels.shape}")
        masks = masks.astype(bool, copy=False)
        if parcels.size == 0:
            raise ValueError("cannot fit parcel-to-segment on zero frames")
        k = int(parcels.max()) + 1 if self.n_parcels is None else int(self.n_parcels)
        if parcels.max() >= k:
            raise ValueError(f"parcel label {int(parcels.max())} >= n_parcels={k}")
        n = len(parcels)
        n_present = np.zeros(k, np.int64)
        n_overlapping = np.zeros(k, np.int64)
        overlap_sum = np.zeros(k)
        for sl in _chunks(n):
            p, o, f = _identify(parcels[sl], masks[sl], k, self.overlap, self.min_region_size)
            n_present += p
            n_overlapping += o
            overlap_sum += f
        with np.errstate(invalid="ignore", divide="ignore"):
            hit = np.where(n_present > 0, n_overlapping / np.maximum(n_present, 1), 0.0)
            mean_overlap = np.where(n_present > 0, overlap_sum / n_present, np.nan)
        presence = n_present / n if n else np.zeros(k)
        identified = (n_present > 0) & (hit >= self.hit_rate) & (presence >= self.presence)
        self.n_parcels_ = k
        self.interior_ = identified.copy()
        self.stats_ = {
            "n_images": n,
            "presence": presence,
            "hit_rate": hit,
            "mean_overlap": mean_overlap,
            "n_present": n_present,
            "n_overlapping": n_overlapping,
            "identified": identified,
        }
        for name in ("prior_support", "yield_limit", "bright_cut"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.target in self.yields_to:
            raise ValueError(f"a {self.target} model cannot yield to its own target")
        if self.bright_cut > 0:
            self.bright_level_ = bright_level(_as_frames(frames, parcels.shape, "fit"), masks, self.bright_cut)
        self.against_priors_ = self._against_priors(against, masks.shape[1:])
        if self.uses_prior:
            if int(self.prior_size) < 1:
                raise ValueError(f"prior_size must be >= 1, got {self.prior_size}")
            # rounded as the JSON file keeps it, so a saved model predicts exactly as the fitted one
            self.prior_ = _rounded(location_prior(masks, int(self.prior_size)))
        self.provenance_ = dict(provenance or {})
        # diagnostic, not saved to JSON: what the best possible K booleans would be on this fitting set
        self.best_class_set_ = class_set_oracle(parcels, masks)[0]
        self._path: Path | None = None
        return self

    def _against_priors(self, against: Mapping[str, Any] | None, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        if not self.cut_against:
            return {}
        if self.bright_cut <= 0:
            raise ValueError("cut_against chooses among the pieces of the bright cut: it needs bright_cut > 0")
        if self.target in self.cut_against or len(set(self.cut_against)) != len(self.cut_against):
            raise ValueError(f"cut_against must name distinct targets other than {self.target}, got {self.cut_against}")
        if self.cut_against_weight < 0:
            raise ValueError(f"cut_against_weight must be >= 0, got {self.cut_against_weight}")
        missing = [t for t in self.cut_against if against is None or t not in against or not len(against[t])]
        if missing:
            raise ValueError(f"cut_against {', '.join(missing)} needs their masks on the fitting split (against=...)")
        priors = {}
        for t in self.cut_against:
            m = np.asarray(against[t], dtype=bool)
            m = m[None] if m.ndim == 2 else m
            if m.shape[1:] != tuple(shape):
                raise ValueError(f"{t} masks have frames of {m.shape[1:]}, the target's {tuple(shape)}")
            priors[t] = _rounded(location_prior(m, int(self.prior_size)))
        return priors

    def cut_field(self, shape: tuple[int, int]) -> np.ndarray:
        """What the bright cut's pieces are weighed by at `shape`: the location prior, less
        `cut_against_weight` times the priors of the `cut_against` targets."""
        field = self.prior_at(shape)
        for grid in self.against_priors_.values():
            field = field - self.cut_against_weight * _grid_at(grid, shape)
        return field

    @property
    def uses_prior(self) -> bool:
        """Whether predict needs the location prior (`component_by="prior"`, a `prior_support` or a
        `bright_cut`)."""
        return self.component_by == "prior" or self.prior_support > 0 or self.bright_cut > 0

    def with_interior(self, classes: Any) -> ParcelToSegment:
        """A copy of this fitted model whose interior parcels are `classes` (same post-processing)."""
        check_is_fitted(self, "interior_")
        other = copy.deepcopy(self)
        other.interior_ = np.isin(np.arange(self.n_parcels_), np.asarray(classes, dtype=np.int64))
        return other

    @property
    def interior_parcels_(self) -> list[int]:
        """The interior parcel ids (the same K booleans as a list)."""
        check_is_fitted(self, "interior_")
        return [int(i) for i in np.flatnonzero(self.interior_)]

    def prior_at(self, shape: tuple[int, int]) -> np.ndarray:
        """The location prior (`prior_`, the fitting masks' mean on a coarse grid) at `shape`, bilinear."""
        check_is_fitted(self, "prior_")
        return _grid_at(self.prior_, shape)

    # ------------------------------------------------------------------ predict
    def predict(self, parcel_maps: Any, frames: Any = None) -> np.ndarray:
        """Masks bool (N,H,W) (or (H,W) for one frame); a frame without interior parcels is empty.
        `frames` (the images of the parcel maps, same shape) are needed with a `bright_cut`."""
        check_is_fitted(self, "interior_")
        raw = np.asarray(parcel_maps)
        parcels = _as_parcels(raw)
        if parcels.size and parcels.max() >= self.n_parcels_:
            raise ValueError(f"parcel label {int(parcels.max())} >= n_parcels={self.n_parcels_} of this model")
        images = _as_frames(frames, parcels.shape, "predict") if self.bright_cut > 0 else None
        prior = self.cut_field(parcels.shape[1:]) if images is not None else None
        out = np.zeros(parcels.shape, dtype=bool)
        for sl in _chunks(len(parcels)):
            out[sl] = self._predict_stack(parcels[sl])
            if images is not None:
                out[sl] = cut_bright(out[sl], images[sl], self.bright_level_, prior)
        return out[0] if raw.ndim == 2 else out

    def score(self, parcel_maps: Any, masks: Any) -> float:
        """Mean DICE of `predict(parcel_maps)` against `masks`."""
        from alan.metrics import dice

        return float(np.mean(dice(self.predict(parcel_maps), np.asarray(masks, dtype=bool))))

    def _predict_stack(self, parcels: np.ndarray) -> np.ndarray:
        interior, k = self.interior_, self.n_parcels_
        if self.prior_support > 0:  # outside the support: one more class, never interior
            outside = self.prior_at(parcels.shape[1:]) < self.prior_support
            parcels = parcels.astype(np.min_scalar_type(k), copy=True)
            parcels[:, outside] = k
            interior, k = np.r_[interior, False], k + 1
        mask = interior[parcels]
        if not mask.any():
            return mask
        if self.largest_component or self.enclaves:
            regions, region_frame = _label_regions(parcels, k)
        if self.largest_component:
            if self.component_by not in COMPONENT_BY:
                raise ValueError(f"component_by must be one of {COMPONENT_BY}, got {self.component_by!r}")
            region_class = weight = None
            if self.component_by == "parcels":
                region_class = np.zeros(len(region_frame), dtype=np.int64)
                region_class[regions.ravel()] = parcels.ravel()
            elif self.component_by == "prior":
                weight = self.prior_at(parcels.shape[1:])
            mask = _keep_best_component(mask, regions, region_frame, region_class, weight)
        if self.enclaves:
            mask = _add_enclaves(mask, regions, len(region_frame), self.enclave_cutoff)
        if self.closing and self.closing_radius > 0:
            mask = binary_closing_disk(mask, int(self.closing_radius))
        if self.snake:
            mask = self._snake_stack(mask)
        if self.fill:
            mask = fill_holes(mask)
        if self.median_radius and self.median_radius > 0:
            r = int(self.median_radius)
            mask = ndimage.median_filter(mask.view(np.uint8), footprint=morphology.disk(r)[None].astype(bool)) > 0
        return mask

    def _snake_stack(self, mask: np.ndarray) -> np.ndarray:
        if self.snake_method not in SNAKE_METHODS:
            raise ValueError(f"snake_method must be one of {SNAKE_METHODS}, got {self.snake_method!r}")
        out = np.zeros_like(mask)
        frames = np.flatnonzero(mask.reshape(len(mask), -1).any(1))
        if len(frames) == 0:
            return out
        if min(mask.shape[1:]) < 3:  # no quadratic spline on the frame: nothing for a snake to follow
            return mask.copy()
        if self.snake_method == "batched":
            for start in range(0, len(frames), SNAKE_BATCH):
                sel = frames[start : start + SNAKE_BATCH]
                out[sel] = self._snake_batched(mask[sel], gaussian_stack(mask[sel], self.snake_sigma))
            return out
        smooth = np.zeros(mask.shape, dtype=np.float32)
        smooth[frames] = ndimage.gaussian_filter(
            mask[frames].astype(np.float32), sigma=(0, self.snake_sigma, self.snake_sigma), mode="nearest", truncate=4.0
        )
        comp, _ = label_planes(mask)
        for i, sl in enumerate(ndimage.find_objects(comp), start=1):
            f = sl[0].start
            rr, cc = _snake_component(
                comp[sl][0] == i, (sl[1].start, sl[2].start), smooth[f], alpha=self.snake_alpha, beta=self.snake_beta,
                gamma=self.snake_gamma, w_edge=self.snake_w_edge, max_num_iter=self.snake_max_num_iter,
            )
            out[f, rr, cc] = True
        return out

    def _snake_batched(self, mask: np.ndarray, smooth: np.ndarray) -> np.ndarray:
        """The snake step on frames that all hold a mask: every component's snake at once."""
        contours, frame, _ = boundary_cycles(mask)
        fitted = active_contours(
            smooth, contours, frame, alpha=self.snake_alpha, beta=self.snake_beta, gamma=self.snake_gamma,
            w_edge=self.snake_w_edge, max_num_iter=self.snake_max_num_iter,
        )
        return fill_polygons(fitted, frame, mask.shape)

    # ------------------------------------------------------------------ persistence
    def check_provenance(self, provenance: Mapping[str, Any] | None) -> None:
        """Raise `ArtifactError` if `provenance` (e.g. backbone/head hashes) differs from the fit's."""
        check_is_fitted(self, "interior_")
        given = dict(provenance or {})
        k = given.pop("n_parcels", None)
        path = getattr(self, "_path", None)
        if k is not None and int(k) != self.n_parcels_:
            raise ArtifactError(f"{path or 'model'}: parcel-to-segment model ({self.target}) is for K={self.n_parcels_} "
                                f"parcels, the head has K={int(k)}; use the head it was fitted with")
        expected = {key: v for key, v in self.provenance_.items() if key != "n_parcels"}
        check_provenance(expected, given, what=f"parcel-to-segment model ({self.target})", path=path)

    def to_dict(self) -> dict[str, Any]:
        check_is_fitted(self, "interior_")
        stats = self.stats_
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "target": self.target,
            "n_parcels": self.n_parcels_,
            "interior_parcels": self.interior_parcels_,
            "note": (
                "interior_parcels is what the model uses and may be edited by hand; "
                "stats.identified is what fitting found (kept for the record)"
            ),
            "hyperparameters": {name: getattr(self, name) for name in _HYPER}
            | {"yields_to": list(self.yields_to), "cut_against": list(self.cut_against)},
            "provenance": self.provenance_,
            **({"location_prior": _rounded(self.prior_).tolist()} if self.uses_prior else {}),
            **({"bright_level": float(self.bright_level_)} if self.bright_cut > 0 else {}),
            **({"against_priors": {t: _rounded(g).tolist() for t, g in self.against_priors_.items()}}
               if self.cut_against else {}),
            "stats": {
                "n_images": int(stats["n_images"]),
                "identified": [bool(b) for b in stats["identified"]],
                "presence": _floats(stats["presence"]),
                "hit_rate": _floats(stats["hit_rate"]),
                "mean_overlap": _floats(stats["mean_overlap"]),
                "n_present": [int(v) for v in stats["n_present"]],
                "n_overlapping": [int(v) for v in stats["n_overlapping"]],
            },
        }

    def to_json(self, path: str | Path) -> None:
        """Write the model as a small human-readable JSON file (atomically); an existing `path` is
        replaced only if it is an earlier parcel-to-segment model."""
        check_model_output(path)
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_json(cls, path: str | Path) -> ParcelToSegment:
        """Load a model written by `to_json`; `interior_parcels` (possibly hand-edited) is used."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise ArtifactError(f"{path}: no such parcel-to-segment model file") from None
        except IsADirectoryError:
            raise ArtifactError(f"{path}: is a folder, expected a parcel-to-segment model JSON file") from None
        except UnicodeDecodeError:
            raise ArtifactError(f"{path}: not a text file (expected a parcel-to-segment model JSON file)") from None
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
        return cls.from_dict(doc, path)

    @classmethod
    def from_dict(cls, doc: Any, path: str | Path | None = None) -> ParcelToSegment:
        """A model from its JSON document, validated in full (`alan.downstream.model_schema`):
        every problem is one line of the `ArtifactError` raised, prefixed by `path`."""
        from alan.downstream.model_schema import interior_ids, validate_model

        problems = validate_model(doc, _HYPER)
        if problems:
            where = f"{path}: " if path is not None else ""
            raise ArtifactError("\n".join(where + p for p in problems))
        k = int(doc["n_parcels"])
        ids, _ = interior_ids(doc["interior_parcels"], k)
        hyper = {name: v for name, v in doc.get("hyperparameters", {}).items() if name in _HYPER}
        hyper["target"] = doc["target"]
        hyper.setdefault("component_by", "regions")  # files written before the option counted regions
        hyper["yields_to"] = tuple(hyper.get("yields_to", ()))
        hyper["cut_against"] = tuple(hyper.get("cut_against", ()))
        stats = doc.get("stats", {})
        interior = np.zeros(k, dtype=bool)
        interior[ids] = True
        prior = doc.get("location_prior")
        model = cls.from_interior(interior, doc["provenance"],
                                  prior=None if prior is None else np.asarray(prior, dtype=np.float32),
                                  against_priors=doc.get("against_priors"), **hyper)
        if model.bright_cut > 0:
            model.bright_level_ = float(doc["bright_level"])

        def arr(name: str, dtype: Any, fill: Any) -> np.ndarray:
            v = stats.get(name)
            if v is None:
                return np.full(k, fill, dtype=dtype)
            return np.array([fill if x is None else x for x in v], dtype=dtype)

        model.stats_ = {
            "n_images": int(stats.get("n_images", 0)),
            "presence": arr("presence", float, np.nan),
            "hit_rate": arr("hit_rate", float, np.nan),
            "mean_overlap": arr("mean_overlap", float, np.nan),
            "n_present": arr("n_present", np.int64, 0),
            "n_overlapping": arr("n_overlapping", np.int64, 0),
            "identified": arr("identified", bool, False),
        }
        model._path = None if path is None else Path(path)
        return model

    @classmethod
    def from_interior(cls, interior: Any, provenance: Mapping[str, Any], *, prior: np.ndarray | None = None,
                      against_priors: Mapping[str, Any] | None = None, **hyperparameters: Any) -> ParcelToSegment:
        """A model whose K booleans are given rather than fitted (an expert's choice, a picked
        model), with no fitting statistics; `prior` is the location prior ``component_by="prior"`` needs,
        `against_priors` ({target: grid}) those a `cut_against` needs."""
        interior = np.asarray(interior)
        if interior.ndim != 1 or interior.dtype != bool or len(interior) == 0:
            raise ValueError(f"interior must be K booleans, got {interior.dtype} of shape {interior.shape}")
        k = len(interior)
        hyperparameters.pop("n_parcels", None)
        model = cls(n_parcels=k, **hyperparameters)
        if model.uses_prior and prior is None:
            raise ValueError("component_by='prior' and prior_support > 0 need the location prior (prior=...)")
        model.n_parcels_ = k
        model.interior_ = interior.copy()
        if prior is not None:
            model.prior_ = _rounded(np.asarray(prior))  # as fit keeps it: saved and reloaded, it cuts the same
        against_priors = dict(against_priors or {})
        if set(against_priors) != set(model.cut_against):
            raise ValueError(f"cut_against {list(model.cut_against)} needs exactly their priors, got {list(against_priors)}")
        model.against_priors_ = {t: _rounded(np.asarray(against_priors[t])) for t in model.cut_against}
        model.stats_ = {
            "n_images": 0,
            "presence": np.full(k, np.nan),
            "hit_rate": np.full(k, np.nan),
            "mean_overlap": np.full(k, np.nan),
            "n_present": np.zeros(k, np.int64),
            "n_overlapping": np.zeros(k, np.int64),
            "identified": np.zeros(k, dtype=bool),
        }
        model.provenance_ = dict(provenance)
        model._path = None
        return model

    @property
    def hand_edited_(self) -> list[int]:
        """Parcel ids whose interior flag differs from what fitting identified."""
        check_is_fitted(self, "interior_")
        return [int(i) for i in np.flatnonzero(self.interior_ != self.stats_["identified"])]


def unmet_yields(models: Mapping[str, ParcelToSegment]) -> list[tuple[str, str]]:
    """(target, target it yields to) for every `yields_to` entry of `models` whose model is not among them."""
    present = {m.target for m in models.values()}
    return [(m.target, other) for m in models.values() for other in m.yields_to if other not in present]


def predict_targets(models: Mapping[str, ParcelToSegment], parcel_maps: Any,
                    frames: Any = None) -> dict[str, np.ndarray]:
    """Masks of several targets on the same parcel maps, {name: bool (N, H, W)}: each model's own
    mask (`ParcelToSegment.predict`), then, for every target a model `yields_to`, the pixels both
    own masks claim are removed from the yielding model's mask, or, in the frames where they are
    more than its `yield_limit` share of its own mask, from the other's. Every decision is made on
    the own masks, so the result does not depend on the order of `models`. A target yielded to
    must be among the models. `frames`: the images of the parcel maps, for models with a `bright_cut`."""
    if unmet := unmet_yields(models):
        target, other = unmet[0]
        raise ValueError(f"the {target} model yields to {other}: give the {other} model with it")
    own = {name: m.predict(parcel_maps, frames) for name, m in models.items()}
    name_of = {m.target: name for name, m in models.items()}
    out = {name: mask.copy() for name, mask in own.items()}
    for name, m in models.items():
        for other in m.yields_to:
            contested = own[name] & own[name_of[other]]
            share = contested.sum((1, 2)) / np.maximum(own[name].sum((1, 2)), 1)
            gives = (share <= m.yield_limit)[:, None, None]
            out[name] &= ~(contested & gives)
            out[name_of[other]] &= ~(contested & ~gives)
    return out


def bright_level(frames: np.ndarray, masks: np.ndarray, fraction: float) -> float:
    """The `bright_cut` level of fitting frames (N,H,W) and their target masks: the median intensity
    inside the masks plus `fraction` of the way to the median of a 3-pixel ring around them."""
    ring = np.stack([ndimage.binary_dilation(m, iterations=3) & ~m for m in masks])
    if not masks.any() or not ring.any():
        raise ValueError("bright_cut needs fitting masks with pixels inside and around them")
    inside, around = float(np.median(frames[masks])), float(np.median(frames[ring]))
    return round(inside + fraction * (around - inside), 3)


def cut_bright(masks: np.ndarray, frames: np.ndarray, level: float, prior: np.ndarray) -> np.ndarray:
    """Masks (N,H,W) cut where `frames` > `level`: per frame the 4-connected piece left with the most
    `prior` mass (H,W), grown back by one pixel inside the mask, holes filled; a frame left in one
    piece (or none) keeps its mask (see `bright_cut`). All frames at once, no links across frames,
    on the box around every mask plus a pixel (so holes and growth are those of the whole frame)."""
    rows, cols = np.flatnonzero(masks.any(axis=(0, 2))), np.flatnonzero(masks.any(axis=(0, 1)))
    if not len(rows):
        return masks.copy()
    box = (slice(None), slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
    out = masks.copy()
    out[box] = _cut_bright_box(masks[box], frames[box], level, prior[box[1:]])
    return out


def _cut_bright_box(masks: np.ndarray, frames: np.ndarray, level: float, prior: np.ndarray) -> np.ndarray:
    pieces, n = label_planes(masks & (frames <= level))
    if n == 0:
        return masks.copy()
    last = np.maximum.accumulate(pieces.reshape(len(masks), -1).max(axis=1))  # labels run frame by frame
    split = np.diff(np.r_[0, last]) > 1
    if not split.any():
        return masks.copy()
    pieces = pieces[split]
    at = np.flatnonzero(pieces)
    label = pieces.ravel()[at]
    mass = np.bincount(label, weights=prior.ravel()[at % prior.size], minlength=n + 1)[1:]
    frame_of = np.searchsorted(last, np.arange(1, n + 1))
    ids = np.arange(1, n + 1)
    order = np.lexsort((-ids, mass, frame_of))  # per frame: most mass, then the first label
    best = order[np.r_[frame_of[order][1:] != frame_of[order][:-1], True]]
    keep = np.zeros(n + 1, dtype=bool)
    keep[ids[best]] = True
    kept = keep[pieces]
    grown = kept.copy()  # grown by one pixel, 4-connected, within each frame
    grown[:, 1:] |= kept[:, :-1]
    grown[:, :-1] |= kept[:, 1:]
    grown[:, :, 1:] |= kept[:, :, :-1]
    grown[:, :, :-1] |= kept[:, :, 1:]
    out = masks.copy()
    out[split] = fill_holes(masks[split] & grown)
    return out


def _as_frames(frames: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    if frames is None:
        raise ValueError(f"a model with bright_cut > 0 needs the frames of the parcel maps to {what}")
    images = np.asarray(frames)
    images = images[None] if images.ndim == 2 else images
    if images.shape != tuple(shape):
        raise ValueError(f"frames have shape {images.shape}, parcel maps {tuple(shape)}")
    return images.astype(np.float32, copy=False)


# ---------------------------------------------------------------------- vectorised pieces
def _as_parcels(parcel_maps: Any) -> np.ndarray:
    p = np.asarray(parcel_maps)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3:
        raise ValueError(f"parcel maps must be (N,H,W) or (H,W), got shape {p.shape}")
    if p.dtype.kind == "f":
        if not np.all(p == np.round(p)):
            raise ValueError("parcel maps must hold integer labels")
        p = p.astype(np.int64)
    elif p.dtype.kind == "b":
        p = p.astype(np.uint8)  # a boolean array would index as a mask, not look labels up
    elif p.dtype.kind not in "iu":
        raise ValueError(f"parcel maps must hold integer labels, got dtype {p.dtype}")
    if p.size and p.min() < 0:
        raise ValueError("parcel labels must be >= 0")
    return p


def _chunks(n: int) -> Iterator[slice]:
    for start in range(0, n, CHUNK):
        yield slice(start, min(n, start + CHUNK))


def label_planes(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of each frame of a bool stack (N, H, W), labelled 1..n over the stack
    in raster order (frame by frame), no links across frames: `ndimage.label` with a plane-only
    cross, by OpenCV's labeller (3x faster) on the frames stacked into one image, a row of
    background between them."""
    n, h, w = mask.shape
    tall = np.zeros((n, h + 1, w), dtype=np.uint8)
    tall[:, :h] = mask
    count, labels = cv2.connectedComponents(tall.reshape(n * (h + 1), w), connectivity=4, ltype=cv2.CV_32S)
    return labels.reshape(n, h + 1, w)[:, :h], count - 1


def _label_regions(parcels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Regions (4-connected components of one class in one frame), labelled 1..R over the stack,
    and the frame of each label (index 0 unused)."""
    n = len(parcels)
    # Adding k on odd frames makes neighbouring frames differ everywhere: no links across frames.
    key = parcels.astype(np.int32) + (k * (np.arange(n, dtype=np.int32) % 2))[:, None, None]
    regions = measure.label(key, background=-1, connectivity=1)
    flat = regions.reshape(n, -1)
    lo, hi = flat.min(1), flat.max(1)
    n_regions = int(hi.max())
    if lo[0] == 1 and np.all(lo[1:] == hi[:-1] + 1):  # labels are contiguous per frame (raster order)
        frame = np.searchsorted(hi, np.arange(n_regions + 1), side="left")
    else:
        frame = np.zeros(n_regions + 1, dtype=np.int64)
        frame[regions.ravel()] = np.repeat(np.arange(n), flat.shape[1])
    return regions, frame


def _identify(
    parcels: np.ndarray, masks: np.ndarray, k: int, overlap: float, min_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class: frames present, frames overlapping, and the summed per-frame inside fraction."""
    n = len(parcels)
    regions, frame = _label_regions(parcels, k)
    flat = regions.ravel()
    r = len(frame)
    size = np.bincount(flat, minlength=r)
    inside = np.bincount(flat[masks.ravel()], minlength=r)
    cls = np.zeros(r, dtype=np.int64)
    cls[flat] = parcels.ravel()
    ids = np.arange(1, r)
    frac = inside[ids] / size[ids]
    ok = ids[(frac >= overlap) & (size[ids] >= min_size)]
    present = np.zeros((n, k), dtype=bool)
    present[frame[ids], cls[ids]] = True
    overlapping = np.zeros((n, k), dtype=bool)
    overlapping[frame[ok], cls[ok]] = True
    key = frame[ids] * k + cls[ids]
    pix = np.bincount(key, weights=size[ids], minlength=n * k).reshape(n, k)
    ins = np.bincount(key, weights=inside[ids], minlength=n * k).reshape(n, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        class_frac = np.where(pix > 0, ins / np.maximum(pix, 1), 0.0)
    return present.sum(0), overlapping.sum(0), class_frac.sum(0)


def check_model_output(path: str | Path) -> None:
    """Refuse a model output path that holds anything but an earlier parcel-to-segment model
    (a folder, or any other file): writing a model never replaces user data."""
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{path}: is a folder; expected a model JSON file path")
    if not path.exists():
        return
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ArtifactError(f"{path}: exists and is not a parcel-to-segment model; refusing to replace it "
                            "(choose another --out)")


def _rounded(prior: np.ndarray) -> np.ndarray:
    """A location prior at the 3 decimals the model JSON keeps (float32, as predict uses it)."""
    return np.array([[round(float(v), 3) for v in row] for row in prior], dtype=np.float32)


def _grid_at(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A prior grid (size x size) at a frame's `shape` (H, W), bilinear."""
    h, w = shape
    return cv2.resize(np.asarray(grid, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def location_prior(masks: np.ndarray, size: int) -> np.ndarray:
    """Mean of bool masks (N, H, W) on a size x size grid (area average): how often each place
    lies in the target in the fitting frames."""
    mean = np.asarray(masks, dtype=np.float32).mean(axis=0)
    return cv2.resize(mean, (size, size), interpolation=cv2.INTER_AREA).clip(0, 1)


def _keep_best_component(mask: np.ndarray, regions: np.ndarray, region_frame: np.ndarray,
                         region_class: np.ndarray | None = None, weight: np.ndarray | None = None) -> np.ndarray:
    """Per frame, keep the 4-connected component of `mask` with the most distinct parcel classes
    (`region_class` given), the largest sum of a per-pixel `weight` (H, W) (a location prior), or
    the most regions (tie: larger area, then first in raster order). `mask` is a union of whole
    regions."""
    comp, n_comp = label_planes(mask)
    if n_comp <= 1:
        return mask
    sel = mask.ravel()
    comp_of_region = np.zeros(len(region_frame), dtype=np.int64)
    comp_of_region[regions.ravel()[sel]] = comp.ravel()[sel]
    if region_class is None:
        n_regions = np.bincount(comp_of_region, minlength=n_comp + 1)
    else:
        inner = np.flatnonzero(comp_of_region)
        k = int(region_class.max()) + 1
        pairs = np.unique(comp_of_region[inner] * k + region_class[inner])  # distinct (component, class)
        n_regions = np.bincount(pairs // k, minlength=n_comp + 1)
    if weight is not None:
        n_regions = np.bincount(comp.ravel(), weights=np.broadcast_to(weight, comp.shape).ravel(), minlength=n_comp + 1)
    n_regions[0] = 0
    area = np.bincount(comp.ravel(), minlength=n_comp + 1)
    comp_frame = np.full(n_comp + 1, -1, dtype=np.int64)
    inner = np.flatnonzero(comp_of_region)
    comp_frame[comp_of_region[inner]] = region_frame[inner]
    ids = np.arange(1, n_comp + 1)
    order = ids[np.lexsort((-ids, area[ids], n_regions[ids], comp_frame[ids]))]
    f = comp_frame[order]
    last = np.r_[f[1:] != f[:-1], True]
    keep = np.zeros(n_comp + 1, dtype=bool)
    keep[order[last]] = True
    return keep[comp]


def _holes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4-connected components of the background per frame, and which of them are holes (touch
    no image edge)."""
    bg, n_bg = label_planes(~mask)
    edge = np.concatenate([bg[:, 0].ravel(), bg[:, -1].ravel(), bg[:, :, 0].ravel(), bg[:, :, -1].ravel()])
    is_hole = np.ones(n_bg + 1, dtype=bool)
    is_hole[edge] = False
    is_hole[0] = False
    return bg, is_hole


def _add_enclaves(mask: np.ndarray, regions: np.ndarray, n_labels: int, cutoff: int | None) -> np.ndarray:
    """Add holes of `mask` (a union of whole regions, labelled 1..n_labels-1 in `regions`) made of
    at most `cutoff` regions."""
    bg, is_hole = _holes(mask)
    if not is_hole.any():
        return mask
    if cutoff is not None:
        outside = ~mask.ravel()
        hole_of_region = np.zeros(n_labels, dtype=np.int64)
        hole_of_region[regions.ravel()[outside]] = bg.ravel()[outside]
        n_regions = np.bincount(hole_of_region, minlength=len(is_hole))
        is_hole &= n_regions <= cutoff
    return mask | is_hole[bg]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill every hole (background not 4-connected to the image edge) of each frame of a stack."""
    bg, is_hole = _holes(mask)
    return mask | is_hole[bg] if is_hole.any() else mask


def region_oracle(parcel_maps: Any, masks: Any, overlap: float = 0.5) -> np.ndarray:
    """The union, per frame, of the parcel regions with >= `overlap` of their pixels inside the
    ground truth. With overlap=0.5 it is the union of regions that gets the most pixels right
    (a near-best DICE for unions of the same regions), to report next to the rule's DICE so
    the weak link (features or parcel selection) is visible."""
    parcels = _as_parcels(parcel_maps)
    m = np.asarray(masks, dtype=bool).reshape(parcels.shape)
    out = np.zeros(parcels.shape, dtype=bool)
    k = int(parcels.max()) + 1 if parcels.size else 1
    for sl in _chunks(len(parcels)):
        regions, frame = _label_regions(parcels[sl], k)
        flat = regions.ravel()
        size = np.bincount(flat, minlength=len(frame))
        inside = np.bincount(flat[m[sl].ravel()], minlength=len(frame))
        keep = inside >= overlap * np.maximum(size, 1)
        keep[0] = False
        out[sl] = keep[regions]
    return out.reshape(np.shape(parcel_maps)) if np.ndim(parcel_maps) == 2 else out


def class_set_oracle(parcel_maps: Any, masks: Any) -> tuple[list[int], float]:
    """The set of parcel *classes* whose plain union best matches `masks` (mean DICE over the
    frames), by greedy forward selection; returns (classes, mean DICE).

    Beside `region_oracle` (best union of each frame's own regions) this separates the two weak
    links: a high region oracle with a low class-set oracle means the parcels follow edges but a
    class does not mean the same anatomy in every frame, so no choice of K booleans can work.
    The greedy search is exact per step (per-frame, per-class pixel counts; no images rebuilt)."""
    parcels = _as_parcels(parcel_maps)
    m = np.asarray(masks, dtype=bool).reshape(parcels.shape)
    n, k = len(parcels), int(parcels.max()) + 1 if parcels.size else 1
    flat = parcels.reshape(n, -1) + (np.arange(n) * k)[:, None]
    area = np.bincount(flat.ravel(), minlength=n * k).reshape(n, k).astype(float)
    inside = np.bincount(flat[m.reshape(n, -1)], minlength=n * k).reshape(n, k).astype(float)
    truth = m.reshape(n, -1).sum(1).astype(float)

    def mean_dice(a: np.ndarray, i: np.ndarray) -> np.ndarray:  # a, i: (n, candidates)
        total = a + truth[:, None]
        return np.where(total == 0, 1.0, 2 * i / np.maximum(total, 1)).mean(0)

    chosen: list[int] = []
    a_s, i_s = np.zeros(n), np.zeros(n)
    best = float(mean_dice(a_s[:, None], i_s[:, None])[0])
    while len(chosen) < k:
        rest = np.setdiff1d(np.arange(k), chosen)
        scores = mean_dice(a_s[:, None] + area[:, rest], i_s[:, None] + inside[:, rest])
        j = int(np.argmax(scores))
        if scores[j] <= best:
            break
        best, c = float(scores[j]), int(rest[j])
        chosen.append(c)
        a_s, i_s = a_s + area[:, c], i_s + inside[:, c]
    return sorted(chosen), best


def binary_closing_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary closing of each frame with skimage's disk(radius); pixels outside the image do not
    erode (skimage's mode="ignore"), so the result always contains the input.

    All frames go through OpenCV at once, stacked into one tall image with `radius` blank rows
    between frames (blank for the dilation, set for the erosion), so nothing leaks across frames.
    """
    n, h, w = mask.shape
    kernel = morphology.disk(radius).astype(np.uint8)
    buf = np.zeros((n, h + radius, w), dtype=np.uint8)
    buf[:, :h] = mask
    grown = cv2.dilate(buf.reshape(n * (h + radius), w), kernel).reshape(n, h + radius, w)
    grown[:, h:] = 1
    closed = cv2.erode(grown.reshape(n * (h + radius), w), kernel).reshape(n, h + radius, w)
    return closed[:, :h].astype(bool)


def outer_contour(component: np.ndarray) -> np.ndarray:
    """The outer boundary (rows, cols), at the 0.5 level, of a binary frame's largest shape;
    closed, first point not repeated."""
    contours = measure.find_contours(np.pad(component, 1).astype(np.float32), 0.5)
    best = max(contours, key=lambda c: abs(_shoelace(c)))
    return best[:-1] - 1.0 if np.allclose(best[0], best[-1]) else best - 1.0


def snake_mask(
    mask: np.ndarray,
    image: np.ndarray,
    *,
    alpha: float = 0.01,
    beta: float = 0.2,
    gamma: float = 0.01,
    w_edge: float = 1.0,
    max_num_iter: int = 10,
) -> np.ndarray:
    """Refine each 4-connected component of one frame's `mask` with a Kass snake on `image`
    (skimage.segmentation.active_contour, w_line=0), started on the component's outer contour,
    and fill the resulting polygons (skimage.draw.polygon)."""
    out = np.zeros(mask.shape, dtype=bool)
    comp, _ = ndimage.label(mask)
    for i, sl in enumerate(ndimage.find_objects(comp), start=1):
        rr, cc = _snake_component(
            comp[sl] == i, (sl[0].start, sl[1].start), image, alpha=alpha, beta=beta, gamma=gamma,
            w_edge=w_edge, max_num_iter=max_num_iter,
        )
        out[rr, cc] = True
    return out


def _snake_component(
    part: np.ndarray, offset: tuple[int, int], image: np.ndarray, *, max_num_iter: int, **params: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (rows, cols) of the filled snake of one component `part` (its bounding box, at
    `offset` in `image`). The snake runs on a crop of `image` around the component: its points
    move at most 1 px per iteration, so a margin of max_num_iter + 4 px leaves the image energy
    they can reach unchanged (sobel is local; the interpolating spline's border effect decays
    by ~0.17 per pixel) and saves most of skimage's per-call cost on the whole frame."""
    y0, x0 = offset
    init = outer_contour(part) + np.array([y0, x0], dtype=float)
    if len(init) < 4:
        rr, cc = np.nonzero(part)
        return rr + y0, cc + x0
    h, w = image.shape
    m = int(max_num_iter) + 4
    top, left = max(0, y0 - m), max(0, x0 - m)
    bottom, right = min(h, y0 + part.shape[0] + m), min(w, x0 + part.shape[1] + m)
    snake = active_contour(
        image[top:bottom, left:right], init - [top, left], w_line=0.0, max_num_iter=max_num_iter,
        boundary_condition="periodic", **params,
    )
    return draw.polygon(snake[:, 0] + top, snake[:, 1] + left, shape=image.shape)


def _shoelace(c: np.ndarray) -> float:
    y, x = c[:, 0], c[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _floats(values: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(float(v)) else round(float(v), 6) for v in values]
