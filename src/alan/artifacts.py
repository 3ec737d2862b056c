"""Locked artifacts: a folder with ``weights.safetensors`` + ``config.json``.

The only place that writes or reads model files. Writes are atomic (a temporary sibling
folder renamed into place), and every artifact carries a content hash of its weights and
config so that later stages can record exactly what they were built on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from alan.errors import ArtifactError

WEIGHTS = "weights.safetensors"
CONFIG = "config.json"


def content_hash(tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> str:
    """sha256 over the tensors (name, dtype, shape, bytes, sorted by name) and the config."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    cfg = {k: v for k, v in config.items() if k != "hash"}
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder of `out`; when the block succeeds it replaces `out`
    (renames only), when it fails it is removed and `out` is left as it was."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_artifact(out_dir: str | Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> str:
    """Save a locked artifact atomically and return its content hash (also stored as config["hash"])."""
    out_dir = Path(out_dir)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    config = dict(config)
    config["hash"] = content_hash(tensors, config)
    with atomic_dir(out_dir) as tmp:
        save_file(tensors, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, default=str) + "\n")
    return config["hash"]


def load_artifact(path: str | Path, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load (tensors, config) from an artifact folder, verifying its hash and, if given, its kind."""
    path = Path(path)
    wfile, cfile = path / WEIGHTS, path / CONFIG
    if not path.is_dir() or not wfile.is_file() or not cfile.is_file():
        raise ArtifactError(f"{path}: not an alan artifact (expected {WEIGHTS} and {CONFIG})")
    try:
        config = json.loads(cfile.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{cfile}: invalid JSON ({e.msg} at line {e.lineno})") from None
    try:
        tensors = load_file(str(wfile))
    except Exception as e:  # safetensors raises its own error types
        raise ArtifactError(f"{wfile}: unreadable safetensors file ({e})") from None
    if kind is not None and config.get("kind") != kind:
        raise ArtifactError(f"{path}: is a {config.get('kind')!r} artifact, expected {kind!r}")
    expected = config.get("hash")
    if expected != content_hash(tensors, config):
        raise ArtifactError(f"{path}: content hash mismatch (file modified or corrupt)")
    return tensors, config
