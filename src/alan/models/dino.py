"""DINO self-distillation for the ALAN backbone, as a LightningModule (ALAN paper, section 3).

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO, 2021), with the
official recipe's defaults: AdamW, lr 5e-4 x global batch / 256 with linear warm-up (10 epochs)
then cosine to 1e-6; weight decay cosine 0.04 -> 0.4 (none on biases and 1-D parameters);
teacher EMA momentum cosine 0.996 -> 1; student temperature 0.1, teacher temperature 0.04 with a
linear warm-up from 0.04 (30 epochs in the ALAN echo run); centre momentum 0.9; projection head
2048-2048-256 with a weight-normed last layer of 65536 outputs, frozen during the first epoch;
per-parameter gradient clipping at 3.0 (the official ``clip_gradients``); drop-path 0.1 on the
student. The loss and head are lightly's `DINOLoss` and `DINOProjectionHead`, the schedules
lightly's `cosine_schedule` / `cosine_warmup_schedule`, the EMA lightly's `update_momentum`.

Short runs: warm-ups are capped at a fraction of the run (lr warm-up <= 25 %, teacher temperature
warm-up <= 75 %, last-layer freeze <= 10 %), so a 4-epoch smoke run still has a cosine phase.

Multi-crop runs on the device, batched (`alan.transforms.MultiCrop`), in `on_after_batch_transfer`;
the crops of a frame are a function of (seed, epoch, frame index) and the global RNG (drop-path) is
reseeded from (seed, step, rank) every step, so a resumed run repeats the uninterrupted one and a
DDP run matches a single-process run of the same global batch.

``recipe="dinov2"`` adds DINOv2's dense terms (Oquab et al., "DINOv2: Learning Robust Visual
Features without Supervision", 2023, section 4) to the same DINO CLS loss: the iBOT masked-patch
self-distillation on the global crops (`alan.models.ibot`: the student sees block-masked crops
through a learnt mask token, the teacher the full crops, an iBOT head of its own on each side,
"untying head weights", with its own centre) with weight 1, and the KoLeo regulariser (lightly's
`KoLeoLoss`) on the student's CLS tokens of each global crop with weight 0.1, the weights of
DINOv2's released configuration. The teacher is centred as in DINO (DINOv2's Sinkhorn-Knopp
centring is not used). The masks are drawn from (seed, step, rank), so resuming stays exact.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightly.loss import DINOLoss, IBOTPatchLoss, KoLeoLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule, cosine_warmup_schedule
from torch import Tensor

from alan.artifacts import atomic_write_json
from alan.data.frames import FrameDataModule, FrameDataset, fingerprint
from alan.errors import AlanError
from alan.models.backbones import Backbone, BackboneConfig, arch_spec, create_vit, gray_stats
from alan.models.ibot import block_masks, encode_masked, masked_vit
from alan.records import Record
from alan.training import RunOptions, fit, launched_rank, run_folder
from alan.transforms.multicrop import MultiCrop, _mix64, default_local_size, sample_keys


RECIPES = ("dino", "dinov2")
#: Fields that only the dinov2 recipe uses; a dino run's record leaves them out (so it is the same as before they existed).
DINOV2_FIELDS = ("recipe", "ibot_weight", "koleo_weight", "mask_ratio", "mask_probability", "ibot_separate_head")


@dataclass
class DINOConfig:
    """What DINO learns and how (the official defaults; `RunOptions` says how the job runs).

    ``recipe``: "dino" (Caron et al. 2021, the CLS loss only) or "dinov2" (plus the iBOT
    masked-patch term and KoLeo, Oquab et al. 2023, section 4); the fields after it are the
    dinov2 recipe's, at the values of DINOv2's released configuration.
    """

    arch: str = "vit_small_p4_112"
    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    norm_last_layer: bool = True
    head_batch_norm: bool = False
    n_local: int = 8
    local_size: int | None = None
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_epochs: float = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_teacher: float = 0.996
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: float = 30
    student_temp: float = 0.1
    center_momentum: float = 0.9
    freeze_last_layer: float = 1
    clip_grad: float = 3.0
    drop_path: float = 0.1
    recipe: str = "dino"
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    mask_probability: float = 0.5
    ibot_separate_head: bool = True

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise AlanError(f"recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        lo, hi = self.mask_ratio = (float(self.mask_ratio[0]), float(self.mask_ratio[1]))
        if not 0.0 < lo <= hi < 1.0:
            raise AlanError(f"mask ratio must satisfy 0 < min <= max < 1, got {lo} {hi}")
        if not 0.0 < self.mask_probability <= 1.0:
            raise AlanError(f"mask probability must be in (0, 1], got {self.mask_probability}")
        if self.ibot_weight < 0 or self.koleo_weight < 0:
            raise AlanError(f"loss weights must be >= 0, got iBOT {self.ibot_weight}, KoLeo {self.koleo_weight}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.recipe == "dino":
            for k in DINOV2_FIELDS:
                del d[k]
        return d


@dataclass
class _Plan:
    total: int
    per_epoch: int
    lr: float
    lr_warmup: int
    temp_warmup_epochs: float
    freeze: int


class DINO(L.LightningModule):
    """Student/teacher ViTs with DINO heads; `to_backbone()` returns the teacher as a `Backbone`.

    Args:
        config: the recipe.
        mean, std: gray-level standardisation of the frames (the training frames' statistics).
        seed: seeds the crops and the per-step RNG.
        init: optional backbone whose ViT weights initialise student and teacher.
    """

    def __init__(self, config: DINOConfig, mean: float = 0.5, std: float = 0.25, seed: int = 0,
                 init: Backbone | None = None):
        super().__init__()
        self.config = config
        self.seed = seed
        spec = arch_spec(config.arch)
        self.spec = spec
        self.student_backbone = create_vit(config.arch, config.drop_path, dynamic_img_size=True)
        self.teacher_backbone = create_vit(config.arch, 0.0, dynamic_img_size=True)
        if init is not None:
            self.student_backbone.load_state_dict(init.vit.state_dict())
        self.teacher_backbone.load_state_dict(self.student_backbone.state_dict())
        head = dict(input_dim=spec.embed_dim, hidden_dim=config.hidden_dim, bottleneck_dim=config.bottleneck_dim,
                    output_dim=config.out_dim, norm_last_layer=config.norm_last_layer,
                    batch_norm=config.head_batch_norm)
        with warnings.catch_warnings():  # lightly's head uses the deprecated (equivalent) weight_norm
            warnings.filterwarnings("ignore", message=".*weight_norm.*deprecated", category=FutureWarning)
            self.student_head = DINOProjectionHead(**head, freeze_last_layer=1)
            self.teacher_head = DINOProjectionHead(**head)
        self.teacher_head.load_state_dict(self.student_head.state_dict())
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(output_dim=config.out_dim, warmup_teacher_temp=config.warmup_teacher_temp,
                                  teacher_temp=config.teacher_temp, warmup_teacher_temp_epochs=0,
                                  student_temp=config.student_temp, center_momentum=config.center_momentum)
        self.dense = config.recipe == "dinov2"
        if self.dense:  # DINOv2's mask token (zeros, as DINOv2 initialises it), iBOT heads and loss
            self.student_mask_token = torch.nn.Parameter(torch.zeros(1, 1, spec.embed_dim))
            if config.ibot_separate_head:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*weight_norm.*deprecated", category=FutureWarning)
                    self.student_ibot_head = DINOProjectionHead(**head, freeze_last_layer=1)
                    self.teacher_ibot_head = DINOProjectionHead(**head)
                self.teacher_ibot_head.load_state_dict(self.student_ibot_head.state_dict())
                deactivate_requires_grad(self.teacher_ibot_head)
            self.ibot_criterion = IBOTPatchLoss(output_dim=config.out_dim, teacher_temp=config.teacher_temp,
                                                student_temp=config.student_temp, center_momentum=config.center_momentum)
            self.koleo = KoLeoLoss()
        local = config.local_size or default_local_size(spec.img_size, spec.patch_size)
        self.multicrop = MultiCrop(global_size=spec.img_size, local_size=local, n_local=config.n_local,
                                   global_scale=config.global_scale, local_scale=config.local_scale)
        self.register_buffer("data_mean", torch.tensor(float(mean)))
        self.register_buffer("data_std", torch.tensor(float(std)))
        self.plan: _Plan | None = None
        self._step = 0

    # ---- data -------------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is None or not self.trainer.training:
            return batch
        frames, index = batch
        views = self.multicrop(frames, sample_keys(self.seed, self.current_epoch, index))
        return [((v - self.data_mean) / self.data_std).expand(-1, 3, -1, -1) for v in views]

    # ---- schedules ----------------------------------------------------------------------------
    def _make_plan(self) -> _Plan:
        trainer = self.trainer
        total = int(trainer.estimated_stepping_batches)
        per_epoch = max(1, int(trainer.num_training_batches) // max(1, trainer.accumulate_grad_batches))
        loader = trainer.train_dataloader
        batch = getattr(loader, "batch_size", None) or 1
        global_batch = batch * trainer.world_size * trainer.accumulate_grad_batches
        epochs = total / per_epoch
        c = self.config
        return _Plan(total=total, per_epoch=per_epoch, lr=c.lr * global_batch / 256,
                     lr_warmup=min(total, int(round(min(c.warmup_epochs, 0.25 * epochs) * per_epoch))),
                     temp_warmup_epochs=min(c.warmup_teacher_temp_epochs, 0.75 * epochs),
                     freeze=int(round(min(c.freeze_last_layer, 0.1 * epochs) * per_epoch)))

    def schedule(self, step: int) -> dict[str, float]:
        """lr, weight decay, teacher momentum and teacher temperature at optimisation step `step`."""
        if self.plan is None:
            self.plan = self._make_plan()
        p, c = self.plan, self.config
        step = min(step, p.total - 1)
        epoch = step / p.per_epoch
        if epoch < p.temp_warmup_epochs:
            temp = c.warmup_teacher_temp + (c.teacher_temp - c.warmup_teacher_temp) * epoch / p.temp_warmup_epochs
        else:
            temp = c.teacher_temp
        return {
            "lr": cosine_warmup_schedule(step, p.total, p.lr, c.min_lr, p.lr_warmup, 0.0),
            "wd": cosine_schedule(step, p.total, c.weight_decay, c.weight_decay_end),
            "momentum": cosine_schedule(step, p.total, c.momentum_teacher, 1.0),
            "teacher_temp": temp,
        }

    def on_train_start(self) -> None:
        # not in configure_optimizers: asking for the step count there would set the data up before
        # Lightning restores the loader state of a resumed run
        self.plan = self._make_plan()

    def student_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """What the optimiser trains: the student ViT and its head(s), and DINOv2's mask token."""
        modules = [self.student_backbone, self.student_head]
        if self.dense and self.config.ibot_separate_head:
            modules.append(self.student_ibot_head)
        named = [(n, p) for m in modules for n, p in m.named_parameters()]
        return named + [("mask_token", self.student_mask_token)] if self.dense else named

    def ema_pairs(self) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
        pairs = [(self.student_backbone, self.teacher_backbone), (self.student_head, self.teacher_head)]
        if self.dense and self.config.ibot_separate_head:
            pairs.append((self.student_ibot_head, self.teacher_ibot_head))
        return pairs

    def configure_optimizers(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, param in self.student_parameters():
            if not param.requires_grad:
                continue
            (no_decay if name.endswith(".bias") or param.ndim == 1 else decay).append(param)
        return torch.optim.AdamW([{"params": decay, "weight_decay": self.config.weight_decay, "decay": True},
                                  {"params": no_decay, "weight_decay": 0.0, "decay": False}], lr=0.0)

    # ---- step ---------------------------------------------------------------------------------
    def forward_student(self, views: list[Tensor]) -> list[Tensor]:
        out = [self.student_head(self.student_backbone(torch.cat(views[:2])))]
        if len(views) > 2:
            out.append(self.student_head(self.student_backbone(torch.cat(views[2:]))))
        return list(torch.cat(out).chunk(len(views)))

    @torch.no_grad()
    def forward_teacher(self, views: list[Tensor]) -> list[Tensor]:
        return list(self.teacher_head(self.teacher_backbone(torch.cat(views[:2]))).chunk(2))

    def forward_student_dense(self, views: list[Tensor], masks: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """dinov2: DINO head outputs per view (masked global crops), iBOT head outputs at the masked
        patches ``(M, out_dim)`` and the global crops' CLS tokens ``(2B, D)`` (for KoLeo)."""
        cls, patches = encode_masked(masked_vit(self.student_backbone, self.student_mask_token), torch.cat(views[:2]), masks)
        head = self.student_ibot_head if self.config.ibot_separate_head else self.student_head
        out = [self.student_head(cls)]
        if len(views) > 2:
            out.append(self.student_head(self.student_backbone(torch.cat(views[2:]))))
        return list(torch.cat(out).chunk(len(views))), head(patches[masks.flatten(1)]), cls

    @torch.no_grad()
    def forward_teacher_dense(self, views: list[Tensor], masks: Tensor) -> tuple[list[Tensor], Tensor]:
        """dinov2: teacher DINO head outputs per global crop and iBOT head outputs of the full
        crops' patch tokens at the positions the student had masked."""
        tokens = self.teacher_backbone.forward_features(torch.cat(views[:2]))
        p = self.teacher_backbone.num_prefix_tokens
        head = self.teacher_ibot_head if self.config.ibot_separate_head else self.teacher_head
        return list(self.teacher_head(tokens[:, 0]).chunk(2)), head(tokens[:, p:][masks.flatten(1)])

    def training_step(self, views: list[Tensor], batch_idx: int) -> Tensor:
        step = self._step = int(self.global_step)
        seed = _mix64(torch.tensor([(self.seed * 1_000_003 + step) * 4096 + self.global_rank]))
        torch.manual_seed(int(seed) & ((1 << 63) - 1))
        if self.dense:
            return self._dense_step(views, step, int(seed))
        s = self._set_schedule(step)
        teacher_out = self.forward_teacher(views)
        student_out = self.forward_student(views)
        with torch.autocast(device_type=self.device.type, enabled=False):  # the loss in fp32 under mixed precision
            loss = self.criterion([t.float() for t in teacher_out], [o.float() for o in student_out],
                                  teacher_temp=s["teacher_temp"])
        self._check_finite(loss, step)
        self.log("loss", loss, prog_bar=True)
        self.log_dict({"lr": s["lr"], "wd": s["wd"], "momentum": s["momentum"], "teacher_temp": s["teacher_temp"]})
        return loss

    def dense_loss(self, views: list[Tensor], masks: Tensor, teacher_temp: float) -> tuple[Tensor, dict[str, Tensor]]:
        """dinov2: DINO + ibot_weight x iBOT + koleo_weight x KoLeo on `views` with the global crops'
        patch `masks` (bool ``(2B, grid, grid)``); also the three terms. Updates both centres."""
        c = self.config
        teacher_out, teacher_patches = self.forward_teacher_dense(views, masks)
        student_out, student_patches, cls = self.forward_student_dense(views, masks)
        with torch.autocast(device_type=self.device.type, enabled=False):  # the loss in fp32 under mixed precision
            dino = self.criterion([t.float() for t in teacher_out], [o.float() for o in student_out],
                                  teacher_temp=teacher_temp)
            ibot = self.ibot_criterion(teacher_patches.float(), student_patches.float(), masks, teacher_temp=teacher_temp)
            # per global crop: KoLeo spreads the CLS tokens of different images, not two crops of one
            koleo = sum(self.koleo(x.float()) for x in cls.chunk(2)) if cls.shape[0] >= 4 else cls.new_zeros(())
            loss = dino + c.ibot_weight * ibot + c.koleo_weight * koleo
        return loss, {"loss_dino": dino, "loss_ibot": ibot, "loss_koleo": koleo}

    def _dense_step(self, views: list[Tensor], step: int, seed: int) -> Tensor:
        s = self._set_schedule(step)
        c = self.config
        masks = block_masks(2 * views[0].shape[0], self.spec.img_size // self.spec.patch_size, c.mask_ratio,
                            c.mask_probability, seed=seed, device=views[0].device)
        loss, parts = self.dense_loss(views, masks, s["teacher_temp"])
        self._check_finite(loss, step)
        self.log("loss", loss, prog_bar=True)
        self.log_dict({**parts, "masked_share": masks.float().mean()})
        self.log_dict({"lr": s["lr"], "wd": s["wd"], "momentum": s["momentum"], "teacher_temp": s["teacher_temp"]})
        return loss

    def _set_schedule(self, step: int) -> dict[str, float]:
        s = self.schedule(step)
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = s["lr"]
            if group.get("decay"):
                group["weight_decay"] = s["wd"]
        return s

    def _check_finite(self, loss: Tensor, step: int) -> None:
        if step % max(1, self.trainer.log_every_n_steps) == 0 and not torch.isfinite(loss):
            raise AlanError(f"DINO loss is {loss.item()} at step {step}; lower the learning rate or use 32-bit precision")

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        params = [p for _, p in self.student_parameters() if p.grad is not None]
        if self.config.clip_grad and params:  # official clip_gradients: each parameter's gradient norm <= clip
            grads = [p.grad for p in params]
            norms = torch._foreach_norm(grads)
            torch._foreach_mul_(grads, [torch.clamp(self.config.clip_grad / (n + 1e-6), max=1.0) for n in norms])
        assert self.plan is not None
        if self._step < self.plan.freeze:
            self.student_head.cancel_last_layer_gradients(current_epoch=0)
            if self.dense and self.config.ibot_separate_head:
                self.student_ibot_head.cancel_last_layer_gradients(current_epoch=0)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        m = self.schedule(self._step)["momentum"]
        for student, teacher in self.ema_pairs():
            update_momentum(student, teacher, m)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["alan"] = {"arch": self.config.arch, "mean": float(self.data_mean), "std": float(self.data_std),
                              "dino": self.config.to_dict(), "seed": self.seed}

    # ---- result -------------------------------------------------------------------------------
    def to_backbone(self, **config: Any) -> Backbone:
        """The teacher ViT as a `Backbone` with this run's mean/std (extra `config` fields allowed)."""
        mean, std = gray_stats(float(self.data_mean), float(self.data_std))
        spec = self.spec
        cfg = BackboneConfig(arch=self.config.arch, img_size=spec.img_size, patch_size=spec.patch_size,
                             embed_dim=spec.embed_dim, mean=mean, std=std, **config)
        backbone = Backbone(cfg)
        backbone.vit.load_state_dict({k: v.detach().cpu() for k, v in self.teacher_backbone.state_dict().items()})
        return backbone.eval()


RUN_KIND = "dino_run"


def data_stats(dataset: FrameDataset, fp: str, run_dir: str | Path, max_records: int | None = None) -> tuple[float, float]:
    """Mean/std of the training frames, cached in ``run_dir/data_stats.json`` under the data fingerprint."""
    path = Path(run_dir) / "data_stats.json"
    if path.is_file():
        import json

        try:
            d = json.loads(path.read_text())
            if d.get("fingerprint") == fp and d.get("max_records") == max_records:
                return float(d["mean"]), float(d["std"])
        except (ValueError, KeyError):
            pass
    mean, std = dataset.mean_std(max_records)
    if launched_rank() == 0:  # DDP: every rank computes the same statistics; only rank 0 writes the run folder
        atomic_write_json(path, {"fingerprint": fp, "max_records": max_records, "mean": mean, "std": std})
    return mean, std


def train_dino(records: list[Record], config: DINOConfig, opts: RunOptions, run_dir: str | Path,
               out_dir: str | Path | None = None, *, format: str = "", data_root: str | Path | list[str] | None = None,
               split: str = "train", frame_size: int | None = None, init: Backbone | None = None,
               window: int = 16, cache_videos: int = 32, stats_records: int | None = None,
               command: str = "", callbacks: tuple = ()) -> tuple[DINO, L.Trainer, str | None]:
    """Train DINO on every frame of `records` and (on global rank 0) lock the teacher in `out_dir`.

    Returns (module, trainer, artifact hash or None where nothing was saved).
    """
    spec = arch_spec(config.arch)
    size = frame_size or spec.img_size
    dataset = FrameDataset(records, size=size, cache_videos=cache_videos)
    if len(dataset) < opts.batch_size:
        raise AlanError(f"{len(dataset)} frames in split {split!r} is fewer than one batch of {opts.batch_size}; "
                        "lower --batch-size")
    fp = fingerprint(records, format, split=split, size=size)
    with run_folder(run_dir, RUN_KIND):  # a failure before the first checkpoint leaves no run folder
        mean, std = data_stats(dataset, fp, run_dir, stats_records)
        L.seed_everything(opts.seed, workers=True, verbose=False)  # the initial weights are a function of the seed
        module = DINO(config, mean=mean, std=std, seed=opts.seed, init=init)
        dm = FrameDataModule(dataset, opts.batch_size, opts.num_workers, seed=opts.seed, window=window)
        trainer = fit(module, opts, run_dir, datamodule=dm, callbacks=callbacks, use_distributed_sampler=False,
                      kind=RUN_KIND)
    if trainer.interrupted:
        raise AlanError(f"training interrupted; continue it with --resume (from {Path(run_dir) / 'checkpoints'})")
    digest = None
    if out_dir is not None and trainer.is_global_zero:
        from alan.models.backbones import save_backbone

        backbone = module.to_backbone(
            source=f"dino:{format or 'records'}:{split}", data_fingerprint=fp, command=command,
            meta={"dino": config.to_dict(), "run": {k: v for k, v in opts.to_dict().items()},
                  "data": {"format": format, "root": _roots(data_root), "split": split,
                           "records": len(records), "frames": len(dataset), "frame_size": size,
                           "mean": mean, "std": std},
                  "steps": int(trainer.global_step), "epochs": int(trainer.current_epoch),
                  "final_loss": _final_loss(trainer)})
        digest = save_backbone(backbone, out_dir)
    return module, trainer, digest


def _roots(data_root: str | Path | list[str] | None) -> str | list[str] | None:
    if isinstance(data_root, list):
        return [str(p) for p in data_root]
    return str(data_root) if data_root else None


def _final_loss(trainer: L.Trainer) -> float | None:
    v = trainer.callback_metrics.get("loss")
    return None if v is None else float(v)


__all__ = ["DINO", "DINOConfig", "train_dino", "data_stats"]
