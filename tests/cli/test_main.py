"""The `alan` command as a newcomer meets it: --version, help on every option, an example in every
command, and option values refused while parsing, before any work starts."""

import os

import pytest
import typer

import alan
from alan.cli.main import app


def _commands(command, path=("alan",)):
    subs = getattr(command, "commands", None)
    if subs is None:
        yield path, command
        return
    for name, sub in subs.items():
        yield from _commands(sub, (*path, name))


def _err(res) -> str:
    """stderr without rich's box and line wrapping."""
    return " ".join(res.stderr.replace("│", " ").split())


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_version(run_cli):
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"alan {alan.__version__}"


def test_the_walk_finds_every_command():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"alan analyze", "alan segment eval", "alan dino train", "alan reproduce alan", "alan sscl grid"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_option_has_help_and_every_command_an_example(path, command):
    missing = [p.name for p in command.params if not getattr(p, "hidden", False) and not (getattr(p, "help", "") or "").strip()]
    assert not missing, f"{' '.join(path)}: options without help: {missing}"
    assert "Example:" in (command.help or ""), f"{' '.join(path)}: no example in its help"
    assert "METHODS" not in (command.help or "") and not any("METHODS" in (getattr(p, "help", "") or "") for p in command.params)


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_renders(run_cli, path, command):
    res = run_cli(*path[1:], "--help")
    assert res.returncode == 0 and "Example" in res.stdout


def test_one_device_option_with_the_old_spelling_hidden():
    for path, command in COMMANDS:
        names = {n for p in command.params for n in getattr(p, "opts", [])}
        if "--accelerator" in names:
            assert "--device" in names, " ".join(path)
            alias = next(p for p in command.params if "--accelerator" in p.opts)
            assert alias.hidden


@pytest.mark.parametrize("args,option", [
    (["views", "eval", "--bank", "B", "--backbone", "X", "--data", "D", "--k", "0"], "--k"),
    (["views", "eval", "--bank", "B", "--backbone", "X", "--data", "D", "--k", "-3"], "--k"),
    (["views", "fit", "--backbone", "X", "--data", "D", "--out", "O", "--k", "0"], "--k"),
    (["raptor", "train", "--backbone", "X", "--data", "D", "--out", "O", "--k", "1"], "--k"),
    (["dino", "train", "--data", "D", "--out", "O", "--batch-size", "0"], "--batch-size"),
    (["dino", "train", "--data", "D", "--out", "O", "--precision", "bogus"], "--precision"),
    (["sscl", "pretrain", "--data", "D", "--out", "O", "--device", "warp-drive"], "--device"),
    (["parcels", "D", "--backbone", "X", "--head", "H", "--out", "O", "--batch-size", "0"], "--batch-size"),
    (["analyze", "V", "--backbone", "X", "--head", "H", "--segment", "S", "--out", "O", "--batch-size", "0"], "--batch-size"),
])
def test_out_of_range_values_are_refused_while_parsing(run_cli, args, option):
    res = run_cli(*args)  # every path here is missing: the error must be the option's, before any file is read
    assert res.returncode == 2 and option in _err(res) and "Traceback" not in res.stderr


def test_an_accelerator_that_is_not_there_is_refused(run_cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    for flag in ("--device", "--accelerator"):
        res = run_cli("raptor", "train", "--backbone", "X", "--data", "D", "--out", "O", flag, "gpu")
        assert res.returncode == 2 and "no CUDA GPU" in _err(res)


def test_output_paths_are_checked_while_parsing(run_cli, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    res = run_cli("parcels", "D", "--backbone", "X", "--head", "H", "--out", str(a_file))
    assert res.returncode == 2 and "not a folder" in _err(res)
    res = run_cli("segment", "fit", "--backbone", "X", "--head", "H", "--data", "D", "--out", str(tmp_path))
    assert res.returncode == 2 and "is a folder" in _err(res)
    res = run_cli("views", "fit", "--backbone", "X", "--data", "D", "--out", str(a_file / "bank"))
    assert res.returncode == 2 and "not a writable folder" in _err(res)
    assert a_file.read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_output_under_a_read_only_folder_is_refused(run_cli, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        res = run_cli("segment", "fit", "--backbone", "X", "--head", "H", "--data", "D", "--out", str(ro / "lv.json"))
        assert res.returncode == 2 and "not a writable folder" in _err(res)
    finally:
        ro.chmod(0o755)
