import numpy as np
import pytest

from evowatt.errors import EvowattError
from evowatt.representation.grammar import NonTerminal, Parameter, Terminal, load_grammar, parse_grammar
from tests.conftest import COMPAT

TINY = """
<layer> ::= <conv> | <pool>
<conv> ::= layer:conv [channels,int,1,4,8] [kernel_size,int,1,1,3] <act>
<pool> ::= layer:pool_max [kernel_size,int,2,2,3]
<act> ::= act:relu | act:linear
<macro> ::= tag:_ [point,int,1,0,_] [lr,float,1,0.001,0.1] flag:True
"""


@pytest.mark.parametrize("name", ["energize.grammar", "denser.grammar"])
def test_compat_grammars_parse_unchanged(name):
    grammar = load_grammar(COMPAT / name)
    assert {"features", "classification", "learning", "softmax", "convolution"} <= set(grammar.rules)
    assert len(grammar.rules["features"]) == 6
    conv = grammar.rules["convolution"][0]
    assert Terminal("layer", "conv") in conv
    assert Parameter("out_channels", "int", 1, 32, 256) in conv
    assert NonTerminal("padding") in conv
    if name == "energize.grammar":
        (partition,) = grammar.rules["model_partition"]
        assert Parameter("partition_point", "int", 1, 0, None) in partition  # '_' is a dynamic bound
    else:
        assert "model_partition" not in grammar


def test_shipped_grammar_by_name():
    grammar = load_grammar("cnn")
    assert "features" in grammar and "model_partition" in grammar


def test_decode_values_and_types():
    grammar = parse_grammar(TINY)
    rng = np.random.default_rng(0)
    for _ in range(50):
        spec = grammar.decode(grammar.sample("layer", rng))
        if spec["layer"] == "conv":
            assert isinstance(spec["channels"], int) and 4 <= spec["channels"] <= 8
            assert spec["act"] in ("relu", "linear")
        else:
            assert isinstance(spec["kernel_size"], list) and len(spec["kernel_size"]) == 2  # count 2 -> list
            assert all(2 <= k <= 3 for k in spec["kernel_size"])
    macro = grammar.decode(grammar.sample("macro", rng, {"point": (0, 4)}))
    assert macro["flag"] is True and macro["tag"] == "_"
    assert 0 <= macro["point"] <= 4 and isinstance(macro["lr"], float)


def test_dynamic_bound_is_required_and_honoured():
    grammar = parse_grammar(TINY)
    with pytest.raises(EvowattError, match="dynamic bound"):
        grammar.sample("macro", np.random.default_rng(0))
    rng = np.random.default_rng(1)
    points = {grammar.decode(grammar.sample("macro", rng, {"point": (0, 2)}))["point"] for _ in range(100)}
    assert points == {0, 1, 2}


def test_sampling_is_seeded():
    grammar = load_grammar(COMPAT / "energize.grammar")
    a = [grammar.sample("features", np.random.default_rng(7)).to_json() for _ in range(3)]
    b = [grammar.sample("features", np.random.default_rng(7)).to_json() for _ in range(3)]
    assert a == b


def _sites_changed(a, b) -> int:
    """Changed expansions count once (their subtree is new); otherwise count changed parameter values."""
    if a.symbol != b.symbol or a.choice != b.choice:
        return 1
    values = sum(x != y for k in a.params for x, y in zip(a.params[k], b.params[k], strict=True))
    return values + sum(_sites_changed(x, y) for x, y in zip(a.children, b.children, strict=True))


def test_mutation_changes_at_most_one_site_within_bounds():
    grammar = load_grammar(COMPAT / "energize.grammar")
    rng = np.random.default_rng(3)
    changed = 0
    for _ in range(300):
        node = grammar.sample("features", rng)
        original = node.to_json()
        child = grammar.mutate(node, rng)
        grammar.validate(child)  # every value within its bounds, structure matches the rules
        assert node.to_json() == original  # the parent is never modified
        sites = _sites_changed(node, child)
        assert sites <= 1
        changed += sites
    assert changed > 250  # an int resample may redraw the same value, but rarely


def test_mutation_of_expansion_picks_another_alternative():
    grammar = parse_grammar("<a> ::= x:1 | x:2 | x:3")
    rng = np.random.default_rng(0)
    node = grammar.sample("a", rng)
    for _ in range(30):
        child = grammar.mutate(node, rng)
        assert child.choice != node.choice
        node = child


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<a> ::= x:1\n<b> = y:2", "line 2: expected '<name> ::= alternative"),
        ("<a> ::= x:1 | \n", "line 1: rule <a> has an empty alternative"),
        ("<a> ::= <missing>", "line 1: <a> uses <missing>, which has no rule"),
        ("<a> ::= [n,str,1,0,1]", "line 1: parameter [n,str,1,0,1] has type 'str'"),
        ("<a> ::= [n,int,1,5,1]", "line 1: parameter [n,int,1,5,1]: minimum 5 is above maximum 1"),
        ("<a> ::= [n,int,1,0]", "line 1: parameter [n,int,1,0] must be [name,int|float,count,min,max]"),
        ("<a> ::= x:1\n\n<a> ::= x:2", "line 3: rule <a> is defined twice (first on line 1)"),
        ("<a> ::= <a>", "line 1: <a> never finishes expanding"),
        ("<a> ::= x:1 $$", "line 1: cannot read '$$'"),
        ("", "the grammar has no rules"),
    ],
)
def test_malformed_grammar_names_line_and_problem(text, message):
    with pytest.raises(EvowattError) as info:
        parse_grammar(text, source="g.grammar")
    assert message in str(info.value)
    assert str(info.value).startswith("g.grammar")


def test_missing_grammar_file_lists_shipped(tmp_path):
    with pytest.raises(EvowattError, match="not found.*cnn"):
        load_grammar(tmp_path / "nope.grammar")


def test_node_json_round_trip():
    grammar = load_grammar(COMPAT / "energize.grammar")
    node = grammar.sample("learning", np.random.default_rng(5))
    from evowatt.representation.grammar import Node

    assert Node.from_json(node.to_json()) == node
