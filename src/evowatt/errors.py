"""Errors a user can cause. The CLI turns each into one message and exit code 2, never a traceback."""


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
