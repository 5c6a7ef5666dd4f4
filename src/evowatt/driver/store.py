"""The run directory: an SQLite store of every evaluation, the resolved config, search checkpoints, weights.

Each evaluation is recorded the moment it finishes, one transaction per record, in WAL mode, so a
killed run loses at most the evaluation in flight. Checkpoints are JSON written to a temporary file and
renamed into place; weights are safetensors files. Nothing is pickled.

Opening an existing store never repairs or recreates it: a file without the SQLite header, one that fails
``PRAGMA quick_check`` or lacks evowatt's tables is refused with one message and left as it is.

Records go in typed (``record``: a ``Candidate``, its ``EvalResult``, the search's ``Score``, its
``Budget``; ``record_generation``: a ``GenerationRecord``) and come out typed: ``get``, ``select`` and
the named queries (``searched``, ``finals``, ``screenings``) give frozen ``Evaluation`` rows (rows.py),
``generations`` the records. No SQL is written outside this module. (It is one class over one schema,
about 600 lines: opening checks, writes, typed reads and checkpoints; the run directory's other files
and its lock are rundir.py's.)

Run directory layout::

    config.yaml        the resolved configuration
    grammar.grammar    the grammar text the run used
    evowatt.sqlite     evaluations, generations, run metadata (the config and grammar as the run started)
    checkpoint.json    search state after the last complete generation, and the weight files it needs
    weights/ID.safetensors   trained weights of evaluations that may still become parents
    run.lock           held (flock) by the process running the search, so two cannot write one run
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from evowatt.driver.checkpoint import CheckpointError, check_row, check_store_section
from evowatt.driver.rows import AFTER_SEARCH, Evaluation
from evowatt.driver.rundir import (
    CHECKPOINT_NAME,
    DB_NAME,
    RunLock,
    atomic_write_text,
    file_digest,
    fsync_dir,
    lock_run_dir,
    write_bytes,
    write_config_files,
    write_failed,
)
from evowatt.errors import EvowattError
from evowatt.records import Budget, EvalResult, Status
from evowatt.search.protocol import Candidate, GenerationRecord, Score

CHECKPOINT_KEY = "checkpoint"  # the store's own section of checkpoint.json, beside the search state
CHECKPOINT_FORMAT = 2  # 2: the optimiser states continuations resume (1 has none)
_SQLITE_HEADER = b"SQLite format 3\x00"
# an SQL condition: the search's own evaluations (not AFTER_SEARCH, the screenings and final trainings)
_SEARCHED = f"kind NOT IN ({', '.join(repr(kind) for kind in AFTER_SEARCH)})"
_TABLES = ("meta", "evaluations", "generations")

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
    recorded_at REAL NOT NULL,
    steps INTEGER,
    train_seconds REAL,
    budget_steps INTEGER,
    budget_seconds REAL,
    measure_seconds REAL,
    result TEXT,
    score TEXT
);
CREATE TABLE IF NOT EXISTS generations (
    generation INTEGER PRIMARY KEY,
    parent_id INTEGER,
    best_fitness REAL,
    evaluations TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    record TEXT
);
"""

# columns added after the first release: opening an older store adds them (nullable, nothing rewritten)
_ADDED_COLUMNS = {
    "steps": "INTEGER",
    "train_seconds": "REAL",
    "budget_steps": "INTEGER",
    "budget_seconds": "REAL",
    "measure_seconds": "REAL",
    "result": "TEXT",
    "score": "TEXT",
}
# the generation record of any search (survivors, front, hypervolume); first-version rows lack it
_ADDED_GENERATION_COLUMNS = {"record": "TEXT"}
_JSON_COLUMNS = ("mutations", "genome", "metrics", "train", "result", "score")


class RunStore:
    """One run directory. ``create`` makes a new one; ``lock`` holds it against a second writer."""

    def __init__(self, run_dir: str | Path, create: bool = False, lock: bool | RunLock = False):
        """``lock``: True takes the run's lock; a ``RunLock`` (from ``claim_new_run_dir``) is adopted."""
        self.dir = Path(run_dir)
        self.db_path = self.dir / DB_NAME
        self._lock_handle: Any = lock if isinstance(lock, RunLock) else None
        try:
            if create:
                self.dir.mkdir(parents=True, exist_ok=True)
                (self.dir / "weights").mkdir(exist_ok=True)
        except OSError as exc:
            self._unlock()
            raise write_failed(self.dir / "weights", exc, self.dir) from None
        if lock is True:
            self._lock()
        try:
            if not self.db_path.is_file():
                if not create:
                    raise EvowattError(
                        f"{self.dir} is not an evowatt run directory (no {DB_NAME}); give the directory "
                        "that 'evowatt run' created"
                    )
                self._create_db()
            self.db = self._open_checked()
        except BaseException:
            self._unlock()
            raise

    # --- opening ----------------------------------------------------------------------------------
    def _lock(self) -> None:
        self._lock_handle = lock_run_dir(self.dir)

    def _unlock(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def _create_db(self) -> None:
        """Build the schema under a temporary name and rename it in: the store either exists whole or not."""
        tmp = self.db_path.with_name(DB_NAME + ".new")
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
        try:
            db = sqlite3.connect(tmp, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
            finally:
                db.close()
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, self.db_path)
            fsync_dir(self.dir)
        except (OSError, sqlite3.Error) as exc:
            tmp.unlink(missing_ok=True)
            raise write_failed(self.db_path, exc, self.dir) from None

    def _corrupt(self, detail: str) -> EvowattError:
        return EvowattError(
            f"{self.db_path} is corrupt or truncated ({detail}); nothing was changed. Restore it from a "
            "backup, or start a new run with `evowatt run`"
        )

    def _open_checked(self) -> sqlite3.Connection:
        """Open an existing store read-write without ever creating or repairing it."""
        try:
            with open(self.db_path, "rb") as handle:
                header = handle.read(len(_SQLITE_HEADER))
        except OSError as exc:
            raise EvowattError(f"cannot read {self.db_path}: {exc}") from None
        if header != _SQLITE_HEADER:
            raise self._corrupt(f"no SQLite header; the file has {self.db_path.stat().st_size} bytes")
        # a run directory the user cannot write (an archived copy) can still be read by `evowatt show`
        writable = os.access(self.db_path, os.W_OK) and os.access(self.dir, os.W_OK)
        uri = f"{self.db_path.resolve().as_uri()}?mode={'rw' if writable else 'ro'}"
        db = None
        try:
            db = sqlite3.connect(uri, uri=True, isolation_level=None)
            check = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
            if check != ["ok"]:
                raise self._corrupt("; ".join(check[:3]))
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = [t for t in _TABLES if t not in tables]
            if missing:
                raise self._corrupt(f"tables {', '.join(missing)} missing")
            columns = {row[1] for row in db.execute("PRAGMA table_info(evaluations)")}
            if writable:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                for name, kind in _ADDED_COLUMNS.items():
                    if name not in columns:
                        db.execute(f"ALTER TABLE evaluations ADD COLUMN {name} {kind}")
                generation_columns = {row[1] for row in db.execute("PRAGMA table_info(generations)")}
                for name, kind in _ADDED_GENERATION_COLUMNS.items():
                    if name not in generation_columns:
                        db.execute(f"ALTER TABLE generations ADD COLUMN {name} {kind}")
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()
            raise self._corrupt(str(exc)) from None
        except BaseException:
            if db is not None:
                db.close()
            raise
        return db

    def close(self) -> None:
        self.db.close()
        self._unlock()

    def _write(self, what: str, sql: str, params: tuple = ()) -> None:
        """One transaction; a failed write (disk full, I/O error) becomes one clear message."""
        try:
            with self.db:
                self.db.execute(sql, params)
        except sqlite3.Error as exc:
            raise write_failed(f"{what} to {self.db_path}", exc, self.dir) from None

    # --- metadata ---------------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        self._write(f"'{key}'", "INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def write_config(self, config: dict[str, Any], grammar_text: str) -> None:
        """The resolved config and grammar, as files and as the store's record of how the run started."""
        self.record_config(config, grammar_text, files=True)

    def record_config(self, config: dict[str, Any], grammar_text: str, files: bool = False) -> None:
        """Keep the config in the store, which resume compares against (a hand-edited config.yaml shows)."""
        if files:
            write_config_files(self.dir, config, grammar_text)
        self.set_meta("config", config)
        self.set_meta("grammar_sha256", hashlib.sha256(grammar_text.encode("utf-8")).hexdigest())

    # --- evaluations ------------------------------------------------------------------------------
    def weights_path(self, evaluation_id: int) -> str:
        return str(self.dir / "weights" / f"{evaluation_id}.safetensors")

    def write_weights(self, evaluation_id: int, data: bytes) -> str:
        """An evaluation's trained weights (safetensors bytes from its result), written atomically by the
        driver: workers never write into the run directory. Returns the path."""
        path = self.weights_path(evaluation_id)
        write_bytes(path, data)
        return path

    def read_weights(self, evaluation_id: int) -> bytes:
        """The safetensors bytes an evaluation that continues from this one is sent."""
        return Path(self.weights_path(evaluation_id)).read_bytes()

    def optimiser_path(self, evaluation_id: int) -> str:
        """Beside the weights: the optimiser's state when the training ended (nn/optimiser_state.py)."""
        return str(self.dir / "weights" / f"{evaluation_id}.optimiser.safetensors")

    def write_optimiser(self, evaluation_id: int, data: bytes) -> None:
        """Written atomically before the weights: weights on disk always have their optimiser state."""
        write_bytes(self.optimiser_path(evaluation_id), data)

    def read_optimiser(self, evaluation_id: int) -> bytes | None:
        """The optimiser state a continuation resumes; None where none was kept."""
        path = Path(self.optimiser_path(evaluation_id))
        return path.read_bytes() if path.is_file() else None

    def _relative(self, path: str | None) -> str | None:
        """Weights are recorded relative to the run directory, so a moved run directory still resumes."""
        if not path:
            return None
        try:
            return Path(path).resolve().relative_to(self.dir.resolve()).as_posix()
        except ValueError:
            return str(path)

    def _absolute(self, path: str | None) -> str | None:
        return None if not path else str(self.dir / path)

    def record(
        self,
        candidate: Candidate,
        result: EvalResult,
        score: Score | None = None,
        budget: Budget | None = None,
    ) -> None:
        """Record one finished evaluation in its own transaction.

        ``score`` is the search's ``Score`` of it (its fitness is the row's), kept so a resumed run reuses
        it instead of computing it again. ``budget`` is what it was allowed, so a failed evaluation that
        trained nothing still says what it was given.
        """
        self._insert(
            candidate.to_json(),
            result.to_json(),
            None if score is None else score.fitness,
            (budget or Budget()).to_json(),
            score,
        )

    def _insert(
        self,
        candidate: dict[str, Any],
        result: dict[str, Any],
        fitness: float | None,
        budget: dict[str, Any],
        score: Score | None,
    ) -> None:
        """The row of ``record`` from the JSON of its records; ``measure_seconds`` is the energy
        measurement's wall time, from the result or its metrics."""
        train = result.get("train") or {}
        measure = result.get("measure_seconds")
        if measure is None:
            metric = (result.get("metrics") or {}).get("measure_seconds")
            measure = metric.get("value") if isinstance(metric, dict) else metric
        full = {**result, "weights_path": self._relative(result.get("weights_path"))}
        values = {
            "id": result["id"],
            "generation": candidate.get("generation"),
            "kind": candidate["kind"],
            "parent_id": candidate.get("parent_id"),
            "continue_from": candidate.get("continue_from"),
            "mutations": json.dumps(candidate.get("mutations", [])),
            "seed": candidate.get("seed"),
            "genome": json.dumps(candidate["genome"]),
            "status": str(result["status"]),
            "reason": result.get("reason"),
            "fitness": fitness,
            "metrics": json.dumps(result.get("metrics", {})),
            "train": json.dumps(result.get("train")),
            "wall_seconds": result.get("wall_seconds"),
            "host": result.get("host"),
            "device": result.get("device"),
            "weights": self._relative(result.get("weights_path")),
            "recorded_at": time.time(),
            "steps": train.get("steps"),
            "train_seconds": train.get("seconds"),
            "budget_steps": train.get("budget_steps", budget.get("steps")),
            "budget_seconds": train.get("budget_seconds", budget.get("seconds")),
            "measure_seconds": measure,
            "result": json.dumps(full),
            "score": None if score is None else json.dumps(score.to_json()),
        }
        columns = ", ".join(values)
        marks = ", ".join("?" * len(values))
        self._write(
            f"evaluation {result['id']}",
            f"INSERT OR REPLACE INTO evaluations ({columns}) VALUES ({marks})",
            tuple(values.values()),
        )

    # --- reading evaluations: named queries, typed rows -------------------------------------------
    def get(self, evaluation_id: int) -> Evaluation | None:
        """One evaluation by id; None when the store does not hold it."""
        rows = self._rows("WHERE id = ?", (evaluation_id,))
        return rows[0] if rows else None

    def select(
        self,
        *,
        kind: str | None = None,
        status: Status | None = None,
        searched: bool | None = None,
        parent_id: int | None = None,
    ) -> list[Evaluation]:
        """The evaluations that match every filter given (all of them without one), in id order.

        ``searched`` True: the search's own; False: the screenings and final trainings after it.
        ``parent_id`` with ``kind``: e.g. the final trainings of one handed model."""
        clauses: list[str] = []
        params: list[Any] = []
        if kind is not None:
            clauses.append("kind = ?")
            params.append(kind)
        if status is not None:
            clauses.append("status = ?")
            params.append(Status(status).value)
        if searched is not None:
            clauses.append(_SEARCHED if searched else f"NOT ({_SEARCHED})")
        if parent_id is not None:
            clauses.append("parent_id = ?")
            params.append(parent_id)
        return self._rows("WHERE " + " AND ".join(clauses) if clauses else "", tuple(params))

    def searched(self, status: Status | None = None) -> list[Evaluation]:
        """The search's own evaluations (``status``: only those that ended so)."""
        return self.select(searched=True, status=status)

    def finals(self, status: Status | None = None) -> list[Evaluation]:
        """The final trainings of the handed models, in the order they were trained."""
        return self.select(kind="final", status=status)

    def screenings(self) -> list[Evaluation]:
        """The screening trainings before the final training (kind ``screen``)."""
        return self.select(kind="screen")

    def with_weights(self) -> set[int]:
        """The ids of the evaluations whose trained weights are kept."""
        return {int(r[0]) for r in self.db.execute("SELECT id FROM evaluations WHERE weights IS NOT NULL")}

    def _rows(self, where: str = "", params: tuple = ()) -> list[Evaluation]:
        rows = []
        for row in self._decoded(where, params):
            try:
                rows.append(Evaluation.from_json(row))
            except (KeyError, TypeError, ValueError) as exc:
                raise self._corrupt(f"evaluation {row.get('id')}: {type(exc).__name__}: {exc}") from None
        return rows

    def _decoded(self, where: str = "", params: tuple = ()) -> list[dict[str, Any]]:
        """Rows as dicts with their JSON columns decoded and checked, weights as absolute paths."""
        cursor = self.db.execute(f"SELECT * FROM evaluations {where} ORDER BY id", params)
        names = [d[0] for d in cursor.description]
        rows = []
        for values in cursor.fetchall():
            row = {**dict.fromkeys(_ADDED_COLUMNS), **dict(zip(names, values, strict=True))}
            for column in _JSON_COLUMNS:
                try:
                    row[column] = json.loads(row[column]) if row[column] is not None else None
                except (TypeError, ValueError):
                    raise self._corrupt(f"evaluation {row.get('id')}: column {column} is not JSON") from None
            try:
                check_row({c: row[c] for c in _JSON_COLUMNS}, row.get("id"))
            except CheckpointError as exc:
                raise self._corrupt(str(exc)) from None
            row["weights"] = self._absolute(row["weights"])
            rows.append(row)
        return rows

    def max_id(self) -> int:
        row = self.db.execute("SELECT MAX(id) FROM evaluations").fetchone()
        return -1 if row[0] is None else int(row[0])

    def add_metrics(self, evaluation_id: int, added: dict[str, dict[str, Any]]) -> None:
        """Metrics added to a recorded evaluation in one write: a run killed part way leaves all of them
        or none, so that a resumed run that finds one of them does not miss the others."""
        row = self.get(evaluation_id)
        if row is None:
            raise KeyError(evaluation_id)
        metrics = {**row.metrics, **added}
        self._write(
            f"metrics {', '.join(added)} of evaluation {evaluation_id}",
            "UPDATE evaluations SET metrics = ? WHERE id = ?",
            (json.dumps(metrics), evaluation_id),
        )

    def record_generation(self, record: GenerationRecord) -> None:
        """A finished generation: survivors, front, hypervolume."""
        data = record.to_json()
        self._write(
            f"generation {record.generation}",
            "INSERT OR REPLACE INTO generations (generation, parent_id, best_fitness, evaluations, "
            "recorded_at, record) VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.generation,
                record.best_id,
                record.best_fitness,
                json.dumps(data["evaluations"]),
                time.time(),
                json.dumps(data),
            ),
        )

    def generations(self) -> list[GenerationRecord]:
        """Every generation record; a first-version row (ES parent only) reads as one with one survivor."""
        has_record = "record" in {row[1] for row in self.db.execute("PRAGMA table_info(generations)")}
        extra = ", record" if has_record else ", NULL"
        cursor = self.db.execute(
            f"SELECT generation, parent_id, best_fitness, evaluations{extra} FROM generations "
            "ORDER BY generation"
        )
        rows = []
        for g, p, f, e, r in cursor.fetchall():
            data = json.loads(r) if r else {"generation": g, "parent_id": p, "best_fitness": f}
            data["evaluations"] = json.loads(e)
            rows.append(GenerationRecord.from_json(data))
        return rows

    def prune_weights(self, keep: set[int], below: int | None = None) -> None:
        """Delete weights of evaluations that can no longer become parents.

        Called only after the checkpoint naming the kept ones is on disk, so the last checkpoint's weights
        always survive. Only ids under ``below`` (the generation just told) are candidates: a replayed run
        keeps the weights of later generations it recorded before, which may still become parents.
        Screenings and final trainings are never pruned; leftover temporary files are removed.
        """
        finals = {int(r[0]) for r in self.db.execute(f"SELECT id FROM evaluations WHERE NOT ({_SEARCHED})")}
        keep = set(keep) | finals
        limit = float("inf") if below is None else below

        def prunable(evaluation_id: int) -> bool:
            return evaluation_id < limit and evaluation_id not in keep

        for path in (self.dir / "weights").iterdir():
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
            stem = path.name.removesuffix(".safetensors").removesuffix(".optimiser")
            if path.name.endswith(".safetensors") and stem.isdigit() and prunable(int(stem)):
                path.unlink(missing_ok=True)
        ids = [int(r[0]) for r in self.db.execute("SELECT id FROM evaluations WHERE weights IS NOT NULL")]
        pruned = [i for i in ids if prunable(i)]
        if pruned:
            self._write(
                "pruned weights",
                f"UPDATE evaluations SET weights = NULL WHERE id IN ({', '.join(str(i) for i in pruned)})",
            )

    # --- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any], keep_weights: Iterable[int] = ()) -> None:
        """The search state plus the weight files it needs (size and SHA-256), written atomically."""
        weights, optimisers = {}, {}
        for evaluation_id in sorted(keep_weights):
            for files, path in (
                (weights, Path(self.weights_path(evaluation_id))),
                (optimisers, Path(self.optimiser_path(evaluation_id))),
            ):
                if path.is_file():
                    files[str(evaluation_id)] = {
                        "file": self._relative(str(path)),
                        "bytes": path.stat().st_size,
                        "sha256": file_digest(path),
                    }
        section: dict[str, Any] = {"format": 1, "weights": weights}
        if optimisers:  # format 2: an older evowatt would resume without them, not exactly
            section.update(format=CHECKPOINT_FORMAT, optimisers=optimisers)
        payload = {**state, CHECKPOINT_KEY: section}
        path = self.dir / CHECKPOINT_NAME
        try:
            atomic_write_text(path, json.dumps(payload), kill_at="checkpoint-write")
        except OSError as exc:
            raise write_failed(path, exc, self.dir) from None

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The search state of the last checkpoint, its weight files checked; None when there is none yet."""
        path = self.dir / CHECKPOINT_NAME
        if not path.exists():
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self.bad_checkpoint(f"corrupt or truncated ({exc})") from None
        if not isinstance(state, dict) or "generation" not in state:
            raise self.bad_checkpoint("corrupt: not an evowatt checkpoint")
        raw = state.pop(CHECKPOINT_KEY, None) or {}
        found = raw.get("format") if isinstance(raw, dict) else None
        if isinstance(found, int) and not isinstance(found, bool) and found > CHECKPOINT_FORMAT:
            raise EvowattError(
                f"checkpoint {path} was written by a newer evowatt (format {found}); "
                "upgrade evowatt to resume it"
            )
        try:
            section = check_store_section(raw)
        except CheckpointError as exc:
            raise self.bad_checkpoint(f"not a valid evowatt checkpoint: {exc}") from None
        needed = [(i, e, "trained weights") for i, e in section.weights.items()]
        needed += [(i, e, "optimiser state") for i, e in section.optimisers.items()]
        for evaluation_id, entry, what in needed:
            weights = self.dir / entry.file
            if not weights.is_file():
                problem = "is missing"
            elif weights.stat().st_size != entry.bytes or file_digest(weights) != entry.sha256:
                problem = "is damaged (its size or checksum differs from the checkpoint's)"
            else:
                continue
            raise EvowattError(
                f"{weights}, the {what} of evaluation {evaluation_id} that checkpoint {path} needs, "
                f"{problem}; nothing was changed. Restore it from a backup, or start a new run"
            )
        return state

    def bad_checkpoint(self, problem: str) -> EvowattError:
        return EvowattError(
            f"checkpoint {self.dir / CHECKPOINT_NAME} is {problem}; nothing was changed. Delete it to "
            "replay the run from its recorded evaluations (they are reused, not recomputed), or restore "
            "it from a backup"
        )
