"""White-box downstream models on locked backbone outputs (ALAN paper, sections 3.2 and 4.3).

- `ParcelToSegment`: K booleans that say which parcel classes make up a target (LV, LA).
- `WeightedKNN`: DINO's weighted k-nearest-neighbour classifier on CLS features (views).

Both are scikit-learn style estimators on plain arrays and record the provenance (backbone and
head hashes) they were fitted on; `check_provenance` refuses to use them with anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alan.errors import ArtifactError


def check_provenance(
    expected: Mapping[str, Any] | None,
    given: Mapping[str, Any] | None,
    *,
    what: str,
    path: str | Path | None = None,
) -> None:
    """Raise `ArtifactError` when a key recorded at fit time (e.g. "backbone_hash", "head_hash") has
    another value now, or when the two share no key at all (a naming slip would otherwise
    skip the check), or when nothing was recorded at all. Keys missing on one side only are
    not compared."""
    expected, given = dict(expected or {}), dict(given or {})
    where = f"{path}: " if path is not None else ""
    if not expected and any(v is not None for v in given.values()):
        raise ArtifactError(f"{where}{what} records no provenance, so it cannot be matched to "
                            f"{', '.join(sorted(k for k, v in given.items() if v is not None))}; refit it")
    if expected and given and not set(expected) & set(given):
        raise ArtifactError(f"{where}{what} records {sorted(expected)} but was checked against {sorted(given)}: "
                            "nothing in common, so its provenance cannot be verified")
    for key in sorted(set(expected) & set(given)):
        if expected[key] != given[key]:
            raise ArtifactError(
                f"{where}{what} was fitted on {key} {expected[key]!s}, not {given[key]!s}; "
                f"refit it or use the matching {key}"
            )


# Imported after check_provenance, which the submodules use.
from alan.downstream.knn import WeightedKNN  # noqa: E402
from alan.downstream.parcel_to_segment import ParcelToSegment  # noqa: E402

__all__ = ["ParcelToSegment", "WeightedKNN", "check_provenance"]
