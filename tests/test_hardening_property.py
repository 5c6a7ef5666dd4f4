"""Property tests for issue 14: whatever text or data a user gives the loaders, they load it or raise
evowatt's own error (EvowattError, exit 2) — never another exception. And a grammar the loader accepts
for a network never makes the builder raise anything but an invalid-network reason."""

from __future__ import annotations

import contextlib
import copy
import json
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evowatt.config.energize import import_energize_config
from evowatt.config.load import validate_config
from evowatt.config.network import NetworkConfig
from evowatt.errors import EvowattError
from evowatt.nn.builder import InvalidNetwork, plan_network
from evowatt.representation.genome import check_network_against_grammar, random_genome
from evowatt.representation.grammar import parse_grammar
from evowatt.search.es import check_es_state
from evowatt.search.state import CheckpointError
from tests.conftest import COMPAT
from tests.hardening import TINY_RUN

SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
RULES = ["features", "classification", "softmax", "learning", "conv", "act", "pad"]
KEYS = ["layer", "out_channels", "kernel_size", "stride", "padding", "act", "bias", "rate", "out_features"]
KEYS += ["learning", "lr", "batch_size", "early_stop", "momentum", "beta1"]
VALUES = ["conv", "fc", "pool_max", "pool_avg", "dropout", "batch_norm", "deconv", "relu", "tanh", "same"]
VALUES += ["valid", "True", "False", "yes", "0", "1", "3", "-2", "0.5", "1.5", "many", "adam", "sgdx", "_"]


def _parameter():
    number = st.sampled_from(["0", "1", "2", "5", "-3", "0.5", "_", "x", "1e3"])
    return st.builds(
        lambda name, kind, count, low, high: f"[{name},{kind},{count},{low},{high}]",
        st.sampled_from(KEYS),
        st.sampled_from(["int", "float", "str"]),
        st.sampled_from(["1", "2", "0", "-1"]),
        number,
        number,
    )


TOKEN = st.one_of(
    st.builds(lambda r: f"<{r}>", st.sampled_from(RULES)),
    st.builds(lambda k, v: f"{k}:{v}", st.sampled_from(KEYS), st.sampled_from(VALUES)),
    _parameter(),
    st.text(alphabet=string.printable, max_size=6),
)
ALTERNATIVE = st.lists(TOKEN, min_size=0, max_size=6).map(" ".join)
RULE = st.builds(
    lambda name, alts: f"<{name}> ::= " + " | ".join(alts),
    st.sampled_from(RULES),
    st.lists(ALTERNATIVE, min_size=1, max_size=3),
)
RANDOM_TEXT = st.lists(st.one_of(RULE, RULE, RULE, st.text(max_size=20)), min_size=0, max_size=8).map(
    "\n".join
)
SHIPPED = (
    (Path(__file__).parent.parent / "src/evowatt/representation/grammars/cnn.grammar")
    .read_text()
    .splitlines()
)


def _edit_shipped(edits: list[tuple[int, int, str]]) -> str:
    """The shipped grammar with some tokens replaced: mostly well formed, often wrong in one place."""
    lines = [line.split() for line in SHIPPED]
    for line, index, token in edits:
        words = lines[line % len(lines)]
        if words and not words[0].startswith("#"):
            at = 2 + index % max(len(words) - 2, 1)
            if at < len(words):
                words[at] = token
    return "\n".join(" ".join(words) for words in lines)


EDITED = st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100), TOKEN), min_size=1, max_size=3).map(
    _edit_shipped
)
GRAMMAR = st.one_of(RANDOM_TEXT, EDITED, EDITED)


@SETTINGS
@given(GRAMMAR)
def test_random_grammar_texts_load_or_raise_evowatt_error(text):
    try:
        grammar = parse_grammar(text, source="g.grammar")
    except EvowattError:
        return
    modules = [
        {"name": n, "network_structure_init": [1, 2], "network_structure": [0, 3]}
        for n in ("features", "classification")
        if n in grammar
    ]
    if not modules or "softmax" not in grammar:
        return
    macro = ["learning"] if "learning" in grammar else []
    network = NetworkConfig(modules=modules, macro_structure=macro, output="softmax")
    if check_network_against_grammar(grammar, network):
        return  # refused, with a message per problem
    # accepted: every genome it derives either plans or is an invalid network with its reason
    rng = np.random.default_rng(0)
    for _ in range(5):
        genome = random_genome(grammar, network, rng)
        with contextlib.suppress(InvalidNetwork):
            plan_network(genome, grammar, (1, 8, 8), 10, 10**7, 10**10)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _leaves(data, path=()):
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _leaves(v, (*path, i))
    yield path


def _replace(data, path, value):
    data = copy.deepcopy(data)
    if not path:
        return value
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return data


def mutated(base):
    """``base`` with one of its values (a leaf or a whole section) replaced by random JSON."""
    paths = list(_leaves(base))
    return st.tuples(st.sampled_from(paths), JSON).map(lambda pv: _replace(base, pv[0], pv[1]))


@SETTINGS
@given(
    st.one_of(
        JSON, st.dictionaries(st.sampled_from(list(TINY_RUN) + ["x"]), JSON, max_size=6), mutated(TINY_RUN)
    )
)
def test_random_config_dicts_load_or_raise_evowatt_error(data):
    if not isinstance(data, dict):
        return  # read_config_file refuses a non-mapping before validation
    with contextlib.suppress(EvowattError):
        validate_config(data)


ENERGIZE = json.loads((COMPAT / "energize_config.json").read_text())


@SETTINGS
@given(
    data=mutated(ENERGIZE),
    meter=st.sampled_from(["estimate", "auto"]),
    form=st.sampled_from(["weighted", "pareto"]),
)
def test_random_energize_configs_import_or_raise_evowatt_error(data, meter, form, tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "energize-property.json"
    path.write_text(json.dumps(data))
    with contextlib.suppress(EvowattError):
        import_energize_config(path, "g.grammar", "digits", meter, form=form)


@pytest.fixture(scope="module")
def es_state():
    from evowatt.representation.grammar import load_grammar
    from evowatt.search.es import EvolutionStrategy

    config = validate_config(TINY_RUN)
    search = EvolutionStrategy(config, load_grammar("cnn"))
    search.ask()
    return search.state()


@SETTINGS
@given(data=st.data())
def test_random_checkpoint_states_load_or_raise_checkpoint_error(es_state, data):
    from evowatt.representation.grammar import load_grammar
    from evowatt.search.es import EvolutionStrategy

    state = data.draw(mutated(es_state))
    grammar = load_grammar("cnn")
    try:
        check_es_state(state, grammar)
    except CheckpointError:
        return
    search = EvolutionStrategy(validate_config(TINY_RUN), grammar)
    # what passed the check loads; a ValueError (another search's state, numpy refusing an rng's values)
    # is what resume turns into its "not a valid evowatt checkpoint" message. Nothing else may escape.
    with contextlib.suppress(ValueError):
        search.load_state(state)
