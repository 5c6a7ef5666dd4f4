"""What a continued training loses by restarting its optimiser: random networks of the ``cnn`` grammar
trained in rungs (e.g. 30, 90, 270 cumulative optimiser steps) with a fresh optimiser at every rung, with
the optimiser resumed (``experimental.resume_optimiser``), and in one go.

    python bench/continuation.py --rungs 30 90 270 --networks 4            # about 5 minutes, 1 thread
    python bench/continuation.py --rungs 30 90 270 --networks 12 --seed 7

Fashion-MNIST (7,000 training images, 3,000 validation, accuracy on 3,000 held-out evo_test images), each
network's own evolved learning genes, early stopping off (so that every arm trains for exactly the same
steps), one torch thread. Deterministic: step budgets and seeded data order. Printed: each network's
accuracy per arm, the means, and resumed - fresh (mean and how many networks gained). This isolates the
mechanism; ``bench/choices.py optimiser`` measures the whole search.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
import torch

from evowatt.config.load import validate_config
from evowatt.data.datasets import load_splits
from evowatt.errors import EvowattError
from evowatt.nn.builder import InvalidNetwork, build_network, plan_network
from evowatt.nn.train import evaluate_split, train
from evowatt.records import Budget
from evowatt.representation.genome import random_genome
from evowatt.representation.grammar import load_grammar

ARMS = ("fresh", "resumed", "whole")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rungs", type=int, nargs="+", default=[30, 90, 270], help="cumulative steps")
    parser.add_argument("--networks", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    grammar = load_grammar("cnn")
    network = validate_config(
        {
            "network": {
                "modules": [
                    {"name": "features", "network_structure_init": [2, 3, 4], "network_structure": [0, 10]},
                    {"name": "classification", "network_structure_init": [1], "network_structure": [0, 3]},
                ],
                "macro_structure": ["learning"],
            }
        }
    ).network
    try:
        splits = load_splits("fashion-mnist", seed=0)
    except EvowattError as exc:
        print(f"continuation.py: {exc}", file=sys.stderr)
        return 2

    def split(name: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        part = getattr(splits, name)
        return torch.from_numpy(part.x[:n].copy()), torch.from_numpy(part.y[:n].copy())

    train_xy, validation_xy, test_xy = (
        split("evo_train", 7000),
        split("evo_validation", 3000),
        split("evo_test", 3000),
    )
    rng = np.random.default_rng(args.seed)
    rows: list[dict[str, float]] = []
    while len(rows) < args.networks:
        genome = random_genome(grammar, network, rng)
        try:
            plan = plan_network(genome, grammar, splits.input_shape, splits.num_classes)
        except InvalidNetwork:
            continue
        learning = {**grammar.decode(genome.macro["learning"]), "early_stop": 10**9}
        accuracy = {}
        for arm in ARMS:
            model = build_network(plan, 0)
            if arm == "whole":
                train(model, train_xy, validation_xy, learning, Budget(steps=args.rungs[-1]), seed=0)
            else:
                state, done = None, 0
                for rung, total in enumerate(args.rungs):
                    outcome = train(
                        model,
                        train_xy,
                        validation_xy,
                        learning,
                        Budget(steps=total - done),
                        seed=rung,
                        optimiser_state=state if arm == "resumed" else None,
                        keep_optimiser=arm == "resumed",
                    )
                    state, done = outcome.optimiser, total
            accuracy[arm] = evaluate_split(model, *test_xy)[1]
        rows.append(accuracy)
        genes = f"{learning['learning']} lr {learning['lr']:.3g}" + (
            f" momentum {learning['momentum']:.3g}" if "momentum" in learning else ""
        )
        print(
            f"network {len(rows)} ({plan.flops / 1e6:.3f} MFLOP, {genes}): "
            + ", ".join(f"{arm} {accuracy[arm]:.4f}" for arm in ARMS),
            flush=True,
        )
    for arm in ARMS:
        print(f"{arm:8s} mean {statistics.fmean(r[arm] for r in rows):.4f}")
    gains = [r["resumed"] - r["fresh"] for r in rows]
    print(
        f"resumed - fresh: mean {statistics.fmean(gains) * 100:+.2f} pp, "
        f"better on {sum(g > 0 for g in gains)} of {len(gains)} networks"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
