"""Short, deterministic comparisons behind defaults of issue 11:

  start       where the final training starts (``training.final_training.start_from``: scratch or the
              search's weights)
  grammar     which grammar (cnn or the previous cnn_v1)
  validation  whether the final training also learns from evo_validation
              (``training.final_training.train_on_validation``)
  optimiser   whether continued trainings resume their optimiser (``experimental.resume_optimiser``; an ES
              with inheritance and three rungs, the final training from the search's weights)
  learning    whether the final training keeps the evolved learning genes or uses Adam at 0.002 with
              batches of 128 (``training.final_training.learning``)

    python bench/choices.py start --seeds 0 1 2 3 4      # digits: about 2 minutes on 2 quiet cores
    python bench/choices.py grammar --seeds 0 1 2 3 4
    python bench/choices.py validation --seeds 0 1 2 3 4
    python bench/choices.py optimiser --seeds 0 1 2 3 4
    python bench/choices.py learning --seeds 0 1 2 3 4
    python bench/choices.py start --dataset fashion-mnist --train-subset 3000 --seeds 0 1 2

Every run is the same small ES under an optimiser-step budget on one torch thread, so the two arms of a
comparison share the seed's search exactly (``start``, ``validation``, ``learning``: the identical
search, only the final training differs) or differ only in the grammar (``grammar``) or in how continued
trainings start (``optimiser``: the searches part once a resumed training scores differently). Printed:
the official test accuracy of the final-trained model (digits: a seeded held-out split) and its FLOPs,
per seed and as the mean, and the mean paired difference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from evowatt.config.load import validate_config
from evowatt.driver.session import run

ARMS = {
    "start": ("scratch", "search"),
    "grammar": ("cnn_v1", "cnn"),
    "validation": ("hold_out", "train"),  # final_training.train_on_validation: false | true
    "optimiser": ("fresh", "resume"),  # experimental.resume_optimiser, in an ES with inheritance and rungs
    "learning": ("evolved", "adam"),  # final_training.learning: the evolved genes or Adam, 0.002, batch 128
}


def config(seed: int, what: str, arm: str, args: argparse.Namespace) -> dict:
    dataset = {"name": args.dataset}
    if args.train_subset:
        dataset["train_subset"] = args.train_subset
    data = {
        "seed": seed,
        "grammar": arm if what == "grammar" else "cnn",
        "dataset": dataset,
        "network": {
            "modules": [
                {"name": "features", "network_structure_init": [2, 3], "network_structure": [0, 6]},
                {"name": "classification", "network_structure_init": [1], "network_structure": [0, 2]},
            ]
        },
        "search": {"generations": args.generations, "lambda": 4},
        "training": {
            "budget": {"steps": args.steps},
            "threads": 1,
            "final_training": {
                "budget": {"steps": args.final_steps},
                "schedule": "cosine",
                "augment": {"shift": 1},
                "start_from": arm if what == "start" else "search" if what == "optimiser" else "scratch",
                "train_on_validation": what == "validation" and arm == "train",
                "learning": {"learning": "adam", "lr": 0.002, "batch_size": 128} if arm == "adam" else {},
            },
        },
        "energy": {
            "meter": "estimate",
            "time_cap_s": 0.05,
            "min_window_s": 0.01,
            "min_repeats": 2,
            "warmup": 1,
        },
    }
    if what == "optimiser":  # every kind of continuation: inheriting mutants, rungs, the final training
        data["search"].update(
            inherit_weights=True, fidelity={"min_budget": args.steps // 4, "eta": 2, "rungs": 3}
        )
        data["experimental"] = {"resume_optimiser": arm == "resume"}
    return data


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=sorted(ARMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--train-subset", type=int)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps per individual")
    parser.add_argument("--final-steps", type=int, default=600)
    parser.add_argument("--out", help="keep run directories here (default: a temporary directory)")
    args = parser.parse_args()
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="evowatt-choices-"))
    arms = ARMS[args.what]
    table: dict[str, list[tuple[float, float]]] = {arm: [] for arm in arms}
    for seed in args.seeds:
        for arm in arms:
            result = run(validate_config(config(seed, args.what, arm, args)), out=root / f"{arm}-{seed}")
            final = result.final
            accuracy = final.metric("test_accuracy") if final is not None else None
            flops = final.metric("flops") if final is not None else None
            if accuracy is None or flops is None:
                raise SystemExit(f"seed {seed} {arm}: no final training with test accuracy and FLOPs")
            table[arm].append((accuracy, flops))
            print(
                f"seed {seed} {arm:8s}: test accuracy {accuracy:.4f}, {flops / 1e6:.3f} MFLOPs",
                file=sys.stderr,
            )
    for arm in arms:
        accuracies = [a for a, _ in table[arm]]
        flops = [f for _, f in table[arm]]
        print(
            f"{args.what}={arm:8s} test accuracy mean {statistics.fmean(accuracies):.4f} "
            f"(per seed {', '.join(f'{a:.4f}' for a in accuracies)}), "
            f"MFLOPs mean {statistics.fmean(flops) / 1e6:.3f}"
        )
    first, second = arms
    diffs = [b[0] - a[0] for a, b in zip(table[first], table[second], strict=True)]
    wins = sum(d > 0 for d in diffs)
    print(
        f"{second} - {first}: mean {statistics.fmean(diffs) * 100:+.2f} pp test accuracy, "
        f"better on {wins} of {len(diffs)} seeds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
