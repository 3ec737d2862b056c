"""Suite-wide settings and fixtures."""

import os
import subprocess
import sys

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")  # keep native thread pools small on 2-core machines


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """`alan ARGS` in-process through the real entry point (exit code, stdout, stderr)."""
    from alan.cli.main import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["alan", *args])
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return run
