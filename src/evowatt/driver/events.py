"""``events.jsonl``: the run's events, one JSON object a line, flushed as they happen.

The loop reports progress as typed events (``driver.observe``: ``RunStarted``, ``GenerationStarted``,
``EvaluationDone``, ``Told``, ``FinalTraining``, ``FinalDone``, ``RunDone``, ``RunFailed``, ...);
:class:`EventLog` observes the same events as the display and writes each as a line, so a script can
follow a run (``tail -f``) or read it afterwards, and a person can grep it. Every line has ``event`` and
``time`` (Unix seconds); the rest depends on the event:

* ``start``: run directory, generations, lambda, the meter chosen;
* ``evaluation`` (from ``EvaluationDone``): id, generation, kind, status, reason, fitness, metrics with their
  method labels, training steps and seconds against the budget, wall time, measurement time;
* ``generation`` (from ``Told``): the generation record as the store keeps it;
* ``final_training`` / ``final_result``: the final training's start and its evaluation (``screening``,
  ``screen_result``, ``screened``: the screening before it);
* ``batch``: a batch's candidates, before their tasks are made; ``note``: a message for the user;
* ``done``: evaluations, wall seconds, why the run stopped, best id; ``error``: the error's type and text.

No torch here: the log is plain JSON written by the driver, which alone writes the run directory.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from evowatt.driver.observe import (
    BatchMade,
    EvaluationDone,
    Event,
    FinalDone,
    FinalTraining,
    GenerationStarted,
    Note,
    RunDone,
    RunFailed,
    RunStarted,
    Screened,
    ScreeningDone,
    ScreeningStarted,
    Told,
)

EVENTS_NAME = "events.jsonl"


def jsonable(value: Any) -> Any:
    """Plain JSON values of records, dataclasses, enums and paths (what the loop's events carry)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return jsonable(to_json())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    return str(value)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def evaluation_event(candidate: Any, result: Any, fitness: float | None) -> dict[str, Any]:
    """The figures of one finished evaluation, as the store records them."""
    data = jsonable(result) or {}
    train = data.get("train") or {}
    return {
        "id": data.get("id", _get(candidate, "id")),
        "generation": _get(candidate, "generation"),
        "kind": _get(candidate, "kind"),
        "parent_id": _get(candidate, "parent_id"),
        "mutations": jsonable(_get(candidate, "mutations", [])),
        "status": data.get("status"),
        "reason": data.get("reason"),
        "fitness": jsonable(fitness),
        "metrics": data.get("metrics") or {},
        "steps": train.get("steps"),
        "train_seconds": train.get("seconds"),
        "budget_steps": train.get("budget_steps"),
        "budget_seconds": train.get("budget_seconds"),
        "wall_seconds": data.get("wall_seconds"),
        "measure_seconds": data.get("measure_seconds"),
        "host": data.get("host"),
        "device": data.get("device"),
    }


class EventLog:
    """Appends the loop's progress events to ``RUN_DIR/events.jsonl``; a resumed run continues the file."""

    def __init__(self, run_dir: str | Path, clock: Callable[[], float] = time.time):
        self.path = Path(run_dir) / EVENTS_NAME
        self._clock = clock
        torn = self.path.is_file() and self.path.stat().st_size > 0 and not self._ends_with_newline()
        self._file: IO[str] | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open
        if torn:  # a run killed mid-line: the next event starts on a line of its own
            self._file.write("\n")

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(-1, 2)
            return handle.read(1) == b"\n"

    def write(self, event: str, **fields: Any) -> None:
        """One line, flushed: a reader sees it at once, a crash loses at most the line being written."""
        if self._file is None:
            return
        line = {"event": event, "time": self._clock(), **jsonable(fields)}
        try:
            self._file.write(json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n")
            self._file.flush()
        except (OSError, ValueError):
            pass  # a log that cannot be written (full disk) must not stop the run; the store reports it

    def __call__(self, event: Event) -> None:
        match event:
            case RunStarted():
                self.write(
                    "start",
                    run_dir=event.run_dir,
                    generations=event.generations,
                    meter=event.meter,
                    **{"lambda": event.lam},
                )
            case GenerationStarted():
                self.write("generation_start", generation=event.generation, candidates=event.candidates)
            case EvaluationDone():
                self.write("evaluation", **evaluation_event(event.candidate, event.result, event.fitness))
            case Told():
                record = jsonable(event.record)
                if isinstance(record, dict):  # None: a round that did not end a generation (a fidelity rung)
                    self.write("generation", **record)
            case FinalTraining() | ScreeningStarted():
                self.write(
                    "final_training" if isinstance(event, FinalTraining) else "screening",
                    id=_get(event.candidate, "id"),
                    parent_id=_get(event.candidate, "parent_id"),
                    budget_steps=_get(event.budget, "steps"),
                    budget_seconds=_get(event.budget, "seconds"),
                )
            case FinalDone() | ScreeningDone():
                self.write(event.name, **evaluation_event(event.candidate, event.result, event.fitness))
            case Screened():
                winner = event.winner
                self.write(
                    "screened",
                    winner_id=winner.id,
                    parent_id=winner.parent_id,
                    screened=[row.id for row in event.screened],
                )
            case RunDone():
                best = event.result.best
                self.write(
                    "done",
                    evaluations=event.result.evaluations,
                    wall_seconds=event.result.wall_seconds,
                    stopped=event.result.stopped,
                    best_id=best.id if best else None,
                )
            case RunFailed():
                self.write("error", type=event.type, message=event.message)
            case BatchMade() | Note():  # as the event's own fields
                self.write(event.name, **event.legacy_info())
            case _:  # Evaluating, Recording: queued, or the evaluation before it is recorded
                pass

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_events(run_dir: str | Path) -> list[dict[str, Any]]:
    """The events of a run (a torn last line, from a run killed mid-write, is skipped)."""
    path = Path(run_dir) / EVENTS_NAME
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
