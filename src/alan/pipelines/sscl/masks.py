"""Heart masks for SSCL from ALAN: the ALAN pipeline as a mask source of `alan.data.cmr.load_slices`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alan.downstream.parcel_to_segment import ParcelToSegment
from alan.models.parcellator import Parcellator
from alan.records import Record
from alan.transforms.spatial import masks_to_native, to_work


class AlanMasks:
    """Heart masks from ALAN: parcel maps of (backbone, head) -> OR of parcel-to-segment predictions.

    Frames are brought to the parcellator's working resolution exactly as
    `alan.pipelines.segment` does when it fits a parcel-to-segment model (`to_work`: per-frame
    percentile scaling, square resize), and the predicted masks are resized back (nearest).
    Fit one model per heart part ("LV", "MYO", "RV") with `alan segment`, or any union target.
    `parcellator(frames uint8 (N, S, S)) -> parcel maps (N, S, S)` with `work_size`, `provenance`.
    """

    name = "alan"

    def __init__(self, parcellator: Any, models: Sequence[Any], paths: Mapping[str, Any] | None = None):
        if not models:
            raise ValueError("AlanMasks needs at least one parcel-to-segment model")
        self.parcellator, self.models = parcellator, list(models)
        self.paths = dict(paths or {})

    @classmethod
    def from_paths(cls, backbone: str | Path, head: str | Path, models: Sequence[str | Path],
                   batch_size: int = 32, work_size: int | None = None) -> AlanMasks:
        """Load the locked backbone and head artifacts and the parcel-to-segment JSON files."""
        p2s = [ParcelToSegment.from_json(p) for p in models]
        ws = work_size or int(p2s[0].provenance_.get("work_size") or 112)
        par = Parcellator.load(backbone, head, work_size=ws, batch_size=batch_size)
        for m in p2s:
            m.check_provenance({k: v for k, v in par.provenance.items() if k != "work_size"})
        return cls(par, p2s, paths={"backbone": str(backbone), "head": str(head), "models": [str(p) for p in models]})

    def __call__(self, record: Record, frames: Sequence[int], cine: np.ndarray) -> np.ndarray:
        images = [np.asarray(cine[f]) for f in frames]
        work = to_work(images, self.parcellator.work_size)
        parcels = np.asarray(self.parcellator(work))
        pred = np.zeros(parcels.shape, dtype=bool)
        for m in self.models:
            pred |= np.asarray(m.predict(parcels, work), dtype=bool)
        return np.stack(masks_to_native(pred, [im.shape for im in images]))

    def config(self) -> dict[str, Any]:
        return {"source": self.name, "targets": [getattr(m, "target", None) for m in self.models],
                "work_size": self.parcellator.work_size, **dict(getattr(self.parcellator, "provenance", {})),
                **self.paths}
