"""`build_parser`: every sub-command, its options and the function it runs (the energy commands add
theirs through `energy_parser`). Building it imports nothing heavy: `--help` starts fast."""

from __future__ import annotations

import argparse

from evowatt.cli import energy_parser
from evowatt.cli.args import class_count, input_shape_arg, non_negative_int, positive_float, positive_int
from evowatt.cli.commands import (
    cmd_check_grammar,
    cmd_export,
    cmd_import_config,
    cmd_report,
    cmd_resume,
    cmd_run,
)
from evowatt.cli.show import cmd_show


def build_parser() -> argparse.ArgumentParser:
    from evowatt.version import __version__

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
        "--minutes",
        type=positive_float,
        metavar="T",
        help="the whole run's wall time, final training included; unset parts are planned from it",
    )
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

    energy_parser.add_commands(sub)
    return parser
