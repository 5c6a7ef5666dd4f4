"""The task records an evaluation runs from: ``EvalTask`` (genome, grammar, seed, weights to start from),
its ``EvalSettings`` (the budget, caps, device, meter choice, recipe) and the ``DataRef`` it loads.

Their own module, torch-free, because they are what crosses from the driver to wherever ``evaluate`` runs
(a worker process, a Ray worker): the driver builds them (``driver.tasks``) without importing torch, and
their JSON form (``EvalTask.to_json`` / ``from_json``) replays an evaluation.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from typing import Any

from evowatt.data.datasets import Splits, load_splits
from evowatt.energy.choice import MeterChoice
from evowatt.records import Budget


@dataclass(frozen=True)
class DataRef:
    name: str = "digits"
    path: str | None = None
    seed: int = 0
    splits: tuple[float, float, float] = (0.7, 0.2, 0.1)
    train_subset: int | None = None
    test_subset: int | None = None
    image_size: tuple[int, int] | None = None  # folder only
    channels: int | None = None  # folder only

    def load(self) -> Splits:
        return load_splits(
            self.name,
            self.path,
            self.seed,
            tuple(self.splits),
            self.train_subset,
            self.test_subset,
            tuple(self.image_size) if self.image_size is not None else None,
            self.channels,
        )


@dataclass(frozen=True)
class EvalSettings:
    budget: Budget = Budget()  # what the evaluation may train
    max_epochs: int = 10_000
    eval_batch_size: int = 1024
    device: str = "cpu"
    threads: int | str | None = None  # a count, "auto" (evowatt/threads.py) or None: torch's choice
    thread_share: int = 1  # evaluations running at once on this machine: "auto" divides the cores by it
    max_params: int | None = None
    max_flops: int | None = None
    energy: dict[str, Any] | None = None  # EnergySettings as JSON; None: no energy measurement
    # the run's meter choice (name, idle baseline, calibrated profile); with ``local`` (Ray) the worker
    # opens its own meter (the choice in energy.meter, e.g. auto) and measures its own idle baseline, once
    # per worker process
    meter: MeterChoice | None = None
    report_test: bool = False  # the test set is scored for the final report only, never during search
    recipe: dict[str, Any] | None = None  # nn.train.Recipe as JSON: the final training's; None in search
    learning: dict[str, Any] | None = None  # learning genes in place of the genome's (the final training's)
    # time latency with the clock: where the search selects on it, and for every handed model; the
    # estimate meter's energy needs no clock (a hardware meter always times its windows)
    latency: bool = True

    @property
    def local_meter(self) -> bool:
        """Whether the evaluation opens its own meter where it runs (a Ray worker: meter_per_worker)."""
        return self.meter is not None and self.meter.local

    @property
    def profile(self) -> dict[str, Any] | None:
        """The calibrated profile the run uses (energy.profile, as the run recorded it: profile.ProfileUse):
        latency, and energy where the profile has it, are its predictions; None: none."""
        return self.meter.profile if self.meter is not None else None


@dataclass
class EvalTask:
    id: int
    genome: dict[str, Any]
    grammar_text: str
    data: DataRef
    settings: EvalSettings
    seed: int
    init_weights: bytes | None = None  # safetensors bytes of the weights to continue training from
    return_weights: bool = False  # send the trained weights back in the result (safetensors bytes)
    # with init_genome, the weights are the parent's (that genome's): only the layers the child shares
    # with it load (nn/inherit.py); without, the genome is the same and every tensor loads
    init_genome: dict[str, Any] | None = None
    init_from: int | None = None  # the evaluation those weights come from (recorded in the result)
    # safetensors bytes of that evaluation's optimiser state (nn/optimiser_state.py): the training resumes
    # its optimiser where the state fits; None: a fresh optimiser
    init_optimiser: bytes | None = None
    return_optimiser: bool = False  # send the optimiser's final state back in the result
    fidelity: dict[str, Any] | None = None  # multi-fidelity rung and cumulative budget, echoed in the result
    kind: str = "mutant"
    measure_modules: list[int] = field(default_factory=list)  # modules to cost on their own (archive)
    # the network's cost measured by an earlier evaluation (costs.KnownCost as JSON): a network's energy,
    # power and latency belong to the network and the device, not to its weights, so it is not measured
    # again; None: measure it here
    known_cost: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("init_weights", "init_optimiser"):
            if data[key] is not None:
                data[key] = base64.b64encode(data[key]).decode("ascii")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalTask:
        values = dict(data)
        ref = {**data["data"], "splits": tuple(data["data"]["splits"])}
        if ref.get("image_size") is not None:  # JSON made it a list; a DataRef is hashed (runners' memo)
            ref["image_size"] = tuple(ref["image_size"])
        values["data"] = DataRef(**ref)
        settings = dict(data["settings"])
        settings["budget"] = Budget.from_json(
            settings.get("budget")
            or {"seconds": settings.pop("budget_seconds", None), "steps": settings.pop("budget_steps", None)}
        )
        if settings.get("meter") is not None:
            settings["meter"] = MeterChoice.from_json(settings["meter"])
        values["settings"] = EvalSettings(**settings)
        for key in ("init_weights", "init_optimiser"):
            if values.get(key) is not None:
                values[key] = base64.b64decode(values[key])
        return cls(**values)
