"""Does a search with a calibrated latency profile hand over faster models? (issue 30)

One Pareto search on digits, same seed and settings, run two or three ways:

- A: accuracy + energy with the analytical estimate, no profile: what a user without calibration gets;
- B: accuracy + latency predicted by a clock profile of this machine (`energy.profile`,
  `estimated:calibrated`), no clock during the search;
- C: accuracy + latency measured by the clock for every network: what honest timing costs and finds.

Every run's front (`evowatt.driver.results.front`) is then timed with the clock by one protocol whatever
the run
selected on (the run's measurement settings, the estimate meter, latency on, no profile), the three
fronts' networks interleaved round by round so a change of load on the machine falls on all runs alike,
the median of the rounds kept. Each front model is scored on the test split from its saved weights.

    .venv/bin/python bench/calibrated_search.py                       # calibrate (60 networks), A, B, C
    .venv/bin/python bench/calibrated_search.py --profile P.json      # reuse a digits (1,8,8) profile

Each run is appended as one JSON line to --report (default docs/calibrate-results.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from evowatt.config.load import read_config_file, validate_config
from evowatt.config.schema import RunConfig
from evowatt.driver.evaluate import score_on_test, time_models
from evowatt.driver.results import FrontModel, front
from evowatt.driver.rundir import GRAMMAR_NAME
from evowatt.driver.session import run
from evowatt.driver.setup import session_meter
from evowatt.driver.store import RunStore
from evowatt.driver.task_records import EvalTask
from evowatt.driver.tasks import search_task
from evowatt.energy.choice import MeterChoice

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "examples" / "digits-pareto.yaml"
RUNS = {
    "A": "accuracy + energy, analytical estimate",
    "B": "accuracy + latency, calibrated profile",
    "C": "accuracy + latency, clock every network",
}
ACCURATE_ENOUGH = 0.95  # evo_test accuracy a model must reach to count as "fast at this accuracy"


def configuration(name: str, args: argparse.Namespace, profile: str | None) -> RunConfig:
    """The shared digits Pareto search; only the second objective and the profile differ between runs."""
    data = read_config_file(BASE)
    data["seed"] = args.seed
    data["search"].update(generations=args.generations, population=args.population, **{"lambda": args.lam})
    second = "energy" if name == "A" else "latency"
    data["search"]["objectives"] = [
        {"metric": "accuracy", "objective": "maximize"},
        {"metric": second, "objective": "minimize"},
    ]
    # a step budget and one thread: the same network trains to the same weights in every run
    data["training"].update(threads=1, budget={"steps": args.steps})
    data["training"]["final_training"] = {"budget": None}
    data["energy"] = {"meter": "estimate", **({"profile": profile} if name == "B" else {})}
    return validate_config(data, source=f"{BASE} (run {name})")


def calibrate(path: Path, samples: int) -> None:
    """A clock profile for digits' input shape, with the command a user would type."""
    cli = Path(sys.executable).with_name("evowatt")
    command = [str(cli), "calibrate", "--meter", "clock", "--dataset", "digits", "--samples", str(samples)]
    command += ["--threads", "1", "--out", str(path)]
    print("$ evowatt", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)


def clock_task(config: RunConfig, store: RunStore, model: FrontModel) -> EvalTask:
    """The task of a front model's evaluation, set to time with the clock and no profile."""
    row = store.get(model.id)
    grammar_text = (store.dir / GRAMMAR_NAME).read_text(encoding="utf-8")  # the run's own copy
    candidate = row.candidate()
    task = search_task(config, grammar_text, store, candidate, meter=session_meter(config, store))
    clock = MeterChoice("estimate", reason="the estimate meter and the clock, no profile")
    task.settings = replace(task.settings, meter=clock, latency=True)
    return task


def search(name: str, args: argparse.Namespace, profile: str | None, root: Path) -> dict[str, Any]:
    """One search, its front with test accuracies and the tasks to time its networks."""
    config = configuration(name, args, profile)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = run(config, out=root / f"run-{name}")
    seconds = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    models = front(result.run_dir)
    store = RunStore(result.run_dir)
    try:
        tasks, tests = {}, {}
        for model in models:
            if model.id not in tasks:
                tasks[model.id] = clock_task(config, store, model)
                tests[model.id] = score_on_test(tasks[model.id], store.weights_path(model.id))
    finally:
        store.close()
    print(
        f"run {name}: {result.evaluations} evaluations in {seconds:.0f} s, front of {len(models)}", flush=True
    )
    return {
        "name": name,
        "config": config,
        "run_dir": str(result.run_dir),
        "seconds": seconds,
        "evaluations": result.evaluations,
        "front": models,
        "tasks": tasks,
        "tests": tests,
        "load_average": [round(load_before, 2), round(load_after, 2)],
    }


def time_fronts(runs: list[dict[str, Any]], rounds: int) -> None:
    """Clock latency of every front network, the runs interleaved round by round; the median is kept."""
    timings: dict[tuple[str, int], list[dict[str, Any]]] = {}
    order = [(r, i) for r in runs for i in r["tasks"]]
    for _ in range(rounds):
        for position in range(max(len(r["tasks"]) for r in runs)):  # A1 B1 C1 A2 B2 C2 ...
            for r in runs:
                ids = list(r["tasks"])
                if position < len(ids):
                    timings.setdefault((r["name"], ids[position]), []).append(
                        time_models(r["tasks"][ids[position]])
                    )
    for r, i in order:
        rows = timings[(r["name"], i)]
        r.setdefault("timed", {})[i] = {
            key: statistics.median(t[key]["value"] for t in rows) for key in rows[0]
        }


def summary(r: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run's front: each model, and the table's columns."""
    models = []
    for m in r["front"]:
        suffix = "" if m.exit == "0" else "_1"
        models.append(
            {
                "id": m.id,
                "exit": m.exit,
                "accuracy": m.value("accuracy"),
                "test_accuracy": r["tests"][m.id][f"test_accuracy{suffix}"]["value"],
                "latency_measured": r["timed"][m.id][f"latency{suffix}"],
                "latency_in_run": m.value("latency"),
                "latency_method": (m.metrics.get("latency") or {}).get("method"),
                "energy_in_run": m.value("energy"),
                "flops": m.value("flops"),
                "params": m.value("params"),
            }
        )
    best = models[0]  # the front is ordered most accurate first
    enough = [m for m in models if m["accuracy"] >= ACCURATE_ENOUGH]
    fastest = min(enough, key=lambda m: m["latency_measured"]) if enough else None
    out = {
        "most_accurate": {
            k: best[k] for k in ("id", "exit", "accuracy", "test_accuracy", "latency_measured")
        },
        "fastest_accurate": (
            {k: fastest[k] for k in ("id", "exit", "accuracy", "test_accuracy", "latency_measured")}
            if fastest
            else None
        ),
        "median_latency_measured": statistics.median(m["latency_measured"] for m in models),
        "models": models,
    }
    if r["name"] == "B":  # the profile's prediction against the clock, on the networks it handed over
        errors = [
            abs(m["latency_in_run"] - m["latency_measured"]) / m["latency_measured"]
            for m in models
            if m["latency_in_run"] is not None and m["latency_method"] == "estimated:calibrated"
        ]
        out["prediction_mdape"] = statistics.median(errors) if errors else None
    return out


def table(runs: list[dict[str, Any]]) -> str:
    def us(value: float | None) -> str:
        return "-" if value is None else f"{value * 1e6:.1f}"

    lines = [
        "| run | search s | evaluations | front | most accurate: test acc. / µs | fastest at evo_test "
        f"≥ {ACCURATE_ENOUGH}: µs / test acc. | front median µs | predicted vs measured, median abs. % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        s = r["summary"]
        best, fast = s["most_accurate"], s["fastest_accurate"]
        error = s.get("prediction_mdape")
        lines.append(
            f"| {r['name']}: {RUNS[r['name']]} | {r['seconds']:.0f} | {r['evaluations']} | "
            f"{len(r['front'])} | "
            f"{best['test_accuracy']:.3f} / {us(best['latency_measured'])} | "
            + (f"{us(fast['latency_measured'])} / {fast['test_accuracy']:.3f}" if fast else "none")
            + f" | {us(s['median_latency_measured'])} | "
            + ("-" if error is None else f"{100 * error:.0f}")
            + " |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default=None, help="a digits clock profile to use (default: calibrate)")
    parser.add_argument("--samples", type=int, default=60, help="networks to calibrate on without --profile")
    parser.add_argument("--runs", default="ABC", help="which of A, B, C to run (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--lambda", dest="lam", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150, help="training steps per network")
    parser.add_argument("--rounds", type=int, default=3, help="clock timings of each front network")
    parser.add_argument("--out", default=None, help="folder for the profile and runs (default a temp one)")
    parser.add_argument("--report", default=str(ROOT / "docs" / "calibrate-results.jsonl"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(args.out or tempfile.mkdtemp(prefix="evowatt-calibrated-search-"))
    root.mkdir(parents=True, exist_ok=True)
    profile = Path(args.profile) if args.profile else root / "profile-clock.json"
    calibration_s = None
    if not args.profile:
        started = time.perf_counter()
        calibrate(profile, args.samples)
        calibration_s = time.perf_counter() - started
    digest = json.loads(profile.read_text())["digest"] if "B" in args.runs else None
    runs = [search(name, args, str(profile.resolve()), root) for name in args.runs]
    time_fronts(runs, args.rounds)
    for r in runs:
        r["summary"] = summary(r)
    print(f"\nruns and profile in {root}\n")
    print(table(runs))
    with open(args.report, "a", encoding="utf-8") as handle:
        for r in runs:
            record = {
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "command": " ".join(["python", "bench/calibrated_search.py", *sys.argv[1:]]),
                "kind": "search",
                "run": r["name"],
                "what": RUNS[r["name"]],
                "objectives": [o.metric for o in r["config"].search.objectives],
                "profile": digest if r["name"] == "B" else None,
                "calibration_seconds": None if calibration_s is None else round(calibration_s, 1),
                "seed": args.seed,
                "budget_steps": args.steps,
                "generations": args.generations,
                "population": args.population,
                "lambda": args.lam,
                "timing_rounds": args.rounds,
                "seconds": round(r["seconds"], 1),
                "evaluations": r["evaluations"],
                "front_size": len(r["front"]),
                **{k: v for k, v in r["summary"].items()},
                "load_average": r["load_average"],
            }
            handle.write(json.dumps(record) + "\n")
    print(f"appended {len(runs)} lines to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
