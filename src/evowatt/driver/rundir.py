"""The run directory's files besides the store: their names, atomic writes, the run's lock.

A run writes its config and grammar before its store exists, and holds ``run.lock`` (an flock the OS
drops when the process dies) while it runs, so two processes never write one run. Every file is written
to a temporary name and renamed into place, so a crash or a full disk leaves the previous one intact;
a failed write becomes one message that names disk full as such, with the fix.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import yaml

from evowatt.driver.killpoint import killpoint
from evowatt.errors import EvowattError

DB_NAME = "evowatt.sqlite"
CHECKPOINT_NAME = "checkpoint.json"
CONFIG_NAME = "config.yaml"
GRAMMAR_NAME = "grammar.grammar"
LOCK_NAME = "run.lock"
DATA_NAME = "data.npz"  # the arrays `evowatt.fit` was given, written before the run starts (fitting.py)
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _resume_hint(run_dir: Path) -> str:
    return f"free space then `evowatt resume {run_dir}`"


def write_failed(what: Path | str, exc: BaseException, run_dir: Path) -> EvowattError:
    """One message for a write that failed: disk full (the usual cause) named as such, with the fix."""
    full = (isinstance(exc, OSError) and exc.errno in _DISK_FULL) or (
        isinstance(exc, sqlite3.Error)
        and (
            getattr(exc, "sqlite_errorcode", None) == getattr(sqlite3, "SQLITE_FULL", 13)
            or "disk is full" in str(exc)
        )
    )
    if full:
        return EvowattError(
            f"disk full while writing {what} ({exc}); the last checkpoint is intact and every recorded "
            f"evaluation is kept: {_resume_hint(run_dir)}"
        )
    return EvowattError(
        f"cannot write {what} ({exc}); the last checkpoint is intact: fix the cause, then "
        f"`evowatt resume {run_dir}`"
    )


def fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str, data: bytes) -> None:
    """Atomically, through a ``.tmp`` beside it (``prune_weights`` removes one left by a kill)."""
    with open(f"{path}.tmp", "wb") as file:
        file.write(data)
    os.replace(f"{path}.tmp", path)


def atomic_write_text(path: Path, text: str, kill_at: str | None = None) -> None:
    """Write then rename, so a crash or a full disk leaves the previous file intact.

    On failure the temporary file is removed and the OSError propagates; ``kill_at`` names the
    test killpoint between the written temporary file and the rename.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if kill_at:
            killpoint(kill_at)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_config_files(run_dir: Path | str, config: dict[str, Any], grammar_text: str) -> None:
    """config.yaml and grammar.grammar, each written atomically."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / CONFIG_NAME, yaml.safe_dump(config, sort_keys=False))
        atomic_write_text(run_dir / GRAMMAR_NAME, grammar_text)
    except OSError as exc:
        raise write_failed(run_dir / CONFIG_NAME, exc, run_dir) from None


class RunLock:
    """An exclusive flock on run.lock: the OS drops it when the process dies, so no crash leaves it."""

    def __init__(self, handle: Any):
        self.handle = handle

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _open_lock_file(path: Path) -> Any:
    return open(path, "a")  # noqa: SIM115 - held open for the store's lifetime


def lock_run_dir(run_dir: Path) -> RunLock | None:
    """Take the run's lock before anything in the directory is written, or say why not (exit 2)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return None
    try:
        handle = _open_lock_file(run_dir / LOCK_NAME)
    except OSError as exc:
        raise EvowattError(
            f"cannot write in the run directory {run_dir} ({exc.strerror or exc}): running or resuming a run "
            "writes its evaluations there. Make it writable (e.g. chmod u+w), or copy the run directory "
            "somewhere writable and resume the copy; `evowatt show` reads a run as it is"
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise EvowattError(
            f"{run_dir} is in use by another evowatt process (it holds {LOCK_NAME}); wait for it to "
            "finish or stop it first; nothing was changed"
        ) from None
    return RunLock(handle)


# what a run writes before its store exists (a run killed or stopped in between leaves them): a directory
# holding only these is still a new run's, and runs again
_BEFORE_STORE = {
    DATA_NAME,
    CONFIG_NAME,
    GRAMMAR_NAME,
    LOCK_NAME,
    "weights",
    f"{CONFIG_NAME}.tmp",
    f"{GRAMMAR_NAME}.tmp",
    *(f"{DB_NAME}.new{end}" for end in ("", "-wal", "-shm")),
}


def _refuse_foreign(run_dir: Path) -> None:
    """Refuse a non-empty directory that holds no evowatt run: a new run would mix its files with the
    user's (and a later `rm -r` of the run would take them along)."""
    try:
        names = sorted(entry.name for entry in run_dir.iterdir())
    except OSError:
        return  # unreadable: the writability check that follows says so
    foreign = [n for n in names if n not in _BEFORE_STORE]
    if DB_NAME in names or not foreign:
        return
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    raise EvowattError(
        f"the run directory {run_dir} (--out) is not empty and holds no evowatt run ({shown}); a new run "
        f"goes into a new or empty directory: give another --out, e.g. {run_dir / 'run'}; nothing was "
        "written"
    )


def claim_new_run_dir(run_dir: Path) -> RunLock | None:
    """The directory of a new run: created if missing, locked, and refused if it already holds a run or
    other files.

    Nothing is written into the directory before the lock is held, so a refused run changes nothing.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise EvowattError(
            f"the run directory {run_dir} (--out) is an existing file, not a directory; give a directory "
            "for the new run (it is created if missing)"
        )
    if run_dir.is_dir():
        _refuse_foreign(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvowattError(
            f"cannot create the run directory {run_dir} (--out): {exc.strerror or exc}; give a directory "
            "in a place you can write"
        ) from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise EvowattError(
            f"the run directory {run_dir} (--out) is not writable; give a directory you can write"
        )
    lock = lock_run_dir(run_dir)
    if (run_dir / DB_NAME).exists():
        if lock is not None:
            lock.close()
        raise EvowattError(
            f"{run_dir} already holds a run; use 'evowatt resume {run_dir}' or choose another --out"
        )
    return lock
