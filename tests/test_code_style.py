"""The code stays ruff-clean and ruff-formatted (pyproject's [tool.ruff]), checked with the suite so CI
refuses a change that is not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE = ["src", "tests", "bench"]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_finds_nothing(command):
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", *command, *CODE], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
