"""``events.jsonl``: the run's events, one JSON object a line, flushed as they happen.

The loop reports progress as ``progress(event, **info)`` calls (``start``, ``generation``, ``evaluate``,
``result``, ``told``, ``final``, ``final_result``, ``done``, ``error``); :class:`EventLog` consumes the same
calls and writes each as a line, so a script can follow a run (``tail -f``) or read it afterwards, and a
person can grep it. Every line has ``event`` and ``time`` (Unix seconds); the rest depends on the event:

* ``start``: run directory, generations, lambda, the meter chosen;
* ``evaluation`` (from ``result``): id, generation, kind, status, reason, fitness, metrics with their
  method labels, training steps and seconds against the budget, wall time, measurement time;
* ``generation`` (from ``told``): the generation record as the store keeps it;
* ``final_training`` / ``final_result``: the final training's start and its evaluation;
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

    def __call__(self, event: str, **info: Any) -> None:
        if event == "start":
            self.write(
                "start",
                run_dir=info.get("run_dir"),
                generations=info.get("generations"),
                meter=info.get("meter"),
                **{"lambda": info.get("lam")},
            )
        elif event == "generation":
            self.write(
                "generation_start", generation=info.get("generation"), candidates=info.get("candidates")
            )
        elif event == "result":
            self.write(
                "evaluation", **evaluation_event(info["candidate"], info["result"], info.get("fitness"))
            )
        elif event == "told":
            record = jsonable(info.get("record"))
            if isinstance(record, dict):  # None: a round that did not end a generation (a fidelity rung)
                self.write("generation", **record)
        elif event in ("final", "screen"):
            budget = info.get("budget")
            self.write(
                "final_training" if event == "final" else "screening",
                id=_get(info.get("candidate"), "id"),
                parent_id=_get(info.get("candidate"), "parent_id"),
                budget_steps=_get(budget, "steps"),
                budget_seconds=_get(budget, "seconds"),
            )
        elif event in ("final_result", "screen_result"):
            self.write(event, **evaluation_event(info["candidate"], info["result"], info.get("fitness")))
        elif event == "screened":
            winner = info["winner"]
            self.write(
                "screened",
                winner_id=winner.id,
                parent_id=winner.parent_id,
                screened=[row.id for row in info["screened"]],
            )
        elif event == "done":
            result = info.get("result")
            best = _get(result, "best")
            self.write(
                "done",
                evaluations=_get(result, "evaluations"),
                wall_seconds=_get(result, "wall_seconds"),
                stopped=_get(result, "stopped"),
                best_id=_get(best, "id") if best else None,
            )
        elif event == "error":
            self.write("error", type=info.get("type"), message=info.get("message"))
        elif event not in ("evaluate", "recording"):  # queued, or the evaluation before it is recorded
            self.write(event, **info)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def tee(*consumers: Callable[..., None]) -> Callable[..., None]:
    """One progress callback that hands every event to each consumer in turn."""

    def call(event: str, **info: Any) -> None:
        for consumer in consumers:
            consumer(event, **info)

    return call


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
