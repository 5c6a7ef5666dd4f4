"""How a command ends when it is stopped from outside: Ctrl-C or SIGTERM (once cleanly, naming the run to
resume; twice at once) and a reader that closed our standard output."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any


class Interrupts:
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
        forget_unhandled_interrupt()

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
        from evowatt.driver.rundir import DB_NAME

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


def forget_unhandled_interrupt() -> None:
    """CPython marks an interrupt "unhandled" when it leaves code run from a string (``exec``/``eval`` of
    text, as dataclasses and namedtuple do while a module loads), even when we catch it further out; under
    ``python -m`` that mark makes the interpreter kill itself with SIGINT at exit, whatever status we
    return (a SIGTERM then ended as -2, not 143). Every evaluation of text clears the mark when it starts,
    so evaluating an empty one after we have handled the interrupt forgets it."""
    exec("None")  # a constant: the side effect on the interpreter's mark is the point


def writes_run(args: argparse.Namespace, run_dir: str | Path) -> None:
    """Tell the interrupt handler (when ``main`` installed one) which run directory the command writes."""
    interrupts = getattr(args, "interrupts", None)
    if isinstance(interrupts, Interrupts):
        interrupts.run_dir = Path(run_dir)


def closed_stdout() -> int:
    """The reader of our output went away (`evowatt show --json | head -c 10`): stop quietly with the
    status of a command ended by SIGPIPE; stdout goes to /dev/null so the final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 128 + signal.SIGPIPE
