"""The run directory: an SQLite store of every evaluation, the resolved config, search checkpoints, weights.

Each evaluation is recorded the moment it finishes, one transaction per record, in WAL mode, so a
killed run loses at most the evaluation in flight. Checkpoints are JSON written to a temporary file and
renamed into place; weights are safetensors files. Nothing is pickled.

Run directory layout::

    config.yaml        the resolved configuration
    grammar.grammar    the grammar text the run used
    evowatt.sqlite     evaluations, generations, run metadata
    checkpoint.json    search state after the last complete generation
    weights/ID.safetensors   trained weights of evaluations that may still become parents
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import yaml

from evowatt.errors import EvowattError

DB_NAME = "evowatt.sqlite"
CHECKPOINT_NAME = "checkpoint.json"
CONFIG_NAME = "config.yaml"
GRAMMAR_NAME = "grammar.grammar"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY,
    generation INTEGER,
    kind TEXT NOT NULL,
    parent_id INTEGER,
    continue_from INTEGER,
    mutations TEXT,
    seed INTEGER,
    genome TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    fitness REAL,
    metrics TEXT NOT NULL,
    train TEXT,
    wall_seconds REAL,
    host TEXT,
    device TEXT,
    weights TEXT,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS generations (
    generation INTEGER PRIMARY KEY,
    parent_id INTEGER NOT NULL,
    best_fitness REAL,
    evaluations TEXT NOT NULL,
    recorded_at REAL NOT NULL
);
"""

_JSON_COLUMNS = ("mutations", "genome", "metrics", "train")


def atomic_write_text(path: Path, text: str) -> None:
    """Write then rename, so a crash or a full disk leaves the previous file intact."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class RunStore:
    def __init__(self, run_dir: str | Path, create: bool = False):
        self.dir = Path(run_dir)
        self.db_path = self.dir / DB_NAME
        if create:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "weights").mkdir(exist_ok=True)
        elif not self.db_path.is_file():
            raise EvowattError(
                f"{self.dir} is not an evowatt run directory (no {DB_NAME}); give the directory "
                "that 'evowatt run' created"
            )
        try:
            self.db = sqlite3.connect(self.db_path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise EvowattError(
                f"{self.db_path} is not a readable evowatt database ({exc}); it may be corrupt or "
                "truncated — restore it from a backup or start a new run"
            ) from None

    def close(self) -> None:
        self.db.close()

    # --- metadata ---------------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def write_config(self, config: dict[str, Any], grammar_text: str) -> None:
        atomic_write_text(self.dir / CONFIG_NAME, yaml.safe_dump(config, sort_keys=False))
        atomic_write_text(self.dir / GRAMMAR_NAME, grammar_text)

    # --- evaluations ------------------------------------------------------------------------------
    def weights_path(self, evaluation_id: int) -> str:
        return str(self.dir / "weights" / f"{evaluation_id}.safetensors")

    def record(self, candidate: dict[str, Any], result: dict[str, Any], fitness: float | None) -> None:
        row = (
            result["id"],
            candidate.get("generation"),
            candidate["kind"],
            candidate.get("parent_id"),
            candidate.get("continue_from"),
            json.dumps(candidate.get("mutations", [])),
            candidate.get("seed"),
            json.dumps(candidate["genome"]),
            result["status"],
            result.get("reason"),
            fitness,
            json.dumps(result.get("metrics", {})),
            json.dumps(result.get("train")),
            result.get("wall_seconds"),
            result.get("host"),
            result.get("device"),
            result.get("weights_path"),
            time.time(),
        )
        with self.db:
            self.db.execute(f"INSERT OR REPLACE INTO evaluations VALUES ({', '.join('?' * len(row))})", row)

    def evaluations(self, where: str = "", params: tuple = ()) -> list[dict[str, Any]]:
        cursor = self.db.execute(f"SELECT * FROM evaluations {where} ORDER BY id", params)
        names = [d[0] for d in cursor.description]
        rows = []
        for values in cursor.fetchall():
            row = dict(zip(names, values, strict=True))
            for column in _JSON_COLUMNS:
                row[column] = json.loads(row[column]) if row[column] is not None else None
            rows.append(row)
        return rows

    def evaluation(self, evaluation_id: int) -> dict[str, Any] | None:
        rows = self.evaluations("WHERE id = ?", (evaluation_id,))
        return rows[0] if rows else None

    def add_metric(self, evaluation_id: int, name: str, metric: dict[str, Any]) -> None:
        row = self.evaluation(evaluation_id)
        if row is None:
            raise KeyError(evaluation_id)
        metrics = {**row["metrics"], name: metric}
        with self.db:
            self.db.execute(
                "UPDATE evaluations SET metrics = ? WHERE id = ?", (json.dumps(metrics), evaluation_id)
            )

    def record_generation(self, record: dict[str, Any]) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?)",
                (
                    record["generation"],
                    record["parent_id"],
                    record["best_fitness"],
                    json.dumps(record["evaluations"]),
                    time.time(),
                ),
            )

    def generations(self) -> list[dict[str, Any]]:
        cursor = self.db.execute(
            "SELECT generation, parent_id, best_fitness, evaluations FROM generations ORDER BY generation"
        )
        return [
            {"generation": g, "parent_id": p, "best_fitness": f, "evaluations": json.loads(e)}
            for g, p, f, e in cursor.fetchall()
        ]

    def prune_weights(self, keep: set[int]) -> None:
        """Delete weights of evaluations that can no longer become parents."""
        for path in (self.dir / "weights").glob("*.safetensors"):
            if path.stem.isdigit() and int(path.stem) not in keep:
                path.unlink(missing_ok=True)
        with self.db:
            self.db.execute(
                f"UPDATE evaluations SET weights = NULL WHERE weights IS NOT NULL AND kind != 'final' "
                f"AND id NOT IN ({', '.join(str(int(k)) for k in keep) or '-1'})"
            )

    # --- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_write_text(self.dir / CHECKPOINT_NAME, json.dumps(state))

    def load_checkpoint(self) -> dict[str, Any] | None:
        path = self.dir / CHECKPOINT_NAME
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EvowattError(
                f"checkpoint {path} is corrupt or truncated ({exc}); nothing was changed. Delete it "
                "to restart the run from its recorded evaluations, or restore it from a backup"
            ) from None
