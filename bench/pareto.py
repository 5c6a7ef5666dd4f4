"""The Pareto search against the energy-aware ES and random search on the real Fashion-MNIST (2 cores).

    python bench/pareto.py --seeds 0 1 2              # 4 configurations x 3 seeds x 5 minutes: about 65 min
    python bench/pareto.py --report                   # the table again from docs/pareto-results.jsonl

Each configuration gets the same wall-time budget per run (``--minutes``, default 5: `search.time_limit`),
the same per-individual budget, data (a 20,000-image stratified training subset) and network bounds, and
a partition gene, so every network has two exits. Every evaluation is also scored on the official test
split (``training.report_test``: reported, never selected on), so each run's test-set front is the
non-dominated set of (test accuracy, energy per inference) over every model it evaluated.

Figures per run: the hypervolume of that front in (test accuracy up, log10 energy down) against one
reference point shared by every run (chance accuracy 0.1, and 0.1 decade beyond the costliest model any run
evaluated), and the energy of the cheapest model within 0.5 percentage points of the accuracy-only ES's
most accurate model of the same seed. Energies come from the run's meter, with its method label.
Each run is appended to the JSON-lines file as it ends, so the comparison can stop and continue; each row
records the machine's 1-minute load average before and after it, since a shared machine makes equal
wall time unequal work (`--max-load` leaves rows above it out of the table).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from evowatt.config.load import validate_config
from evowatt.driver.session import run
from evowatt.driver.store import RunStore
from evowatt.records import Status
from evowatt.search.front import hypervolume, nondominated

RESULTS = Path(__file__).parent.parent / "docs" / "pareto-results.jsonl"
CONFIGS = ("pareto", "es-energy", "random", "es-accuracy")


def configuration(name: str, seed: int, minutes: float, seconds: float) -> dict[str, Any]:
    """One configuration; everything but the search is shared."""
    data: dict[str, Any] = {
        "seed": seed,
        "grammar": "cnn",
        "dataset": {"name": "fashion-mnist", "train_subset": 20000},
        "network": {
            "modules": [
                {"name": "features", "network_structure_init": [2, 3, 4], "network_structure": [0, 12]},
                {"name": "classification", "network_structure_init": [1, 2], "network_structure": [0, 4]},
            ],
            "macro_structure": ["learning", "model_partition"],
        },
        "search": {
            "generations": 1000,
            "lambda": 4,
            "time_limit": minutes * 60,
            "caps": {"max_params": 2_000_000, "max_flops": 200_000_000},
        },
        "training": {"budget": {"seconds": seconds}, "report_test": True},
        "energy": {"meter": "auto"},
        "fitness": {"metric": "accuracy"},
    }
    if name == "pareto":
        data["search"].update(algorithm="pareto", population=8, constraints=["accuracy > 0.5"])
    elif name == "random":
        data["search"].update(algorithm="random", constraints=["accuracy > 0.5"])
    elif name == "es-energy":  # ENERGIZE's form: accuracy + w / energy while accuracy > 0.8
        data["fitness"] = {
            "terms": [
                {"metric": "accuracy"},
                {
                    "metric": "energy",
                    "objective": "minimize",
                    "weight": 1e-8,
                    "conditions": [{"metric": "accuracy", "type": "greater_than", "value": 0.8}],
                },
            ]
        }
    return data


def points(run_dir: Path) -> list[dict[str, Any]]:
    """Every evaluated model (each exit) with its test accuracy, evo_test accuracy, energy and FLOPs."""
    store = RunStore(run_dir)
    try:
        rows = [r for r in store.select(status=Status.OK) if r.kind != "final"]
        generations = store.generations()
    finally:
        store.close()
    out = []
    for row in rows:
        m = row.metrics
        for exit_, suffix in (("0", ""), ("1", "_1")):
            if f"test_accuracy{suffix}" not in m or f"energy{suffix}" not in m:
                continue
            out.append(
                {
                    "id": row.id,
                    "exit": exit_,
                    "test_accuracy": m[f"test_accuracy{suffix}"]["value"],
                    "accuracy": m[f"accuracy{suffix}"]["value"],
                    "energy": m[f"energy{suffix}"]["value"],
                    "energy_method": m[f"energy{suffix}"]["method"],
                    "flops": m.get(f"flops{suffix}", {}).get("value"),
                    "parent": bool(generations) and row.id == generations[-1].best_id,
                }
            )
    return out


def run_one(name: str, seed: int, minutes: float, seconds: float, root: Path) -> dict[str, Any]:
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    result = run(validate_config(configuration(name, seed, minutes, seconds)), out=root / f"{name}-{seed}")
    return {
        "load": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # 1-min load average, before / after
        "configuration": name,
        "seed": seed,
        "minutes": minutes,
        "evaluations": result.evaluations,
        "generations": len(result.generations),
        "seconds": time.perf_counter() - start,
        "best_id": result.best.id if result.best is not None else None,
        "points": points(result.run_dir),
    }


def _front(pts: list[dict[str, Any]]) -> np.ndarray:
    values = np.array([[-p["test_accuracy"], math.log10(p["energy"])] for p in pts if p["energy"] > 0])
    return values[nondominated(values)] if len(values) else values


def report(rows: list[dict[str, Any]]) -> str:
    everything = [p for r in rows for p in r["points"] if p["energy"] > 0]
    if not everything:
        return "no results yet"
    reference = [-0.1, math.log10(max(p["energy"] for p in everything)) + 0.1]
    methods = sorted({p["energy_method"] for p in everything})
    loads = [x for r in rows for x in (r.get("load") or [])]
    lines = [
        f"runs: {len(rows)}; 1-minute load average during them: "
        + (f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not recorded"),
        f"reference point: test accuracy 0.1, log10 energy {reference[1]:.2f} (J); energy method(s): "
        + ", ".join(methods),
        "",
        "| seed | configuration | evaluations | hypervolume | best test accuracy | its energy (J) "
        "| cheapest within 0.5 pp of accuracy-only ES best (J) | energy vs that best |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_seed.setdefault(r["seed"], {})[r["configuration"]] = r
    for seed, runs in sorted(by_seed.items()):
        baseline = runs.get("es-accuracy")
        bar = None
        if baseline is not None:
            parent = [p for p in baseline["points"] if p["id"] == baseline["best_id"] and p["exit"] == "0"]
            bar = parent[0] if parent else None
        for name in CONFIGS:
            if name not in runs:
                continue
            r = runs[name]
            hv = hypervolume(_front(r["points"]), reference)
            best = max(r["points"], key=lambda p: p["test_accuracy"], default=None)
            cheapest, ratio = "-", "-"
            if bar is not None:
                close = [p for p in r["points"] if p["test_accuracy"] >= bar["test_accuracy"] - 0.005]
                if close:
                    c = min(close, key=lambda p: p["energy"])
                    cheapest = f"{c['energy']:.3g} (test {c['test_accuracy']:.3f})"
                    ratio = f"{100 * (c['energy'] / bar['energy'] - 1):+.0f} %"
            lines.append(
                f"| {seed} | {name} | {r['evaluations']} | {hv:.4f} | "
                f"{best['test_accuracy']:.3f} | {best['energy']:.3g} | {cheapest} | {ratio} |"
                if best
                else f"| {seed} | {name} | {r['evaluations']} | {hv:.4f} | - | - | - | - |"
            )
        if bar is not None:
            lines.append(
                f"| {seed} | (accuracy-only ES best: #{bar['id']}) | | | {bar['test_accuracy']:.3f} "
                f"| {bar['energy']:.3g} | | |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-time budget of each run")
    parser.add_argument("--seconds", type=float, default=10.0, help="training budget of each individual")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report", action="store_true", help="only print the table of recorded runs")
    parser.add_argument("--max-load", type=float, help="leave out runs recorded under a higher load average")
    args = parser.parse_args()
    recorded = []
    if args.results.exists():
        recorded = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    if not args.report:
        done = {(r["configuration"], r["seed"], r["minutes"]) for r in recorded}
        with tempfile.TemporaryDirectory(prefix="bench-pareto-") as root:
            for seed in args.seeds:
                for name in args.configs:
                    if (name, seed, args.minutes) in done:
                        continue
                    row = run_one(name, seed, args.minutes, args.seconds, Path(root))
                    with args.results.open("a") as handle:
                        handle.write(json.dumps(row) + "\n")
                    recorded.append(row)
                    print(f"{name} seed {seed}: {row['evaluations']} evaluations", flush=True)
    rows = [r for r in recorded if r["minutes"] == args.minutes]
    if args.max_load is not None:
        rows = [r for r in rows if max(r.get("load") or [math.inf]) <= args.max_load]
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
