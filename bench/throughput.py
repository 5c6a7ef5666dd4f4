"""Trainer and evaluation throughput against plain PyTorch, on five architectures from tiny to large.

    .venv/bin/python bench/throughput.py                    # about 3 minutes on 2 idle cores
    .venv/bin/python bench/throughput.py --baseline HEAD~1  # also time an older train.py, interleaved

The architectures are seeded samples of ENERGIZE's grammar (``tests/fixtures/compat/energize.grammar``,
its network structure and macro genes, partition point included), from a tiny one where per-batch
overhead dominates to a large convolutional one. For each, side by side and alternated within every
repeat so that load drift hits all sides alike (medians over repeats; ratios are per repeat, then the
median):

  evowatt     ``evowatt.nn.train.train``, the function ``evaluate`` calls: clock read every batch, NaN
              check, validation at every epoch's end, early-stopping bookkeeping (best weights copied)
  hand        a minimal hand-written loop over the same in-memory tensors, the same initial weights,
              optimiser (built by ``make_optimiser``) and batch size; it validates at every epoch's end
              too (any loop with early stopping must), and its training-only rate is shown beside it
  DataLoader  a conventional ``torch.utils.data.DataLoader`` loop with per-sample transforms as the
              reference implementation trains (ToTensor + Resize to 32x32, written with torch ops since
              torchvision is not a dependency); the same genome planned for 1x32x32 inputs

Training rates are training images per second of wall time, validation included. Evaluation compares
``evaluate_split`` with a plain ``torch.inference_mode`` loop that sums loss and counts correct answers
per batch. Achieved GFLOP/s count a training step as 3x the forward FLOPs of the plan (both heads under
a partition point) and compare them with the peak of a large float32 ``torch.matmul`` on the same
number of threads.

Run it on an otherwise idle machine, or give ``--threads`` the number of free cores: with torch's
default of one thread per core, a single other busy process slows small networks down 3-45x (OpenMP
threads wait for a preempted sibling), and the figures then measure the neighbour.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from evowatt.config.network import NetworkConfig
from evowatt.errors import EvowattError
from evowatt.nn.builder import NetworkPlan, build_network, extract_models, plan_network
from evowatt.nn.train import evaluate_split, make_optimiser, train
from evowatt.records import Budget
from evowatt.representation.genome import random_genome
from evowatt.representation.grammar import Grammar, load_grammar

ROOT = Path(__file__).resolve().parent.parent
GRAMMAR = ROOT / "tests/fixtures/compat/energize.grammar"
# ENERGIZE's example network section (tests/fixtures/compat/energize_config.json)
NETWORK = NetworkConfig(
    modules=[
        {"name": "features", "network_structure_init": [1, 2, 3, 4, 5], "network_structure": [0, 50]},
        {"name": "classification", "network_structure_init": [1, 2, 3, 4, 5], "network_structure": [0, 25]},
    ],
    macro_structure=["learning", "model_partition"],
    reuse_layer=0.7,
)
# seeds chosen for plans that span the range (forward MFLOP at 28x28, parameters, batch size):
SEEDS = {
    "tiny": 290,  # 0.002 MFLOP, 500 params, 2 pooling and 4 dropout layers, batch 41
    "small": 43,  # 0.10 MFLOP, 47k params, a 994-unit dense layer, batch 45
    "conv": 36,  # 13 MFLOP, 1.4M params, two 127-channel convolutions, batch 319
    "wide-dense": 206,  # 42 MFLOP, 21M params, four 1145-1972-unit dense layers, batch 287
    "large-conv": 32,  # 81 MFLOP, 0.9M params, two 225-channel convolutions, batch 264
}
EVAL_BATCH = 1024


@dataclass
class Arch:
    name: str
    seed: int
    plan: NetworkPlan  # for 1x28x28
    plan32: NetworkPlan  # the same genome for 1x32x32 (the DataLoader loop's resized images)
    learning: dict
    n_train: int = 0
    n_val: int = 0
    n_eval: int = 0

    @property
    def batch(self) -> int:
        return int(self.learning["batch_size"])

    @property
    def train_flops(self) -> int:
        """Forward FLOPs of one training image: both heads run under a partition point."""
        return self.plan.flops + (self.plan.exit_head.flops if self.plan.exit_head is not None else 0)


@dataclass
class Runs:
    """Per side, per repeat: (images, seconds) and, where a loop times it apart, its training-only seconds."""

    rates: dict[str, list[float]] = field(default_factory=dict)
    train_only: dict[str, list[float]] = field(default_factory=dict)
    notes: set[str] = field(default_factory=set)

    def add(self, side: str, images: int, seconds: float, train_seconds: float | None = None) -> None:
        self.rates.setdefault(side, []).append(images / seconds)
        if train_seconds is not None:
            self.train_only.setdefault(side, []).append(images / train_seconds)

    def median(self, side: str) -> float:
        return statistics.median(self.rates[side])

    def ratio(self, top: str, bottom: str) -> tuple[float, float, float]:
        """Median and range of the per-repeat ratios: each pair ran back to back under the same load."""
        pairs = [a / b for a, b in zip(self.rates[top], self.rates[bottom], strict=True)]
        return statistics.median(pairs), min(pairs), max(pairs)


# -------------------------------------------------------------------------------------------------- data


def load_data(n_random: int) -> tuple[str, dict[str, tuple[torch.Tensor, torch.Tensor]], float, float]:
    """evo_train / evo_validation of real Fashion-MNIST, normalised as evowatt does; else random tensors."""
    try:
        from evowatt.data.datasets import load_splits

        splits = load_splits("fashion-mnist")
        data = {
            name: (torch.tensor(getattr(splits, name).x), torch.tensor(getattr(splits, name).y))
            for name in ("evo_train", "evo_validation")
        }
        return "real Fashion-MNIST (evo_train / evo_validation)", data, splits.mean[0], splits.std[0]
    except EvowattError as exc:
        generator = torch.Generator().manual_seed(0)
        data = {}
        for name, n in (("evo_train", n_random), ("evo_validation", n_random * 2 // 7)):
            pixels = torch.randint(0, 256, (n, 1, 28, 28), generator=generator).float() / 255
            data[name] = (pixels, torch.randint(0, 10, (n,), generator=generator))
        mean, std = float(data["evo_train"][0].mean()), float(data["evo_train"][0].std())
        for name, (x, y) in data.items():
            data[name] = ((x - mean) / std, y)
        first = str(exc).splitlines()[0]
        return f"random tensors of Fashion-MNIST's shape (Fashion-MNIST not found: {first})", data, mean, std


def to_uint8(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Undo evowatt's normalisation: the raw N x 28 x 28 uint8 images a conventional Dataset starts from."""
    return (x[:, 0] * std + mean).mul(255).round().clamp(0, 255).to(torch.uint8)


class ResizedImages(Dataset):
    """Per-sample transforms as the reference trains: ToTensor (uint8 HxW -> 1xHxW float / 255), Resize 32."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int = 32):
        self.images, self.labels, self.size = images, labels, size

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.images[i].float().div(255).unsqueeze(0)
        image = F.interpolate(image[None], size=(self.size, self.size), mode="bilinear", align_corners=False)
        return image[0], int(self.labels[i])


# ------------------------------------------------------------------------------------------------- loops


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Both heads' summed loss under a partition point, as evowatt trains; written out for the loops."""
    if getattr(model, "exit_head", None) is not None:
        main, early = model.forward_both(x)
        return F.cross_entropy(main, y) + F.cross_entropy(early, y)
    return F.cross_entropy(model(x), y)


def validate(model: nn.Module, batches) -> tuple[float, float]:
    """A plain validation pass: summed loss (both heads when present) and accuracy."""
    model.eval()
    total, correct, n = 0.0, 0, 0
    with torch.inference_mode():
        for x, y in batches:
            if getattr(model, "exit_head", None) is not None:
                out, early = model.forward_both(x)
                total += F.cross_entropy(early, y, reduction="sum").item()
            else:
                out = model(x)
            total += F.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
            n += y.shape[0]
    model.train()
    return total / n, correct / n


def hand_loop(arch: Arch, train_xy, val_xy, epochs: int) -> tuple[int, float, float]:
    """Shuffle, index the in-memory tensors, step; validate at each epoch's end."""
    x, y = train_xy
    vx, vy = val_xy
    model = build_network(arch.plan, arch.seed)
    optimiser = make_optimiser(model, arch.learning)
    generator = torch.Generator().manual_seed(arch.seed)
    n, batch, images, train_seconds = x.shape[0], arch.batch, 0, 0.0
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        begin = time.perf_counter()
        order = torch.randperm(n, generator=generator)
        for i in range(0, n, batch):
            index = order[i : i + batch]
            loss = loss_of(model, x[index], y[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            images += index.shape[0]
        train_seconds += time.perf_counter() - begin
        validate(
            model, ((vx[i : i + EVAL_BATCH], vy[i : i + EVAL_BATCH]) for i in range(0, len(vy), EVAL_BATCH))
        )
    return images, time.perf_counter() - start, train_seconds


def dataloader_loop(arch: Arch, train_u8, val_u8, epochs: int, workers: int) -> tuple[int, float, float]:
    """The conventional pipeline: a Dataset transforming each sample, a shuffling DataLoader, 32x32 inputs."""
    model = build_network(arch.plan32, arch.seed)
    optimiser = make_optimiser(model, arch.learning)
    generator = torch.Generator().manual_seed(arch.seed)
    train_loader = DataLoader(
        ResizedImages(*train_u8),
        batch_size=arch.batch,
        shuffle=True,
        num_workers=workers,
        generator=generator,
    )
    val_loader = DataLoader(ResizedImages(*val_u8), batch_size=EVAL_BATCH, num_workers=workers)
    images, train_seconds = 0, 0.0
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        begin = time.perf_counter()
        for x, y in train_loader:
            loss = loss_of(model, x, y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            images += y.shape[0]
        train_seconds += time.perf_counter() - begin
        validate(model, val_loader)
    return images, time.perf_counter() - start, train_seconds


def evowatt_train(arch: Arch, train_xy, val_xy, epochs: int, trainer: ModuleType | None = None):
    """Images, seconds and stop reason of evowatt's ``train`` (or of a baseline version of train.py)."""
    model = build_network(arch.plan, arch.seed)
    budget = (trainer.Budget if trainer is not None else Budget)(steps=10**9)
    outcome = (trainer.train if trainer is not None else train)(
        model, train_xy, val_xy, arch.learning, budget, seed=arch.seed, max_epochs=epochs
    )
    # n_train is a whole number of batches, so every step is one full batch
    return outcome.steps * arch.batch, outcome.seconds, outcome.stop_reason


def plain_eval(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """What one writes by hand: inference mode, a loss and a count per batch read back as Python numbers."""
    model.eval()
    total, correct = 0.0, 0
    with torch.inference_mode():
        for i in range(0, x.shape[0], EVAL_BATCH):
            out = model(x[i : i + EVAL_BATCH])
            target = y[i : i + EVAL_BATCH]
            total += F.cross_entropy(out, target, reduction="sum").item()
            correct += (out.argmax(1) == target).sum().item()
    return total / x.shape[0], correct / x.shape[0]


def load_baseline(spec: str) -> tuple[ModuleType, str]:
    """Another version of train.py, measured beside the current one: a file, or a git revision's copy."""
    path = Path(spec)
    if not path.is_file():
        text = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{spec}:src/evowatt/nn/train.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        path = Path(tempfile.mkdtemp()) / "train.py"
        path.write_text(text)
        spec = f"{spec}:src/evowatt/nn/train.py"
    loader = importlib.util.spec_from_file_location("baseline_train", path)
    module = importlib.util.module_from_spec(loader)
    sys.modules[loader.name] = module  # dataclasses look their module up there
    loader.loader.exec_module(module)
    return module, spec


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------------ set-up


def architectures(grammar: Grammar, names: list[str]) -> list[Arch]:
    out = []
    for name in names:
        seed = SEEDS[name] if name in SEEDS else int(name)
        genome = random_genome(grammar, NETWORK, np.random.default_rng(seed))
        learning = grammar.decode(genome.macro["learning"])
        plan = plan_network(genome, grammar, (1, 28, 28), 10)
        plan32 = plan_network(genome, grammar, (1, 32, 32), 10)
        out.append(Arch(name if name in SEEDS else f"seed-{seed}", seed, plan, plan32, learning))
    return out


def size_runs(arch: Arch, data, epoch_seconds: float, eval_seconds: float, min_batches: int) -> None:
    """Choose sample counts so that an epoch takes about ``epoch_seconds`` (whole batches only)."""
    x, y = data["evo_train"]
    vx, vy = data["evo_validation"]
    model = build_network(arch.plan, arch.seed)
    optimiser = make_optimiser(model, arch.learning)
    xb, yb = x[: arch.batch], y[: arch.batch]

    def step() -> None:
        loss = loss_of(model, xb, yb)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    step()  # warm-up: allocator, oneDNN primitives for these shapes
    seconds = min(timed(step) for _ in range(3))
    batches = max(min_batches, round(epoch_seconds / seconds))
    arch.n_train = min(batches, x.shape[0] // arch.batch) * arch.batch
    arch.n_val = min(max(1, round(arch.n_train * 2 / 7)), vx.shape[0])  # evowatt's 0.7 / 0.2 proportion
    full, _ = extract_models(model, arch.plan)
    seconds = min(timed(lambda: plain_eval(full, vx[:EVAL_BATCH], vy[:EVAL_BATCH])) for _ in range(2))
    arch.n_eval = min(max(1, round(eval_seconds / seconds)) * EVAL_BATCH, vx.shape[0])


def matmul_peak(n: int, repeats: int = 5) -> float:
    """GFLOP/s of a large float32 matmul on the current threads: the machine's practical arithmetic peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = min(timed(lambda: torch.matmul(a, b)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


# ----------------------------------------------------------------------------------------------- running


def measure(arch: Arch, data, u8, args, baseline: ModuleType | None) -> tuple[Runs, Runs]:
    train_xy = tuple(t[: arch.n_train] for t in data["evo_train"])
    val_xy = tuple(t[: arch.n_val] for t in data["evo_validation"])
    train_u8 = tuple(t[: arch.n_train] for t in u8["evo_train"])
    val_u8 = tuple(t[: arch.n_val] for t in u8["evo_validation"])
    eval_xy = tuple(t[: arch.n_eval] for t in data["evo_validation"])
    training, evaluation = Runs(), Runs()

    def run_evowatt() -> None:
        images, seconds, reason = evowatt_train(arch, train_xy, val_xy, args.epochs)
        training.add("evowatt", images, seconds)
        if reason != "max_epochs":
            training.notes.add(reason)

    def run_baseline() -> None:
        images, seconds, _ = evowatt_train(arch, train_xy, val_xy, args.epochs, baseline)
        training.add("baseline", images, seconds)

    def run_hand() -> None:
        training.add("hand", *hand_loop(arch, train_xy, val_xy, args.epochs))

    def run_loader() -> None:
        training.add("DataLoader", *dataloader_loop(arch, train_u8, val_u8, args.epochs, args.workers))

    model, _ = extract_models(build_network(arch.plan, arch.seed), arch.plan)

    def run_split() -> None:
        evaluation.add(
            "evaluate_split", arch.n_eval, timed(lambda: evaluate_split(model, *eval_xy, EVAL_BATCH))
        )

    def run_plain() -> None:
        evaluation.add("plain", arch.n_eval, timed(lambda: plain_eval(model, *eval_xy)))

    train_sides = [run_evowatt, run_hand, run_loader] + ([run_baseline] if baseline is not None else [])
    eval_sides = [run_split, run_plain]
    for r in range(args.repeats):
        order = 1 if r % 2 == 0 else -1  # ABC, CBA, ...: neither side always runs first
        for side in train_sides[::order] + eval_sides[::order]:
            side()
    return training, evaluation


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def ratio_text(value: tuple[float, float, float]) -> str:
    mid, low, high = value
    return f"{mid:.2f} ({low:.2f}-{high:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", nargs="+", default=list(SEEDS), help="names of SEEDS, or integer seeds")
    parser.add_argument("--repeats", type=int, default=3, help="alternated repeats per side")
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs per training run (validation after each)"
    )
    parser.add_argument("--epoch-seconds", type=float, default=1.0, help="size the training subset to this")
    parser.add_argument("--min-batches", type=int, default=4, help="at least this many batches an epoch")
    parser.add_argument("--eval-seconds", type=float, default=0.4, help="size the evaluation set to this")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--matmul-n", type=int, default=2048, help="matrix size for the peak")
    parser.add_argument(
        "--baseline",
        help="also time this version of train.py, interleaved: a file or a git revision (e.g. HEAD~1)",
    )
    parser.add_argument("--random-n", type=int, default=42000, help="samples when Fashion-MNIST is missing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print("$ " + shlex.join([os.path.relpath(sys.executable), *sys.argv]))
    load_start = os.getloadavg()
    source, data, mean, std = load_data(args.random_n)
    u8 = {name: (to_uint8(x, mean, std), y) for name, (x, y) in data.items()}
    grammar = load_grammar(GRAMMAR)
    archs = architectures(grammar, args.archs)
    peaks = [matmul_peak(args.matmul_n)]
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads; load average at start "
        f"{load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}"
    )
    print(f"data: {source}")
    print(f"trainer: {os.path.relpath(inspect.getfile(train))}")
    baseline = None
    if args.baseline:
        baseline, where = load_baseline(args.baseline)
        print(f"baseline trainer (column 'evowatt/baseline'): {where}")
    print(
        f"repeats {args.repeats}, {args.epochs} epochs per training run, DataLoader workers {args.workers}, "
        f"evaluation batch {EVAL_BATCH}\n"
    )

    results, loads = [], []
    for arch in archs:
        size_runs(arch, data, args.epoch_seconds, args.eval_seconds, args.min_batches)
        results.append(measure(arch, data, u8, args, baseline))
        peaks.append(matmul_peak(args.matmul_n))  # between architectures: the load at each moment
        loads.append(os.getloadavg()[0])
        print(f"  measured {arch.name}", file=sys.stderr, flush=True)
    peak = max(peaks)

    rows = []
    for arch in archs:
        rows.append(
            [
                arch.name,
                str(arch.seed),
                str(len(arch.plan.layers)),
                f"{arch.plan.params:,}",
                f"{arch.plan.flops / 1e6:.3g}",
                f"{arch.plan32.flops / 1e6:.3g}",
                str(arch.batch),
                str(arch.learning["learning"]),
                str(arch.plan.exit_layer),
                f"{arch.n_train}/{arch.n_val}/{arch.n_eval}",
            ]
        )
    print("Architectures (forward MFLOP per image at 28x28 and 32x32; exit = partition point)")
    header = ["arch", "seed", "layers", "params", "MFLOP", "MFLOP32", "batch", "optimiser", "exit"]
    print(table([*header, "train/val/eval n"], rows))

    rows = []
    for arch, (training, _), load in zip(archs, results, loads, strict=True):
        rate = training.median("evowatt")
        gflops = rate * 3 * arch.train_flops / 1e9
        rows.append(
            [
                arch.name,
                f"{rate:,.0f}",
                f"{training.median('hand'):,.0f}",
                ratio_text(training.ratio("evowatt", "hand")),
                f"{statistics.median(training.train_only['hand']):,.0f}",
                f"{training.median('DataLoader'):,.0f}",
                ratio_text(training.ratio("evowatt", "DataLoader")),
                f"{gflops:.2f}",
                f"{100 * gflops / peak:.1f}",
                ",".join(sorted(training.notes)) or "-",
                f"{load:.2f}",
            ]
        )
        if baseline is not None:
            rows[-1][3:3] = [ratio_text(training.ratio("evowatt", "baseline"))]
    print(
        "\nTraining, images/s (validation included; ratio: median of per-repeat ratios, range; "
        "load: 1-minute load average after the architecture)"
    )
    header = ["arch", "evowatt", "hand", "(a) evowatt/hand", "hand w/o val", "DataLoader"]
    if baseline is not None:
        header[3:3] = ["evowatt/baseline"]
    print(table([*header, "(b) evowatt/DataLoader", "GFLOP/s", "% peak", "stop", "load"], rows))

    rows = []
    for arch, (_, evaluation) in zip(archs, results, strict=True):
        rate = evaluation.median("evaluate_split")
        gflops = rate * arch.plan.flops / 1e9
        rows.append(
            [
                arch.name,
                f"{rate:,.0f}",
                f"{evaluation.median('plain'):,.0f}",
                ratio_text(evaluation.ratio("evaluate_split", "plain")),
                f"{gflops:.2f}",
                f"{100 * gflops / peak:.1f}",
            ]
        )
    print(f"\nEvaluation, images/s (batch {EVAL_BATCH})")
    print(table(["arch", "evaluate_split", "plain", "ratio", "GFLOP/s", "% peak"], rows))
    load_end = os.getloadavg()
    print(
        f"\nmatmul peak ({args.matmul_n}x{args.matmul_n} float32, {torch.get_num_threads()} threads): "
        f"{peak:.1f} GFLOP/s, the best of {len(peaks)} taken before and after each architecture (lowest "
        f"{min(peaks):.1f}); training counts 3x forward FLOPs"
    )
    print(f"load average at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")


if __name__ == "__main__":
    main()
