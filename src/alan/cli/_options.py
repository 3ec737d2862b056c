"""Helpers shared by the training commands' options (kept free of heavy imports)."""

from __future__ import annotations


def parse_devices(devices: str | int) -> str | int:
    """A ``--devices`` value as Lightning wants it: a count ("2", "-1") or a spec ("auto", "0,1")."""
    text = str(devices)
    return int(text) if text.lstrip("-").isdigit() else text
