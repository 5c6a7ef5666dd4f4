"""evaluate(task) -> result: build, train, score one genome. A pure function of a serialisable task.

The task carries everything (genome JSON, grammar text, data reference, settings, seed, weight paths),
so it runs the same in this process, a worker process or a Ray worker, and a run can be replayed.
Loading data and parsing the grammar are memoised per process: a pure function's cache, not run state.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from evowatt.data import Splits, load_splits
from evowatt.errors import EvowattError
from evowatt.genome import Genome
from evowatt.grammar import Grammar, parse_grammar
from evowatt.nn.builder import InvalidNetwork, Network, build_network, extract_models, plan_network
from evowatt.nn.train import Budget, evaluate_split, train


@dataclass(frozen=True)
class DataRef:
    name: str = "digits"
    path: str | None = None
    seed: int = 0
    splits: tuple[float, float, float] = (0.7, 0.2, 0.1)
    train_subset: int | None = None
    test_subset: int | None = None

    def load(self) -> Splits:
        return load_splits(
            self.name, self.path, self.seed, tuple(self.splits), self.train_subset, self.test_subset
        )


@dataclass(frozen=True)
class EvalSettings:
    budget_seconds: float | None = None
    budget_steps: int | None = None
    max_epochs: int = 10_000
    eval_batch_size: int = 1024
    device: str = "cpu"
    threads: int | None = None
    max_params: int | None = None
    max_flops: int | None = None
    report_test: bool = False  # the test set is scored for the final report only, never during search


@dataclass
class EvalTask:
    id: int
    genome: dict[str, Any]
    grammar_text: str
    data: DataRef
    settings: EvalSettings
    seed: int
    init_weights: str | None = None  # safetensors file to continue training from
    weights_out: str | None = None  # where to save the trained weights
    kind: str = "mutant"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalTask:
        values = dict(data)
        values["data"] = DataRef(**{**data["data"], "splits": tuple(data["data"]["splits"])})
        values["settings"] = EvalSettings(**data["settings"])
        return cls(**values)


@dataclass
class EvalResult:
    id: int
    status: str  # ok | invalid | failed
    reason: str | None = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    train: dict[str, Any] | None = None
    wall_seconds: float = 0.0
    weights_path: str | None = None
    host: str = ""
    device: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EvowattError("training.device is 'cuda' but torch sees no CUDA device; use 'cpu' or 'auto'")
    return torch.device(name)


@functools.lru_cache(maxsize=4)
def _grammar(text: str) -> Grammar:
    return parse_grammar(text, source="task grammar")


@functools.lru_cache(maxsize=2)
def _tensors(data: DataRef, device: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    splits = data.load()
    out = {}
    for name in ("evo_train", "evo_validation", "evo_test", "test"):
        split = getattr(splits, name)
        # a copy: the cached arrays are read-only, and training must never write into them
        out[name] = (torch.tensor(split.x, device=device), torch.tensor(split.y, device=device))
    return out


def _metric(value: Any, method: str) -> dict[str, Any]:
    return {"value": value, "method": method}


def plan_task(task: EvalTask):
    """The network plan of a task's genome (raises InvalidNetwork with the reason)."""
    splits = task.data.load()
    genome = Genome.from_json(task.genome)
    grammar = _grammar(task.grammar_text)
    return (
        genome,
        grammar,
        plan_network(
            genome,
            grammar,
            splits.input_shape,
            splits.num_classes,
            task.settings.max_params,
            task.settings.max_flops,
        ),
    )


def evaluate(task: EvalTask) -> EvalResult:
    """Build, train and score one genome; never raises for a bad individual, only for bad user input."""
    start = time.perf_counter()
    settings = task.settings
    device = resolve_device(settings.device)
    result = EvalResult(task.id, "ok", host=platform.node(), device=str(device))
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        genome, grammar, plan = plan_task(task)
        result.metrics["params"] = _metric(plan.params, "counted:plan")
        result.metrics["flops"] = _metric(plan.flops, "counted:plan")
        data = _tensors(task.data, str(device))
        model = build_network(plan, task.seed).to(device)
        if task.init_weights:
            model.load_state_dict(load_file(task.init_weights, device=str(device)))
        learning = grammar.decode(genome.macro["learning"]) if "learning" in genome.macro else {}
        outcome = train(
            model,
            data["evo_train"],
            data["evo_validation"],
            learning,
            Budget(settings.budget_seconds, settings.budget_steps),
            seed=task.seed,
            max_epochs=settings.max_epochs,
            eval_batch_size=settings.eval_batch_size,
        )
        result.train = outcome.to_json()
        if outcome.diverged:
            result.status, result.reason = "invalid", "training diverged (NaN or infinite loss)"
            return result
        full, early = extract_models(model, plan)
        models = {"": full, "_1": early} if early is not None else {"": full}
        if early is not None:
            result.metrics["params_1"] = _metric(plan.partition_params, "counted:plan")
            result.metrics["flops_1"] = _metric(plan.partition_flops, "counted:plan")
        for suffix, standalone in models.items():
            loss, accuracy = evaluate_split(
                standalone, *data["evo_test"], batch_size=settings.eval_batch_size
            )
            result.metrics[f"accuracy{suffix}"] = _metric(accuracy, "computed:evo_test")
            result.metrics[f"loss{suffix}"] = _metric(loss, "computed:evo_test")
            if settings.report_test:
                _, test_accuracy = evaluate_split(
                    standalone, *data["test"], batch_size=settings.eval_batch_size
                )
                result.metrics[f"test_accuracy{suffix}"] = _metric(test_accuracy, "computed:test")
        if task.weights_out:
            save_weights(model, task.weights_out)
            result.weights_path = task.weights_out
    except InvalidNetwork as exc:
        result.status, result.reason = "invalid", str(exc)
    except EvowattError:
        raise
    except Exception as exc:  # an individual that raises (e.g. out of memory) must not stop the run
        result.status = "failed"
        result.reason = f"{type(exc).__name__}: {exc}"
    finally:
        result.wall_seconds = time.perf_counter() - start
    return result


def score_on_test(task: EvalTask, weights_path: str) -> dict[str, dict[str, Any]]:
    """Test-set accuracy of an evaluated individual's models from its saved weights: reported only.

    Returns ``test_accuracy`` (model 0) and, with a partition point, ``test_accuracy_1`` (model 1).
    """
    device = resolve_device(task.settings.device)
    _, _, plan = plan_task(task)
    model = build_network(plan, task.seed).to(device)
    model.load_state_dict(load_file(weights_path, device=str(device)))
    full, early = extract_models(model, plan)
    test = _tensors(task.data, str(device))["test"]
    metrics = {}
    for suffix, standalone in (("", full), ("_1", early)):
        if standalone is not None:
            _, accuracy = evaluate_split(standalone, *test, task.settings.eval_batch_size)
            metrics[f"test_accuracy{suffix}"] = _metric(accuracy, "computed:test")
    return metrics


def save_weights(model: Network, path: str) -> None:
    """Trained weights as safetensors (no pickle), written atomically."""
    tmp = f"{path}.tmp"
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
