"""`evowatt show` (its tables, `show_data` behind --json, the front and --pick) and the answer printed
at the end of `run` and `resume`: everything that reads a finished or running run back to the user."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from evowatt.cli.output import console, figure_text, metric_value
from evowatt.units import format_si

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
    text = format_si(float(value), unit) if unit else figure_text(value)
    ci = metric.get("ci")
    if unit and ci:
        text += f" ± {format_si(float(ci), unit)}"
    return escape(f"{text}  [{metric.get('method')}]")  # brackets are rich markup otherwise


def _model_rows(table: Table, row: dict[str, Any], suffix: str) -> None:
    metrics = row.get("metrics") or {}
    table.add_row("parameters", figure_text(_integral(metric_value(row, f"params{suffix}"))))
    table.add_row("FLOPs / inference", figure_text(_integral(metric_value(row, f"flops{suffix}"))))
    table.add_row("evo_test accuracy", figure_text(metric_value(row, f"accuracy{suffix}")))
    test = metric_value(row, f"test_accuracy{suffix}")
    table.add_row(
        "test accuracy",
        figure_text(test) + ("  (reported only, never selected on)" if test is not None else ""),
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
    table.add_row("fitness", figure_text(row.get("fitness")))
    table.add_row(
        "training",
        f"{figure_text(train.get('seconds'), 2)} s, {train.get('steps')} steps, "
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


def print_result(result: Any, budgets: list[str] | None = None) -> None:
    """The run's front, then its one answer: the model to take and the command that exports it."""
    stop = "time limit reached" if result.stopped == "time_limit" else "all generations done"
    console.print(f"{result.evaluations} evaluations in {result.wall_seconds:.1f} s ({stop})")
    from evowatt.driver.results import answer, front

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
        f"  test accuracy {figure_text(chosen.value('test_accuracy'))} (reported only; "
        f"evo_test {figure_text(chosen.value('accuracy'))}, which it was selected on)",
    ]
    for name in ("energy", "latency"):
        metric = chosen.metrics.get(name)
        if metric is not None:
            lines.append(f"  {name} / inference {_value(metric, _UNITS[name])}")
    lines.append(
        f"  {figure_text(_integral(chosen.value('params')))} parameters, "
        f"{figure_text(_integral(chosen.value('flops')))} FLOPs / inference"
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
    from evowatt.driver.store import RunStore
    from evowatt.provenance import mixed_sources, sources

    store = RunStore(run_dir)
    try:
        generations = store.generations()
        evaluations = store.select()
        best_id = generations[-1].best_id if generations else None
        if best_id is None and generations:  # a population search: its most accurate front member
            best_id = _most_accurate(generations[-1].front)
        by_id = {e.id: e for e in evaluations}
        finals = [e for e in evaluations if e.kind == "final"]
        searched = [e for e in evaluations if e.searched]
        statuses = Counter(e.status.value for e in searched)
        # the first final training after the last search evaluation: the most accurate handed model's (a run
        # extended after its final training trained older ones; a front's later ones are its cheaper models)
        last_searched = max((e.id for e in searched), default=-1)
        latest = [f for f in finals if f.id > last_searched] or finals
        screens = [e.to_json() for e in evaluations if e.kind == "screen"]
        final = _with_screening(latest[0].to_json(), screens) if latest else None
        from evowatt.driver.results import answer, front

        chosen = answer(run_dir) if generations or finals else None
        return {
            "run_dir": str(run_dir),
            "answer": chosen.to_json() if chosen else None,  # the model to take
            "front": [m.to_json() for m in front(run_dir)] if generations else [],
            "evaluations": len(searched),
            "statuses": dict(statuses),
            "generations": [g.to_json() for g in generations],
            "best": by_id[best_id].to_json() if best_id in by_id else None,
            "final": final,
            "elapsed_seconds": store.meta("elapsed_seconds"),
            "plan": store.meta("plan"),  # a run given minutes: what it planned (driver/plan.py)
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
            figure_text(m.value("test_accuracy")),
            figure_text(_integral(m.value("params"))),
            figure_text(_integral(m.value("flops"))),
            escape(", ".join(methods)),
        )
    return table


def _objective_text(model: Any, name: str) -> str:
    value = model.value(name)
    unit = _UNITS.get(name)
    if value is None:
        return "-"
    return format_si(value, unit) if unit else figure_text(value)


def _front_or_pick(args: argparse.Namespace) -> int:
    from evowatt.driver.results import front, pick, run_config
    from evowatt.driver.store import RunStore

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
    from evowatt.config.search import parse_constraint

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
        measure = figure_text(g["best_fitness"])
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
    from evowatt.driver.results import profile_drift
    from evowatt.driver.store import RunStore

    store = RunStore(args.run_dir)
    try:
        drift = profile_drift(store.select())
    finally:
        store.close()
    for line in drift:  # energy.check_every: the calibrated profile against the meter, as the run went
        console.print(f"profile check: {line}", highlight=False, soft_wrap=True)
    if data["best"] and data["generations"] and data["generations"][-1].get("best_id") is not None:
        console.print(_best_table("best individual of the search", data["best"], grammar_text))
    if data["generations"]:
        from evowatt.driver.results import answer, front

        models = front(args.run_dir)
        console.print(_front_table(f"front ({len(models)} distinct models)", models, _FRONT_COLUMNS))
        _print_answer(args.run_dir, answer(args.run_dir), [])
    return 0
