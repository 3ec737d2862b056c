"""`alan synth`: writes a readable dataset, prints one summary line, refuses to overwrite."""

from __future__ import annotations

import subprocess
import sys

from alan.data import open_dataset
from alan.phantom import read_manifest


def _alan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alan.cli.main", *args], capture_output=True, text=True,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})


def test_synth_writes_reads_back_and_refuses_overwrite(tmp_path):
    out = tmp_path / "acdc"
    r = _alan("synth", "acdc", str(out), "--size", "small", "--seed", "2", "--spurious", "--broken-test")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1 and "15 records" in lines[0] and str(out) in lines[0]
    m = read_manifest(out)
    assert (m["seed"], m["size"], m["options"]["broken_test"]) == (2, "small", True)
    assert open_dataset(out).format == "acdc"

    r = _alan("synth", "acdc", str(out), "--size", "small")
    assert r.returncode == 2 and "not empty" in r.stderr and "Traceback" not in r.stderr
    r = _alan("synth", "acdc", str(out), "--size", "small", "--force", "--workers", "1")
    assert r.returncode == 0 and read_manifest(out)["options"].get("spurious") is False


def test_synth_rejects_bad_options(tmp_path):
    assert _alan("synth", "camus", str(tmp_path / "c"), "--release", "2020").returncode == 2
    assert _alan("synth", "tmed2", str(tmp_path / "t"), "--size", "huge").returncode == 2
    assert _alan("synth", "acdc", str(tmp_path / "a"), "--broken-test").returncode == 2
    assert not any(tmp_path.iterdir())
