"""Command line: run, resume, show, check-grammar. A user error is one message and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

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


class LiveProgress:
    """Turns the loop's progress events into a rich progress bar: generation, individual, phase, best."""

    def __init__(self, total: int):
        self.best: float | None = None
        self.generation = 0
        self.started = False
        self.bar = Progress(
            TextColumn("[bold]gen {task.fields[generation]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TextColumn("best {task.fields[best]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.bar.add_task("starting", total=total, generation=0, best="-")

    def __enter__(self) -> LiveProgress:
        # the bar appears with the loop's "start" event: a command refused by its checks prints only its error
        self.started = False
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.started:
            self.bar.__exit__(*exc)

    def __call__(self, event: str, **info: Any) -> None:
        if event == "start":
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
            if fitness is not None and (self.best is None or fitness > self.best):
                self.best = fitness
            status = _fmt(fitness) if fitness is not None else f"{result['status']}"
            self.bar.update(
                self.task,
                advance=1,
                best=_fmt(self.best),
                description=f"individual {c.id} ({c.kind}): {status}",
            )
        elif event == "final":
            text = _budget_text(info["budget"])
            self.bar.update(self.task, description=f"final training of the best genome ({text})")
        elif event == "screen":
            text = _budget_text(info["budget"])
            self.bar.update(
                self.task, description=f"screening the network of #{info['candidate'].parent_id} ({text})"
            )
        elif event == "screened":
            console.print(_screened_text(info), highlight=False)
        elif event == "note":
            console.print(f"[yellow]note:[/] {info['message']}", highlight=False)


class PlainProgress:
    """For a log, not a terminal (a job log, CI, nohup): one plain line per evaluation, printed at once."""

    def __init__(self, total: int | None, done: int = 0, out: Any = None):
        self.total = total
        self.done = done
        self.best: float | None = None
        self.generation = 0
        self.out = out

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def _print(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def __call__(self, event: str, **info: Any) -> None:
        if event == "start":
            self._print(f"run directory: {info['run_dir']}")
            meter = info.get("meter")
            if meter:
                self._print(f"energy meter: {meter['name']} ({meter['reason']})")
        elif event == "generation":
            self.generation = info["generation"]
        elif event in ("result", "final_result", "screen_result"):
            c, result, fitness = info["candidate"], info["result"], info["fitness"]
            if event == "result":
                self.done += 1
            if event == "result" and fitness is not None and (self.best is None or fitness > self.best):
                self.best = fitness
            count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
            status = result["status"] + (f" ({result['reason']})" if result.get("reason") else "")
            accuracy = _metric(result, "accuracy")
            energy = _metric(result, "energy")
            train = result.get("train") or {}
            parts = [
                {"final_result": "final training", "screen_result": "screening"}.get(
                    event, f"gen {self.generation} [{count}]"
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
                parts.append(f"best {_fmt(self.best)}")
            self._print("  ".join(parts))
        elif event == "told":
            from evowatt.events import jsonable

            record = jsonable(info.get("record"))
            if not isinstance(record, dict):  # a round that did not end a generation
                return
            if record.get("best_id") is None and record.get("front") is not None:  # a population search
                self._print(
                    f"generation {self.generation} done: front of {len(record['front'])}, hypervolume "
                    f"{_fmt(record.get('hypervolume'))}"
                )
                return
            self._print(
                f"generation {self.generation} done: parent {record.get('best_id', record.get('parent_id'))}"
                f", best fitness {_fmt(record.get('best_fitness'))}"
            )
        elif event == "final":
            self._print(f"final training of the best genome ({_budget_text(info['budget'])})")
        elif event == "screen":
            text = _budget_text(info["budget"])
            self._print(f"screening the network of #{info['candidate'].parent_id} ({text})")
        elif event == "screened":
            self._print(_screened_text(info))
        elif event == "note":
            self._print(f"note: {info['message']}")


def make_progress(total: int | None, done: int = 0) -> LiveProgress | PlainProgress:
    """The live bar on a terminal; plain lines, one per evaluation, anywhere else."""
    if sys.stdout.isatty():
        progress = LiveProgress(total)
        if done:
            progress.bar.update(progress.task, completed=done)
        return progress
    return PlainProgress(total, done)


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
        from evowatt.genome import Genome
        from evowatt.grammar import parse_grammar

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


def cmd_run(args: argparse.Namespace) -> int:
    from evowatt.config import load_config
    from evowatt.experiment import planned_evaluations, run

    config = load_config(args.config, args.set, args.seed)
    with make_progress(planned_evaluations(config)) as progress:
        result = run(config, out=args.out, progress=progress)
    _print_result(result)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from evowatt.config import load_config
    from evowatt.experiment import resume
    from evowatt.store import RunStore

    store = RunStore(args.run_dir)
    try:
        done = len(store.evaluations())
    finally:
        store.close()  # also when a row is refused: a connection left open leaves -wal/-shm files behind
    config = load_config(args.config, args.set) if args.config else None
    with make_progress(None, done) as progress:
        result = resume(
            args.run_dir,
            progress=progress,
            config=config,
            overrides=args.set,
            allow_larger_budget=args.allow_larger_budget,
        )
    _print_result(result)
    return 0


def _print_result(result: Any) -> None:
    grammar_text = (Path(result.run_dir) / "grammar.grammar").read_text(encoding="utf-8")
    stop = "time limit reached" if result.stopped == "time_limit" else "all generations done"
    console.print(f"{result.evaluations} evaluations in {result.wall_seconds:.1f} s ({stop})")
    if result.best:
        console.print(_best_table("best individual", result.best, grammar_text))
    if result.generations and result.generations[-1].get("best_id") is None:
        from evowatt.results import front

        models = front(result.run_dir)
        objectives = sorted({k for m in models for k in m.metrics} & {"accuracy", "energy"}, key=len)
        console.print(_front_table(f"front ({len(models)} models)", models, objectives or ["accuracy"]))
    if result.final:
        final = _with_screening(result.final, result.screened)
        console.print(_best_table(_final_title(final), final, None))
    console.print(f"results: {result.run_dir}  (evowatt show {result.run_dir})")


def show_data(run_dir: str) -> dict[str, Any]:
    from evowatt.energy.sources import mixed_sources, sources
    from evowatt.store import AFTER_SEARCH, RunStore

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
        return {
            "run_dir": str(run_dir),
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
        table.add_row(
            f"#{m.id} exit {m.exit}" + (" (early)" if m.exit == "1" else ""),
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
    from evowatt.results import front, pick, run_config
    from evowatt.store import RunStore

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
    from evowatt.config import parse_constraint

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
        measure = _fmt(g["best_fitness"]) if g.get("hypervolume") is None else f"HV {g['hypervolume']:.4g}"
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
    if data["best"]:
        console.print(_best_table("best individual", data["best"], grammar_text))
    if data["final"]:
        console.print(_best_table(_final_title(data["final"]), data["final"], None))
    return 0


def cmd_check_grammar(args: argparse.Namespace) -> int:
    import numpy as np

    from evowatt.config import NetworkConfig, load_config
    from evowatt.genome import check_network_against_grammar, random_genome
    from evowatt.grammar import load_grammar
    from evowatt.nn.builder import InvalidNetwork, build_network, plan_network

    grammar = load_grammar(args.grammar)
    if args.config:
        config = load_config(args.config)
        network, caps = config.network, config.search.caps
    else:
        from evowatt.config import CapsConfig

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
    parser = argparse.ArgumentParser(prog="evowatt", description="Power-aware neuroevolution for PyTorch.")
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
        help='the most accurate model within a budget, e.g. --pick "energy<2e-6" (repeatable: all must hold)',
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
        help='the most accurate model within a budget, as `show --pick`, e.g. "energy<2e-6" (repeatable)',
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

    from evowatt.export import DEFAULT_FORMATS, export_run

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
    from evowatt.report import write_report

    path = write_report(args.run_dir, args.out)
    console.print(f"report: {path}")
    return 0


def cmd_import_config(args: argparse.Namespace) -> int:
    import yaml

    from evowatt.compat import import_energize_config

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
    from evowatt.energy import cli as energy_cli

    energy_cli.add_commands(sub)


def _stop_now(signum: int, frame: Any) -> None:
    """A second Ctrl-C while the first is being handled (a run shutting down, workers finishing): stop at
    once with the same status. Every recorded evaluation and the last checkpoint are already on disk."""
    import multiprocessing

    for child in multiprocessing.active_children():  # process-runner workers: no orphan outlives us
        child.terminate()
    os.write(2, b"\nevowatt: interrupted again; stopped at once. 'evowatt resume RUN_DIR' continues a run\n")
    os._exit(130)


def _first_interrupt(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGINT, _stop_now)
    raise KeyboardInterrupt


def _interrupts() -> Any:
    """Ctrl-C raises KeyboardInterrupt once (the run stops cleanly, exit 130); a second one stops at once,
    also with 130, whatever the shutdown was doing. Returns the previous handler, to restore."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, _first_interrupt)


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
    previous = _interrupts()
    try:
        return int(args.func(args) or 0)
    except EvowattError as exc:
        print(f"evowatt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if previous is not None:
            # the run is shut down; what is left is this message and the interpreter's exit, during which
            # Python resets its own handlers to the default (a Ctrl-C then would kill us with SIGINT, not
            # exit 130): ignoring further ones keeps the status 130
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            previous = None
        print("evowatt: interrupted; a run can be continued with 'evowatt resume RUN_DIR'", file=sys.stderr)
        return 130
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
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())
