"""The sub-commands other than `show` and the energy ones: run, resume, check-grammar, import-config,
export and report. Each reads its arguments and calls the layer that does the work; the heavy imports
stay inside them, so building the parser (and `--help`) never loads torch."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from evowatt.cli.interrupts import writes_run
from evowatt.cli.output import console
from evowatt.cli.progress import RunSoFar, make_progress
from evowatt.cli.show import print_result
from evowatt.errors import EvowattError

if TYPE_CHECKING:
    from evowatt.driver.plan import RunPlan


def plan_text(config: Any, total: int, plan: RunPlan | None = None) -> str:
    """What a run will do and roughly how long, said before it starts (a seconds budget makes it an
    estimate: each evaluation trains for its budget, plus about a tenth for building and scoring). A run
    given ``minutes`` says its plan instead: the time is a bound there, not an estimate."""
    search = config.search
    if plan is not None:
        kind = {"es": "(1+λ)-ES", "pareto": "Pareto search (NSGA-II)", "random": "random search"}
        about = f", about {plan.expected_evaluations} evaluations" if plan.expected_evaluations else ""
        return f"{kind[search.algorithm]} on {config.dataset.name}{about}; {plan.text()}"
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
        per = max(rungs.budget(r).seconds or 0.0 for r in range(rungs.rungs))
    searching = total * per * 1.1  # building and scoring add about a tenth
    if search.time_limit is not None:
        searching = min(searching, search.time_limit)
    final_seconds = 0.0
    if finals and final.models != "all":
        others = final.others_budget.seconds if final.others_budget is not None else final.budget.seconds
        final_seconds = final.budget.seconds + (int(finals) - 1) * (others or 0.0)
    return f"{what} of {per:g} s at most each{finals_text}: up to about {searching + final_seconds:.0f} s"


def cmd_run(args: argparse.Namespace) -> int:
    from evowatt.config.load import load_config
    from evowatt.driver.plan import plan_for
    from evowatt.driver.results import parse_budget
    from evowatt.driver.session import run
    from evowatt.driver.setup import default_run_dir, planned_evaluations

    minutes = [] if args.minutes is None else [f"minutes={args.minutes}"]
    config, plan = plan_for(load_config(args.config, [*args.set, *minutes], args.seed))
    for budget in args.pick:  # a budget that cannot be read is refused before the run, not after it
        parse_budget(budget)
    out = Path(args.out) if args.out is not None else default_run_dir(config)
    writes_run(args, out)  # named now, so an interrupt names it too
    console.print(plan_text(config, planned_evaluations(config), plan), highlight=False, soft_wrap=True)
    with make_progress(run=RunSoFar.of_config(config)) as progress:
        result = run(config, out=out, progress=progress, plan=plan)
    print_result(result, args.pick)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from evowatt.config.load import load_config
    from evowatt.driver.session import resume
    from evowatt.driver.store import RunStore

    store = RunStore(args.run_dir)
    try:
        config = load_config(args.config, args.set) if args.config else None
        # the progress goes on from where the run stands: its count, total, time and best so far
        so_far = RunSoFar.of_store(store, config or _run_config(args.run_dir, args.set))
    finally:
        store.close()  # also when a row is refused: a connection left open leaves -wal/-shm files behind
    writes_run(args, args.run_dir)
    with make_progress(run=so_far) as progress:
        result = resume(
            args.run_dir,
            progress=progress,
            config=config,
            overrides=args.set,
            allow_larger_budget=args.allow_larger_budget,
        )
    print_result(result)
    return 0


def _run_config(run_dir: str | Path, overrides: list[str] | None) -> Any:
    """The config a resume will use when given none (the run's own, overridden), for the progress display
    alone: None when it cannot be read, and the resume itself then says why."""
    from evowatt.config.load import load_config
    from evowatt.driver.rundir import CONFIG_NAME

    try:
        return load_config(Path(run_dir) / CONFIG_NAME, overrides, recorded=True)
    except (EvowattError, OSError, ValueError):
        return None


def cmd_check_grammar(args: argparse.Namespace) -> int:
    import numpy as np

    from evowatt.config.load import load_config
    from evowatt.config.network import NetworkConfig
    from evowatt.nn.builder import InvalidNetwork, build_network, plan_network
    from evowatt.representation.genome import check_network_against_grammar, random_genome
    from evowatt.representation.grammar import load_grammar

    grammar = load_grammar(args.grammar)
    if args.config:
        config = load_config(args.config)
        network, caps = config.network, config.search.caps
    else:
        from evowatt.config.network import CapsConfig

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
