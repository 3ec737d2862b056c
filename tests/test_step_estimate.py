"""The step-time estimate every training run prints: the run's real step count and a measured time."""

import io
import re

import lightning as L
import torch

from alan.step_estimate import StepTimeEstimate, format_seconds


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def training_step(self, batch, _):
        return self.lin(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_estimate_names_the_steps_of_the_run():
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(40, 4)), batch_size=4)  # 10 per epoch
    stream = io.StringIO()
    est = StepTimeEstimate(warmup=1, measure=2, stream=stream)
    trainer = L.Trainer(max_epochs=3, callbacks=[est], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(Tiny(), data)
    m = re.fullmatch(r"30 steps; ([\d.]+) s/step measured over 2 steps on cpu: about (.+) left\n", stream.getvalue())
    assert m, stream.getvalue()


def test_format_seconds():
    assert format_seconds(40) == "40 s" and format_seconds(600) == "10 min" and format_seconds(3900) == "1 h 05 min"
