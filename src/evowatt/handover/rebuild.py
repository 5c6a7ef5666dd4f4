"""A run's evaluation rebuilt as standalone ``nn.Module``s with its kept weights, one per exit.

A module of its own because two callers need the model without exporting it: ``evowatt export`` (export.py)
and ``fitting`` (``FitResult`` predicts with the same network the export writes). ``RawInput`` folds the
run's input pipeline (scale, normalisation) in front of a model, so it takes the dataset's raw pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from evowatt.driver.rundir import GRAMMAR_NAME
from evowatt.driver.store import Evaluation, RunStore
from evowatt.errors import EvowattError
from evowatt.nn.builder import build_network, extract_models, plan_network
from evowatt.representation.genome import Genome
from evowatt.representation.grammar import parse_grammar


class RawInput(torch.nn.Module):
    """The model behind the run's input pipeline: raw pixels -> x / scale -> (x - mean) / std, folded."""

    def __init__(self, model: torch.nn.Module, scale: float, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.model = model
        m = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
        self.register_buffer("input_scale", (1.0 / (scale * s)).float())
        self.register_buffer("input_shift", (-m / s).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.input_scale + self.input_shift)


@dataclass
class Rebuilt:
    row: Evaluation
    models: dict[int, torch.nn.Module]  # exit -> standalone model (eval mode, CPU)
    config: dict[str, Any]
    grammar_text: str
    layers: list[str]
    exit_layer: int | None


def rebuild(store: RunStore, evaluation_id: int, input_shape: tuple[int, int, int], classes: int) -> Rebuilt:
    row = store.get(evaluation_id)
    if row is None:
        known = store.max_id()
        raise EvowattError(
            f"{store.dir} has no evaluation {evaluation_id} (ids 0..{known}); `evowatt show {store.dir}` "
            "lists them"
        )
    if not row.ok:
        raise EvowattError(f"evaluation {evaluation_id} is {row.status} ({row.reason}): nothing to export")
    weights = row.weights
    if not weights or not Path(weights).is_file():
        raise EvowattError(
            f"the weights of evaluation {evaluation_id} are not kept (a run keeps only those of its parents "
            "and final models); export one of those, e.g. --best"
        )
    grammar_text = (store.dir / GRAMMAR_NAME).read_text(encoding="utf-8")
    grammar = parse_grammar(grammar_text, source=str(store.dir / GRAMMAR_NAME))
    genome = Genome.from_json(row.genome)
    plan = plan_network(genome, grammar, input_shape, classes)
    network = build_network(plan, int(row.seed or 0))
    try:
        network.load_state_dict(load_file(weights, device="cpu"))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds for a damaged file
        raise EvowattError(f"cannot load {weights} ({type(exc).__name__}: {exc}); restore it") from None
    full, early = extract_models(network, plan)
    models = {0: full.eval()}
    if early is not None:
        models[1] = early.eval()
    return Rebuilt(
        row, models, store.meta("config") or {}, grammar_text, genome.describe(grammar), plan.exit_layer
    )
