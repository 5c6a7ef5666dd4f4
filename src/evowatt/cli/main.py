"""Command line: run, resume, show, check-grammar. A user error is one message and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from evowatt.console import OutputConsole
from evowatt.errors import EvowattError
from evowatt.units import format_si

console = OutputConsole()


def input_shape_arg(text: str) -> tuple[int, int, int]:
    """argparse type for C,H,W (shared with the energy commands)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected C,H,W as three positive integers, e.g. 1,28,28; got {text!r}"
        )
    return values  # type: ignore[return-value]


def _bounded(kind: type, low: float, strict: bool, what: str):
    """An argparse type: a number of ``kind`` at least (or, ``strict``, above) ``low``; argparse names the
    option and exits 2 when it does not hold."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value != value or (value <= low if strict else value < low):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse shows the type's name in some messages
    return parse


positive_int = _bounded(int, 1, False, "a positive integer (1 or more)")
non_negative_int = _bounded(int, 0, False, "a non-negative integer (0 or more)")
positive_float = _bounded(float, 0, True, "a positive number")
class_count = _bounded(int, 2, False, "a class count of 2 or more")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _metric(row: dict[str, Any] | None, name: str) -> Any:
    if not row:
        return None
    metric = (row.get("metrics") or {}).get(name)
    return metric.get("value") if isinstance(metric, dict) else metric


def _screened_text(info: dict[str, Any]) -> str:
    """Which screened network gets the final training, and what each screening scored."""
    winner = info["winner"]
    scores = ", ".join(f"#{row['parent_id']} {_fmt(_metric(row, 'accuracy'))}" for row in info["screened"])
    return (
        f"screening (evo_test accuracy: {scores}): the network of #{winner['parent_id']} gets the final "
        f"training, from its screening's weights (#{winner['id']})"
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
        return _fmt(value)
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
        from evowatt.driver.store import SEARCHED
        from evowatt.search.protocol import Score

        rows = store.evaluations(f"WHERE {SEARCHED}")
        fitnesses = [row["fitness"] for row in rows if row.get("fitness") is not None]
        pareto = config is not None and config.search.algorithm != "es"
        generations = store.generations() if pareto else []
        points = [
            list(point["values"])
            for row in rows
            for point in Score.from_json(row.get("score")).points.values()
            if point.get("violation") == 0
        ]
        return cls(
            _planned(config),
            len(rows),
            time_limit=config.search.time_limit if config is not None else None,
            elapsed=float(store.meta("elapsed_seconds", 0.0) or 0.0),
            best=max(fitnesses) if fitnesses else None,
            objectives=_objectives(config),
            record=generations[-1] if generations else None,
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

    def told(self, record: Any, search: Any = None) -> dict[str, Any] | None:
        """A generation ended: a population search's record becomes the front shown. The record as JSON."""
        from evowatt.driver.events import jsonable

        data = jsonable(record)
        if not isinstance(data, dict):  # a round that did not end a generation (a fidelity rung)
            return None
        done = getattr(search, "done", None)
        if callable(done) and done():  # the search is over: what follows is past its time limit
            self.searching = False
        if data.get("best_id") is None and data.get("front") is not None:
            if self.objectives is None:  # a display made without the config: the search knows them
                inner = getattr(search, "inner", search)
                objectives = getattr(inner, "objectives", None) or []
                self.objectives = [(o.metric, o.objective) for o in objectives] or None
            self.record = data
        return data

    def best_text(self) -> str:
        if not self.pareto:
            return f"best {_fmt(self.best)}"
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

    def __call__(self, event: str, **info: Any) -> None:
        if event == "start":
            self.run.start()
            if not self.started:
                self.bar.start()
                self.started = True
            console.print(f"run directory: [bold]{info['run_dir']}[/]")
            meter = info.get("meter")
            if meter:
                console.print(f"energy meter: [bold]{meter['name']}[/] ({meter['reason']})", highlight=False)
        elif event == "generation":
            self.generation = info["generation"]
            self.bar.update(self.task, generation=self.generation)
        elif event == "evaluate":
            c = info["candidate"]
            self.bar.update(self.task, description=f"individual {c.id} ({c.kind}): queued for training")
        elif event == "result":
            c, result, fitness = info["candidate"], info["result"], info["fitness"]
            self.run.result(fitness, info.get("score"))
            status = _fmt(fitness) if fitness is not None else f"{result['status']}"
            self.bar.update(
                self.task,
                completed=self.run.done,
                best=escape(self.run.best_text()),
                description=f"individual {c.id} ({c.kind}): {status}",
            )
        elif event == "told":
            if self.run.told(info.get("record"), info.get("search")) is not None:
                self.bar.update(self.task, best=escape(self.run.best_text()))
        elif event == "final":
            self.run.searching = False
            text = _budget_text(info["budget"])
            self.bar.update(self.task, description=f"final training of the best genome ({text})")
        elif event == "screen":
            self.run.searching = False
            text = _budget_text(info["budget"])
            self.bar.update(
                self.task, description=f"screening the network of #{info['candidate'].parent_id} ({text})"
            )
        elif event == "screened":
            console.print(_screened_text(info), highlight=False)
        elif event == "note":
            console.print(f"[yellow]note:[/] {info['message']}", highlight=False)


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

    def __call__(self, event: str, **info: Any) -> None:
        if event == "start":
            self.run.start()
            self._print(f"run directory: {info['run_dir']}")
            meter = info.get("meter")
            if meter:
                self._print(f"energy meter: {meter['name']} ({meter['reason']})")
        elif event == "generation":
            self.generation = info["generation"]
        elif event in ("result", "final_result", "screen_result"):
            c, result, fitness = info["candidate"], info["result"], info["fitness"]
            if event == "result":
                self.run.result(fitness, info.get("score"))
            status = result["status"] + (f" ({result['reason']})" if result.get("reason") else "")
            accuracy = _metric(result, "accuracy")
            energy = _metric(result, "energy")
            train = result.get("train") or {}
            parts = [
                {"final_result": "final training", "screen_result": "screening"}.get(
                    event, f"gen {self.generation} [{self.run.count_text()}]"
                ),
                f"individual {c.id} ({c.kind})",
                status,
                f"fitness {_fmt(fitness)}",
                f"accuracy {_fmt(accuracy)}",
            ]
            if energy is not None:
                parts.append(f"energy {format_si(float(energy), 'J')}")
            if train.get("seconds") is not None:
                parts.append(f"trained {train['seconds']:.1f} s / {train.get('steps')} steps")
            if event == "result":
                parts.append(self.run.best_text())
            parts.append(self.run.clock_text())
            self._print("  ".join(parts))
        elif event == "told":
            record = self.run.told(info.get("record"), info.get("search"))
            if record is None:
                return
            if self.run.pareto:
                summary = self.run.best_text()
            else:
                parent = record.get("best_id", record.get("parent_id"))
                summary = (
                    f"parent {parent} fitness {_fmt(record.get('best_fitness'))}, "
                    f"best so far {_fmt(self.run.best)}"
                )
            self._print(f"generation {self.generation} done: {summary}  {self.run.clock_text()}")
        elif event == "final":
            self.run.searching = False
            self._print(f"final training of the best genome ({_budget_text(info['budget'])})")
        elif event == "screen":
            self.run.searching = False
            text = _budget_text(info["budget"])
            self._print(f"screening the network of #{info['candidate'].parent_id} ({text})")
        elif event == "screened":
            self._print(_screened_text(info))
        elif event == "note":
            self._print(f"note: {info['message']}")


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


_UNITS = {
    "energy": "J",
    "energy_gross": "J",
    "power": "W",
    "power_gross": "W",
    "idle_power": "W",
    "latency": "s",
}


def _value(metric: dict[str, Any], unit: str | None) -> str:
    value = metric.get("value")
    if value is None:
        return "-"
    text = format_si(float(value), unit) if unit else _fmt(value)
    ci = metric.get("ci")
    if unit and ci:
        text += f" ± {format_si(float(ci), unit)}"
    return escape(f"{text}  [{metric.get('method')}]")  # brackets are rich markup otherwise


def _model_rows(table: Table, row: dict[str, Any], suffix: str) -> None:
    metrics = row.get("metrics") or {}
    table.add_row("parameters", _fmt(_integral(_metric(row, f"params{suffix}"))))
    table.add_row("FLOPs / inference", _fmt(_integral(_metric(row, f"flops{suffix}"))))
    table.add_row("evo_test accuracy", _fmt(_metric(row, f"accuracy{suffix}")))
    test = _metric(row, f"test_accuracy{suffix}")
    table.add_row(
        "test accuracy", _fmt(test) + ("  (reported only, never selected on)" if test is not None else "")
    )
    for name, unit in _UNITS.items():
        if f"{name}{suffix}" in metrics:
            label = f"{name} / inference" if unit in ("J", "s") else name
            table.add_row(label, _value(metrics[f"{name}{suffix}"], unit))


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _with_screening(final: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A final training that continued a screening (among ``rows``) names the searched network it trained
    and how many were screened."""
    screens = {row["id"]: row for row in rows if row["kind"] == "screen"}
    screen = screens.get(final.get("parent_id"))
    if screen is None:
        return final
    return {**final, "screened": {"source": screen["parent_id"], "of": len(screens)}}


def _final_title(row: dict[str, Any]) -> str:
    """Where the final training started, and how wide it made the network (when widened)."""
    inherited = (row.get("result") or {}).get("inherited")
    screened = row.get("screened")
    source = "its screening's" if screened else "the search's"
    start = f"from {source} weights" if inherited else "from fresh weights"
    width = float((row.get("genome") or {}).get("width", 1.0))
    wide = f", {width:g}x as wide as searched" if width != 1 else ""
    if screened:
        return (
            f"final training of #{screened['source']}, the best of {screened['of']} screened "
            f"(#{row.get('parent_id')}; {start}{wide})"
        )
    return f"final training of #{row.get('parent_id')} ({start}{wide})"


def _best_table(title: str, row: dict[str, Any], grammar_text: str | None) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    if grammar_text:
        from evowatt.representation.genome import Genome
        from evowatt.representation.grammar import parse_grammar

        layers = Genome.from_json(row["genome"]).describe(parse_grammar(grammar_text))
        table.add_row("layers", "\n".join(layers) or "(no hidden layer)")
    train = row.get("train") or {}
    budget = (
        f"{train.get('budget_seconds'):g} s"
        if train.get("budget_seconds")
        else f"{train.get('budget_steps')} steps"
    )
    table.add_row("evaluation", f"#{row['id']} ({row['kind']}, generation {row['generation']})")
    table.add_row("status", row["status"] + (f": {row['reason']}" if row.get("reason") else ""))
    table.add_row("fitness", _fmt(row.get("fitness")))
    table.add_row(
        "training",
        f"{_fmt(train.get('seconds'), 2)} s, {train.get('steps')} steps, "
        f"{train.get('epochs')} epochs (budget {budget}, stop: {train.get('stop_reason')})",
    )
    metrics = row.get("metrics") or {}
    if "training_energy" in metrics:
        table.add_row("training energy", _value(metrics["training_energy"], "J"))
    partition = "accuracy_1" in metrics
    if partition:
        table.add_row("[underline]model 0[/]", "the full network")
    _model_rows(table, row, "")
    if partition:
        table.add_row("[underline]model 1[/]", "early exit: the layers up to the partition point + a head")
        _model_rows(table, row, "_1")
    return table


def plan_text(config: Any, total: int) -> str:
    """What a run will do and roughly how long, said before it starts (a seconds budget makes it an
    estimate: each evaluation trains for its budget, plus about a tenth for building and scoring)."""
    search = config.search
    kind = {"es": "(1+λ)-ES", "pareto": "Pareto search (NSGA-II)", "random": "random search"}
    what = f"{kind[search.algorithm]} on {config.dataset.name}: {total} evaluations"
    budget, final = config.training.budget, config.training.final_training
    finals = 0 if final.budget is None else (1 if search.algorithm == "es" else final.models)
    finals_text = "" if not finals else f", then {finals} final training{'s' * (finals != 1)}"
    if budget.seconds is None or (final.budget is not None and final.budget.seconds is None):
        return f"{what}{finals_text} (budgets in steps: no time estimate)"
    fidelity = search.fidelity
    per = budget.seconds
    if fidelity is not None:  # the longest rung's increment bounds every evaluation
        from evowatt.search.fidelity import Rungs

        rungs = Rungs(fidelity.min_budget, fidelity.eta, fidelity.rungs, "seconds")
        per = max(float(rungs.budget(r)["seconds"]) for r in range(rungs.rungs))
    searching = total * per * 1.1  # building and scoring add about a tenth
    if search.time_limit is not None:
        searching = min(searching, search.time_limit)
    final_seconds = 0.0
    if finals and final.models != "all":
        others = final.others_budget.seconds if final.others_budget is not None else final.budget.seconds
        final_seconds = final.budget.seconds + (int(finals) - 1) * (others or 0.0)
    return f"{what} of {per:g} s at most each{finals_text}: up to about {searching + final_seconds:.0f} s"


def cmd_run(args: argparse.Namespace) -> int:
    from evowatt.config.schema import load_config
    from evowatt.driver.session import run
    from evowatt.driver.setup import default_run_dir, planned_evaluations
    from evowatt.handover.results import parse_budget

    config = load_config(args.config, args.set, args.seed)
    for budget in args.pick:  # a budget that cannot be read is refused before the run, not after it
        parse_budget(budget)
    out = Path(args.out) if args.out is not None else default_run_dir(config)
    _writes_run(args, out)  # named now, so an interrupt names it too
    console.print(plan_text(config, planned_evaluations(config)), highlight=False, soft_wrap=True)
    with make_progress(run=RunSoFar.of_config(config)) as progress:
        result = run(config, out=out, progress=progress)
    _print_result(result, args.pick)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from evowatt.config.schema import load_config
    from evowatt.driver.session import resume
    from evowatt.driver.store import RunStore

    store = RunStore(args.run_dir)
    try:
        config = load_config(args.config, args.set) if args.config else None
        # the progress goes on from where the run stands: its count, total, time and best so far
        so_far = RunSoFar.of_store(store, config or _run_config(args.run_dir, args.set))
    finally:
        store.close()  # also when a row is refused: a connection left open leaves -wal/-shm files behind
    _writes_run(args, args.run_dir)
    with make_progress(run=so_far) as progress:
        result = resume(
            args.run_dir,
            progress=progress,
            config=config,
            overrides=args.set,
            allow_larger_budget=args.allow_larger_budget,
        )
    _print_result(result)
    return 0


def _run_config(run_dir: str | Path, overrides: list[str] | None) -> Any:
    """The config a resume will use when given none (the run's own, overridden), for the progress display
    alone: None when it cannot be read, and the resume itself then says why."""
    from evowatt.config.schema import load_config
    from evowatt.driver.store import CONFIG_NAME

    try:
        return load_config(Path(run_dir) / CONFIG_NAME, overrides)
    except (EvowattError, OSError, ValueError):
        return None


def _print_result(result: Any, budgets: list[str] | None = None) -> None:
    """The run's front, then its one answer: the model to take and the command that exports it."""
    stop = "time limit reached" if result.stopped == "time_limit" else "all generations done"
    console.print(f"{result.evaluations} evaluations in {result.wall_seconds:.1f} s ({stop})")
    from evowatt.handover.results import answer, front

    models = front(result.run_dir)
    console.print(_front_table(f"front ({len(models)} distinct models)", models, _FRONT_COLUMNS))
    _print_answer(result.run_dir, answer(result.run_dir, *(budgets or [])), budgets or [])


_FRONT_COLUMNS = ["accuracy", "energy", "latency"]


def _print_answer(run_dir: Any, chosen: Any, budgets: list[str]) -> None:
    """The model to take, with its figures, and the one command that exports it."""
    within = f" within {' and '.join(budgets)}" if budgets else ""
    if chosen is None:
        console.print(
            f"[bold]no model to take{within}[/]: none meets the run's constraints"
            + (" and the budgets" if budgets else "")
            + f" (`evowatt show {run_dir}` lists what it evaluated)"
        )
        return
    origin = (
        f"the final training of #{chosen.source}" if chosen.trained == "final" else "trained in the search"
    )
    exit_text = ", the early exit" if chosen.exit == "1" else ""
    lines = [
        f"[bold green]the model to take{within}: {chosen.label}[/] ({origin}{exit_text})",
        f"  test accuracy {_fmt(chosen.value('test_accuracy'))} (reported only; "
        f"evo_test {_fmt(chosen.value('accuracy'))}, which it was selected on)",
    ]
    for name in ("energy", "latency"):
        metric = chosen.metrics.get(name)
        if metric is not None:
            lines.append(f"  {name} / inference {_value(metric, _UNITS[name])}")
    lines.append(
        f"  {_fmt(_integral(chosen.value('params')))} parameters, "
        f"{_fmt(_integral(chosen.value('flops')))} FLOPs / inference"
    )
    which = " ".join(f"--pick {shlex.quote(b)}" for b in budgets) if budgets else "--best"
    onnx = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime"))
    fmt = "" if onnx else escape(" --format pt2   (pip install 'evowatt[export]' adds ONNX)")
    lines.append(escape(f"export it: evowatt export {run_dir} {which}") + fmt)
    plots = importlib.util.find_spec("matplotlib") is not None
    extra = "" if plots else "   (pip install 'evowatt[report]')"
    lines.append(escape(f"report:    evowatt report {run_dir}{extra}"))  # commands, not rich markup
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)  # a command is never broken


def show_data(run_dir: str) -> dict[str, Any]:
    from evowatt.driver.store import AFTER_SEARCH, RunStore
    from evowatt.energy.sources import mixed_sources, sources

    store = RunStore(run_dir)
    try:
        generations = store.generations()
        evaluations = store.evaluations()
        best_id = generations[-1]["best_id"] if generations else None
        if best_id is None and generations:  # a population search: its most accurate front member
            best_id = _most_accurate(generations[-1]["front"])
        by_id = {e["id"]: e for e in evaluations}
        finals = [e for e in evaluations if e["kind"] == "final"]
        searched = [e for e in evaluations if e["kind"] not in AFTER_SEARCH]
        statuses = Counter(e["status"] for e in searched)
        # the first final training after the last search evaluation: the most accurate handed model's (a run
        # extended after its final training trained older ones; a front's later ones are its cheaper models)
        last_searched = max((e["id"] for e in searched), default=-1)
        latest = [f for f in finals if f["id"] > last_searched] or finals
        final = _with_screening(latest[0], evaluations) if latest else None
        from evowatt.handover.results import answer, front

        chosen = answer(run_dir) if generations or finals else None
        return {
            "run_dir": str(run_dir),
            "answer": chosen.to_json() if chosen else None,  # the model to take
            "front": [m.to_json() for m in front(run_dir)] if generations else [],
            "evaluations": len(searched),
            "statuses": dict(statuses),
            "generations": generations,
            "best": by_id.get(best_id),
            "final": final,
            "elapsed_seconds": store.meta("elapsed_seconds"),
            "sources": sources(evaluations),  # host, device, meter: where evaluations ran
            "mixed_sources": mixed_sources(evaluations),
        }
    finally:
        store.close()


def _front_table(title: str, models: list[Any], objectives: list[str]) -> Table:
    table = Table(title=title)
    for column in ("model", *objectives, "test accuracy", "params", "FLOPs", "methods"):
        table.add_column(column)
    for m in models:
        methods = sorted(
            {str(m.metrics[o].get("method")) for o in objectives if o in m.metrics and o != "accuracy"}
        )
        trained = f" (final of #{m.source})" if m.trained == "final" else ""
        table.add_row(
            m.label + trained,
            *[_objective_text(m, o) for o in objectives],
            _fmt(m.value("test_accuracy")),
            _fmt(_integral(m.value("params"))),
            _fmt(_integral(m.value("flops"))),
            escape(", ".join(methods)),
        )
    return table


def _objective_text(model: Any, name: str) -> str:
    value = model.value(name)
    unit = _UNITS.get(name)
    if value is None:
        return "-"
    return format_si(value, unit) if unit else _fmt(value)


def _front_or_pick(args: argparse.Namespace) -> int:
    from evowatt.driver.store import RunStore
    from evowatt.handover.results import front, pick, run_config

    store = RunStore(args.run_dir)
    try:
        objectives = [o.metric for o in run_config(store).search.objectives]
    finally:
        store.close()
    if args.pick:
        chosen = pick(args.run_dir, *args.pick)
        if args.json:
            print(json.dumps(chosen.to_json() if chosen else None, indent=2, default=str))
        elif chosen is None:
            console.print(
                f"no model of {args.run_dir} meets {' and '.join(args.pick)} (and the run's constraints)"
            )
        else:
            used = list(dict.fromkeys([*objectives, *_budget_metrics(args.pick)]))
            console.print(_front_table(f"most accurate model with {' and '.join(args.pick)}", [chosen], used))
        return 0 if chosen is not None or args.json else 1
    models = front(args.run_dir)
    if args.json:
        print(json.dumps([m.to_json() for m in models], indent=2, default=str))
    else:
        console.print(_front_table(f"front of {args.run_dir} ({len(models)} models)", models, objectives))
        console.print("objectives on evo_test; test accuracy reported only, never selected on")
    return 0


def _budget_metrics(budgets: list[str]) -> list[str]:
    from evowatt.config.schema import parse_constraint

    names = []
    for text in budgets:
        with contextlib.suppress(ValueError):
            names.append(parse_constraint(text)["metric"])
    return names


def _most_accurate(front: list[dict[str, Any]]) -> int | None:
    """The front member whose first objective (accuracy by default) is best, from the generation record."""
    if not front:
        return None
    return max(front, key=lambda p: (p["values"][0], -p["id"]))["id"]


def cmd_show(args: argparse.Namespace) -> int:
    if args.front or args.pick:
        return _front_or_pick(args)
    data = show_data(args.run_dir)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    table = Table(title=f"generations of {args.run_dir}")
    for column in ("generation", "survivors", "best fitness / hypervolume", "evaluations"):
        table.add_column(column)
    for g in data["generations"]:
        measure = _fmt(g["best_fitness"])
        if g.get("hypervolume_share") is not None:  # the share of the reference box, not joules-squared
            measure = f"HV {g['hypervolume_share']:.1%}"
        elif g.get("hypervolume") is not None:
            measure = f"HV {g['hypervolume']:.4g}"
        table.add_row(
            str(g["generation"]),
            ", ".join(f"#{i}" for i in g["survivors"]),
            measure,
            ", ".join(f"#{i}" for i in g["evaluations"]),
        )
    console.print(table)
    console.print(
        f"{data['evaluations']} evaluations: " + ", ".join(f"{v} {k}" for k, v in data["statuses"].items())
    )
    if len(data["sources"]) > 1:
        where = (f"{s['host']} {s['device']} {s['meter']} ({s['evaluations']})" for s in data["sources"])
        console.print("ran on: " + ", ".join(where), highlight=False)
    if data["mixed_sources"]:
        console.print(f"[yellow]warning:[/] {data['mixed_sources']}", highlight=False)
    grammar_file = Path(args.run_dir) / "grammar.grammar"
    grammar_text = grammar_file.read_text(encoding="utf-8") if grammar_file.exists() else None
    from evowatt.driver.store import RunStore
    from evowatt.handover.results import profile_drift

    store = RunStore(args.run_dir)
    try:
        drift = profile_drift(store.evaluations())
    finally:
        store.close()
    for line in drift:  # energy.check_every: the calibrated profile against the meter, as the run went
        console.print(f"profile check: {line}", highlight=False, soft_wrap=True)
    if data["best"] and data["generations"] and data["generations"][-1].get("best_id") is not None:
        console.print(_best_table("best individual of the search", data["best"], grammar_text))
    if data["generations"]:
        from evowatt.handover.results import answer, front

        models = front(args.run_dir)
        console.print(_front_table(f"front ({len(models)} distinct models)", models, _FRONT_COLUMNS))
        _print_answer(args.run_dir, answer(args.run_dir), [])
    return 0


def cmd_check_grammar(args: argparse.Namespace) -> int:
    import numpy as np

    from evowatt.config.schema import NetworkConfig, load_config
    from evowatt.nn.builder import InvalidNetwork, build_network, plan_network
    from evowatt.representation.genome import check_network_against_grammar, random_genome
    from evowatt.representation.grammar import load_grammar

    grammar = load_grammar(args.grammar)
    if args.config:
        config = load_config(args.config)
        network, caps = config.network, config.search.caps
    else:
        from evowatt.config.schema import CapsConfig

        modules = [
            {"name": n, "network_structure_init": [1, 2, 3, 4, 5], "network_structure": [0, 30]}
            for n in ("features", "classification")
            if n in grammar
        ]
        if not modules:
            raise EvowattError(
                f"{args.grammar} has no <features> or <classification> rule; pass --config with a "
                "network section naming its start symbols"
            )
        macro = [r for r in ("learning", "model_partition") if r in grammar]
        output = "softmax" if "softmax" in grammar else "output"
        network, caps = NetworkConfig(modules=modules, macro_structure=macro, output=output), CapsConfig()
    problems = check_network_against_grammar(grammar, network)
    if problems:
        listed = "\n  ".join(problems)
        raise EvowattError(f"the grammar {grammar.source} and the network section do not fit:\n  {listed}")
    rng = np.random.default_rng(args.seed)
    built, reasons = 0, Counter()
    for i in range(args.samples):
        genome = random_genome(grammar, network, rng)
        try:
            plan = plan_network(
                genome, grammar, args.input_shape, args.classes, caps.max_params, caps.max_flops
            )
            if i < args.build:
                build_network(plan, seed=i)
            built += 1
        except InvalidNetwork as exc:
            reasons[_reason_kind(str(exc))] += 1
    console.print(f"{grammar.source}: {len(grammar.rules)} rules parsed")
    console.print(
        f"{built} of {args.samples} sampled genomes build on input {args.input_shape} "
        f"({100 * built / max(args.samples, 1):.1f} %)"
    )
    for reason, count in reasons.most_common():
        console.print(f"  {count:5d} rejected: {reason}")
    return 0


def _reason_kind(reason: str) -> str:
    """Group rejection reasons: drop the layer index and exact numbers that make each message unique."""
    if "cap" in reason:
        return "exceeds " + reason.split("(")[-1].rstrip(")")
    if "below 1" in reason:
        return "spatial size falls below 1"
    return reason.split(": ", 1)[-1]


def build_parser() -> argparse.ArgumentParser:
    from evowatt import __version__

    parser = argparse.ArgumentParser(prog="evowatt", description="Power-aware neuroevolution for PyTorch.")
    parser.add_argument("--version", action="version", version=f"evowatt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a search from a config file")
    p.add_argument("config", help="YAML or JSON config (see examples/digits.yaml)")
    p.add_argument("--out", help="run directory (default: output.dir/<timestamp>-seed<N>)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set search.generations=3 (repeatable)",
    )
    p.add_argument("--seed", type=non_negative_int, help="override the config's seed")
    p.add_argument(
        "--pick",
        action="append",
        default=[],
        metavar="BUDGET",
        help="end by naming the most accurate model within this budget, e.g. 'energy<300nJ' (repeatable)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="continue a killed run from its last checkpoint")
    p.add_argument("run_dir")
    p.add_argument(
        "--config", help="the run's config file (default: config.yaml in RUN_DIR); must match the run's"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument(
        "--allow-larger-budget",
        action="store_true",
        help="allow raising search.generations and search.time_limit (any other change is refused)",
    )
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("show", help="a run's generations and best individual")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--front", action="store_true", help="list the non-dominated models (objectives on evo_test)"
    )
    p.add_argument(
        "--pick",
        action="append",
        metavar="BUDGET",
        help='the most accurate model within a budget, e.g. --pick "energy<2uJ" (units: J, W, s with SI '
        "prefixes; k, M for counts; repeatable: all must hold)",
    )
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("check-grammar", help="parse a grammar and try building sampled genomes")
    p.add_argument("grammar", help="grammar file, or the name of a shipped grammar (cnn)")
    p.add_argument("--samples", type=positive_int, default=100, help="genomes to sample (1 or more)")
    p.add_argument("--input-shape", type=input_shape_arg, default=(1, 28, 28), metavar="C,H,W")
    p.add_argument("--classes", type=class_count, default=10, help="output classes (2 or more)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument(
        "--build",
        type=non_negative_int,
        default=20,
        help="allocate the first N that plan, to check they build",
    )
    p.add_argument("--config", help="take the network section (modules, caps) from this config")
    p.set_defaults(func=cmd_check_grammar)

    p = sub.add_parser("import-config", help="convert an ENERGIZE JSON config into an evowatt YAML config")
    p.add_argument("energize_config", help="ENERGIZE's (or Fast-DENSER's) JSON run configuration")
    p.add_argument("--grammar", required=True, help="the grammar file the run will use")
    p.add_argument("--dataset", required=True, choices=["digits", "fashion-mnist", "mnist", "cifar10", "npz"])
    p.add_argument(
        "--meter",
        default="auto",
        choices=["auto", "nvml", "rapl", "estimate"],
        help="the meter the run will use; with estimate, power terms become energy terms",
    )
    p.add_argument(
        "--energy-reference",
        type=positive_float,
        default=1e-6,
        metavar="J",
        help="typical energy per inference used to rescale power weights for the estimate",
    )
    p.add_argument(
        "--form",
        default="weighted",
        choices=["weighted", "pareto"],
        help="weighted: ENERGIZE's fitness for the ES (default); pareto: its terms as objectives, "
        "its conditions as constraints",
    )
    p.set_defaults(func=cmd_import_config)

    p = sub.add_parser("export", help="export a run's models (ONNX, .pt2, TorchScript) with model cards")
    p.add_argument("run_dir")
    p.add_argument("ids", nargs="*", type=int, help="evaluation ids to export")
    p.add_argument(
        "--best",
        action="store_true",
        help="the final training of the best genome, or the best individual when the run has none",
    )
    p.add_argument(
        "--front", action="store_true", help="the run's front (as `show --front`), those with kept weights"
    )
    p.add_argument(
        "--pick",
        action="append",
        metavar="BUDGET",
        help='the most accurate model within a budget, as `show --pick`, e.g. "energy<2uJ" (repeatable)',
    )
    p.add_argument(
        "--format",
        action="append",
        dest="formats",
        metavar="FORMAT",
        help="onnx, pt2 or torchscript; repeatable or comma-separated (default: onnx and pt2)",
    )
    p.add_argument("--out", help="output directory (default: RUN_DIR/export)")
    p.add_argument(
        "--no-normalise",
        dest="normalise",
        action="store_false",
        help="take the normalised input the search trained on, not raw pixel values",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="one self-contained HTML report of a run (figures inline)")
    p.add_argument("run_dir")
    p.add_argument("--out", help="HTML file (default: RUN_DIR/report.html); PNGs are written beside it")
    p.set_defaults(func=cmd_report)

    _add_energy_commands(sub)
    return parser


def cmd_export(args: argparse.Namespace) -> int:
    import warnings

    from evowatt.handover.export import DEFAULT_FORMATS, export_run

    formats = [f.strip() for item in (args.formats or []) for f in item.split(",") if f.strip()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        exported = export_run(
            args.run_dir,
            ids=args.ids,
            best=args.best,
            front=args.front,
            pick=args.pick,
            formats=formats or DEFAULT_FORMATS,
            out=args.out,
            normalise=args.normalise,
        )
    for warning in caught:
        if issubclass(warning.category, UserWarning) and "not exported" in str(warning.message):
            print(f"evowatt: note: {warning.message}", file=sys.stderr)
    table = Table(title="exported models, verified against evowatt's model on real test images")
    for column in ("evaluation", "exit", "format", "file", "max |diff|"):
        table.add_column(column)
    for model in exported:
        for fmt, path in model.files.items():
            table.add_row(
                f"#{model.evaluation_id}", str(model.exit), fmt, path.name, f"{model.max_abs_diff[fmt]:.3g}"
            )
    console.print(table)
    if exported:
        console.print(f"in {exported[0].card_json.parent}, each with a model card (.card.json, .card.md)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from evowatt.handover.report import write_report

    path = write_report(args.run_dir, args.out)
    console.print(f"report: {path}")
    return 0


def cmd_import_config(args: argparse.Namespace) -> int:
    import yaml

    from evowatt.config.energize import import_energize_config

    imp = import_energize_config(
        args.energize_config, args.grammar, args.dataset, args.meter, args.energy_reference, args.form
    )
    for line in imp.warnings:
        print(f"evowatt: warning: {line}", file=sys.stderr)
    for line in imp.notes:
        print(f"evowatt: note: {line}", file=sys.stderr)
    form = "Pareto search" if args.form == "pareto" else "weighted fitness (ES)"
    print(f"# imported from {args.energize_config} by evowatt import-config: the {form} form")
    print(yaml.safe_dump(imp.config, sort_keys=False), end="")
    return 0


def _add_energy_commands(sub: Any) -> None:
    """`meters` and `measure` live with the energy package."""
    from evowatt.cli import energy as energy_cli

    energy_cli.add_commands(sub)


class _Interrupts:
    """Ctrl-C (SIGINT) or SIGTERM stops a command cleanly once: KeyboardInterrupt, exit 130 (143 for
    SIGTERM); a second one stops it at once with the same status, whatever the shutdown was doing. The
    message names the run directory the command writes (``run_dir``, set once the command knows it), so a
    run without --out can be found and resumed."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.run_dir: Path | None = None
        self.signum: int = signal.SIGINT
        self.previous: dict[int, Any] = {}

    def install(self) -> bool:
        """Take over the signals (only the main thread may); False when not installed."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in self.SIGNALS:
            self.previous[signum] = signal.signal(signum, self._first)
        return True

    def ignore(self) -> None:
        """After the run has shut down: what is left is the message and the interpreter's exit, during which
        Python resets its own handlers to the default (a Ctrl-C then would kill us with SIGINT, not exit
        130); ignoring further signals keeps the status."""
        for signum in self.previous:
            signal.signal(signum, signal.SIG_IGN)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    @property
    def status(self) -> int:
        return 128 + int(self.signum)

    def message(self) -> str:
        """What the interrupt left: the run directory and the command that continues it."""
        if self.run_dir is None:
            return "interrupted"
        from evowatt.driver.store import DB_NAME

        if not (self.run_dir / DB_NAME).is_file():
            return f"interrupted before the run started; nothing to resume in {self.run_dir}"
        return f"interrupted; continue the run with: evowatt resume {shlex.quote(str(self.run_dir))}"

    def _first(self, signum: int, frame: Any) -> None:
        self.signum = signum
        for other in self.SIGNALS:
            signal.signal(other, self._again)
        raise KeyboardInterrupt

    def _again(self, signum: int, frame: Any) -> None:
        """A second signal while the first is being handled (a run shutting down, workers finishing): stop
        at once. Every recorded evaluation and the last checkpoint are already on disk."""
        import multiprocessing

        for child in multiprocessing.active_children():  # process-runner workers: no orphan outlives us
            child.terminate()
        os.write(2, f"\nevowatt: {self.message()} (interrupted again: stopped at once)\n".encode())
        os._exit(self.status)


def _writes_run(args: argparse.Namespace, run_dir: str | Path) -> None:
    """Tell the interrupt handler (when ``main`` installed one) which run directory the command writes."""
    interrupts = getattr(args, "interrupts", None)
    if isinstance(interrupts, _Interrupts):
        interrupts.run_dir = Path(run_dir)


def _closed_stdout() -> int:
    """The reader of our output went away (`evowatt show --json | head -c 10`): stop quietly with the
    status of a command ended by SIGPIPE; stdout goes to /dev/null so the final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 128 + signal.SIGPIPE


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse refused an argument (its message is printed; code 2)
        return int(exc.code or 0)
    interrupts = _Interrupts()
    installed = interrupts.install()
    args.interrupts = interrupts
    try:
        return int(args.func(args) or 0)
    except EvowattError as exc:
        print(f"evowatt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if installed:
            interrupts.ignore()
            installed = False
        print(f"evowatt: {interrupts.message()}", file=sys.stderr)
        return interrupts.status
    except BrokenPipeError:
        return _closed_stdout()
    except Exception as exc:  # a bug, not the user's input: say so, exit 1 (user errors exit 2)
        if os.environ.get("EVOWATT_DEBUG"):
            raise
        print(
            f"evowatt: internal error: {type(exc).__name__}: {exc}\nThis is a bug in evowatt, not in your "
            "input: please report it with the command you ran (EVOWATT_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        if installed:
            interrupts.restore()


if __name__ == "__main__":
    sys.exit(main())
