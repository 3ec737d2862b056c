"""Locked artifacts: a folder with ``weights.safetensors`` + ``config.json``.

The only place that writes or reads model files. Writes are atomic (a temporary sibling
folder renamed into place), and every artifact carries a content hash of its weights and
config so that later stages can record exactly what they were built on.
"""

from __future__ import annotations

import hashlib
import json
import math
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


UNHASHED = ("hash", "run_info")
"""Config keys outside the content hash: the hash itself, and ``run_info`` (how long the run took,
and other facts about when and how it ran that do not determine the model), so that the same
seed on the same data gives the same hash."""


def content_hash(tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> str:
    """sha256 over the tensors (name, dtype, shape, bytes, sorted by name) and the config (less `UNHASHED`)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    cfg = {k: v for k, v in config.items() if k not in UNHASHED}
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file's bytes (read in 1 MiB chunks), to name a foreign weights file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


MARKER = ".alan-output.json"
"""Hidden file in every folder alan writes atomically: {"kind": ..., "complete": ...}."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(path: Path, folder: bool = False) -> None:
    """Give a file or folder made by mkstemp/mkdtemp (0600/0700) the mode an ordinary write gets."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def output_kind(path: str | Path) -> str | None:
    """The kind of alan output at `path` (a folder with the marker, or an artifact's config.json), else None."""
    path = Path(path)
    for name in (MARKER, CONFIG):
        f = path / name
        if f.is_file():
            try:
                kind = json.loads(f.read_text()).get("kind")
            except (OSError, ValueError, AttributeError):
                return None
            return kind if isinstance(kind, str) else None
    return None


def check_output_dir(out: str | Path, kind: str) -> None:
    """Refuse an output folder path that holds anything but an earlier alan output of `kind`.

    Allowed: a path that does not exist, an empty folder, or an earlier output of the same kind
    (which is then replaced). Everything else (a file, a folder of other things, another kind of
    alan output, the current folder or one of its parents) raises ArtifactError before any work.
    """
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        _check_parent(out)
        return
    if out.is_symlink() or not out.is_dir():
        raise ArtifactError(f"{out}: exists and is not a folder; refusing to replace it (choose another output path)")
    resolved, here = out.resolve(), Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise ArtifactError(f"{out}: is the current folder or one of its parents; choose another output path")
    if not any(out.iterdir()):
        return
    found = output_kind(out)
    if found is None:
        raise ArtifactError(f"{out}: exists and is not an alan output; refusing to replace it (choose another output path)")
    if found != kind:
        raise ArtifactError(f"{out}: is an alan {found!r} output, not {kind!r}; refusing to replace it")


def _check_parent(path: Path) -> None:
    """Refuse `path` when its nearest existing ancestor is not a writable folder."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ArtifactError(f"{path}: cannot write under {parent} (not a writable folder)")


def check_output_file(path: str | Path) -> None:
    """Refuse an output file path that is a folder or whose parent is not a writable folder."""
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{path}: is a folder; expected a file path")
    _check_parent(path)


@contextmanager
def atomic_file(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers that look at it pick the right
    format); when the block succeeds the file gets the umask's mode and is renamed to `path`, when
    it fails it is removed. The one atomic writer for libraries that write to a path (matplotlib,
    nibabel, video encoders); `atomic_write_bytes` is built on it."""
    path = Path(path)
    check_output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        follow_umask(tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and a rename (umask respected)."""
    with atomic_file(path, suffix=".tmp") as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and a rename."""
    atomic_write_bytes(path, text.encode())


def finite_json(obj: Any) -> Any:
    """`obj` with every NaN / infinite float replaced by None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalars
        return finite_json(obj.item())
    return obj


def dumps_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text of `obj` (NaN / inf written as null)."""
    return json.dumps(finite_json(obj), indent=indent, sort_keys=False, default=str, allow_nan=False)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, dumps_json(obj) + "\n")


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(out: str | Path) -> list[Path]:
    """Remove temporary siblings of `out` left by a killed alan run (marker present, writer gone)."""
    out = Path(out)
    removed = []
    if not out.parent.is_dir():
        return removed
    for p in out.parent.glob(f".{out.name}.tmp-*"):
        marker = p / MARKER
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and not info.get("complete") and not _pid_alive(info.get("pid")):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


@contextmanager
def atomic_dir(out: str | Path, kind: str) -> Iterator[Path]:
    """Yield a temporary sibling folder of `out`; when the block succeeds it replaces `out`
    (renames only), when it fails it is removed and `out` is left as it was.

    `out` must be absent, empty, or an earlier alan output of the same `kind` (see
    `check_output_dir`); nothing else is ever moved or removed. The folder gets a hidden
    marker naming its kind, so a later run knows it may replace it.
    """
    out = Path(out)
    check_output_dir(out, kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(out)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    follow_umask(tmp, folder=True)
    (tmp / MARKER).write_text(json.dumps({"kind": kind, "complete": False, "pid": os.getpid()}) + "\n")
    try:
        yield tmp
        (tmp / MARKER).write_text(json.dumps({"kind": kind, "complete": True}) + "\n")
        check_output_dir(out, kind)  # the path may have changed while we worked
        if out.exists():
            if not any(out.iterdir()):
                out.rmdir()
                os.replace(tmp, out)
            else:
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
    kind = config.get("kind")
    if not isinstance(kind, str):
        raise ValueError("an artifact's config needs a 'kind'")
    with atomic_dir(out_dir, kind) as tmp:
        save_file(tensors, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, default=str) + "\n")
    return config["hash"]


ASSETS = Path(__file__).resolve().parent / "assets"
"""Artifacts that ship with the package: ``assets/<folder>/<name>/``."""


def bundled_artifact(folder: str, name: str, what: str, made_by: str) -> Path:
    """The folder of an artifact shipped with alan (e.g. ``bundled_artifact("heads", ...)``), checked
    to hold its weights and config; `what` and `made_by` (the script that makes it) word the error."""
    path = ASSETS / folder / name
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise ArtifactError(f"{path}: bundled {what} {name!r} is not there ({made_by} makes it)")
    return path


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
