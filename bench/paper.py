"""The paper's comparison on the real Fashion-MNIST, scaled to a 2-core CPU.

    python bench/paper.py --seeds 0 1 2                 # the full comparison: about 2 hours on 2 cores
    python bench/paper.py --report results.jsonl        # the table again from recorded runs

Four configurations (as in bench/contributions.py: accuracy-only, energy-aware, + module reuse,
+ partition), the same search budget for each (a wall-time limit per run over a stratified training
subset, a seconds budget per individual), then each run's best genome trained from scratch for the same
longer budget on the whole training set (`--final-train-subset`). The bar beside them: DESIGN.md §1's
hand-written CNN trained on all 60,000 images for the same wall time as one configuration's run
(search + final training). Reported per configuration: test accuracy on the official 10,000-image test
set after the final training, energy per inference with its method label (modelled under the estimate
meter: its reductions are not the paper's measured watts), FLOPs, and the reduction against the accuracy-only
baseline, as mean and 95 % confidence interval over seeds. Each run is appended to a JSON-lines file the
moment it ends, so a long comparison can be committed as results arrive.

Needs the real dataset: `sudo apt-get update && sudo apt-get install dataset-fashion-mnist`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from contributions import configurations, run_configuration  # noqa: E402

from evowatt.data.datasets import load_splits  # noqa: E402
from evowatt.errors import EvowattError  # noqa: E402

HAND_CNN = "hand CNN (DESIGN §1)"
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and 95 % confidence half-width (Student's t) over seeds."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, T975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def hand_cnn() -> torch.nn.Module:
    """DESIGN.md §1's plain CNN: 4 convolutions with batch norm, dropout, a 256-unit dense layer."""

    def conv(c_in: int, c_out: int) -> list[torch.nn.Module]:
        return [torch.nn.Conv2d(c_in, c_out, 3, padding=1), torch.nn.BatchNorm2d(c_out), torch.nn.ReLU()]

    return torch.nn.Sequential(
        *conv(1, 32), *conv(32, 32), torch.nn.MaxPool2d(2), torch.nn.Dropout(0.25),
        *conv(32, 64), *conv(64, 64), torch.nn.MaxPool2d(2), torch.nn.Dropout(0.25),
        torch.nn.Flatten(), torch.nn.Linear(64 * 7 * 7, 256), torch.nn.ReLU(), torch.nn.Dropout(0.5),
        torch.nn.Linear(256, 10),
    )  # fmt: skip


def train_hand_cnn(seed: int, seconds: float) -> dict:
    """The bar: the hand CNN on all 60,000 training images (Adam, batch 128) for `seconds` of wall time.

    Same process, threads and data normalisation as the searches; scored once on the official test set and
    measured by the meter the runs chose.
    """
    from evowatt.config.energy import EnergySettings, MeasureSettings
    from evowatt.energy.protocol import make_batch, measure_idle, measure_model
    from evowatt.energy.select import select_meter

    start = time.perf_counter()
    splits = load_splits("fashion-mnist", seed=seed)
    x = torch.from_numpy(np.concatenate([splits.evo_train.x, splits.evo_validation.x, splits.evo_test.x]))
    y = torch.from_numpy(np.concatenate([splits.evo_train.y, splits.evo_validation.y, splits.evo_test.y]))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = hand_cnn()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    deadline = start + seconds
    steps = epochs = 0
    model.train()
    while time.perf_counter() < deadline:
        order = torch.randperm(len(y), generator=generator)
        for first in range(0, len(y), 128):
            index = order[first : first + 128]
            optimiser.zero_grad(set_to_none=True)
            loss_fn(model(x[index]), y[index]).backward()
            optimiser.step()
            steps += 1
            if time.perf_counter() >= deadline:
                break
        else:
            epochs += 1
    model.eval()
    test_x, test_y = torch.from_numpy(splits.test.x.copy()), torch.from_numpy(splits.test.y.copy())
    with torch.inference_mode():
        correct = sum(
            int((model(test_x[i : i + 1024]).argmax(1) == test_y[i : i + 1024]).sum())
            for i in range(0, len(test_y), 1024)
        )
    meter, _reason = select_meter("auto", "cpu")
    try:
        settings = MeasureSettings(
            **{k: v for k, v in EnergySettings().model_dump().items() if k in MeasureSettings.model_fields}
        )
        batch = make_batch(test_x, settings.batch_size)
        idle = measure_idle(meter, settings)
        metrics = measure_model(model, batch, meter, settings, idle).to_metrics()
    finally:
        meter.close()
    return {
        "configuration": HAND_CNN,
        "seed": seed,
        "model": "full",
        "test_accuracy": correct / len(test_y),
        "energy": float(metrics["energy"]["value"]),
        "energy_method": metrics["energy"]["method"],
        "flops": float(metrics["flops"]["value"]),
        "steps": steps,
        "epochs": epochs,
        "train_seconds": seconds,
        "seconds": time.perf_counter() - start,
    }


def fmt(mean: float, half: float, spec: str) -> str:
    """Mean ± 95 % half-width (the mean alone for one seed)."""
    return f"{mean:{spec}}" if math.isnan(half) else f"{mean:{spec}} ± {half:{spec.lstrip('+')}}"


def report(rows: list[dict]) -> str:
    """One row per configuration; reductions and accuracy differences are paired by seed with the baseline."""
    by_config: dict[str, list[dict]] = {}
    for row in rows:
        by_config.setdefault(row["configuration"], []).append(row)
    baseline = {r["seed"]: r for r in by_config.get("accuracy-only", [])}
    lines = [
        "| configuration | seeds | model | test accuracy (official test set) | energy / inference (µJ) "
        "| method | MFLOPs | energy reduction vs accuracy-only, same seed (%) "
        "| accuracy vs accuracy-only, same seed (pp) | evaluations | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, group in by_config.items():
        paired = [(r, baseline[r["seed"]]) for r in group if r["seed"] in baseline]
        reduction = mean_ci([100 * (1 - r["energy"] / b["energy"]) for r, b in paired]) if paired else None
        gap = (
            mean_ci([100 * (r["test_accuracy"] - b["test_accuracy"]) for r, b in paired]) if paired else None
        )
        evaluations = [r["evaluations"] for r in group if "evaluations" in r]
        searched = f"{statistics.fmean(evaluations):.0f}" if evaluations else "-"
        lines.append(
            f"| {name} | {len(group)} | {group[0]['model']} "
            f"| {fmt(*mean_ci([r['test_accuracy'] for r in group]), '.4f')} "
            f"| {fmt(*mean_ci([r['energy'] * 1e6 for r in group]), '.3g')} | {group[0]['energy_method']} "
            f"| {fmt(*mean_ci([r['flops'] / 1e6 for r in group]), '.3g')} "
            f"| {fmt(*reduction, '.1f') if reduction else '-'} | {fmt(*gap, '+.2f') if gap else '-'} "
            f"| {searched} | {statistics.fmean(r['seconds'] for r in group):.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-subset", type=int, default=10_000, help="of the 60,000 training images")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds of training per individual")
    parser.add_argument("--search-seconds", type=float, default=300.0, help="wall-time limit of each search")
    parser.add_argument(
        "--final-seconds", type=float, default=120.0, help="final training of each best genome"
    )
    parser.add_argument("--lam", type=int, default=4)
    parser.add_argument(
        "--final-train-subset", default="all", help="training images of the final training ('all' or a count)"
    )
    parser.add_argument("--threshold", type=float, default=0.85, help="evo_test accuracy where energy counts")
    parser.add_argument("--weight", type=float, default=1e-8, help="energy term: weight / joules")
    parser.add_argument(
        "--hand-seeds", type=int, nargs="*", help="seeds of the hand CNN bar (default: the first seed)"
    )
    parser.add_argument("--configurations", nargs="+", help="a subset, by name")
    parser.add_argument("--results", default="paper-results.jsonl", help="JSON lines, appended as runs end")
    parser.add_argument("--out", help="keep run directories here (default: a temporary directory)")
    parser.add_argument("--report", metavar="JSONL", help="only print the table from recorded results")
    args = parser.parse_args()
    if args.report:
        rows = [json.loads(line) for line in Path(args.report).read_text().splitlines() if line.strip()]
        print(report(rows))
        return 0
    try:
        load_splits("fashion-mnist", train_subset=args.train_subset)
    except EvowattError as exc:
        print(f"paper.py: {exc}", file=sys.stderr)
        return 2
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="evowatt-paper-"))
    sizes = {
        "generations": 10_000,  # the wall-time limit ends each search
        "lam": args.lam,
        "dataset": {"name": "fashion-mnist", "train_subset": args.train_subset},
        "budget": {"seconds": args.budget},
        "final_budget": {"seconds": args.final_seconds},
        "energy": {"meter": "auto"},
        "weight": args.weight,
        "threshold": args.threshold,
    }
    final_subset = "all" if args.final_train_subset == "all" else int(args.final_train_subset)
    hand_seeds = args.seeds[:1] if args.hand_seeds is None else args.hand_seeds
    results_path = Path(args.results)

    def record(row: dict) -> None:
        with results_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")

    for seed in args.seeds:
        run_seconds: list[float] = []
        for name, (data, suffix) in configurations(seed, **sizes).items():
            if args.configurations and name not in args.configurations:
                continue
            data["search"]["time_limit"] = args.search_seconds
            data["search"]["caps"] = {"max_params": 2_000_000, "max_flops": 200_000_000}
            data["training"]["device"] = "auto"
            data["training"].pop("threads")
            data["training"]["final_training"]["train_subset"] = final_subset
            row = run_configuration(name, data, suffix, seed, root)
            record(row)
            run_seconds.append(row["seconds"])
            print(
                f"{name:15s} seed {seed}: test {row['test_accuracy']:.4f}, energy {row['energy']:.3g} J "
                f"({row['energy_method']}), {row['evaluations']} evaluations, {row['seconds']:.0f} s",
                file=sys.stderr,
            )
        if seed in hand_seeds:  # the same wall time as one configuration's search + final training
            seconds = (
                statistics.fmean(run_seconds) if run_seconds else args.search_seconds + args.final_seconds
            )
            row = train_hand_cnn(seed, seconds)
            record(row)
            print(
                f"{HAND_CNN} seed {seed}: test {row['test_accuracy']:.4f} after {seconds:.0f} s "
                f"({row['epochs']} epochs), energy {row['energy']:.3g} J ({row['energy_method']})",
                file=sys.stderr,
            )
    rows = [json.loads(line) for line in results_path.read_text().splitlines() if line.strip()]
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
