import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
COMPAT = FIXTURES / "compat"
EXAMPLES = Path(__file__).parent.parent / "examples"

# the network of the end-to-end digits runs: small enough that a generation trains in about a second
SMALL_NETWORK: dict[str, Any] = {
    "modules": [
        {"name": "features", "network_structure_init": [1, 2], "network_structure": [0, 4]},
        {"name": "classification", "network_structure_init": [1], "network_structure": [0, 2]},
    ]
}

# the deterministic estimate meter with a short protocol: energies of two runs must match (latency, a
# clock, is left out of the comparisons)
FAST_ESTIMATE: dict[str, Any] = {
    "meter": "estimate",
    "warmup": 1,
    "min_window_s": 0.005,
    "min_repeats": 2,
    "max_repeats": 2,
    "time_cap_s": 0.05,
    "idle_s": 0.02,
}


# a one-generation digits search of three small networks under a step budget: the runs that test one
# option against the same run without it
DIGITS_STEPS_SEARCH: dict[str, Any] = {
    "seed": 0,
    "grammar": "cnn",
    "dataset": {"name": "digits"},
    "network": SMALL_NETWORK,
    "search": {"generations": 1, "lambda": 3},
    "training": {"budget": {"steps": 300}, "threads": 1},
    "energy": FAST_ESTIMATE,
}


def searched_ok(run_dir: Path) -> list:
    """The valid search evaluations of a run (no screening or final training)."""
    from evowatt.driver.store import RunStore

    store = RunStore(run_dir)
    try:
        return [row for row in store.searched() if row.ok]
    finally:
        store.close()


def config_dict(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A deep copy of `base` with dotted keys set, e.g. ``config_dict(BASE, **{"search.lambda": 3})``."""
    data = json.loads(json.dumps(base))
    for key, value in overrides.items():
        node = data
        *parts, last = key.split(".")
        for part in parts:
            node = node.setdefault(part, {})
        node[last] = value
    return data


def run_killed_at(data: dict[str, Any], run_dir: Path, kill_at: str) -> None:
    """``evowatt run`` of the config ``data`` into ``run_dir``, in a subprocess that ``EVOWATT_KILL_AT``
    (``kill_at``, e.g. ``after-record:5``) ends as a SIGKILL would (status 137)."""
    import yaml

    config = run_dir.parent / f"{run_dir.name}.yaml"
    config.write_text(yaml.safe_dump(data))
    env = {**os.environ, "EVOWATT_KILL_AT": kill_at}
    cmd = [sys.executable, "-m", "evowatt.cli", "run", str(config), "--out", str(run_dir)]
    proc = subprocess.run(cmd, env=env, capture_output=True)
    assert proc.returncode == 137, proc.stderr.decode()


@pytest.fixture
def compat_dir() -> Path:
    return COMPAT


@pytest.fixture(scope="session")
def digits():
    """digits' evo splits as (x, y) tensors by split name: the trainer tests' data."""
    import torch

    from evowatt.data.datasets import load_splits

    splits = load_splits("digits")
    return {
        name: (torch.tensor(getattr(splits, name).x), torch.tensor(getattr(splits, name).y))
        for name in ("evo_train", "evo_validation", "evo_test")
    }


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests run beside other work on 2 cores; oversubscribed torch threads make small nets ~100x slower."""
    import torch

    import evowatt.nn.threads

    before, cores = torch.get_num_threads(), evowatt.nn.threads.available_cores
    torch.set_num_threads(1)
    # training.threads: auto (the default) sees one core too: two test workers already share two
    evowatt.nn.threads.available_cores = lambda: 1
    yield
    evowatt.nn.threads.available_cores = cores
    torch.set_num_threads(before)
