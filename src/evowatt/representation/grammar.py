"""Grammar text -> Grammar, and DSGE sampling and mutation of one derivation.

The text format is Fast-DENSER's (ENERGIZE reads the same files): one rule per line,
``<name> ::= alt | alt``, each alternative a sequence of non-terminals ``<x>``, terminals
``key:value`` and parameters ``[name,int|float,count,min,max]``. A ``_`` bound is dynamic:
its value is supplied when sampling (e.g. the partition point's maximum is the layer count - 1).

A derivation is a tree: each node holds the expansion chosen for one non-terminal, the values of
that expansion's parameters, and the derivations of its non-terminals. Randomness comes from a
``numpy.random.Generator`` the caller owns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evowatt.errors import EvowattError, require_file

GRAMMAR_DIR = Path(__file__).parent / "grammars"

_RULE = re.compile(r"^<([A-Za-z_][\w-]*)>\s*::=\s*(.*)$")
_NONTERMINAL = re.compile(r"^<([A-Za-z_][\w-]*)>$")
_PARAMETER = re.compile(r"^\[([^\]]*)\]$")
_TERMINAL = re.compile(r"^([A-Za-z_][\w-]*):(\S+)$")

Value = int | float
Bounds = dict[str, tuple[Value, Value]]


@dataclass(frozen=True)
class NonTerminal:
    name: str


@dataclass(frozen=True)
class Terminal:
    key: str
    value: str


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str  # "int" or "float"
    count: int
    low: Value | None  # None: dynamic bound, supplied at sampling time
    high: Value | None

    def bounds(self, dynamic: Bounds | None) -> tuple[Value, Value]:
        low, high = self.low, self.high
        if low is None or high is None:
            if dynamic is None or self.name not in dynamic:
                raise EvowattError(
                    f"grammar parameter '{self.name}' has a dynamic bound '_' but no value was given for it"
                )
            d_low, d_high = dynamic[self.name]
            low = d_low if low is None else low
            high = d_high if high is None else high
        return low, high

    def sample(self, rng: np.random.Generator, dynamic: Bounds | None) -> list[Value]:
        low, high = self.bounds(dynamic)
        if self.type == "int":
            return [int(v) for v in rng.integers(int(low), int(high) + 1, size=self.count)]
        return [float(v) for v in rng.uniform(float(low), float(high), size=self.count)]


Symbol = NonTerminal | Terminal | Parameter


@dataclass(frozen=True)
class Grammar:
    """Rules by non-terminal name, in file order; each rule a list of alternatives."""

    rules: dict[str, list[tuple[Symbol, ...]]]
    source: str = "<text>"
    lines: dict[str, int] = field(default_factory=dict, compare=False)  # rule -> line in the source

    def __contains__(self, name: str) -> bool:
        return name in self.rules

    # --- sampling -------------------------------------------------------------------------------
    def sample(self, start: str, rng: np.random.Generator, dynamic: Bounds | None = None) -> Node:
        """A random derivation of ``start``; every alternative equally likely."""
        alternatives = self._rule(start)
        choice = int(rng.integers(len(alternatives)))
        return self._expand(start, choice, rng, dynamic)

    def _expand(self, name: str, choice: int, rng: np.random.Generator, dynamic: Bounds | None) -> Node:
        params: dict[str, list[Value]] = {}
        children: list[Node] = []
        for symbol in self.rules[name][choice]:
            if isinstance(symbol, Parameter):
                params[symbol.name] = symbol.sample(rng, dynamic)
            elif isinstance(symbol, NonTerminal):
                children.append(self.sample(symbol.name, rng, dynamic))
        return Node(name, choice, params, children)

    def _rule(self, name: str) -> list[tuple[Symbol, ...]]:
        if name not in self.rules:
            raise EvowattError(f"{self.source}: no rule <{name}>; rules are {', '.join(self.rules)}")
        return self.rules[name]

    # --- decoding -------------------------------------------------------------------------------
    def decode(self, node: Node) -> dict[str, Any]:
        """The phenotype of a derivation: every terminal and parameter as key -> value.

        A parameter of count 1 decodes to its value; a larger count to the list of values. Terminal
        values ``True``/``False`` decode to booleans and numbers to numbers.
        """
        out: dict[str, Any] = {}
        self._decode_into(node, out)
        return out

    def _decode_into(self, node: Node, out: dict[str, Any]) -> None:
        children = iter(node.children)
        for symbol in self.rules[node.symbol][node.choice]:
            if isinstance(symbol, Terminal):
                out[symbol.key] = _terminal_value(symbol.value)
            elif isinstance(symbol, Parameter):
                values = node.params[symbol.name]
                out[symbol.name] = values[0] if symbol.count == 1 else list(values)
            else:
                self._decode_into(next(children), out)

    # --- mutation -------------------------------------------------------------------------------
    def mutate(self, node: Node, rng: np.random.Generator, dynamic: Bounds | None = None) -> Node:
        """DSGE mutation: change one expansion (its subtree re-sampled) or resample one parameter.

        Candidates are every node with more than one alternative and every parameter value, drawn
        uniformly. A derivation with neither is returned unchanged (a copy).
        """
        sites: list[tuple[tuple[int, ...], str | None, int]] = []
        self._collect_sites(node, (), sites)
        if not sites:
            return node.copy()
        path, param, index = sites[int(rng.integers(len(sites)))]
        new = node.copy()
        target = new.at(path)
        if param is None:
            alternatives = self.rules[target.symbol]
            choice = int(rng.integers(len(alternatives) - 1))
            choice = choice + 1 if choice >= target.choice else choice
            replacement = self._expand(target.symbol, choice, rng, dynamic)
            return new.replace(path, replacement)
        symbol = self._parameter(target.symbol, target.choice, param)
        target.params[param][index] = symbol.sample(rng, dynamic)[0]
        return new

    def _collect_sites(self, node: Node, path: tuple[int, ...], sites: list) -> None:
        if len(self.rules[node.symbol]) > 1:
            sites.append((path, None, 0))
        for name, values in node.params.items():
            for i in range(len(values)):
                sites.append((path, name, i))
        for i, child in enumerate(node.children):
            self._collect_sites(child, (*path, i), sites)

    def _parameter(self, rule: str, choice: int, name: str) -> Parameter:
        for symbol in self.rules[rule][choice]:
            if isinstance(symbol, Parameter) and symbol.name == name:
                return symbol
        raise KeyError(f"<{rule}> alternative {choice} has no parameter {name}")

    def resample_parameter(self, node: Node, name: str, rng: np.random.Generator, dynamic: Bounds) -> Node:
        """A copy of ``node`` with every parameter called ``name`` redrawn within ``dynamic`` bounds."""
        new = node.copy()
        for sub in new.walk():
            if name in sub.params:
                sub.params[name] = self._parameter(sub.symbol, sub.choice, name).sample(rng, dynamic)
        return new

    def clamp_parameter(self, node: Node, name: str, dynamic: Bounds) -> Node:
        """A copy of ``node`` with every parameter ``name`` clamped into its (dynamic) bounds."""
        new = node.copy()
        for sub in new.walk():
            if name in sub.params:
                low, high = self._parameter(sub.symbol, sub.choice, name).bounds(dynamic)
                sub.params[name] = [min(max(v, low), high) for v in sub.params[name]]
        return new

    def validate(self, node: Node, dynamic: Bounds | None = None) -> None:
        """Raise ValueError when a derivation does not fit this grammar (e.g. a hand-edited genome)."""
        alternatives = self.rules.get(node.symbol)
        if alternatives is None or not 0 <= node.choice < len(alternatives):
            raise ValueError(f"<{node.symbol}> has no alternative {node.choice}")
        expected = [s for s in alternatives[node.choice] if isinstance(s, NonTerminal)]
        if [c.symbol for c in node.children] != [s.name for s in expected]:
            raise ValueError(f"<{node.symbol}> alternative {node.choice}: children do not match the rule")
        for symbol in alternatives[node.choice]:
            if isinstance(symbol, Parameter):
                values = node.params.get(symbol.name)
                if values is None or len(values) != symbol.count:
                    raise ValueError(f"<{node.symbol}>: parameter {symbol.name} missing or of wrong count")
                if (symbol.low is None or symbol.high is None) and symbol.name not in (dynamic or {}):
                    continue
                low, high = symbol.bounds(dynamic)
                if any(not low <= v <= high for v in values):
                    raise ValueError(f"<{node.symbol}>: {symbol.name}={values} outside [{low}, {high}]")
        for child in node.children:
            self.validate(child, dynamic)


@dataclass
class Node:
    """One expansion of a non-terminal in a derivation tree."""

    symbol: str
    choice: int
    params: dict[str, list[Value]] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)
    # a hidden layer's stable identity across mutations (weight inheritance matches layers by it);
    # None on derivations that are not layers, and on new layers until their genome numbers them;
    # not part of equality: two nodes are equal when their derivations are
    id: int | None = field(default=None, compare=False)

    def copy(self) -> Node:
        return Node(
            self.symbol,
            self.choice,
            {k: list(v) for k, v in self.params.items()},
            [c.copy() for c in self.children],
            self.id,
        )

    def same_derivation(self, other: Node) -> bool:
        """Equal as derivations, whatever the ids (a mutation that changed nothing keeps the id)."""
        return self.to_json(ids=False) == other.to_json(ids=False)

    def at(self, path: tuple[int, ...]) -> Node:
        node = self
        for i in path:
            node = node.children[i]
        return node

    def replace(self, path: tuple[int, ...], new: Node) -> Node:
        if not path:
            return new
        self.at(path[:-1]).children[path[-1]] = new
        return self

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def to_json(self, ids: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {"symbol": self.symbol, "choice": self.choice}
        if self.params:
            data["params"] = {k: list(v) for k, v in self.params.items()}
        if self.children:
            data["children"] = [c.to_json(ids) for c in self.children]
        if ids and self.id is not None:
            data["id"] = self.id
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Node:
        return cls(
            symbol=str(data["symbol"]),
            choice=int(data["choice"]),
            params={k: list(v) for k, v in data.get("params", {}).items()},
            children=[cls.from_json(c) for c in data.get("children", [])],
            id=int(data["id"]) if data.get("id") is not None else None,
        )


def _terminal_value(text: str) -> Any:
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _number(text: str, kind: str) -> Value | None:
    if text == "_":
        return None
    return int(text) if kind == "int" else float(text)


def parse_grammar(text: str, source: str = "<text>") -> Grammar:
    """Parse grammar text; a malformed line raises EvowattError naming the line and the problem."""
    rules: dict[str, list[tuple[Symbol, ...]]] = {}
    lines: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}, line {number}"
        match = _RULE.match(line)
        if not match:
            raise EvowattError(f"{where}: expected '<name> ::= alternative | ...', got: {line!r}")
        name, body = match.groups()
        if name in rules:
            raise EvowattError(f"{where}: rule <{name}> is defined twice (first on line {lines[name]})")
        alternatives = []
        for alt_text in body.split("|"):
            tokens = alt_text.split()
            if not tokens:
                raise EvowattError(f"{where}: rule <{name}> has an empty alternative")
            alternatives.append(tuple(_parse_symbol(token, where) for token in tokens))
        rules[name] = alternatives
        lines[name] = number
    if not rules:
        raise EvowattError(f"{source}: the grammar has no rules")
    for name, alternatives in rules.items():
        for alternative in alternatives:
            for symbol in alternative:
                if isinstance(symbol, NonTerminal) and symbol.name not in rules:
                    raise EvowattError(
                        f"{source}, line {lines[name]}: <{name}> uses <{symbol.name}>, which has no rule"
                    )
    _check_no_left_recursion(rules, lines, source)
    _check_no_cycle(rules, lines, source)
    return Grammar(rules, source, lines)


def _parse_symbol(token: str, where: str) -> Symbol:
    if match := _NONTERMINAL.match(token):
        return NonTerminal(match.group(1))
    if match := _PARAMETER.match(token):
        parts = [p.strip() for p in match.group(1).split(",")]
        if len(parts) != 5:
            raise EvowattError(f"{where}: parameter {token} must be [name,int|float,count,min,max]")
        name, kind, count, low, high = parts
        if kind not in ("int", "float"):
            raise EvowattError(f"{where}: parameter {token} has type '{kind}'; allowed: int, float")
        try:
            n = int(count)
            lo, hi = _number(low, kind), _number(high, kind)
        except ValueError:
            raise EvowattError(
                f"{where}: parameter {token}: count must be an integer, bounds {kind} or _"
            ) from None
        if n < 1:
            raise EvowattError(f"{where}: parameter {token}: count must be at least 1")
        if lo is not None and hi is not None and lo > hi:
            raise EvowattError(f"{where}: parameter {token}: minimum {lo} is above maximum {hi}")
        return Parameter(name, kind, n, lo, hi)
    if match := _TERMINAL.match(token):
        return Terminal(match.group(1), match.group(2))
    raise EvowattError(
        f"{where}: cannot read {token!r}: expected <name>, key:value or [name,type,count,min,max]"
    )


def _check_no_left_recursion(rules: dict, lines: dict, source: str) -> None:
    """Reject rules that can only expand forever: sampling must terminate."""
    finite: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, alternatives in rules.items():
            if name in finite:
                continue
            if any(
                all(not isinstance(s, NonTerminal) or s.name in finite for s in alt) for alt in alternatives
            ):
                finite.add(name)
                changed = True
    for name in rules:
        if name not in finite:
            raise EvowattError(
                f"{source}, line {lines[name]}: <{name}> never finishes expanding (it recurses)"
            )


def _check_no_cycle(rules: dict, lines: dict, source: str) -> None:
    """Refuse recursion: a derivation is one layer (or macro gene), so it must be bounded; a module's layer
    count comes from network_structure, not from a recursive rule. Sampling and mutation recurse per rule."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for alternative in rules[name]:
            for symbol in alternative:
                if not isinstance(symbol, NonTerminal):
                    continue
                if state.get(symbol.name) == 1:
                    cycle = path[path.index(symbol.name) :] + [symbol.name]
                    raise EvowattError(
                        f"{source}, line {lines[name]}: <{name}> refers back to <{symbol.name}>, so its "
                        f"derivations recurse ({' -> '.join(f'<{c}>' for c in cycle)}); evowatt derives "
                        "one layer per rule expansion, so rules must not refer back to themselves (a "
                        "module's layer count comes from network_structure)"
                    )
                if symbol.name not in state:
                    visit(symbol.name, [*path, symbol.name])
        state[name] = 2

    for name in rules:
        if name not in state:
            visit(name, [name])


def load_grammar(spec: str | Path) -> Grammar:
    """A grammar from a file path, or a grammar shipped with evowatt by name (e.g. ``cnn``)."""
    path = Path(spec)
    if not path.exists() and (GRAMMAR_DIR / f"{spec}.grammar").exists():
        path = GRAMMAR_DIR / f"{spec}.grammar"
    shipped = ", ".join(sorted(p.stem for p in GRAMMAR_DIR.glob("*.grammar")))
    require_file(path, "grammar file", f"give a path to a grammar file or one of: {shipped}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvowattError(f"cannot read grammar file {path}: {exc}") from None
    return parse_grammar(text, source=str(path))
