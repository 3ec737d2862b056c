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


# ---------------------------------------------------------------- resume: safe, checked, announced
import json  # noqa: E402
import os  # noqa: E402

import pytest  # noqa: E402

from alan.errors import AlanError, ArtifactError, DataError  # noqa: E402
from alan.training import check_run_dir, run_folder, start_run  # noqa: E402


def _opts(**kw):
    return RunOptions(max_epochs=1, progress=False, log_every_n_steps=1, checkpoint_every_n_steps=2,
                      accelerator="cpu", **kw)


def test_resume_says_from_which_step(tmp_path, capsys):
    fit(_Tiny(), _opts(), tmp_path, train_dataloaders=_loader())
    capsys.readouterr()
    fit(_Tiny(), RunOptions(**{**_opts().to_dict(), "max_epochs": 2, "resume": True}), tmp_path,
        train_dataloaders=_loader())
    err = capsys.readouterr().err
    assert f"resuming from {tmp_path / 'checkpoints' / 'last.ckpt'}: step 8, epoch " in err


class _Wider(_Tiny):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(5, 1)  # another architecture: the checkpoint's weights do not fit


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _damaged(tmp_path, how):
    fit(_Tiny(), _opts(), tmp_path, train_dataloaders=_loader())
    ckpt = last_checkpoint(tmp_path)
    if how == "truncated":
        data = ckpt.read_bytes()
        ckpt.write_bytes(data[: len(data) // 2])
    elif how == "malicious":
        payload = _Payload()
        _Payload.marker = tmp_path / "pwned"
        torch.save({"state_dict": {"lin.weight": torch.zeros(1, 3)}, "x": payload}, ckpt)
    elif how == "not a checkpoint":
        torch.save({"weights": torch.zeros(3)}, ckpt)
    return ckpt


@pytest.mark.parametrize("how,module,expected", [
    ("truncated", _Tiny, "not a PyTorch checkpoint (truncated or corrupt"),
    ("malicious", _Tiny, "refusing to unpickle: the file needs posix.system"),
    ("not a checkpoint", _Tiny, "not a training checkpoint"),
    ("other architecture", _Wider, "checkpoint of another model or architecture (shape mismatch"),
])
def test_bad_checkpoint_to_resume_is_one_line(tmp_path, how, module, expected):
    ckpt = _damaged(tmp_path, how)
    with pytest.raises(DataError) as e:
        fit(module(), _opts(resume=True), tmp_path, train_dataloaders=_loader())
    msg = str(e.value)
    assert msg.startswith(f"{ckpt}: ") and expected in msg, msg
    assert "\n" not in msg and "weights_only" not in msg  # never torch's advice to load it unsafely
    assert not (tmp_path / "pwned").exists()


def test_run_folder_policy(tmp_path):
    check_run_dir(tmp_path / "new", "dino_run")
    (tmp_path / "empty").mkdir()
    check_run_dir(tmp_path / "empty", "dino_run")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep")
    with pytest.raises(ArtifactError, match="not an alan output"):
        check_run_dir(tmp_path / "mine", "dino_run")
    fit(_Tiny(), _opts(), tmp_path / "run", train_dataloaders=_loader(), kind="dino_run")
    assert json.loads((tmp_path / "run" / ".alan-output.json").read_text())["kind"] == "dino_run"
    check_run_dir(tmp_path / "run", "dino_run")
    with pytest.raises(ArtifactError, match="is an alan 'dino_run' output, not 'raptor_run'"):
        check_run_dir(tmp_path / "run", "raptor_run")
    (tmp_path / "run" / ".alan-output.json").unlink()  # a run written before markers existed
    check_run_dir(tmp_path / "run", "raptor_run")


def test_a_run_that_fails_on_an_option_leaves_no_run_folder(tmp_path):
    run = tmp_path / "runs" / "dino"
    with pytest.raises((AlanError, ValueError, RuntimeError)):
        with run_folder(run, "dino_run"):
            (run).mkdir(parents=True)
            (run / "data_stats.json").write_text("{}")  # work before the trainer, e.g. cached statistics
            fit(_Tiny(), _opts(precision="bogus"), run, train_dataloaders=_loader())
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with run_folder(tmp_path / "kept", "dino_run"):
            (tmp_path / "kept" / "partial").write_text("x")
            raise RuntimeError("boom")
    assert list((tmp_path / "kept").iterdir()) == []  # the user's empty folder stays, emptied


class _Locked(_Tiny):
    """Like RAPTOR: a frozen part left out of its checkpoints, so Lightning loads non-strictly."""

    def __init__(self, out=1):
        super().__init__()
        self.frozen = torch.nn.Linear(3, 3).requires_grad_(False)
        self.lin = torch.nn.Linear(3, out)
        self.strict_loading = False

    def on_save_checkpoint(self, checkpoint):
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("frozen.")}


def test_non_strict_module_resumes_and_a_mismatch_is_still_refused(tmp_path):
    fit(_Locked(), _opts(), tmp_path, train_dataloaders=_loader())
    trainer = fit(_Locked(), RunOptions(**{**_opts().to_dict(), "max_epochs": 2, "resume": True}), tmp_path,
                  train_dataloaders=_loader())
    assert trainer.global_step == 16
    with pytest.raises(DataError, match=r"another model or architecture \(shape mismatch \(2\): lin.weight"):
        fit(_Locked(out=2), _opts(resume=True), tmp_path, train_dataloaders=_loader())


def test_only_the_first_ddp_process_writes_the_run_folder(tmp_path, monkeypatch):
    """Another rank creating the folder (or half a marker) while rank 0 checks it would make rank 0
    refuse its own run folder as foreign."""
    monkeypatch.setenv("RANK", "1")
    start_run(tmp_path / "run", "dino_run")
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("RANK", "0")
    start_run(tmp_path / "run", "dino_run")
    assert json.loads((tmp_path / "run" / ".alan-output.json").read_text()) == {"kind": "dino_run"}
