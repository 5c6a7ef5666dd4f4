"""Class 10 of issue 14: examples/digits.yaml says a left-out key takes the value shown, except where its
comment says "(default: X)". Both are checked against the config model's real defaults, so they cannot
drift; and every key of the model is shown."""

from __future__ import annotations

import re
from typing import Any

import yaml

from evowatt.config.schema import RunConfig
from evowatt.driver.resume import flatten
from tests.conftest import EXAMPLES

TEXT = (EXAMPLES / "digits.yaml").read_text(encoding="utf-8")
DATA = yaml.safe_load(TEXT)
# the model's defaults (the network has none: it is the one required section)
DEFAULTS = RunConfig.model_validate({"network": DATA["network"]}).to_dict()
# alternatives shown in comments rather than as keys
SHOWN_IN_COMMENTS = {"fitness.terms", "training.budget.steps"}
_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_]\w*):(?P<value>[^#]*?)\s*(#\s*(?P<comment>.*))?$")


def _comments() -> dict[str, str]:
    """Dotted key -> the comment on its line, for the block-style mapping lines of the file."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in TEXT.splitlines():
        if line.lstrip().startswith(("#", "- ")) or not line.strip():
            continue
        match = _LINE.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        out[".".join(k for _, k in stack)] = match["comment"] or ""
    return out


def _default_of(dotted: str) -> Any:
    node: Any = DEFAULTS
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else None
    return node


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return value


def test_every_value_shown_is_the_default_or_says_what_the_default_is():
    comments = _comments()
    shown, defaults = flatten(DATA), flatten(DEFAULTS)
    wrong = []
    for key, value in shown.items():
        if key.startswith("network.modules"):
            continue  # the one required section: no defaults
        if key in defaults and defaults[key] == value:
            continue
        # the nearest line of the file that sets this key (a flow mapping sets its leaves on one line)
        parts = key.split(".")
        line_key = next(
            (".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in comments), None
        )
        said = re.search(r"\(default: ([^)]*\)?)\)", comments.get(line_key or "", ""))
        if said is None:
            wrong.append(f"{key}: shows {value!r}, the default is {defaults.get(key, _default_of(key))!r}")
            continue
        claimed = yaml.safe_load(said.group(1))
        real = _without_none(_default_of(line_key))
        if claimed != real:
            wrong.append(f"{line_key}: says (default: {said.group(1)}), the default is {real!r}")
    assert not wrong, "examples/digits.yaml disagrees with the config model:\n  " + "\n  ".join(wrong)


def test_every_key_of_the_model_is_shown():
    shown = flatten(DATA)
    missing = [
        key
        for key in flatten(DEFAULTS)
        if key not in shown
        and not key.startswith("network.modules")
        and not any(key == s or key.startswith(s + ".") for s in SHOWN_IN_COMMENTS)
        and not any(k.startswith(key + ".") for k in shown)  # a default of null shown as a section
    ]
    assert not missing, f"examples/digits.yaml does not show: {', '.join(missing)}"
    for alternative in SHOWN_IN_COMMENTS:
        assert alternative.split(".")[-1] in TEXT


def test_the_comment_parser_sees_the_marked_lines():
    comments = _comments()
    assert "(default: 10)" in comments["search.generations"]
    assert "(default: 5)" in comments["energy.min_repeats"]
    assert comments["energy.estimate.pj_fp_add"].startswith("pJ")
