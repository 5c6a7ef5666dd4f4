"""The console every command prints to and how a figure reads in a table or a progress line: shared by
the progress displays, the show tables and the commands."""

from __future__ import annotations

from typing import Any

from evowatt.console import OutputConsole

console = OutputConsole()


def figure_text(value: Any, digits: int = 4) -> str:
    """A figure as the tables print it: "-" for none, floats to ``digits`` places, counts with commas."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def metric_value(row: dict[str, Any] | None, name: str) -> Any:
    """A metric's value from an evaluation row (stored as ``{"value": ..., "method": ...}`` or bare)."""
    if not row:
        return None
    metric = (row.get("metrics") or {}).get(name)
    return metric.get("value") if isinstance(metric, dict) else metric
