"""What `evowatt report` shows, read from a run: its store, its model cards and the views of ``results``.

A module of its own so that the figures (figures.py) and the page (report.py) draw from one typed
``RunData`` and never read the store themselves; nothing here imports matplotlib.

It reads the store without locking it, so it works on a run still in progress, and on a run directory
written by the first store version (generation records without survivors, front or hypervolume).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evowatt.data.loaders import CLASS_NAMES
from evowatt.driver.results import FrontModel, answer, front
from evowatt.driver.store import Evaluation, RunStore
from evowatt.errors import EvowattError
from evowatt.records import Status
from evowatt.search.protocol import GenerationRecord

COSTS = ("energy", "latency", "flops", "params")  # what the trade-off's x axis may show
CHANCE = 1.5  # an accuracy at most CHANCE / classes is chance level: drawn faint, it answers nothing


@dataclass
class Point:
    id: int
    exit: int
    kind: str
    generation: int | None
    accuracy: float
    cost: float | None  # the x axis's metric (energy per inference by default)
    status: Status


@dataclass
class RunData:
    run_dir: Path
    config: dict[str, Any]
    meter: dict[str, Any]
    evaluations: list[Evaluation]
    generations: list[GenerationRecord]
    meta: dict[str, Any] = field(default_factory=dict)
    cards: list[dict[str, Any]] = field(default_factory=list)
    front: list[FrontModel] = field(default_factory=list)  # results.front: the one front of every view
    answer: FrontModel | None = None  # results.answer: the model to take
    no_answer: str = ""  # why there is none (yet)

    @property
    def in_progress(self) -> bool:
        return self.meta.get("finished_at") is None

    @property
    def classes(self) -> int | None:
        """The dataset's class count (from a model card, else the known datasets'); None when unknown."""
        for card in self.cards:
            count = (card.get("classes") or {}).get("count")
            if count:
                return int(count)
        names = CLASS_NAMES.get(str((self.config.get("dataset") or {}).get("name")))
        return len(names) if names else None


def load_run(run_dir: str | Path) -> RunData:
    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    try:
        config = store.meta("config")
        if config is None and (run_dir / "config.yaml").is_file():
            config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        meta = {k: store.meta(k) for k in ("started_at", "finished_at", "elapsed_seconds", "evowatt_version")}
        data = RunData(
            run_dir=run_dir,
            config=config or {},
            meter=store.meta("meter") or {},
            evaluations=store.select(),
            generations=store.generations(),
            meta=meta,
        )
    finally:
        store.close()
    for path in sorted(run_dir.glob("export/*.card.json")):
        try:
            data.cards.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    data.front, data.answer, data.no_answer = _answer(data)
    return data


def _answer(data: RunData) -> tuple[list[FrontModel], FrontModel | None, str]:
    """The run's front and the model to take, as `evowatt run` and `evowatt show` name them: no model
    before a generation ended or a final training, and none from a store without a recorded config."""
    try:
        models = front(data.run_dir)
        if not data.generations and not any(r.kind == "final" for r in data.evaluations):
            return models, None, "none yet: no generation has ended"
        chosen = answer(data.run_dir)
    except EvowattError as exc:
        return [], None, f"none: {exc}"
    return models, chosen, "" if chosen else "none: no model meets the run's constraints"


def cost_axis(data: RunData) -> str:
    """The trade-off's x axis: the run's cost objective (energy by default) where evaluations have it,
    else energy where any was measured, else FLOPs."""
    search = data.config.get("search") or {}
    objectives = search.get("objectives") or [{"metric": "accuracy"}, {"metric": "energy"}]
    named = [o.get("metric") for o in objectives if isinstance(o, dict)]
    for name in [*(n for n in named if n in COSTS), "energy"]:
        if any(r.metric(name) is not None for r in data.evaluations if r.ok):
            return name
    return "flops"


def points(data: RunData) -> tuple[list[Point], str]:
    """Every exit of every evaluation with an accuracy, and the cost axis used (see ``cost_axis``)."""
    rows = [r for r in data.evaluations if r.ok]
    cost = cost_axis(data)
    out = []
    for row in rows:
        for exit_index, suffix in ((0, ""), (1, "_1")):
            accuracy = row.metric(f"accuracy{suffix}")
            if accuracy is None:
                continue
            out.append(
                Point(
                    row.id,
                    exit_index,
                    row.kind,
                    row.generation,
                    accuracy,
                    row.metric(f"{cost}{suffix}"),
                    row.status,
                )
            )
    return out, cost


def exported(data: RunData) -> dict[tuple[int, str], dict[str, Any]]:
    """{(evaluation id, exit): its model card} of the models exported into RUN/export."""
    out = {}
    for card in data.cards:
        evaluation = card.get("evaluation") or {}
        if "id" in evaluation:
            out[(int(evaluation["id"]), str(evaluation.get("exit", 0)))] = card
    return out


def number(metric: Any) -> float | None:
    """A figure's value, from a store metric or a card's (``{"value": ..., "method": ...}``) or a bare one."""
    value = metric.get("value") if isinstance(metric, dict) else metric
    return None if value is None else float(value)


def counts(data: RunData) -> dict[str, Any]:
    """What the header counts, the search's and the after-search evaluations apart."""
    searched = [r for r in data.evaluations if r.searched]
    statuses: dict[str, int] = {}
    for r in searched:
        statuses[r.status.value] = statuses.get(r.status.value, 0) + 1
    finals = [r for r in data.evaluations if r.kind == "final"]
    return {
        "searched": len(searched),
        "statuses": statuses,
        "finals": len(finals),
        "finals_ok": sum(r.ok for r in finals),
        "screenings": sum(r.kind == "screen" for r in data.evaluations),
    }
