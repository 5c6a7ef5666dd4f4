"""The console every command prints with."""

from __future__ import annotations

from rich.console import Console


class OutputConsole(Console):
    """rich's Console, except that a closed standard output (``evowatt show | head``) is reported as the
    BrokenPipeError it is, so the CLI ends every command's closed pipe the same way (quietly, status 141),
    instead of rich's own silent exit with status 1."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError
