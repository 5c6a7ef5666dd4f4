"""Errors a user can cause. The CLI turns each into one message and exit code 2, never a traceback."""

import re


class EvowattError(Exception):
    """A problem with the user's input (config, grammar, dataset, meter, checkpoint) that names its fix."""


def require_file(path: object, what: str, fix: str) -> None:
    """Refuse a path that is not a readable regular file, saying what it is instead (missing, a directory,
    something else), what was expected and ``fix``."""
    import os
    from pathlib import Path

    p = Path(str(path)).expanduser()
    if p.is_file():
        if not os.access(p, os.R_OK):
            raise EvowattError(f"{what} {path} cannot be read (permission denied); {fix}")
        return
    if p.is_dir():
        raise EvowattError(f"{what} {path} is a directory, not a file; {fix}")
    if p.exists():
        raise EvowattError(f"{what} {path} is not a regular file; {fix}")
    raise EvowattError(f"{what} {path} not found (it does not exist); {fix}")


def error_gist(exc: BaseException) -> str:
    """The informative line of an error: TorchScript puts the real cause after its last `XxxError:`."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    marks = [i for i, line in enumerate(lines) if re.match(r"^\w*Error:", line)]
    if not marks:
        return lines[0]
    i = marks[-1]
    head, _, rest = lines[i].partition(":")
    return f"{head}: {rest.strip() or (lines[i + 1] if i + 1 < len(lines) else '')}".strip()
