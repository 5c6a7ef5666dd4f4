"""How much of a run goes to measuring, and how long the README's quick start takes (issue 28).

Runs each config as a user would (`evowatt run CONFIG`, a fresh run directory) and prints, from the
run's events.jsonl: evaluations, training seconds, measurement seconds, evaluation wall seconds, the
share measurement ÷ evaluation wall time (goal <= 10 %), the front's size and the answer's test accuracy,
and the whole command's wall time (goal for the digits quick start: <= 60 s on 2 quiet cores). With
`--baseline REV` it runs the same configs from a git revision's source tree side by side (same machine,
same load) so the figures are ratios, not claims.

    .venv/bin/python bench/overhead.py                       # the quick start, about a minute
    .venv/bin/python bench/overhead.py --fashion 300         # + the Fashion-MNIST example, 5 minutes of it
    .venv/bin/python bench/overhead.py --baseline 8e7d53d    # + the same from an earlier revision

Each result is appended as one JSON line to --report (default docs/overhead-results.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _events(run_dir: Path) -> dict[str, float]:
    train = measure = wall = 0.0
    count = 0
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") != "evaluation":
            continue
        count += 1
        train += event.get("train_seconds") or 0.0
        measure += event.get("measure_seconds") or 0.0
        wall += event.get("wall_seconds") or 0.0
    return {"evaluations": count, "train_s": train, "measure_s": measure, "eval_wall_s": wall}


def _answer(src: Path, run_dir: Path) -> dict[str, object]:
    """The front's size and the answer's test accuracy, read with the revision's own code where it has
    them (an older revision has no answer: its most accurate front model stands in)."""
    code = (
        "import json,sys\n"
        "from evowatt import results as r\n"
        "f = r.front(sys.argv[1])\n"
        "a = r.answer(sys.argv[1]) if hasattr(r, 'answer') else max(f, key=lambda m: m.value('accuracy'))\n"
        "nets = {getattr(m, 'network', m.id) for m in f}\n"
        "print(json.dumps({'front': len(f), 'networks': len(nets),"
        " 'test_accuracy': a.value('test_accuracy') if a else None}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(src / "src")}
    done = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, env=env)
    return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr.strip()[-300:]}


def run_one(src: Path, config: Path, sets: list[str], label: str, work: Path) -> dict[str, object]:
    run_dir = work / f"{label}-{config.stem}"
    command = [sys.executable, "-m", "evowatt.cli", "run", str(config), "--out", str(run_dir)]
    for item in sets:
        command += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(src / "src"), "COLUMNS": "120"}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=src)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{label} {config.name} failed:\n{done.stderr[-2000:]}")
    figures = _events(run_dir)
    return {
        "label": label,
        "config": config.name,
        "set": sets,
        **figures,
        "measure_share": figures["measure_s"] / figures["eval_wall_s"] if figures["eval_wall_s"] else None,
        "command_wall_s": seconds,
        **_answer(src, run_dir),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg()[0],
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _checkout(rev: str, work: Path) -> Path:
    tree = work / f"src-{rev}"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT, check=True, capture_output=True
    )
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--fashion",
        type=float,
        default=0,
        help="also run the Fashion-MNIST example for "
        "this many seconds of search (search.time_limit), no final training",
    )
    parser.add_argument("--baseline", help="a git revision to run side by side")
    parser.add_argument("--report", default=str(ROOT / "docs" / "overhead-results.jsonl"))
    args = parser.parse_args()
    jobs: list[tuple[Path, list[str]]] = [(ROOT / "examples" / "digits-pareto.yaml", [])]
    if args.fashion:
        jobs.append(
            (
                ROOT / "examples" / "fashion-mnist-pareto.yaml",
                [f"search.time_limit={args.fashion}", "training.final_training.budget=null"],
            )
        )
    with tempfile.TemporaryDirectory(prefix="evowatt-overhead-") as tmp:
        work = Path(tmp)
        sources = [("HEAD", ROOT)]
        if args.baseline:
            sources.append((args.baseline, _checkout(args.baseline, work)))
        try:
            print(
                f"{'source':>10} {'config':>28} {'evals':>6} {'train s':>8} {'measure s':>10} "
                f"{'share':>6} {'wall s':>7} {'front':>6} {'test acc':>8}"
            )
            for config, sets in jobs:
                for label, src in sources:
                    row = run_one(src, config, sets, label, work)
                    with open(args.report, "a", encoding="utf-8") as report:
                        report.write(json.dumps(row) + "\n")
                    share = row["measure_share"]
                    accuracy = row.get("test_accuracy")
                    accuracy_text = "-" if accuracy is None else f"{accuracy:.4f}"
                    print(
                        f"{label:>10} {config.name:>28} {row['evaluations']:>6} {row['train_s']:>8.1f} "
                        f"{row['measure_s']:>10.1f} {share:>6.1%} {row['command_wall_s']:>7.1f} "
                        f"{row.get('front', '-')!s:>6} {accuracy_text:>8}",
                        flush=True,
                    )
        finally:
            if args.baseline:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(sources[1][1])],
                    cwd=ROOT,
                    capture_output=True,
                )


if __name__ == "__main__":
    main()
