"""The run's plan from the one number a user gives: ``minutes: T`` (or ``evowatt run CONFIG --minutes T``).

T bounds the whole run, the final training included, as AutoML tools' time budgets do. From T, the
training set's size and the cores, the plan fills in every part the config leaves unset with the recipe
the 15-minute benchmark measured best (docs/results.md, "The 15-minute comparison on Fashion-MNIST", the
settings ``G``): 65 % of T to one final training of the most accurate model on Adam at 0.001 with
batches of 128, learning from the validation split too; the rest to the search, whose top rung (the
Pareto search's successive halving, 3 rungs, η 3) gets a tenth of the search's time (30 s at T = 15 min)
and which sees a 10,000-image subset of a larger training set. What the config sets itself is kept; the
plan refuses a config whose own settings cannot fit in T. The result is an ordinary config (the planned
keys written into it) and a record of what was planned, printed at the start and stored with the run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from evowatt.config.load import validate_config
from evowatt.config.schema import RunConfig
from evowatt.errors import EvowattError

FINAL_SHARE = 0.65  # of T to the final training (G: better than 1/3 and 0.5; 0.75 no better)
SEARCH_SUBSET = 10_000  # images the search trains on where the training set is larger (30,000: no gain)
TOP_RUNG_SHARE = 1 / 10.5  # of the search's time to the top rung: 30 s of 315 s at T = 15 min
ES_BUDGET_SHARE = 1 / 31.5  # the ES's budget per individual: 10 s of 315 s (its best at T = 15 min)
RUNGS, ETA = 3, 3
POPULATION, LAMBDA = 8, 4
FINAL_LEARNING = {"learning": "adam", "lr": 0.001, "batch_size": 128}  # the hand CNN's optimiser
MIN_SEARCH_SECONDS = 5.0


def reserve_seconds(total: float) -> float:
    """Time kept back from T for starting up, scoring the test set and timing the answer."""
    return max(5.0, 0.03 * total)


@dataclass(frozen=True)
class RunPlan:
    """What a run given T does with it; the figures in seconds."""

    minutes: float
    train_images: int
    cores: int
    search_seconds: float
    final_seconds: float
    reserve_seconds: float
    budget_seconds: float | None  # the top rung's (successive halving) or every individual's
    rungs: int
    expected_evaluations: int | None
    planned: tuple[str, ...]  # the config keys the plan set
    kept: tuple[str, ...]  # the keys it would have set that the config sets itself

    @property
    def total_seconds(self) -> float:
        return self.minutes * 60.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "planned": list(self.planned), "kept": list(self.kept)}

    def text(self) -> str:
        """One line for the start of a run."""
        parts = [f"{self.minutes:g} min in all: search {_duration(self.search_seconds)}"]
        if self.budget_seconds is not None:
            rung = "top rung" if self.rungs > 1 else "per network"
            parts.append(f"{rung} {self.budget_seconds:.3g} s")
        parts.append(f"final training {_duration(self.final_seconds)}")
        parts.append(f"{_duration(self.reserve_seconds)} kept for set-up and the answer")
        text = "plan: " + ", ".join(parts)
        if self.kept:
            text += f" (from the config: {', '.join(self.kept)})"
        return text


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


class _Filler:
    """Sets a dotted key in the user's config dict where the user left it unset, and says which."""

    def __init__(self, data: dict[str, Any]):
        self.data, self.planned, self.kept = data, [], []

    def has(self, key: str) -> bool:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    def get(self, key: str) -> Any:
        node: Any = self.data
        for part in key.split("."):
            node = node[part]
        return node

    def fill(self, key: str, value: Any) -> None:
        if self.has(key):
            self.kept.append(key)
            return
        node = self.data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
        self.planned.append(key)


def _seconds(budget: Any) -> float | None:
    return float(budget["seconds"]) if isinstance(budget, dict) and budget.get("seconds") else None


def plan_run(config: RunConfig, train_images: int, cores: int) -> tuple[RunConfig, RunPlan | None]:
    """The config with the plan's keys filled in, and the plan; (config, None) without ``minutes``."""
    if config.minutes is None:
        return config, None
    total = config.minutes * 60.0
    reserve = reserve_seconds(total)
    data = config.model_dump(mode="json", by_alias=True, exclude_unset=True)
    filler = _Filler(data)
    final = "training.final_training"
    models = config.training.final_training.models
    n_final = 1 if not filler.has(f"{final}.models") else (models if isinstance(models, int) else None)

    if filler.has(f"{final}.budget") and _seconds(filler.get(f"{final}.budget")) is None:
        raise EvowattError(
            f"minutes: {config.minutes:g} bounds the run by time, and training.final_training.budget is "
            "given in steps; give it in seconds, or leave it out for the plan to set"
        )
    if filler.has("search.time_limit"):
        search_seconds = float(config.search.time_limit or 0.0)
        final_seconds = total - reserve - search_seconds
    else:  # the search keeps the recipe's share; the reserve comes out of the final training's
        search_seconds = (1 - FINAL_SHARE) * total
        final_seconds = total - reserve - search_seconds
    if filler.has(f"{final}.budget"):  # the config's own final budget: the search gets what is left
        each = _seconds(filler.get(f"{final}.budget")) or 0.0
        others = _seconds(data.get("training", {}).get("final_training", {}).get("others_budget"))
        count = n_final or 1
        final_seconds = each + (count - 1) * (others if others is not None else each)
        if not filler.has("search.time_limit"):
            search_seconds = total - reserve - final_seconds
    given = filler.has("search.time_limit") or filler.has(f"{final}.budget")
    if given and (final_seconds < 0 or search_seconds + final_seconds > total - reserve + 1e-6):
        raise EvowattError(
            f"search.time_limit ({search_seconds:.0f} s) and the final training ({final_seconds:.0f} s) "
            f"do not fit in minutes: {config.minutes:g} ({total:.0f} s, {reserve:.0f} s of it kept for "
            "set-up and the answer); lower one of them, or give more minutes"
        )

    if search_seconds < MIN_SEARCH_SECONDS or final_seconds < 0:
        raise EvowattError(
            f"minutes: {config.minutes:g} leaves {max(search_seconds, 0):.0f} s for the search after "
            f"{final_seconds:.0f} s of final training and {reserve:.0f} s kept for set-up: give more "
            "minutes, or a shorter search.time_limit / training.final_training.budget"
        )
    filler.fill("search.time_limit", round(search_seconds, 1))
    filler.fill("search.generations", 10_000)  # the time ends the search
    algorithm = config.search.algorithm
    halving = algorithm == "pareto"
    share = TOP_RUNG_SHARE if halving else ES_BUDGET_SHARE
    budget = round(max(0.5, search_seconds * share), 2)
    filler.fill("training.budget", {"seconds": budget})
    if halving:
        rung0 = round(budget / ETA ** (RUNGS - 1), 3)
        filler.fill("search.fidelity", {"min_budget": rung0, "eta": ETA, "rungs": RUNGS})
        filler.fill("search.population", POPULATION)
        filler.fill("search.lambda", LAMBDA)
    if train_images > SEARCH_SUBSET:
        filler.fill("dataset.train_subset", SEARCH_SUBSET)
    if final_seconds > 0:
        count = n_final or 1
        filler.fill(f"{final}.models", 1)
        filler.fill(f"{final}.budget", {"seconds": round(final_seconds / count, 1)})
        if count > 1:
            filler.fill(f"{final}.others_budget", {"seconds": round(final_seconds / count, 1)})
        filler.fill(f"{final}.train_subset", "all")
        filler.fill(f"{final}.train_on_validation", True)
        if not filler.has(f"{final}.early_stopping"):
            filler.fill(f"{final}.early_stopping", False)
        if not filler.has(f"{final}.learning"):
            filler.fill(f"{final}.learning", dict(FINAL_LEARNING))
    planned = validate_config(data)
    top = _seconds(data["training"]["budget"])
    plan = RunPlan(
        minutes=float(config.minutes),
        train_images=int(train_images),
        cores=int(cores),
        search_seconds=round(search_seconds, 1),
        final_seconds=round(final_seconds, 1),
        reserve_seconds=round(reserve, 1),
        budget_seconds=top,
        rungs=planned.search.fidelity.rungs if planned.search.fidelity else 1,
        expected_evaluations=_expected_evaluations(planned, search_seconds),
        planned=tuple(filler.planned),
        kept=tuple(filler.kept),
    )
    return planned, plan


def _expected_evaluations(config: RunConfig, search_seconds: float) -> int | None:
    """About how many evaluations fit in the search's time if each trains its whole budget (early stops make
    it more): under successive halving every rung costs a generation the same time, and a child is
    evaluated 1 + 1/η + ... times."""
    budget = config.training.budget.seconds
    if budget is None:
        return None
    fidelity = config.search.fidelity
    if fidelity is None:
        return max(1, int(search_seconds / budget))
    per_child = fidelity.min_budget * fidelity.rungs
    evaluations = sum(fidelity.eta**-r for r in range(fidelity.rungs))
    return max(1, int(search_seconds / per_child * evaluations))


def training_images(config: RunConfig) -> int:
    """The size of the dataset's training set (before any subset): what the plan sizes the search by."""
    from evowatt.data.datasets import load_splits

    data = config.dataset
    splits = load_splits(
        data.name, data.path, config.seed, tuple(data.splits), None, None, data.image_size, data.channels
    )
    return sum(len(s.y) for s in (splits.evo_train, splits.evo_validation, splits.evo_test))


def plan_for(config: RunConfig) -> tuple[RunConfig, RunPlan | None]:
    """``plan_run`` on this machine: the dataset's training set counted, the cores this process may use."""
    if config.minutes is None:
        return config, None
    from evowatt.nn.threads import count_cores

    return plan_run(config, training_images(config), count_cores())
