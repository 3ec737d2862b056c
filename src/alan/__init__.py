"""alan: label-efficient cardiac image analysis.

Two methods, one house:
- ALAN (Majchrowska et al., "Unlocking the Heart Using Adaptive Locked Agnostic Networks"):
  a locked DINO ViT backbone, the RAPTOR parcel head trained with the STRAPTOR loss, and
  white-box downstream models (parcel-to-segment, weighted kNN views).
- SSCL with anatomic priors: SimCLR pre-training on full or heart-masked CMR, ED+ES classifier.

Data flows one way: readers -> Record -> datasets -> models -> downstream -> reports.
"""

from alan.errors import AlanError, DataError
from alan.records import LABELS, Record

__all__ = ["AlanError", "DataError", "LABELS", "Record", "__version__"]
__version__ = "0.1.0"
