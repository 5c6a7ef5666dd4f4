"""What each layer kind (and the learning macro gene) needs from a grammar: checked when a grammar meets a
network config, before any genome is sampled.

A grammar that parses can still describe layers that cannot be built: a convolution without
``out_channels``, a stride of 0, a filter count that is not a number, an unknown layer kind. Every
derivation a start symbol can produce is enumerated (Fast-DENSER grammars have a few dozen per rule) and
checked against the table below, so the problem is reported once, with the rule and its line, instead of
as one invalid individual after another. No torch here: the builder imports these names.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from evowatt.representation.grammar import Grammar, NonTerminal, Parameter, Terminal

ACTIVATIONS = ("relu", "sigmoid", "linear")
PADDINGS = ("same", "valid")
OPTIMISERS = ("gradient_descent", "adam", "rmsprop", "lars")
# at most this many derivations of one rule are enumerated (the builder still checks every genome)
MAX_DERIVATIONS = 4096


@dataclass(frozen=True)
class Number:
    """A numeric field: its type and the allowed range (``high_open``: the maximum is excluded)."""

    kind: str  # int | float
    low: float = -math.inf
    high: float = math.inf
    high_open: bool = False

    def describe(self) -> str:
        if self.high == math.inf:
            return f"{'an integer' if self.kind == 'int' else 'a number'} >= {self.low:g}"
        right = ")" if self.high_open else "]"
        return f"{'an integer' if self.kind == 'int' else 'a number'} in [{self.low:g}, {self.high:g}{right}"

    def allows(self, value: float) -> bool:
        if not math.isfinite(value) or value < self.low:
            return False
        return value < self.high if self.high_open else value <= self.high


@dataclass(frozen=True)
class Choice:
    values: tuple[str, ...]


BOOL = Choice(("True", "False"))
POSITIVE = Number("int", 1)

# kind -> (required fields, optional fields)
LAYER_KINDS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "conv": (
        {"out_channels": POSITIVE, "kernel_size": POSITIVE, "stride": POSITIVE},
        {"padding": Choice(PADDINGS), "act": Choice(ACTIVATIONS), "bias": BOOL},
    ),
    "pool_max": ({"kernel_size": POSITIVE, "stride": POSITIVE}, {"padding": Choice(PADDINGS)}),
    "pool_avg": ({"kernel_size": POSITIVE, "stride": POSITIVE}, {"padding": Choice(PADDINGS)}),
    "batch_norm": ({}, {}),
    "dropout": ({}, {"rate": Number("float", 0, 1, high_open=True)}),
    "fc": ({"out_features": POSITIVE}, {"act": Choice(ACTIVATIONS), "bias": BOOL}),
    # a convolution without bias, its batch norm and activation; out channels = in channels x widen
    "conv_bn": (
        {"kernel_size": POSITIVE, "stride": POSITIVE},
        {
            "widen": Number("float", 0.01),
            "padding": Choice(PADDINGS),
            "act": Choice(ACTIVATIONS),
        },
    ),
    "global_avg_pool": ({}, {}),  # (C, H, W) -> (C,); on a vector, the identity
}

_RATE = Number("float", 0, 1, high_open=True)
LEARNING_FIELDS: dict[str, Any] = {
    "learning": Choice(OPTIMISERS),
    "lr": Number("float", 0, high=math.inf),
    "lr_weights": Number("float", 0),
    "lr_biases": Number("float", 0),
    "momentum": _RATE,
    "weight_decay": Number("float", 0),
    "beta1": _RATE,
    "beta2": _RATE,
    "alpha": Number("float", 0),
    "nesterov": BOOL,
    "batch_size": POSITIVE,
    "early_stop": Number("int", 0),
    "epochs": POSITIVE,
}
# what each optimiser reads without a default
LEARNING_REQUIRED = {
    "gradient_descent": ("lr",),
    "adam": ("lr",),
    "rmsprop": ("lr",),
    "lars": ("lr_weights", "lr_biases"),
}

Derivation = dict[str, tuple[Terminal | Parameter, str]]  # key -> (the symbol that sets it, its rule)


def derivations(grammar: Grammar, start: str, limit: int = MAX_DERIVATIONS) -> list[Derivation]:
    """The distinct key sets (with the symbol that sets each key) a start symbol can derive, up to ``limit``.

    Decoding merges the keys of a derivation in order, a later key replacing an earlier one; so here.
    The grammar is acyclic (``parse_grammar`` refuses recursion), so this terminates.
    """
    memo: dict[str, list[Derivation]] = {}

    def of(rule: str) -> list[Derivation]:
        if rule in memo:
            return memo[rule]
        out: list[Derivation] = []
        for alternative in grammar.rules[rule]:
            parts: list[list[Derivation]] = []
            for symbol in alternative:
                if isinstance(symbol, NonTerminal):
                    parts.append(of(symbol.name))
                elif isinstance(symbol, Terminal):
                    parts.append([{symbol.key: (symbol, rule)}])
                else:
                    parts.append([{symbol.name: (symbol, rule)}])
            for combo in itertools.product(*parts):
                merged: Derivation = {}
                for piece in combo:
                    merged.update(piece)
                out.append(merged)
                if len(out) >= limit:
                    break
            if len(out) >= limit:
                break
        memo[rule] = out
        return out

    return of(start)


def _where(grammar: Grammar, rule: str) -> str:
    line = grammar.lines.get(rule)
    return f"{grammar.source}, line {line}: <{rule}>" if line else f"{grammar.source}: <{rule}>"


def _check_field(
    grammar: Grammar, key: str, spec: Any, symbol: Terminal | Parameter, rule: str
) -> str | None:
    where = _where(grammar, rule)
    if isinstance(spec, Choice):
        if not isinstance(symbol, Terminal):
            allowed = ", ".join(spec.values)
            return f"{where}: '{key}' must be a terminal {key}:VALUE with VALUE one of {allowed}"
        if symbol.value not in spec.values:
            return f"{where}: {key}:{symbol.value} is not allowed; {key} is one of {', '.join(spec.values)}"
        return None
    if isinstance(symbol, Terminal):
        try:
            value = float(int(symbol.value)) if spec.kind == "int" else float(symbol.value)
        except ValueError:
            return f"{where}: {key}:{symbol.value} is not {spec.describe()}"
        if not spec.allows(value):
            return f"{where}: {key}:{symbol.value} is out of range; {key} must be {spec.describe()}"
        return None
    if symbol.count != 1:
        return f"{where}: parameter '{key}' has count {symbol.count}; {key} takes one value (count 1)"
    if spec.kind == "int" and symbol.type != "int":
        return f"{where}: parameter '{key}' is {symbol.type}; {key} must be int"
    if symbol.low is None or symbol.high is None:
        return f"{where}: parameter '{key}' has a dynamic bound '_'; only partition_point may have one"
    if not (spec.allows(float(symbol.low)) and spec.allows(float(symbol.high))):
        return (
            f"{where}: parameter '{key}' ranges over [{symbol.low:g}, {symbol.high:g}]; "
            f"{key} must be {spec.describe()}"
        )
    return None


def _dynamic_bounds(grammar: Grammar, derivation: Derivation) -> list[str]:
    """A ``_`` bound has a value only for the partition point: anywhere else, sampling cannot proceed."""
    text = "has a dynamic bound '_'; only partition_point may have one"
    return [
        f"{_where(grammar, rule)}: parameter '{key}' {text}"
        for key, (symbol, rule) in derivation.items()
        if isinstance(symbol, Parameter) and (symbol.low is None or symbol.high is None)
    ]


def check_layer_rule(grammar: Grammar, start: str) -> list[str]:
    """Problems of the layers a module start symbol derives (one line each, naming rule and line)."""
    problems: list[str] = []
    for derivation in derivations(grammar, start):
        problems += _dynamic_bounds(grammar, derivation)
        found = derivation.get("layer")
        if found is None:
            problems.append(
                f"{_where(grammar, start)}: a derivation has no layer:KIND terminal; "
                f"layer kinds: {', '.join(LAYER_KINDS)}"
            )
            continue
        symbol, rule = found
        kind = symbol.value if isinstance(symbol, Terminal) else None
        if kind not in LAYER_KINDS:
            problems.append(
                f"{_where(grammar, rule)}: unknown layer kind '{kind or symbol}'; "
                f"layer kinds: {', '.join(LAYER_KINDS)}"
            )
            continue
        required, optional = LAYER_KINDS[kind]
        missing = [k for k in required if k not in derivation]
        if missing:
            problems.append(
                f"{_where(grammar, rule)}: layer:{kind} lacks {', '.join(missing)}; a {kind} layer needs "
                f"{', '.join(required)} (e.g. [{missing[0]},int,1,1,8])"
            )
        for key, spec in {**required, **optional}.items():
            if key in derivation:
                problem = _check_field(grammar, key, spec, *derivation[key])
                if problem:
                    problems.append(problem)
    return _unique(problems)


def check_output_rule(grammar: Grammar, start: str) -> list[str]:
    """The output layer: its width is the class count and its softmax is dropped; only bias is read."""
    problems = []
    for derivation in derivations(grammar, start):
        problems += _dynamic_bounds(grammar, derivation)
        if "bias" in derivation:
            problem = _check_field(grammar, "bias", BOOL, *derivation["bias"])
            if problem:
                problems.append(problem)
    return _unique(problems)


def check_learning_rule(grammar: Grammar, start: str) -> list[str]:
    """The learning macro gene: a known optimiser, with the rates it needs, in range."""
    problems = []
    for derivation in derivations(grammar, start):
        problems += _dynamic_bounds(grammar, derivation)
        for key, spec in LEARNING_FIELDS.items():
            if key in derivation:
                problem = _check_field(grammar, key, spec, *derivation[key])
                if problem:
                    problems.append(problem)
        found = derivation.get("learning")
        kind = found[0].value if found and isinstance(found[0], Terminal) else "adam"
        rule = found[1] if found else start
        missing = [k for k in LEARNING_REQUIRED.get(kind, ()) if k not in derivation]
        if missing:
            problems.append(
                f"{_where(grammar, rule)}: learning:{kind} lacks {', '.join(missing)} "
                f"(e.g. [{missing[0]},float,1,0.0001,0.01])"
            )
    return _unique(problems)


def _dynamic(symbol: object) -> bool:
    return isinstance(symbol, Parameter) and (symbol.low is None or symbol.high is None)


def check_dynamic_bounds(grammar: Grammar, start: str, allowed: tuple[str, ...] = ()) -> list[str]:
    """A '_' bound gets its value only where evowatt supplies one (partition_point, in a macro rule):
    anywhere else sampling could never draw the parameter. Every rule ``start`` reaches is checked."""
    problems, seen, todo = [], set(), [start]
    while todo:
        rule = todo.pop()
        if rule in seen or rule not in grammar.rules:
            continue
        seen.add(rule)
        for alternative in grammar.rules[rule]:
            for symbol in alternative:
                if isinstance(symbol, NonTerminal):
                    todo.append(symbol.name)
                elif _dynamic(symbol) and symbol.name not in allowed:
                    where = f"only {', '.join(allowed)} may have one here" if allowed else "none may here"
                    problems.append(
                        f"{_where(grammar, rule)}: parameter '{symbol.name}' has a dynamic bound '_', "
                        f"which evowatt fills only for partition_point in a macro rule ({where})"
                    )
    return _unique(problems)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
