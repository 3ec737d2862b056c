"""Suite-wide settings: keep native thread pools small on the shared 2-core machine."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
