"""Helpers shared by the tests/test_hardening_*.py files: a user error is exit 2, one message that names
the input, no traceback; a refused command leaves every file of a run directory byte-identical."""

from __future__ import annotations

import hashlib
from pathlib import Path

from evowatt.cli.main import main
from tests.conftest import FAST_ESTIMATE


def fails(capsys, argv: list[str], *needles: str, code: int = 2) -> str:
    """Run the CLI in-process; assert the exit code, no traceback, and that the message names each needle."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    flat = " ".join(err.split())
    assert rc == code, f"exit {rc}, expected {code}: {err}"
    assert "Traceback" not in err and "internal error" not in err, err
    assert "evowatt" in err.splitlines()[0] and "error:" in err.splitlines()[0], err
    for needle in needles:
        assert " ".join(needle.split()) in flat, f"{needle!r} not in: {err}"
    return err


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` (relative path -> SHA-256), directories included as entries."""
    out = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "<dir>"
    return out


# a run that takes a few seconds: digits, one evaluation per generation, a step budget, a short protocol
TINY_RUN = {
    "seed": 1,
    "grammar": "cnn",
    "dataset": {"name": "digits"},
    "network": {
        "modules": [
            {"name": "features", "network_structure_init": [1], "network_structure": [1, 2]},
            {"name": "classification", "network_structure_init": [1], "network_structure": [1, 1]},
        ]
    },
    "search": {"generations": 1, "lambda": 1},
    "training": {"budget": {"steps": 3}, "threads": 1},
    "energy": FAST_ESTIMATE,
}
