"""The paper's contributions one by one, on digits with the estimate meter, same seeds and step budget.

    python bench/contributions.py [--seeds 0 1 2] [--generations 6] [--lam 4] [--steps 60] [--final-steps 400]

Configurations (each adds to the one before):
  accuracy-only   fitness = evo_test accuracy (the Fast-DENSER baseline)
  energy-aware    fitness = accuracy + w / energy, the energy term counting only while accuracy > 0.9
  + module reuse  reuse_module 0.15: archived modules come back with probability proportional to 1/energy
  + partition     the same fitness on the early-exit model (accuracy_1, energy_1), trained with the full one

For each run the best genome is trained again from scratch for --final-steps (the same for all), and the
model the fitness optimises (model 1 under partition, else the full model) is reported: test accuracy on
the held-out test split and estimated energy per inference. Energies are modelled (``estimated:model``),
so their reductions are not measured watts and not comparable one to one with the paper's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from evowatt.config.load import validate_config
from evowatt.driver.rows import Evaluation
from evowatt.driver.session import run

ENERGY_WEIGHT = 1e-8  # J: a term of 0.1 for a network of 100 nJ per inference
THRESHOLD = 0.9


def base(
    seed: int,
    generations: int,
    lam: int,
    steps: int | None = None,
    final_steps: int | None = None,
    dataset: dict | None = None,
    budget: dict | None = None,
    final_budget: dict | None = None,
    energy: dict | None = None,
) -> dict:
    """One configuration's common part; budgets default to optimiser steps (deterministic)."""
    return {
        "seed": seed,
        "grammar": "cnn",
        "dataset": dataset or {"name": "digits"},
        "network": {
            "modules": [
                {"name": "features", "network_structure_init": [1, 2, 3], "network_structure": [0, 8]},
                {"name": "classification", "network_structure_init": [1, 2], "network_structure": [0, 4]},
            ],
            "macro_structure": ["learning"],
        },
        "search": {"generations": generations, "lambda": lam, "mutation": {"reuse_module": 0.0}},
        "training": {
            "budget": budget or {"steps": steps},
            "threads": 1,
            "final_training": {"budget": final_budget or {"steps": final_steps}},
        },
        "energy": energy
        or {"meter": "estimate", "time_cap_s": 0.05, "min_window_s": 0.01, "min_repeats": 2, "warmup": 1},
        "fitness": {"metric": "accuracy"},
    }


def energy_terms(suffix: str, weight: float = ENERGY_WEIGHT, threshold: float = THRESHOLD) -> dict:
    return {
        "terms": [
            {"metric": f"accuracy{suffix}"},
            {
                "metric": f"energy{suffix}",
                "objective": "minimize",
                "weight": weight,
                "conditions": [{"metric": f"accuracy{suffix}", "type": "greater_than", "value": threshold}],
            },
        ]
    }


def configurations(
    seed: int, weight: float = ENERGY_WEIGHT, threshold: float = THRESHOLD, **sizes: Any
) -> dict[str, tuple[dict, str]]:
    accuracy = base(seed, **sizes)
    energy = base(seed, **sizes)
    energy["fitness"] = energy_terms("", weight, threshold)
    reuse = json.loads(json.dumps(energy))
    reuse["search"]["mutation"]["reuse_module"] = 0.15
    partition = json.loads(json.dumps(reuse))
    partition["network"]["macro_structure"] = ["learning", "model_partition"]
    partition["fitness"] = energy_terms("_1", weight, threshold)
    return {
        "accuracy-only": (accuracy, ""),
        "energy-aware": (energy, ""),
        "+ module reuse": (reuse, ""),
        "+ partition": (partition, "_1"),
    }


def run_configuration(name: str, data: dict, suffix: str, seed: int, root: Path) -> dict:
    """Run one configuration and seed; the row reports the model its fitness optimises (``suffix``)."""
    start = time.perf_counter()
    slug = name.replace("+ ", "").replace(" ", "-")
    result = run(validate_config(data), out=root / f"{slug}-seed{seed}")
    final = result.final
    energy = final.metrics.get(f"energy{suffix}") if final is not None else None
    return {
        "configuration": name,
        "seed": seed,
        "model": "model 1 (early exit)" if suffix else "full",
        "test_accuracy": value(final, f"test_accuracy{suffix}"),
        "energy": value(final, f"energy{suffix}"),
        "energy_method": (energy or {}).get("method"),
        "flops": value(final, f"flops{suffix}"),
        "evaluations": result.evaluations,
        "generations": len(result.generations),
        "seconds": time.perf_counter() - start,
        "run_dir": str(result.run_dir),
    }


def value(row: Evaluation | None, name: str) -> float | None:
    return None if row is None else row.metric(name)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--generations", type=int, default=6)
    parser.add_argument("--lam", type=int, default=4)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--final-steps", type=int, default=400)
    parser.add_argument("--out", help="keep the run directories here (default: a temporary directory)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = {
        "generations": args.generations,
        "lam": args.lam,
        "steps": args.steps,
        "final_steps": args.final_steps,
    }
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="evowatt-contrib-"))
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:
        for name, (data, suffix) in configurations(seed, **sizes).items():
            row = run_configuration(name, data, suffix, seed, root)
            results.setdefault(name, []).append(row)
            print(
                f"{name:15s} seed {seed}: test accuracy {row['test_accuracy']:.4f}, "
                f"energy {row['energy'] * 1e9:.1f} nJ, {row['flops']:.0f} FLOPs, "
                f"{row['evaluations']} evaluations, {row['seconds']:.0f} s",
                file=sys.stderr,
            )
    baseline = statistics.fmean(r["energy"] for r in results["accuracy-only"])
    base_acc = statistics.fmean(r["test_accuracy"] for r in results["accuracy-only"])

    def mean_sd(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.4g} ± {sd:.2g}"

    print(
        f"digits, estimate meter; seeds {args.seeds}; {args.generations} generations, lambda {args.lam}, "
        f"{args.steps} steps per individual, final training {args.final_steps} steps; mean ± sd over seeds"
    )
    print()
    print(
        "| configuration | model | test accuracy | energy / inference (nJ, estimated:model) | FLOPs "
        "| energy reduction vs accuracy-only | accuracy vs accuracy-only (pp) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        energies = [r["energy"] * 1e9 for r in rows]
        accs = [r["test_accuracy"] for r in rows]
        reduction = 100 * (1 - statistics.fmean(r["energy"] for r in rows) / baseline)
        delta = 100 * (statistics.fmean(accs) - base_acc)
        model = "model 1 (early exit)" if name == "+ partition" else "full"
        print(
            f"| {name} | {model} | {mean_sd(accs)} | {mean_sd(energies)} | "
            f"{mean_sd([r['flops'] for r in rows])} | {reduction:.1f} % | {delta:+.2f} |"
        )
    print()
    print(f"run directories: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
