"""Config keys that moved: where each went, and why (the page that holds its measurement).

A config a user writes must name the new place (``moved_key_lines`` says which old ones it still uses); a
config a run recorded before the move is read with each old key at its new place (``upgrade_recorded``),
so an old run still resumes, shows and exports.
"""

from __future__ import annotations

from typing import Any

# old dotted path -> (new dotted path, the docs section with the measurement that moved it)
MOVED_KEYS: dict[str, tuple[str, str]] = {
    "training.resume_optimiser": ("experimental.resume_optimiser", "docs/experimental.md#resumed-optimiser"),
    "training.final_training.label_smoothing": (
        "experimental.final_training.label_smoothing",
        "docs/experimental.md#label-smoothing",
    ),
    "training.final_training.width": (
        "experimental.final_training.width",
        "docs/experimental.md#search-narrow-train-wide",
    ),
    "training.final_training.others_width": (
        "experimental.final_training.others_width",
        "docs/experimental.md#search-narrow-train-wide",
    ),
    "training.final_training.screen": (
        "experimental.final_training.screen",
        "docs/experimental.md#a-screening-before-the-final-training",
    ),
}


def _has_path(data: Any, path: list[str]) -> bool:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def _sets(parts: list[str], value: Any, old: list[str]) -> bool:
    """Whether setting ``parts`` to ``value`` puts a value at ``old`` (below it, or a section holding it)."""
    if parts[: len(old)] == old:
        return True
    return old[: len(parts)] == parts and _has_path(value, old[len(parts) :])


def moved_key_lines(
    data: dict[str, Any], overrides: list[tuple[str, list[str], Any]]
) -> tuple[list[str], bool]:
    """A line for each moved key that ``data`` or an override (text, key parts, value) uses at its old
    place, e.g. "training.resume_optimiser moved to experimental.resume_optimiser (no measured gain; see
    docs/experimental.md#resumed-optimiser)", and whether any of them came from ``data`` itself."""
    lines = []
    from_data = False
    for old, (new, page) in MOVED_KEYS.items():
        path = old.split(".")
        given = [text for text, parts, value in overrides if _sets(parts, value, path)]
        if given or _has_path(data, path):
            from_data = from_data or not given
            by = f"; given by --set {given[-1]}" if given else ""
            lines.append(f"{old} moved to {new} (no measured gain; see {page}){by}")
    return lines, from_data


def upgrade_recorded(data: dict[str, Any]) -> dict[str, Any]:
    """A config a run recorded before keys moved, with each one at its new place (``data`` itself,
    changed). A value already at the new place wins."""
    for old, (new, _page) in MOVED_KEYS.items():
        *parents, last = old.split(".")
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            continue
        value = node.pop(last)
        *parents, last = new.split(".")
        node = data
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node.setdefault(last, value)
    return data
