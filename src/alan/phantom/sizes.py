"""Preset sizes of the phantom datasets: ``small`` (CI, seconds), ``default`` (the demo, under a
minute each on 2 cores), ``large`` (5-10x default)."""

from __future__ import annotations

from typing import Any

SIZE_NAMES: tuple[str, ...] = ("small", "default", "large")

SIZES: dict[str, dict[str, dict[str, Any]]] = {
    # EchoNet-Dynamic: A4C videos at 112 x 112, split TRAIN/VAL/TEST ~ 60/20/20.
    "echonet": {
        "small": {"videos": 6, "frames": (36, 44), "image": (112, 112)},
        "default": {"videos": 60, "frames": (48, 64), "image": (112, 112)},
        "large": {"videos": 400, "frames": (48, 64), "image": (112, 112)},
    },
    # CAMUS: patients with a 2CH and a 4CH half sequence each; split ~ 70/15/15.
    "camus": {
        "small": {"patients": 4, "image": (160, 128)},
        "default": {"patients": 30, "image": (256, 208)},
        "large": {"patients": 200, "image": (256, 208)},
    },
    # TMED-2: still images of studies; four views, a few A4CorA2CorOther / Not_Provided rows.
    "tmed2": {
        "small": {"studies": 6, "images_per_study": 8, "image": (112, 112)},
        "default": {"studies": 60, "images_per_study": 10, "image": (112, 112)},
        "large": {"studies": 400, "images_per_study": 10, "image": (112, 112)},
    },
    # ACDC: patients per group in training/ and testing/ (real ACDC: 20 and 10).
    "acdc": {
        "small": {"train_per_group": 2, "test_per_group": 1, "slices": 3, "frames": (12, 14), "image": (96, 96)},
        "default": {"train_per_group": 20, "test_per_group": 5, "slices": 6, "frames": (20, 25), "image": (128, 128)},
        "large": {"train_per_group": 100, "test_per_group": 50, "slices": 8, "frames": (20, 30), "image": (128, 128)},
    },
}


def preset(format: str, size: str) -> dict[str, Any]:
    """The preset of `format` at `size` (a copy)."""
    if format not in SIZES:
        raise ValueError(f"unknown phantom format {format!r}; expected one of {', '.join(SIZES)}")
    if size not in SIZE_NAMES:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(SIZE_NAMES)}")
    return dict(SIZES[format][size])
