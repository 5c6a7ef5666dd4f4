"""The Ray runner against the process pool and the sequential runner: overhead per task and search speed-up.

``overhead``: tiny tasks, one worker per runner (so the figure is latency, not parallelism), after a
warm-up batch (worker start, torch import, data load are excluded and printed apart). Two tasks: a no-op
(``id``: pure dispatch and result transfer) and a 1-step evaluation of a small digits network (task and
result serialisation, the dataset through the object store).

``search``: a short Fashion-MNIST search under a step budget (the same work in both), 2 single-thread Ray
workers against the sequential runner with 2 torch threads. Wall time of each, and the speed-up.

The script re-runs itself inside a network namespace with only loopback (root and ``ip`` needed), so
Ray's traffic stays on this machine.

    .venv/bin/python bench/ray.py overhead --tasks 40
    .venv/bin/python bench/ray.py search --generations 1 --lambda 4 --steps 100
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evowatt.driver.runners import Runner

# this file is named ray.py: keep its folder off the path, or `import ray` would import this script
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

NETWORK = {
    "modules": [
        {"name": "features", "network_structure_init": [1, 2], "network_structure": [0, 4]},
        {"name": "classification", "network_structure_init": [1], "network_structure": [0, 2]},
    ]
}


def in_namespace(argv: list[str]) -> int:
    """Re-run this script inside a fresh loopback-only network namespace; its exit status."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print("bench/ray.py runs Ray inside a loopback-only network namespace: run it as root with iproute2")
        return 2
    name = f"evowatt-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        env = {**os.environ, "EVOWATT_RAY_NETNS": "1", "RAY_ADDRESS": ""}
        cmd = ["ip", "netns", "exec", name, sys.executable, str(Path(__file__).resolve()), *argv]
        return subprocess.run(cmd, env=env).returncode
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def tiny_tasks(count: int, start_id: int = 0):
    import numpy as np

    from evowatt.config.load import validate_config
    from evowatt.driver.setup import prepare
    from evowatt.driver.task_records import DataRef, EvalSettings, EvalTask
    from evowatt.records import Budget
    from evowatt.representation.genome import random_genome

    config = validate_config({"network": NETWORK})
    grammar, text = prepare(config)
    genome = random_genome(grammar, config.network, np.random.default_rng(1)).to_json()
    settings = EvalSettings(budget=Budget(steps=1), threads=1)
    return [
        EvalTask(i, genome, text, DataRef("digits"), settings, seed=i, return_weights=True)
        for i in range(start_id, start_id + count)
    ]


def noop(task, splits=None):
    """The no-op task: what a runner costs with no work in it."""
    return task.id


def timed(runner: Runner, fn: Callable[..., Any], tasks: list[Any]) -> float:
    start = time.perf_counter()
    results = list(runner.map(fn, tasks))
    assert len(results) == len(tasks)
    return time.perf_counter() - start


def overhead(args: argparse.Namespace) -> None:
    import ray
    import torch

    from evowatt.config.schema import RunnerConfig
    from evowatt.driver.evaluate import evaluate
    from evowatt.driver.runners import ProcessRunner, RayRunner, SequentialRunner

    torch.set_num_threads(1)
    rows = []
    ray.init(num_cpus=1, include_dashboard=False, logging_level="warning")
    runners: dict[str, Runner] = {
        "sequential": SequentialRunner(),
        "process (1 worker)": ProcessRunner(1),
        "ray (1 CPU)": RayRunner(RunnerConfig(kind="ray", cpus=1)),
    }
    try:
        for name, runner in runners.items():
            warm = timed(runner, evaluate, tiny_tasks(4, 10_000))
            empty = timed(runner, noop, tiny_tasks(args.tasks, 20_000)) / args.tasks
            tiny = timed(runner, evaluate, tiny_tasks(args.tasks, 30_000)) / args.tasks
            rows.append((name, warm, empty, tiny))
    finally:
        for runner in runners.values():
            runner.close()
        ray.shutdown()
    base = rows[0][3]
    print(f"\n{args.tasks} tiny tasks per runner, one worker each, after a warm-up batch of 4")
    print(
        "| runner | warm-up, 4 evaluations (s) | no-op (ms/task) | 1-step evaluation (ms/task) | "
        "overhead vs sequential (ms/task) |"
    )
    print("|---|---|---|---|---|")
    for name, warm, empty, tiny in rows:
        print(f"| {name} | {warm:.2f} | {empty * 1e3:.2f} | {tiny * 1e3:.1f} | {(tiny - base) * 1e3:+.1f} |")


def search(args: argparse.Namespace) -> None:
    import yaml

    from evowatt.config.load import validate_config
    from evowatt.driver.session import run

    example = yaml.safe_load((ROOT / "examples" / "fashion-mnist.yaml").read_text())
    example["search"].update({"generations": args.generations, "lambda": args.lambda_, "time_limit": None})
    example["training"].update({"device": "cpu", "budget": {"steps": args.steps}, "final_training": {}})
    example["energy"] = {"meter": "estimate"}
    example.pop("output", None)
    variants = {
        "sequential, 2 threads": {"training": {"threads": 2}, "runner": {"kind": "sequential"}},
        "ray, 2 workers x 1 thread": {"training": {"threads": 1}, "runner": {"kind": "ray", "cpus": 1}},
    }
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, change in variants.items():  # the Ray run starts (and stops) its local Ray: counted
            config = {**example, "runner": change["runner"]}
            config["training"] = {**example["training"], **change["training"]}
            start = time.perf_counter()
            result = run(validate_config(config), out=Path(tmp) / name.split(",")[0])
            walls[name] = (time.perf_counter() - start, result.evaluations)
    print(
        f"\nFashion-MNIST search: generations {args.generations}, lambda {args.lambda_}, "
        f"{args.steps} steps per evaluation, train subset {example['dataset'].get('train_subset')}"
    )
    print("| runner | evaluations | wall, start-up included (s) | speed-up |")
    print("|---|---|---|---|")
    seq = walls["sequential, 2 threads"][0]
    for name, (wall, evaluations) in walls.items():
        print(f"| {name} | {evaluations} | {wall:.1f} | {seq / wall:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("overhead")
    p.add_argument("--tasks", type=int, default=40)
    p = sub.add_parser("search")
    p.add_argument("--generations", type=int, default=1)
    p.add_argument("--lambda", dest="lambda_", type=int, default=4)
    p.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    if os.environ.get("EVOWATT_RAY_NETNS") != "1":
        return in_namespace(sys.argv[1:])
    overhead(args) if args.what == "overhead" else search(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
