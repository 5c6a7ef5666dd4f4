"""`main`, the console entry point (`evowatt`, `python -m evowatt.cli`): parse, run the sub-command, and
turn how it ended into an exit status (a user error is one message and exit code 2, a bug exit 1, an
interrupt 130 or 143, a closed pipe 141)."""

from __future__ import annotations

import os
import sys

from evowatt.cli.interrupts import Interrupts, closed_stdout
from evowatt.cli.parser import build_parser
from evowatt.errors import EvowattError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse refused an argument (its message is printed; code 2)
        return int(exc.code or 0)
    interrupts = Interrupts()
    installed = interrupts.install()
    args.interrupts = interrupts
    try:
        return int(args.func(args) or 0)
    except EvowattError as exc:
        print(f"evowatt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if installed:
            interrupts.ignore()
            installed = False
        print(f"evowatt: {interrupts.message()}", file=sys.stderr)
        return interrupts.status
    except BrokenPipeError:
        return closed_stdout()
    except Exception as exc:  # a bug, not the user's input: say so, exit 1 (user errors exit 2)
        if os.environ.get("EVOWATT_DEBUG"):
            raise
        print(
            f"evowatt: internal error: {type(exc).__name__}: {exc}\nThis is a bug in evowatt, not in your "
            "input: please report it with the command you ran (EVOWATT_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        if installed:
            interrupts.restore()


if __name__ == "__main__":
    sys.exit(main())
