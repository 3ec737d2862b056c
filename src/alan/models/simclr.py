"""SimCLR pre-training as a LightningModule (Chen et al. 2020; SSCL paper section 3.2 and 5.1).

Encoder f -> lightly `SimCLRProjectionHead` g -> lightly `NTXentLoss` with temperature 0.1 and
Adam at lr 1e-4 (the paper's values). Both views of a batch go through the encoder as one batch
of 2B. The views are made on the device inside the step (`SimCLRViews`, batched). The validation
loss uses views from a fixed seed per batch, so that early stopping compares like with like, and
the encoder weights at the best validation loss are kept (and survive a resume).
"""

from __future__ import annotations

import copy

import lightning as L
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead

from alan.models.encoders import Encoder
from alan.transforms.simclr_views import SimCLRViews, to_unit_float


class SimCLR(L.LightningModule):
    """SimCLR on grayscale images; batches are (B, 1, H, W) uint8 or float in [0, 1] tensors."""

    def __init__(self, encoder: Encoder, views: SimCLRViews | None = None, lr: float = 1e-4,
                 temperature: float = 0.1, hidden_dim: int | None = None, out_dim: int = 128,
                 weight_decay: float = 0.0):
        super().__init__()
        self.encoder = encoder
        self.views = views if views is not None else SimCLRViews()
        d = encoder.num_features
        self.projection_head = SimCLRProjectionHead(d, hidden_dim or d, out_dim)
        # gather_distributed: under DDP the negatives come from every process, as in SimCLR.
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)
        self.lr, self.weight_decay = lr, weight_decay
        self.best_val_loss: float | None = None
        self.best_epoch: int | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        self.save_hyperparameters(ignore=["encoder", "views"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projections z = g(f(x)) for a batch of images."""
        return self.projection_head(self.encoder(x))

    def loss(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = to_unit_float(batch if batch.ndim == 4 else batch[:, None])
        v0, v1 = self.views.pair(x, generator)
        z = self(torch.cat([v0, v1]))
        return self.criterion(z[: len(x)], z[len(x):])

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch))
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(10_000 + batch_idx)
        loss = self.loss(batch, g)
        self.log("val_loss", loss, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=len(batch))
        return loss

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        val = self.trainer.callback_metrics.get("val_loss")
        if val is None:
            return
        val = float(val)
        if self.best_val_loss is None or val < self.best_val_loss:
            self.best_val_loss, self.best_epoch = val, int(self.current_epoch)
            self._best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.encoder.model.state_dict().items()})

    def best_encoder(self) -> Encoder:
        """The encoder at the lowest validation loss (the current one if there was no validation)."""
        enc = copy.deepcopy(self.encoder).cpu()
        if self._best_state is not None:
            enc.model.load_state_dict(self._best_state)
        return enc

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sscl_best"] = {"val_loss": self.best_val_loss, "epoch": self.best_epoch, "state": self._best_state}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        best = checkpoint.get("sscl_best") or {}
        self.best_val_loss, self.best_epoch, self._best_state = best.get("val_loss"), best.get("epoch"), best.get("state")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


__all__ = ["SimCLR"]
