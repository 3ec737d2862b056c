"""Import foreign ViT weights into a `Backbone` (the ALAN paper's locked DINO backbone).

Accepted inputs:
    * the official bare DINO state dict (``dino_deitsmall8_pretrain.pth``: ``cls_token``,
      ``pos_embed``, ``patch_embed.proj.*``, ``blocks.N.*``, ``norm.*``);
    * a full DINO training checkpoint (``student``, ``teacher``, ``optimizer``, ``epoch``,
      ``args`` (argparse.Namespace), ``dino_loss``); the teacher by default;
    * timm checkpoints (``state_dict`` / ``model`` / a bare state dict, ``.pth`` or ``.safetensors``);
    * official DINOv2 ViT weights (``dinov2_vits14_pretrain.pth``; LayerScale folded exactly into
      the preceding linear layers); DINOv3 and register-token weights are refused with the reason;
    * our own artifacts (a backbone folder) and our own Lightning checkpoints (``alan dino train``'s
      ``last.ckpt``).

Pickles are read with ``torch.load(weights_only=True)`` and an allow-list of exactly
``argparse.Namespace``; a file that needs any other global is refused, never unpickled.
Prefixes ``module.`` and ``backbone.`` are stripped and projection heads (``head.*``) dropped.
When the target architecture has another patch size or token grid, the patch embedding is
resampled with ``timm.layers.resample_patch_embed`` (FlexiViT's pseudo-inverse resize) and the
position embedding with ``timm.layers.resample_abs_pos_embed`` (bicubic); then the weights must
load strictly.
"""

from __future__ import annotations

import argparse
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed, resample_patch_embed

from alan.artifacts import CONFIG, file_sha256, load_artifact
from alan.errors import AlanError, DataError
from alan.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    BackboneConfig,
    arch_spec,
    create_vit,
    gray_stats,
    state_dict_mismatch,
)

#: The only non-tensor class a checkpoint may contain (the ``args`` of DINO's checkpoint.pth).
SAFE_GLOBALS: tuple[type, ...] = (argparse.Namespace,)

_UNSUPPORTED = re.compile(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)")


def read_checkpoint(path: str | Path) -> Any:
    """The object stored in a ``.pth``/``.pt``/``.ckpt``/``.safetensors`` file, loaded safely."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors has its own error types
            raise DataError(path, f"unreadable safetensors file ({e})") from None
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = _UNSUPPORTED.search(str(e))
        if m:
            raise DataError(path, f"refusing to unpickle: the file needs {m.group(1)}, and only tensors, plain "
                                  "containers and argparse.Namespace are allowed; re-save it as a plain state "
                                  "dict or safetensors") from None
        text = str(e)
        if "WeightsUnpickler error:" not in text and "Weights only load failed" not in text:  # a broken pickle
            first = _no_advice((text.strip().splitlines() or [""])[0]) or type(e).__name__
            raise DataError(path, f"not a PyTorch checkpoint (truncated or corrupt: {first})") from None
        detail = text.split("WeightsUnpickler error:")[-1].strip().splitlines()
        first = _no_advice(detail[0]) if detail else ""
        raise DataError(path, "refusing to unpickle: not a plain tensor checkpoint"
                              + (f" ({first})" if first else "")) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as e:
        first = _no_advice((str(e).strip().splitlines() or [""])[0]) or type(e).__name__
        raise DataError(path, f"not a PyTorch checkpoint (truncated or corrupt: {first})") from None


def _no_advice(line: str) -> str:
    """`line` unless it is torch's advice about loading the file unsafely (never repeated to a user)."""
    line = line.strip()
    return "" if "weights_only" in line or "Weights only load failed" in line else line


def read_training_checkpoint(path: str | Path, module: torch.nn.Module) -> dict[str, Any]:
    """A Lightning checkpoint for `module`, loaded safely and checked before training resumes from it.

    Truncated, unsafe (pickled code) or foreign files, and checkpoints of another model or
    architecture (keys or shapes that do not fit `module`), raise a one-line `DataError`.
    """
    obj = read_checkpoint(path)
    state = obj.get("state_dict") if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not _is_state_dict(state):
        raise DataError(path, "not a training checkpoint (no state_dict of tensors); start the run again without --resume")
    state = dict(state)
    if getattr(module, "strict_loading", True) is False:  # e.g. RAPTOR: its checkpoints leave out the locked backbone
        own = module.state_dict()
        if set(state) & set(own):  # Lightning then loads the common keys; their shapes must still fit
            state = {k: v for k, v in state.items() if k in own}
        parts = state_dict_mismatch(module, state).split("; ")
        problem = "; ".join(p for p in parts if p and not p.startswith("missing keys"))
    else:
        problem = state_dict_mismatch(module, state)
    if problem:
        raise DataError(path, f"checkpoint of another model or architecture ({problem}); resume it with the options "
                              "it was trained with, or start a new run folder")
    return obj


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_vit_state(obj: Any, key: str = "teacher", path: str | Path | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """The ViT state dict inside a loaded checkpoint, and a name for its layout.

    Strips ``module.`` and ``backbone.`` prefixes and drops ``head.*`` (DINO projection heads
    and timm classifiers).
    """
    if key not in ("teacher", "student"):
        raise AlanError(f"--key must be teacher or student, got {key!r}")
    if not isinstance(obj, Mapping):
        raise DataError(path, f"expected a dict of weights, found {type(obj).__name__}")
    layout: str
    if "teacher" in obj or "student" in obj:
        if key not in obj:
            raise DataError(path, f"DINO checkpoint has no {key!r} entry (has: {', '.join(map(str, obj))})")
        state, layout = obj[key], f"dino-checkpoint:{key}"
    elif "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        state, layout = obj["state_dict"], "state_dict"
        prefix = f"{key}_backbone."
        if any(str(k).startswith(prefix) for k in state):  # our own Lightning checkpoint (models/dino.py)
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            layout = f"alan-dino-checkpoint:{key}"
    elif "model" in obj and isinstance(obj["model"], Mapping):
        state, layout = obj["model"], "model"
    else:
        state, layout = obj, "state-dict"
    if not _is_state_dict(state):
        raise DataError(path, f"no tensor state dict found (layout {layout})")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    return state, layout


def adapt_state(state: dict[str, torch.Tensor], arch: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Resample patch and position embeddings of `state` to `arch`'s patch size and token grid."""
    spec = arch_spec(arch)
    state = dict(state)
    notes: dict[str, Any] = {}
    w = state.get("patch_embed.proj.weight")
    if w is not None and w.ndim == 4 and tuple(w.shape[-2:]) != (spec.patch_size, spec.patch_size):
        state["patch_embed.proj.weight"] = resample_patch_embed(w.float(), [spec.patch_size, spec.patch_size]).to(w.dtype)
        notes["patch_size"] = [int(w.shape[-1]), spec.patch_size]
    pos = state.get("pos_embed")
    grid = spec.img_size // spec.patch_size
    if pos is not None and pos.ndim == 3:
        n = pos.shape[1] - 1
        old = int(round(n ** 0.5))
        if old * old == n and old != grid:
            state["pos_embed"] = resample_abs_pos_embed(pos, [grid, grid], num_prefix_tokens=1)
            notes["grid"] = [old, grid]
    return state, notes


def import_backbone(path: str | Path, arch: str, key: str = "teacher",
                    mean: Any = None, std: Any = None) -> Backbone:
    """A `Backbone` of `arch` holding the weights in `path` (see the module docstring for formats).

    Mean/std: given ones, else those stored with our own artifacts/checkpoints, else ImageNet's.
    Raises `AlanError` (one line) on unreadable files and on any key or shape mismatch.
    """
    path = Path(path)
    spec = arch_spec(arch)
    stored_mean = stored_std = None
    if path.is_dir():
        if not (path / CONFIG).is_file():
            raise DataError(path, "a folder, but not an alan backbone artifact (no config.json)")
        tensors, cfg = load_artifact(path, kind="backbone")
        state, layout = dict(tensors), "alan-artifact"
        stored_mean, stored_std = cfg.get("mean"), cfg.get("std")
        origin = {"file": str(path), "hash": cfg.get("hash"), "source": cfg.get("source")}
    else:
        obj = read_checkpoint(path)
        state, layout = extract_vit_state(obj, key, path)
        state, layout = convert_foreign_layout(state, layout, path, arch)
        if isinstance(obj, Mapping) and isinstance(obj.get("alan"), Mapping):
            stored_mean, stored_std = obj["alan"].get("mean"), obj["alan"].get("std")
        origin = {"file": str(path), "sha256": file_sha256(path)}
    state, notes = adapt_state(state, arch)
    if mean is None:
        mean, std = (stored_mean, stored_std) if stored_mean is not None else (IMAGENET_MEAN, IMAGENET_STD)
    mean3, std3 = gray_stats(mean, std if std is not None else IMAGENET_STD)
    config = BackboneConfig(arch=arch, img_size=spec.img_size, patch_size=spec.patch_size, embed_dim=spec.embed_dim,
                            mean=mean3, std=std3, source=f"import:{path.name}:{layout}",
                            meta={"import": {**origin, "layout": layout, "key": key, "resampled": notes}})
    backbone = Backbone(config)
    problem = state_dict_mismatch(backbone.vit, state)
    if problem:
        raise DataError(path, f"weights ({layout}) do not fit {arch}: {problem}")
    backbone.vit.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return backbone.eval()


# ----------------------------------------------------------------------------- DINOv2 / DINOv3
def is_dinov2_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """Official DINOv2 ViT weights (Oquab et al., DINOv2: Learning Robust Visual Features without
    Supervision): LayerScale ``blocks.N.ls{1,2}.gamma`` and a ``mask_token``, absolute position embeddings."""
    return any(k.endswith(".ls1.gamma") for k in state) and "pos_embed" in state and not is_dinov3_layout(state)


def is_dinov3_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """Official DINOv3 ViT weights (Siméoni et al., DINOv3): RoPE (``rope_embed.periods``) and storage tokens."""
    return any(k.startswith(("rope_embed.", "storage_tokens")) for k in state)


def fold_layerscale(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A DINOv2 state dict in the plain timm ViT layout: each LayerScale multiplies the output of the
    linear layer before it, so ``gamma`` is folded into that layer exactly (``attn.proj`` for ``ls1``,
    ``mlp.fc2`` for ``ls2``); ``mask_token`` (used only by DINOv2's masked-image loss) is dropped."""
    out = {k: v for k, v in state.items() if k != "mask_token" and not re.search(r"\.ls[12]\.gamma$", k)}
    for key, gamma in state.items():
        m = re.match(r"(blocks\.\d+)\.ls([12])\.gamma$", key)
        if not m:
            continue
        layer = f"{m.group(1)}.{'attn.proj' if m.group(2) == '1' else 'mlp.fc2'}"
        g = gamma.float()
        out[f"{layer}.weight"] = (state[f"{layer}.weight"].float() * g[:, None]).to(state[f"{layer}.weight"].dtype)
        if f"{layer}.bias" in state:
            out[f"{layer}.bias"] = (state[f"{layer}.bias"].float() * g).to(state[f"{layer}.bias"].dtype)
    return out


def convert_foreign_layout(state: dict[str, torch.Tensor], layout: str, path: str | Path | None = None,
                           arch: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """DINOv2 weights -> the plain ViT layout (see `fold_layerscale`); DINOv3 weights -> timm's
    DINOv3 ViT layout (timm's own converter, `timm.models.eva.checkpoint_filter_fn`), for a DINOv3
    architecture only (`vit_small_p16_dinov3_224`): rotary position embeddings and storage tokens
    have no place in the plain ViTs. DINOv2 register-token checkpoints are refused in one line."""
    if is_dinov3_layout(state):
        if arch is None or not arch_spec(arch).timm_name.endswith("_dinov3"):
            raise DataError(path, "DINOv3 weights (rotary position embeddings and storage tokens) need a DINOv3 "
                                  "architecture: --arch vit_small_p16_dinov3_224")
        from timm.models.eva import checkpoint_filter_fn

        return checkpoint_filter_fn(dict(state), create_vit(arch)), f"dinov3:{layout}"
    if "register_tokens" in state or "reg_token" in state:
        raise DataError(path, "DINOv2 weights with register tokens (the *_reg4 models) cannot be represented by "
                              "the alan ViT architectures; use the plain DINOv2 ViT-S/14 weights")
    if is_dinov2_layout(state):
        return fold_layerscale(state), f"dinov2:{layout}"
    return state, layout
