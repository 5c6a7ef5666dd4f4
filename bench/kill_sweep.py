"""SIGKILL a run at random moments, recover each, and check it against one uninterrupted reference run.

A trial starts `evowatt run` in a subprocess, sends SIGKILL after a random delay drawn uniformly over the
reference run's wall time (start-up included), then recovers: `evowatt resume RUN_DIR`, or `evowatt run`
again when the kill came before the run had a store (nothing to resume). The recovered run must hold
the same evaluations (ids, kinds, genomes, seeds, status, fitness, steps, metrics other than clock
readings), the same generations, the same final checkpoint and the same kept weights, byte for byte, as the
reference; and every evaluation recorded before the kill must be untouched (reused, not recomputed).

The config is digits under a step budget on one torch thread, so every evaluation is deterministic.

    .venv/bin/python bench/kill_sweep.py --trials 20                      # about 3-4 minutes on 2 cores
    .venv/bin/python bench/kill_sweep.py --trials 20 --algorithm pareto   # the Pareto search, two exits
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from evowatt.config.load import apply_overrides
from evowatt.driver.rows import AFTER_SEARCH

CONFIG: dict[str, Any] = {
    "seed": 0,
    "grammar": "cnn",
    "dataset": {"name": "digits"},
    "network": {
        "modules": [
            {"name": "features", "network_structure_init": [1, 2], "network_structure": [0, 4]},
            {"name": "classification", "network_structure_init": [1], "network_structure": [0, 2]},
        ]
    },
    "search": {"generations": 4, "lambda": 3, "mutation": {"train_longer": 0.3}},
    "training": {"budget": {"steps": 30}, "threads": 1, "final_training": {"budget": {"steps": 30}}},
    # the deterministic estimate meter, short protocol: energies must match; latency, a clock, is left out
    "energy": {
        "meter": "estimate",
        "warmup": 1,
        "min_window_s": 0.005,
        "min_repeats": 2,
        "max_repeats": 2,
        "time_cap_s": 0.05,
        "idle_s": 0.02,
    },
}
# the Pareto search: population 3, 3 offspring a generation, every network with an early exit
PARETO = {
    "network": {**CONFIG["network"], "macro_structure": ["learning", "model_partition"]},
    "search": {
        **CONFIG["search"],
        "algorithm": "pareto",
        "population": 3,
        "constraints": ["accuracy > 0.05"],
    },
    "training": {**CONFIG["training"], "final_training": {"budget": {"steps": 30}, "models": 2}},
}
CLOCK_FIELDS = ("wall_seconds", "train_seconds", "measure_seconds", "recorded_at", "host")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "evowatt.cli", *args]


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    """Evaluation rows read straight from SQLite (read-only), so the bench depends on the schema only."""
    db = sqlite3.connect(f"{(run_dir / 'evowatt.sqlite').resolve().as_uri()}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM evaluations ORDER BY id")]
    finally:
        db.close()


def _generations(run_dir: Path) -> list[tuple]:
    db = sqlite3.connect(f"{(run_dir / 'evowatt.sqlite').resolve().as_uri()}?mode=ro", uri=True)
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(generations)")}
        record = ", record" if "record" in columns else ""  # survivors, front, hypervolume: no clock
        query = (
            f"SELECT generation, parent_id, best_fitness, evaluations{record} FROM generations "
            "ORDER BY generation"
        )
        return db.execute(query).fetchall()
    finally:
        db.close()


def _comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A row without clock readings: latency and every measured:* metric, wall, training and measure times."""
    out = {k: v for k, v in row.items() if k not in (*CLOCK_FIELDS, "result", "metrics", "train")}
    metrics = json.loads(row["metrics"])
    out["metrics"] = {
        k: v
        for k, v in metrics.items()
        if not str(v.get("method", "")).startswith("measured:") and "latency" not in k
    }
    out["train"] = {k: v for k, v in (json.loads(row["train"]) or {}).items() if k != "seconds"}
    return out


def history(run_dir: Path) -> dict[str, Any]:
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    return {
        "evaluations": [_comparable(r) for r in _rows(run_dir)],
        "generations": _generations(run_dir),
        "checkpoint": {k: v for k, v in checkpoint.items()},
        "weights": {p.name: p.read_bytes() for p in sorted((run_dir / "weights").iterdir())},
    }


def differences(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    problems = []
    got_ids = [e["id"] for e in got["evaluations"]]
    want_ids = [e["id"] for e in want["evaluations"]]
    if got_ids != want_ids:
        problems.append(f"evaluation ids {got_ids} != {want_ids}")
    for g, w in zip(got["evaluations"], want["evaluations"], strict=False):
        if g != w:
            keys = sorted(k for k in w if g.get(k) != w.get(k))
            problems.append(f"evaluation {w['id']} differs in {', '.join(keys)}")
    for part in ("generations", "checkpoint", "weights"):
        if got[part] != want[part]:
            problems.append(f"{part} differ")
    return problems


def state_at_kill(run_dir: Path) -> tuple[str, dict[int, float]]:
    """What the killed run left: a phrase for the report and {id: recorded_at} of its recorded rows."""
    if not (run_dir / "evowatt.sqlite").exists():
        return "before the store existed", {}
    rows = _rows(run_dir)
    checkpoint = run_dir / "checkpoint.json"
    generation = json.loads(checkpoint.read_text())["generation"] if checkpoint.exists() else None
    screened = sum(r["kind"] == "screen" for r in rows)
    finals = any(r["kind"] == "final" for r in rows)
    done = ", ".join([f"{screened} screened"] * bool(screened) + ["final trained"] * finals)
    searched = [r for r in rows if r["kind"] not in AFTER_SEARCH]
    text = f"{len(searched)} recorded, checkpoint {'none' if generation is None else f'gen {generation}'}"
    return text + (f", {done}" if done else ""), {r["id"]: r["recorded_at"] for r in rows}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kill moments")
    parser.add_argument("--workdir", help="keep run directories here (default: a temporary directory)")
    parser.add_argument("--algorithm", choices=["es", "pareto"], default="es", help="the search to kill")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change the swept config, e.g. --set search.inherit_weights=true",
    )
    parser.add_argument(
        "--span",
        type=float,
        help="draw kill moments over 0-SPAN s instead of the reference's wall time (on a loaded machine the "
        "reference may run much longer than the trials, which then finish before their kill)",
    )
    args = parser.parse_args()

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="kill-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    config = work / "config.yaml"
    swept = {**CONFIG, **(PARETO if args.algorithm == "pareto" else {})}
    config.write_text(yaml.safe_dump(apply_overrides(json.loads(json.dumps(swept)), args.set)))
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("EVOWATT_KILL_AT", None)

    reference = work / "reference"
    shutil.rmtree(reference, ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run(_cli("run", str(config), "--out", str(reference)), env=env, capture_output=True)
    span = time.perf_counter() - start
    reference_seconds = span
    if done.returncode != 0:
        print(done.stderr.decode(), file=sys.stderr)
        return 1
    want = history(reference)
    total = len(want["evaluations"])
    print(
        f"reference: {total} evaluations (final training included) in {reference_seconds:.1f} s, "
        "`evowatt run` wall time"
    )
    print(f"{'trial':>5}  {'kill at':>8}  {'state at kill':<44} {'recovered by':<14} result")

    if args.span:
        span = args.span
    rng = random.Random(args.seed)
    matched, moments = 0, []
    for trial in range(args.trials):
        run_dir = work / f"trial-{trial:03d}"
        shutil.rmtree(run_dir, ignore_errors=True)
        delay = rng.uniform(0.0, span)
        proc = subprocess.Popen(
            _cli("run", str(config), "--out", str(run_dir)),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            proc.wait(timeout=delay)
            killed = False
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed = True
        moments.append(round(delay, 2))
        state, recorded = state_at_kill(run_dir) if killed else ("finished before the kill", {})
        if (run_dir / "evowatt.sqlite").exists():
            how, recover = "resume", _cli("resume", str(run_dir))
        else:
            how, recover = "run again", _cli("run", str(config), "--out", str(run_dir))
        done = subprocess.run(recover, env=env, capture_output=True)
        if done.returncode != 0:
            problems = [f"{how} exited {done.returncode}: {done.stderr.decode().strip()[-300:]}"]
        else:
            problems = differences(history(run_dir), want)
            after = {r["id"]: r["recorded_at"] for r in _rows(run_dir)}
            rewritten = [i for i, at in recorded.items() if after.get(i) != at]
            if rewritten:
                problems.append(f"recorded evaluations {rewritten} were recomputed")
        matched += not problems
        verdict = "match" if not problems else "MISMATCH: " + "; ".join(problems)
        print(f"{trial:>5}  {delay:>7.2f}s  {state:<44} {how:<14} {verdict}", flush=True)

    print(
        f"\n{matched}/{args.trials} killed-and-recovered runs match the uninterrupted reference "
        f"(kill moments in s, uniform over 0-{span:.1f}: {sorted(moments)})"
    )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if matched == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
