"""Reading a run configuration: the YAML or JSON file, its ``--set a.b=value`` and ``--seed`` overrides,
and validation into ``RunConfig`` with messages that name the key and what is allowed.

Unknown keys are errors, so a typo never silently falls back to a default; the resolved configuration is
written into the run directory. Its own module because reading and the wording of errors (evowatt's, not
pydantic's; the ``--set`` that caused one; a moved key's new place) are a job apart from the sections'
rules, and a caller that needs only a section type does not import them.
"""

from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from evowatt.config.moved import moved_key_lines, upgrade_recorded
from evowatt.config.schema import RunConfig
from evowatt.config.training import BudgetConfig
from evowatt.errors import EvowattError, require_file


def _override_for(loc: tuple, overrides: list[str]) -> str | None:
    """The --set text that put a value at ``loc`` (the last one wins, as when applying them)."""
    path = [str(p) for p in loc]
    found = None
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        parts = [p for p in key.split(".") if p]
        if parts and (path[: len(parts)] == parts or parts[: len(path)] == path):
            found = text
    return found


def _members(annotation: Any) -> list[Any]:
    """The types of a union (``X | None`` -> [X]), or the annotation alone."""
    if get_origin(annotation) in (Union, UnionType):
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def _type_at(loc: tuple) -> Any:
    """The annotation of the config value at ``loc`` (None when the path leaves the config's models)."""
    node: Any = RunConfig
    for part in loc:
        for member in _members(node):
            origin = get_origin(member)
            if isinstance(member, type) and issubclass(member, BaseModel) and isinstance(part, str):
                field = next((f for n, f in member.model_fields.items() if part in (n, f.alias)), None)
                if field is not None:
                    node = field.annotation
                    break
            elif origin in (list, tuple) and isinstance(part, int):
                node = get_args(member)[0]
                break
            elif origin is dict and isinstance(part, str):
                node = get_args(member)[1]
                break
        else:
            return None
    return node


def _did_you_mean(loc: tuple) -> str:
    """A suggestion ("; did you mean 'training.budget'?") for a misspelt key at any depth, or nothing."""
    sections = [m for m in _members(_type_at(loc[:-1])) if isinstance(m, type) and issubclass(m, BaseModel)]
    known = sorted({f.alias or n for m in sections for n, f in m.model_fields.items()})
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f"; did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?" if close else ""


# what a number means where a budget is given, so a wrong type reads as evowatt's, not pydantic's
_NUMBER_OF = {
    "seconds": "a number of seconds",
    "time_limit": "a number of seconds",
    "steps": "a whole number of optimiser steps",
}


def _wrong_type(item: Any) -> str | None:
    """evowatt's wording for a value of the wrong type, e.g. "expected a number of seconds, got 'abc'"."""
    kind, loc, got = item["type"], item["loc"], item.get("input")
    last = loc[-1] if loc else None
    if kind in ("float_parsing", "float_type"):
        return f"expected {_NUMBER_OF.get(str(last), 'a number')}, got {got!r}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected {_NUMBER_OF.get(str(last), 'a whole number')}, got {got!r}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false, got {got!r}"
    if kind in ("model_type", "dict_type"):
        if BudgetConfig in _members(_type_at(loc)):
            return (
                f"expected a budget in seconds or optimiser steps, e.g. {{seconds: 30}} or {{steps: 200}}, "
                f"got {got!r}"
            )
        return f"expected a section of keys (key: value lines), got {got!r}"
    return None


def _format_errors(error: ValidationError, source: str, overrides: list[str] | None = None) -> str:
    lines = []
    from_file = False
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        hint = ""
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling and section)"
            hint = _did_you_mean(item["loc"])
        elif item["type"] == "missing":
            message = "required key is missing"
        elif (wrong := _wrong_type(item)) is not None:
            message = wrong
        elif "input" in item and item["type"] not in ("model_type",):
            message += f" (got {item['input']!r})"
        given = _override_for(item["loc"], overrides or [])
        if given is not None:
            message += f"; given by --set {given}"
        else:
            from_file = True
        lines.append(f"  {where}: {message}{hint}")
    head = (
        f"invalid configuration in {source}:" if from_file else f"invalid --set value (applied to {source}):"
    )
    return "\n".join([head, *lines])


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value); the value is read as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise EvowattError(f"--set {text!r}: expected key=value, e.g. --set search.generations=3")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise EvowattError(f"--set {text!r}: the key is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise EvowattError(f"--set {text!r}: '{part}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    require_file(path, "config file", "give a YAML or JSON config file (see examples/digits.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise EvowattError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise EvowattError(
            f"config file {path} must hold a mapping of sections (dataset, network, search, ...)"
        )
    return data


def _refuse_moved_keys(data: dict[str, Any], source: str, overrides: list[str] | None) -> None:
    """One message naming the new place of every moved key that ``data`` or an override still uses."""
    parsed = [(text, *parse_override(text)) for text in overrides or []]
    lines, from_file = moved_key_lines(data, parsed)
    if lines:
        head = (
            f"invalid configuration in {source}:"
            if from_file
            else f"invalid --set value (applied to {source}):"
        )
        raise EvowattError("\n".join([head, *(f"  {line}" for line in lines)]))


def validate_config(
    data: dict[str, Any],
    source: str = "config",
    overrides: list[str] | None = None,
    *,
    recorded: bool = False,
) -> RunConfig:
    """``overrides``: the --set texts applied to ``data``, so an error they caused names them.

    A key that moved is refused with its new place, unless ``recorded``: the config a run wrote, whose
    moved keys are read at their new places (an override naming an old place is still refused)."""
    if recorded:
        _refuse_moved_keys({}, source, overrides)  # what the run recorded moves; what is asked now must not
        data = upgrade_recorded(copy.deepcopy(data))
    _refuse_moved_keys(data, source, overrides)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise EvowattError(_format_errors(exc, source, overrides)) from None


def load_config(
    path: str | Path,
    overrides: list[str] | None = None,
    seed: int | None = None,
    *,
    recorded: bool = False,
) -> RunConfig:
    """Read, override and validate; grammar and profile paths are resolved relative to the config file.
    ``recorded``: the file is a run's config.yaml, whose moved keys are read at their new places."""
    data = read_config_file(path)
    if recorded:
        _refuse_moved_keys({}, str(path), overrides)
        upgrade_recorded(data)
    apply_overrides(data, overrides or [])
    if seed is not None:
        data["seed"] = seed
    grammar = data.get("grammar")
    if isinstance(grammar, str) and not Path(grammar).is_absolute():
        candidate = Path(path).parent / grammar
        if candidate.exists():
            data["grammar"] = str(candidate.resolve())
    energy = data.get("energy")
    profile = energy.get("profile") if isinstance(energy, dict) else None
    if isinstance(profile, str) and not Path(profile).is_absolute():  # like the grammar: beside the config
        candidate = Path(path).parent / profile
        if candidate.exists():
            energy["profile"] = str(candidate.resolve())
    return validate_config(data, source=str(path), overrides=overrides)
