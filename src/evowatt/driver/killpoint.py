"""Crash injection for the resume tests: end the process abruptly at a named point.

``EVOWATT_KILL_AT=NAME:N`` (several separated by commas) makes the N-th call of ``killpoint(NAME)`` end
the process with ``os._exit(137)``, the status of a SIGKILL: no ``finally``, no flush, no cleanup, as when a
machine dies. The variable is read once at import, so an unset variable costs one dict check per call.

Points: ``checkpoint-write`` (a checkpoint's temporary file is written, not yet renamed into place),
``mid-training`` (an evaluation has trained and saved its weights, not yet recorded), ``after-record``
(an evaluation is recorded, the generation's checkpoint not yet written), ``after-screen`` (a screening
before the final training is recorded).
"""

from __future__ import annotations

import os

KILLPOINTS = ("checkpoint-write", "mid-training", "after-record", "after-screen")
ENV = "EVOWATT_KILL_AT"


def _parse(spec: str) -> dict[str, int]:
    targets: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, count = item.partition(":")
        if name not in KILLPOINTS or not count.isdigit() or int(count) < 1:
            raise ValueError(f"{ENV}={spec!r}: expected NAME:N with NAME one of {', '.join(KILLPOINTS)}")
        targets[name] = int(count)
    return targets


_TARGETS = _parse(os.environ.get(ENV, ""))
_HITS: dict[str, int] = {}


def killpoint(name: str) -> None:
    """End the process here if ``EVOWATT_KILL_AT`` asks for this point and this is its N-th call."""
    if not _TARGETS:
        return
    _HITS[name] = _HITS.get(name, 0) + 1
    if _TARGETS.get(name) == _HITS[name]:
        os._exit(137)
