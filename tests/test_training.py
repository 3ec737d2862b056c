import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from alan.training import RunOptions, fit, last_checkpoint


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.lin(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


def test_resume_continues_and_keeps_the_earlier_log(tmp_path):
    opts = RunOptions(max_epochs=1, progress=False, log_every_n_steps=1, checkpoint_every_n_steps=2, accelerator="cpu")
    fit(_Tiny(), opts, tmp_path, train_dataloaders=_loader())
    assert last_checkpoint(tmp_path) is not None
    first = (tmp_path / "logs" / "metrics.csv").read_text()
    opts2 = RunOptions(max_epochs=2, progress=False, log_every_n_steps=1, checkpoint_every_n_steps=2, accelerator="cpu", resume=True)
    trainer = fit(_Tiny(), opts2, tmp_path, train_dataloaders=_loader())
    assert trainer.global_step == 16  # continued from step 8, not restarted
    assert (tmp_path / "logs" / "metrics.part1.csv").read_text() == first
    assert (tmp_path / "logs" / "metrics.csv").is_file()


def test_parse_devices():
    from alan.cli._options import parse_devices

    assert parse_devices("2") == 2 and parse_devices("-1") == -1
    assert parse_devices("auto") == "auto" and parse_devices("0,1") == "0,1"
