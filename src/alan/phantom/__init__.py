"""Built-in synthetic phantoms: the project's default data, written in the real formats.

Generators (arrays + exact ground truth, deterministic given a seed):
    `echo_sequence(view, rng, ...)` -> `EchoSequence`   A4C / A2C / PLAX / PSAX echo, uint8
    `cmr_patient(group, rng, ...)`  -> `CMRCine`        short-axis cine CMR, ACDC groups, int16
Writers (the same readers as real data then apply):
    `synthesize(format, out, seed=0, size="default", **options) -> Path`
    with format in echonet, camus, tmed2, acdc; size in small, default, large.

See docs/phantom.md for what is modelled and what is not.
"""

from alan.phantom.cmr import GROUPS, CMRCine, CMRPatient, cmr_patient
from alan.phantom.echo import VIEWS, EchoPatient, EchoSequence, echo_sequence
from alan.phantom.sizes import SIZE_NAMES, SIZES, preset
from alan.phantom.write import CAMUS_RELEASES, MANIFEST, WRITERS, generate, read_manifest, synthesize

FORMATS: tuple[str, ...] = tuple(WRITERS)

__all__ = [
    "CAMUS_RELEASES", "CMRCine", "CMRPatient", "EchoPatient", "EchoSequence", "FORMATS", "GROUPS",
    "MANIFEST", "SIZES", "SIZE_NAMES", "VIEWS", "cmr_patient", "echo_sequence", "generate", "preset",
    "read_manifest", "synthesize",
]
