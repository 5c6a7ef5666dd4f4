"""The run's events as typed records, and the observers that receive them.

The loop, the handover and the session tell what happens as one frozen record per kind of event
(:class:`EvaluationDone`, :class:`Told`, ...); an observer is any callable that takes one and matches on its
type (``match event: case EvaluationDone(): ...``): the progress displays, ``events.jsonl``, the cost book,
crash injection. Each record's ``name`` is the event's name in the older ``progress(name, **info)`` form,
which ``as_observer`` still accepts from users, and ``legacy_info`` its keywords there.

No torch here: the records carry the driver's own types, imported only for type checking.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

if TYPE_CHECKING:
    from pathlib import Path

    from evowatt.driver.rows import Evaluation
    from evowatt.driver.session import RunResult
    from evowatt.records import Budget, EvalResult
    from evowatt.search.protocol import Candidate, GenerationRecord, Score, Search


@dataclass(frozen=True)
class Event:
    """One thing that happened in a run; ``name`` is its name in the ``progress(name, **info)`` form."""

    name: ClassVar[str]

    def legacy_info(self) -> dict[str, Any]:
        """The keywords of the ``progress(name, **info)`` call this event was before it was typed."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class RunStarted(Event):
    """A session's loop starts (a new run or a resumed one)."""

    name: ClassVar[str] = "start"
    run_dir: Path
    generations: int | None
    lam: int
    meter: dict[str, Any] | None  # the run's meter choice as recorded in the store


@dataclass(frozen=True)
class Note(Event):
    """Something the user should know that is not an error (a dataset's unreadable files, a cut budget)."""

    name: ClassVar[str] = "note"
    message: str


@dataclass(frozen=True)
class GenerationStarted(Event):
    """The search was asked for a generation's (or a fidelity rung's) candidates."""

    name: ClassVar[str] = "generation"
    generation: int
    candidates: int


@dataclass(frozen=True)
class BatchMade(Event):
    """A batch's candidates, before their tasks are made (what those tasks may reuse)."""

    name: ClassVar[str] = "batch"
    candidates: Sequence[Candidate]


@dataclass(frozen=True)
class Evaluating(Event):
    """A candidate's task is queued for the runner."""

    name: ClassVar[str] = "evaluate"
    candidate: Candidate


@dataclass(frozen=True)
class Recording(Event):
    """An evaluation is done (trained, weights kept), not yet recorded in the store."""

    name: ClassVar[str] = "recording"
    candidate: Candidate
    result: EvalResult


@dataclass(frozen=True)
class _Done(Event):
    """A recorded evaluation; in the older form its result was the JSON of the record."""

    candidate: Candidate
    result: EvalResult
    fitness: float | None

    def legacy_info(self) -> dict[str, Any]:
        return {**super().legacy_info(), "result": self.result.to_json()}


@dataclass(frozen=True)
class EvaluationDone(_Done):
    """A search evaluation is recorded in the store."""

    name: ClassVar[str] = "result"
    score: Score | None = None


@dataclass(frozen=True)
class Told(Event):
    """The search was told a round's evaluations and the checkpoint is written; ``record`` is None for a
    round that did not end a generation (a fidelity rung)."""

    name: ClassVar[str] = "told"
    record: GenerationRecord | None
    search: Search
    parent: Any  # the ES's parent after the round (None for a population search)


@dataclass(frozen=True)
class ScreeningStarted(Event):
    """A screening training before the final training starts (``candidate.parent_id``: the network)."""

    name: ClassVar[str] = "screen"
    candidate: Candidate
    budget: Budget


@dataclass(frozen=True)
class ScreeningDone(_Done):
    """A screening training is recorded."""

    name: ClassVar[str] = "screen_result"


@dataclass(frozen=True)
class Screened(Event):
    """The screening chose the network that gets the final training."""

    name: ClassVar[str] = "screened"
    winner: Evaluation
    screened: list[Evaluation]


@dataclass(frozen=True)
class FinalTraining(Event):
    """A final training of a model the run hands over starts."""

    name: ClassVar[str] = "final"
    candidate: Candidate
    budget: Budget


@dataclass(frozen=True)
class FinalDone(_Done):
    """A final training is recorded."""

    name: ClassVar[str] = "final_result"


@dataclass(frozen=True)
class RunDone(Event):
    """The session ended normally: what it hands over."""

    name: ClassVar[str] = "done"
    result: RunResult


@dataclass(frozen=True)
class RunFailed(Event):
    """The session ended by an exception (Ctrl-C included): its type's name and its text."""

    name: ClassVar[str] = "error"
    type: str
    message: str


STARTED: dict[str, type[ScreeningStarted | FinalTraining]] = {
    "screen": ScreeningStarted,
    "final": FinalTraining,
}
DONE: dict[str, type[ScreeningDone | FinalDone]] = {"screen": ScreeningDone, "final": FinalDone}

Observer: TypeAlias = Callable[[Event], None]
LegacyProgress: TypeAlias = Callable[..., None]  # progress(name, **info), the form before typed events


class Observers:
    """Observers of a run's events, called in order."""

    def __init__(self, *observers: Observer | None):
        self.observers = [o for o in observers if o is not None]

    def add(self, observer: Observer) -> None:
        self.observers.append(observer)

    def __call__(self, event: Event) -> None:
        for observer in self.observers:
            observer(event)


def tee(*observers: Observer | None) -> Observer:
    """One observer that hands every event to each of ``observers`` in turn."""
    return Observers(*observers)


def legacy(progress: LegacyProgress) -> Observer:
    """An observer that calls ``progress(event.name, **event.legacy_info())``: the older callback form."""

    def call(event: Event) -> None:
        progress(event.name, **event.legacy_info())

    return call


def as_observer(progress: Observer | LegacyProgress | None) -> Observer | None:
    """A user's ``progress=`` callback as an observer: one taking keywords (``def progress(event,
    **info)``, the older form) is adapted; one taking the event alone is used as it is."""
    if progress is None:
        return None
    try:
        parameters = inspect.signature(progress).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: no keywords to take
        return progress
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return legacy(progress)
    return progress
