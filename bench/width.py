"""Search narrow, train wide: the network a finished run handed over, given the run's own final training
at several widths (``experimental.final_training.width``), so that only the width differs.

    python bench/search.py --configs c-pareto --seeds 0 --out /tmp/runs [...]   # keep the run directory
    python bench/width.py --run /tmp/runs/c-pareto-seed0 --widths 1 1.5 2 --results docs/width-results.jsonl

For each width: the most accurate handed-over model's genome (or ``--source``'s, any evaluation of the
run) that many times as wide (every hidden layer's channels and units), trained with the run's
final-training settings (budget of the most accurate model unless ``--seconds``, data, recipe, learning
genes) and the seed of the run's own final training; width 1 starts from
the search's weights when the run's ``start_from`` says so, a wider network from fresh weights. Nothing
is written into the run. Printed and appended as JSON lines: test accuracy (the official test set,
reported only), evo_test accuracy, FLOPs, parameters, energy per inference with its method, epochs.
``--set`` changes the run's config for these trainings only (another augmentation, schedule or learning
override), so that a recipe can be compared on one network too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from evowatt.config.load import apply_overrides, validate_config
from evowatt.config.moved import upgrade_recorded
from evowatt.driver.evaluate import evaluate
from evowatt.driver.setup import prepare, session_meter
from evowatt.driver.store import RunStore
from evowatt.driver.tasks import final_candidate, final_task
from evowatt.errors import EvowattError
from evowatt.records import Budget, EvalResult


def _value(result: EvalResult, name: str) -> float | None:
    metric = result.metrics.get(name)
    return None if metric is None else float(metric["value"])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="a finished run directory with a final training")
    parser.add_argument("--widths", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    parser.add_argument("--results", help="append one JSON line per width here")
    parser.add_argument(
        "--source", type=int, help="train this evaluation's network (default: the run's first final's)"
    )
    parser.add_argument("--seconds", type=float, help="the final training's budget (default: the run's)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change the run's config for these trainings only, e.g. "
        "--set 'training.final_training.augment={shift: 0, flip: false}' (repeatable)",
    )
    args = parser.parse_args()
    run_dir = Path(args.run)
    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        config = validate_config(apply_overrides(upgrade_recorded(data), args.set), overrides=args.set)
        prepare(config)
        store = RunStore(run_dir)
    except (OSError, EvowattError) as exc:
        print(f"width.py: {exc}", file=sys.stderr)
        return 2
    finals = store.finals()
    if not finals or config.training.final_training.budget is None:
        print(f"width.py: {run_dir} has no final training to repeat", file=sys.stderr)
        return 2
    first = finals[0]  # the most accurate handed-over model's
    source = store.get(first.parent_id if args.source is None else args.source)
    if source is None or not source.ok:
        print(f"width.py: {run_dir} has no valid evaluation #{args.source}", file=sys.stderr)
        return 2
    grammar_text = (run_dir / "grammar.grammar").read_text(encoding="utf-8")
    budget = config.training.final_training.budget.to_budget()
    if args.seconds is not None:
        budget = Budget(seconds=args.seconds)
    metrics = first.metrics
    print(
        f"run {run_dir}: its final #{first.id} of #{first.parent_id} (width "
        f"{first.genome.get('width', 1.0):g}): test accuracy {metrics['test_accuracy']['value']:.4f}, "
        f"{metrics['flops']['value'] / 1e6:.2f} MFLOP; training #{source.id} "
        f"({source.metrics['flops']['value'] / 1e6:.2f} MFLOP) for " + budget.describe(),
        flush=True,
    )
    for width in args.widths:
        candidate = final_candidate(config, first.id, first.generation, source, width)
        meter = session_meter(config, store)
        task = final_task(config, grammar_text, store, candidate, source, budget, meter=meter)
        began = time.perf_counter()
        result = EvalResult.coerce(evaluate(task))
        row = {
            "run": str(run_dir),
            "source": source.id,
            "source_flops": source.metrics["flops"]["value"],
            "source_accuracy": source.metrics["accuracy"]["value"],
            "width": width,
            "set": args.set,
            "start": "search" if task.init_weights is not None else "fresh",
            "budget_seconds": budget.seconds,
            "status": result.status.value,
            "test_accuracy": _value(result, "test_accuracy"),
            "evo_test_accuracy": _value(result, "accuracy"),
            "flops": _value(result, "flops"),
            "params": _value(result, "params"),
            "energy": _value(result, "energy"),
            "energy_method": (result.metrics.get("energy") or {}).get("method"),
            "epochs": (result.train or {}).get("epochs"),
            "wall_seconds": time.perf_counter() - began,
        }
        print(json.dumps(row), flush=True)
        if args.results:
            with open(args.results, "a") as out:
                out.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
