"""What a run shows while it runs: `RunSoFar` (where the whole run stands, across sessions), and the two
displays of the loop's typed events (``driver.observe``), the live bar for a terminal and plain lines for a
log."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
from rich.text import Text

from evowatt.cli.output import console, figure_text, metric_value
from evowatt.driver.observe import (
    Evaluating,
    EvaluationDone,
    Event,
    FinalDone,
    FinalTraining,
    GenerationStarted,
    Note,
    RunStarted,
    Screened,
    ScreeningDone,
    ScreeningStarted,
    Told,
)
from evowatt.units import format_si

if TYPE_CHECKING:
    from evowatt.search import Search


def _screened_text(event: Screened) -> str:
    """Which screened network gets the final training, and what each screening scored."""
    winner = event.winner
    scores = ", ".join(f"#{row.parent_id} {figure_text(row.metric('accuracy'))}" for row in event.screened)
    return (
        f"screening (evo_test accuracy: {scores}): the network of #{winner.parent_id} gets the final "
        f"training, from its screening's weights (#{winner.id})"
    )


def _budget_text(budget: Any) -> str:
    return f"{budget.seconds:g} s" if budget.seconds is not None else f"{budget.steps} steps"


def _duration(seconds: float) -> str:
    """A clock reading to take in at a glance: 42s, 3m05s, 1h02m."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _percent(share: float) -> str:
    """A share as a percentage that never reads 0 for a front that has one: 43.2 %, 0.012 %."""
    percent = 100 * share
    return f"{percent:.1f} %" if percent >= 0.1 or percent == 0 else f"{percent:.2g} %"


_COST_METRICS = ("energy", "power", "latency", "flops", "params")


def _front_value(metric: str, value: Any) -> str:
    """An objective's value as `show` prints it: energies with SI units (nJ, µJ), accuracies as is."""
    from evowatt.units import METRIC_UNITS

    unit = METRIC_UNITS.get(metric.removesuffix("_0").removesuffix("_1"))
    if unit is None or value is None:
        return figure_text(value)
    return format_si(float(value), unit)


def _dominates(a: list[float], b: list[float], objectives: list[tuple[str, str]]) -> bool:
    """``a`` is no worse than ``b`` on every objective and better on one."""
    signs = [-1.0 if sense == "maximize" else 1.0 for _metric, sense in objectives]
    pairs = [(s * x, s * y) for s, x, y in zip(signs, a, b, strict=True)]
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def _front_text(values: list[list[float]], objectives: list[tuple[str, str]], share: float | None) -> str:
    """The front in a few words: its size, its extremes on the first two objectives (the most accurate
    and the cheapest model, each with its other figure), and the hypervolume as a share of the box."""
    if not values:
        return "front empty (no feasible model yet)"
    shown = objectives[:2]
    parts, cheapest_named = [], False
    for index, (metric, sense) in enumerate(shown):
        choose = max if sense == "maximize" else min
        point = choose(values, key=lambda v, i=index: v[i])
        if sense == "maximize" and metric.startswith("accuracy"):
            label = "most accurate"
        elif sense == "minimize" and metric in _COST_METRICS and not cheapest_named:
            label, cheapest_named = "cheapest", True
        else:
            label = f"{'highest' if sense == 'maximize' else 'lowest'} {metric}"
        others = ", ".join(_front_value(m, point[j]) for j, (m, _s) in enumerate(shown) if j != index)
        parts.append(f"{label} {_front_value(metric, point[index])}" + (f" ({others})" if others else ""))
    text = f"front {len(values)}: " + ", ".join(parts)
    return text + (f", HV {_percent(share)}" if share is not None else "")


class RunSoFar:
    """What a progress display says of the whole run, not of this session alone: the count against the
    planned total, the clock against ``search.time_limit`` (counting earlier sessions, as the loop's
    TimeLimit does), and the best so far: the best fitness (ES; it never falls, though a retrained parent
    may score lower) or the front (pareto, random). A resumed run starts it from its store (``of_store``),
    so its figures go on instead of restarting."""

    def __init__(
        self,
        total: int | None = None,
        done: int = 0,
        *,
        time_limit: float | None = None,
        elapsed: float = 0.0,
        best: float | None = None,
        objectives: list[tuple[str, str]] | None = None,
        record: dict[str, Any] | None = None,
        points: list[list[float]] | None = None,
        clock: Any = time.monotonic,
    ):
        self.total = total
        self.done = done
        self.time_limit = time_limit
        self.elapsed_before = elapsed
        self.best = best
        self.objectives = [(str(m), str(s)) for m, s in objectives] if objectives else None
        self.record = record  # the latest generation record of a population search: its front
        self.points: list[list[float]] = []  # feasible points seen: the front until a generation is told
        for values in points or []:
            self._see(list(values))
        self.searching = True  # the time limit is the search's: the final training is past it
        self._clock = clock
        self._started: float | None = None

    @classmethod
    def of_store(cls, store: Any, config: Any = None) -> RunSoFar:
        """Where a resumed run stands: its searched evaluations, its time, its best, its latest front."""
        rows = store.searched()
        fitnesses = [row.fitness for row in rows if row.fitness is not None]
        pareto = config is not None and config.search.algorithm != "es"
        generations = store.generations() if pareto else []
        points = [
            list(point["values"])
            for row in rows
            for point in (row.score.points if row.score is not None else {}).values()
            if point.get("violation") == 0
        ]
        return cls(
            _planned(config),
            len(rows),
            time_limit=config.search.time_limit if config is not None else None,
            elapsed=float(store.meta("elapsed_seconds", 0.0) or 0.0),
            best=max(fitnesses) if fitnesses else None,
            objectives=_objectives(config),
            record=generations[-1].to_json() if generations else None,
            points=points if pareto else None,
        )

    @classmethod
    def of_config(cls, config: Any) -> RunSoFar:
        """A new run: its planned total, its time limit and, for a population search, its objectives."""
        return cls(_planned(config), 0, time_limit=config.search.time_limit, objectives=_objectives(config))

    @property
    def pareto(self) -> bool:
        return self.objectives is not None

    def start(self) -> None:
        """The clock starts with the loop's start event (where its time limit starts), once."""
        if self._started is None:
            self._started = self._clock()

    def elapsed(self) -> float:
        now = self._clock() - self._started if self._started is not None else 0.0
        return self.elapsed_before + now

    def count_text(self) -> str:
        return f"{self.done}/{self.total}" if self.total else f"{self.done}"

    def clock_text(self) -> str:
        elapsed = self.elapsed()
        text = f"elapsed {_duration(elapsed)}"
        if self.time_limit is not None and self.searching:
            left = max(0.0, self.time_limit - elapsed)
            text += f", {_duration(left)} left of {_duration(self.time_limit)}"
        return text

    def result(self, fitness: float | None, score: Any = None) -> None:
        """A searched evaluation recorded: one more done, the best and the feasible points updated."""
        self.done += 1
        if fitness is not None and (self.best is None or fitness > self.best):
            self.best = fitness
        if self.pareto:
            for point in (getattr(score, "points", None) or {}).values():
                if point.get("violation") == 0:
                    self._see(list(point["values"]))

    def told(self, record: Any, search: Search | None = None) -> dict[str, Any] | None:
        """A generation ended: a population search's record becomes the front shown. The record as JSON."""
        from evowatt.driver.events import jsonable

        data = jsonable(record)
        if not isinstance(data, dict):  # a round that did not end a generation (a fidelity rung)
            return None
        if search is not None and search.done():  # the search is over: what follows is past its time limit
            self.searching = False
        if data.get("best_id") is None and data.get("front") is not None:
            if self.objectives is None:  # a display made without the config: the search knows them
                objectives = search.objectives if search is not None else []
                self.objectives = [(o.metric, o.objective) for o in objectives] or None
            self.record = data
        return data

    def best_text(self) -> str:
        if not self.pareto:
            return f"best {figure_text(self.best)}"
        assert self.objectives is not None
        if self.record is not None:
            values = [list(point["values"]) for point in self.record.get("front") or []]
            return _front_text(values, self.objectives, self.record.get("hypervolume_share"))
        if self.points:  # generation 0 not yet told: the feasible points seen so far, no hypervolume yet
            return _front_text(self.points, self.objectives, None)
        return "front -"

    def _see(self, values: list[float]) -> None:
        """Keep the non-dominated feasible points seen (the front shown before the first record)."""
        assert self.objectives is not None
        if any(_dominates(p, values, self.objectives) or p == values for p in self.points):
            return
        self.points = [p for p in self.points if not _dominates(values, p, self.objectives)] + [values]


def _planned(config: Any) -> int | None:
    from evowatt.driver.setup import planned_evaluations

    return planned_evaluations(config) if config is not None else None


def _objectives(config: Any) -> list[tuple[str, str]] | None:
    """A population search's objectives as (metric, maximize | minimize); None for the ES."""
    if config is None or config.search.algorithm == "es":
        return None
    return [(o.metric, o.objective) for o in config.search.objectives]


class _ClockColumn(ProgressColumn):
    """Elapsed time of the whole run and, with a time limit, the time left: redrawn every refresh."""

    def __init__(self, run: RunSoFar):
        super().__init__()
        self.run = run

    def render(self, task: Any) -> Text:
        return Text(self.run.clock_text(), style="progress.elapsed")


class LiveProgress:
    """Turns the loop's progress events into a rich progress bar: generation, count, phase, best so far
    (fitness, or the front), the run's time and the time left."""

    def __init__(self, total: int | None = None, done: int = 0, run: RunSoFar | None = None):
        self.run = run if run is not None else RunSoFar(total, done)
        self.generation = 0
        self.started = False
        self.bar = Progress(
            TextColumn("[bold]gen {task.fields[generation]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TextColumn("{task.fields[best]}"),
            _ClockColumn(self.run),
            console=console,
            transient=False,
        )
        self.task = self.bar.add_task(
            "starting",
            total=self.run.total,
            completed=self.run.done,
            generation=0,
            best=escape(self.run.best_text()),
        )

    @property
    def best(self) -> float | None:
        return self.run.best

    def __enter__(self) -> LiveProgress:
        # the bar appears with the loop's "start" event: a command refused by its checks prints only its error
        self.started = False
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.started:
            self.bar.__exit__(*exc)

    def __call__(self, event: Event) -> None:
        match event:
            case RunStarted():
                self.run.start()
                if not self.started:
                    self.bar.start()
                    self.started = True
                console.print(f"run directory: [bold]{event.run_dir}[/]")
                meter = event.meter
                if meter:
                    console.print(
                        f"energy meter: [bold]{meter['name']}[/] ({meter['reason']})", highlight=False
                    )
            case GenerationStarted():
                self.generation = event.generation
                self.bar.update(self.task, generation=self.generation)
            case Evaluating(candidate=c):
                self.bar.update(self.task, description=f"individual {c.id} ({c.kind}): queued for training")
            case EvaluationDone(candidate=c, fitness=fitness):
                self.run.result(fitness, event.score)
                status = (
                    figure_text(fitness) if fitness is not None else f"{event.result.to_json()['status']}"
                )
                self.bar.update(
                    self.task,
                    completed=self.run.done,
                    best=escape(self.run.best_text()),
                    description=f"individual {c.id} ({c.kind}): {status}",
                )
            case Told():
                if self.run.told(event.record, event.search) is not None:
                    self.bar.update(self.task, best=escape(self.run.best_text()))
            case FinalTraining():
                self.run.searching = False
                text = _budget_text(event.budget)
                self.bar.update(self.task, description=f"final training of the best genome ({text})")
            case ScreeningStarted():
                self.run.searching = False
                text = _budget_text(event.budget)
                self.bar.update(
                    self.task, description=f"screening the network of #{event.candidate.parent_id} ({text})"
                )
            case Screened():
                console.print(_screened_text(event), highlight=False)
            case Note():
                console.print(f"[yellow]note:[/] {event.message}", highlight=False)


class PlainProgress:
    """For a log, not a terminal (a job log, CI, nohup): one plain line per evaluation, printed at once,
    each with the run's count, best so far and clock; one line per generation."""

    def __init__(self, total: int | None = None, done: int = 0, out: Any = None, run: RunSoFar | None = None):
        self.run = run if run is not None else RunSoFar(total, done)
        self.generation = 0
        self.out = out

    @property
    def best(self) -> float | None:
        return self.run.best

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def _print(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def __call__(self, event: Event) -> None:
        match event:
            case RunStarted():
                self.run.start()
                self._print(f"run directory: {event.run_dir}")
                meter = event.meter
                if meter:
                    self._print(f"energy meter: {meter['name']} ({meter['reason']})")
            case GenerationStarted():
                self.generation = event.generation
            case EvaluationDone():
                self.run.result(event.fitness, event.score)
                where = f"gen {self.generation} [{self.run.count_text()}]"
                self._print(self._evaluation_line(where, event, self.run.best_text()))
            case FinalDone():
                self._print(self._evaluation_line("final training", event))
            case ScreeningDone():
                self._print(self._evaluation_line("screening", event))
            case Told():
                self._told(event)
            case FinalTraining():
                self.run.searching = False
                self._print(f"final training of the best genome ({_budget_text(event.budget)})")
            case ScreeningStarted():
                self.run.searching = False
                text = _budget_text(event.budget)
                self._print(f"screening the network of #{event.candidate.parent_id} ({text})")
            case Screened():
                self._print(_screened_text(event))
            case Note():
                self._print(f"note: {event.message}")

    def _evaluation_line(
        self, where: str, event: EvaluationDone | ScreeningDone | FinalDone, best: str | None = None
    ) -> str:
        """One recorded evaluation's line: where it stands, its status and figures, the run's clock."""
        c, result, fitness = event.candidate, event.result.to_json(), event.fitness
        status = result["status"] + (f" ({result['reason']})" if result.get("reason") else "")
        accuracy = metric_value(result, "accuracy")
        energy = metric_value(result, "energy")
        train = result.get("train") or {}
        parts = [
            where,
            f"individual {c.id} ({c.kind})",
            status,
            f"fitness {figure_text(fitness)}",
            f"accuracy {figure_text(accuracy)}",
        ]
        if energy is not None:
            parts.append(f"energy {format_si(float(energy), 'J')}")
        if train.get("seconds") is not None:
            parts.append(f"trained {train['seconds']:.1f} s / {train.get('steps')} steps")
        if best is not None:
            parts.append(best)
        parts.append(self.run.clock_text())
        return "  ".join(parts)

    def _told(self, event: Told) -> None:
        record = self.run.told(event.record, event.search)
        if record is None:
            return
        if self.run.pareto:
            summary = self.run.best_text()
        else:
            parent = record.get("best_id", record.get("parent_id"))
            summary = (
                f"parent {parent} fitness {figure_text(record.get('best_fitness'))}, "
                f"best so far {figure_text(self.run.best)}"
            )
        self._print(f"generation {self.generation} done: {summary}  {self.run.clock_text()}")


def make_progress(
    total: int | None = None, done: int = 0, run: RunSoFar | None = None
) -> LiveProgress | PlainProgress:
    """The live bar on a terminal; plain lines, one per evaluation, anywhere else. ``run`` (else
    ``total`` and ``done``) says where the run stands: a new one (``RunSoFar.of_config``) or a resumed
    one (``RunSoFar.of_store``)."""
    run = run if run is not None else RunSoFar(total, done)
    if sys.stdout.isatty():
        return LiveProgress(run=run)
    return PlainProgress(run=run)
