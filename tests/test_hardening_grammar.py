"""Class 1 of issue 14: grammars that parse but cannot derive or build are refused when they meet the
network, one message naming the rule and its line; a run whose generation 0 holds no valid individual
stops with the reasons counted instead of running every generation on invalid networks."""

from __future__ import annotations

import pytest
import yaml

from evowatt.config.load import validate_config
from evowatt.driver.session import run
from evowatt.driver.store import RunStore
from evowatt.errors import EvowattError
from evowatt.representation.grammar import parse_grammar
from tests.conftest import COMPAT
from tests.hardening import TINY_RUN, fails

CONV = (
    "<convolution> ::= layer:conv [out_channels,int,1,8,16] [kernel_size,int,1,1,3] [stride,int,1,1,2] {rest}"
)
GOOD = """<features> ::= <convolution> | <pooling>
{conv}
<pooling> ::= layer:pool_max [kernel_size,int,1,2,3] [stride,int,1,1,2] padding:same
<classification> ::= layer:fc act:relu [out_features,int,1,16,32] bias:True
<softmax> ::= layer:fc act:softmax out_features:10 bias:True
<learning> ::= learning:adam [lr,float,1,0.0001,0.01] [early_stop,int,1,3,10] [batch_size,int,1,32,256]
"""


def grammar(conv: str = CONV.format(rest="padding:same act:relu bias:True")) -> str:
    return GOOD.format(conv=conv)


# (grammar text, the line the problem is on, what the message says)
CASES = {
    "recursion": (
        grammar().replace(
            "<features> ::= <convolution> | <pooling>", "<features> ::= <convolution> | <features> <features>"
        ),
        "line 1",
        "<features> refers back to <features>, so its derivations recurse (<features> -> <features>)",
    ),
    "indirect recursion": (
        grammar().replace("padding:same act:relu bias:True", "padding:same act:relu <features>"),
        "line 2",
        "<convolution> refers back to <features>, so its derivations recurse "
        "(<features> -> <convolution> -> <features>)",
    ),
    "conv without out_channels": (
        grammar(CONV.replace("[out_channels,int,1,8,16] ", "").format(rest="act:relu")),
        "line 2",
        "layer:conv lacks out_channels",
    ),
    "pool without stride": (
        grammar().replace(
            "[kernel_size,int,1,2,3] [stride,int,1,1,2] padding:same", "[kernel_size,int,1,2,3]"
        ),
        "line 3",
        "layer:pool_max lacks stride",
    ),
    "fc without out_features": (
        grammar().replace("[out_features,int,1,16,32] ", ""),
        "line 4",
        "layer:fc lacks out_features",
    ),
    "not a number": (
        grammar(CONV.replace("[out_channels,int,1,8,16]", "out_channels:many").format(rest="act:relu")),
        "line 2",
        "out_channels:many is not an integer >= 1",
    ),
    "float where an int is needed": (
        grammar(CONV.replace("[out_channels,int,1,8,16]", "[out_channels,float,1,8,16]").format(rest="")),
        "line 2",
        "parameter 'out_channels' is float; out_channels must be int",
    ),
    "zero stride": (
        grammar(CONV.replace("[stride,int,1,1,2]", "[stride,int,1,0,2]").format(rest="")),
        "line 2",
        "parameter 'stride' ranges over [0, 2]; stride must be an integer >= 1",
    ),
    "negative filters": (
        grammar(CONV.replace("[out_channels,int,1,8,16]", "[out_channels,int,1,-4,-1]").format(rest="")),
        "line 2",
        "'out_channels' ranges over [-4, -1]",
    ),
    "zero kernel terminal": (
        grammar().replace("[kernel_size,int,1,2,3] [stride", "kernel_size:0 [stride"),
        "line 3",
        "kernel_size:0 is out of range",
    ),
    "dropout rate 1": (
        grammar().replace(
            "<features> ::= <convolution> | <pooling>",
            "<features> ::= <convolution> | layer:dropout rate:1.5",
        ),
        "line 1",
        "rate:1.5 is out of range",
    ),
    "unknown layer kind": (
        grammar(CONV.replace("layer:conv", "layer:deconv").format(rest="")),
        "line 2",
        "unknown layer kind 'deconv'",
    ),
    "no layer kind": (
        grammar(CONV.replace("layer:conv ", "").format(rest="")),
        "line 1",
        "a derivation has no layer:KIND terminal",
    ),
    "unknown activation": (
        grammar(CONV.format(rest="act:tanh")),
        "line 2",
        "act:tanh is not allowed; act is one of relu, sigmoid, linear",
    ),
    "bias not a boolean": (
        grammar(CONV.format(rest="bias:yes")),
        "line 2",
        "bias:yes is not allowed",
    ),
    "count 2 for a size": (
        grammar(CONV.replace("[stride,int,1,1,2]", "[stride,int,2,1,2]").format(rest="")),
        "line 2",
        "parameter 'stride' has count 2",
    ),
    "unknown optimiser": (
        grammar().replace("learning:adam", "learning:sgdx"),
        "line 6",
        "learning:sgdx is not allowed",
    ),
    "optimiser without lr": (
        grammar().replace("[lr,float,1,0.0001,0.01] ", ""),
        "line 6",
        "learning:adam lacks lr",
    ),
    "zero batch size": (
        grammar().replace("[batch_size,int,1,32,256]", "batch_size:0"),
        "line 6",
        "batch_size:0 is out of range",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_check_grammar_refuses_what_cannot_build(name, tmp_path, capsys):
    text, line, message = CASES[name]
    path = tmp_path / "g.grammar"
    path.write_text(text)
    fails(
        capsys,
        ["check-grammar", path, "--samples", "5", "--input-shape", "1,8,8"],
        f"{path}, {line}",
        message,
    )


@pytest.mark.parametrize(
    "name", ["conv without out_channels", "zero stride", "unknown layer kind", "recursion"]
)
def test_run_refuses_the_grammar_before_any_work(name, tmp_path, capsys):
    text, line, message = CASES[name]
    path = tmp_path / "g.grammar"
    path.write_text(text)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY_RUN, "grammar": str(path)}))
    fails(capsys, ["run", cfg, "--out", tmp_path / "r"], line, message)
    assert not (tmp_path / "r").exists()  # refused before the run directory was made


@pytest.mark.parametrize("name", ["cnn.grammar", "energize.grammar", "denser.grammar"])
def test_shipped_and_energize_grammars_pass_the_checks(name, capsys):
    from evowatt.cli.main import main

    path = "cnn" if name == "cnn.grammar" else str(COMPAT / name)
    assert main(["check-grammar", path, "--samples", "3", "--build", "0"]) == 0, capsys.readouterr().err


def test_the_good_grammar_passes(tmp_path, capsys):
    from evowatt.cli.main import main

    path = tmp_path / "g.grammar"
    path.write_text(grammar())
    assert main(["check-grammar", str(path), "--samples", "5", "--input-shape", "1,8,8"]) == 0
    assert "5 of 5 sampled genomes build" in capsys.readouterr().out


def test_recursion_is_refused_at_parse_time():
    with pytest.raises(
        EvowattError,
        match=r"g.grammar, line 3: <c> refers back to <b>, so its derivations recurse \(<b> -> <c> -> <b>\)",
    ):
        parse_grammar("<a> ::= <b>\n<b> ::= x:1 | <c>\n<c> ::= <b> y:2", source="g.grammar")


# --- generation 0 without a valid individual ------------------------------------------------------
@pytest.mark.parametrize(
    ("kernel", "why"),
    [("[kernel_size,int,1,9,9]", "(below 1)"), ("[kernel_size,int,1,20,30]", "(below 1)")],
)
def test_a_first_generation_without_a_valid_individual_stops_the_run(kernel, why, tmp_path, capsys):
    """The grammar is well formed but every network is too deep for 8x8 digits: the run stops after
    generation 0 with the reasons counted (exit 2), its evaluations kept, not N generations later with 0."""
    path = tmp_path / "g.grammar"
    path.write_text(
        grammar(CONV.replace("[kernel_size,int,1,1,3]", kernel).format(rest="padding:valid")).replace(
            "<features> ::= <convolution> | <pooling>", "<features> ::= <convolution>"
        )
    )
    config = {**TINY_RUN, "grammar": str(path)}
    config["search"] = {"generations": 3, "lambda": 3}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config))
    err = fails(
        capsys,
        ["run", cfg, "--out", tmp_path / "r"],
        "generation 0 holds no valid individual",
        "3 x layer 0 (conv)",
        "(sizes vary)",
        why,
    )
    assert "check-grammar" in err
    store = RunStore(tmp_path / "r")
    try:
        rows = store.select()
        assert len(rows) == 3 and {r.status for r in rows} == {"invalid"}
        assert store.generations() == []  # generation 0 was never told
    finally:
        store.close()


def test_the_python_api_raises_the_same_error(tmp_path):
    path = tmp_path / "g.grammar"
    path.write_text(
        grammar(CONV.replace("[kernel_size,int,1,1,3]", "[kernel_size,int,1,9,9]").format(rest="")).replace(
            "<features> ::= <convolution> | <pooling>", "<features> ::= <convolution>"
        )
    )
    with pytest.raises(EvowattError, match="generation 0 holds no valid individual"):
        run(validate_config({**TINY_RUN, "grammar": str(path)}), out=tmp_path / "r")


@pytest.mark.parametrize(
    ("edit", "rule"),
    [
        (("[stride,int,1,1,2]", "[stride,int,1,1,_]"), "<convolution>"),
        (("out_features:10", "[out_features,int,1,_,10]"), "<softmax>"),
        (("[early_stop,int,1,3,10]", "[early_stop,int,1,3,_]"), "<learning>"),
    ],
)
def test_a_dynamic_bound_outside_the_partition_point_is_refused(edit, rule, tmp_path, capsys):
    """Found by the property test: '_' is filled only for partition_point in a macro rule."""
    path = tmp_path / "g.grammar"
    path.write_text(grammar().replace(*edit))
    fails(capsys, ["check-grammar", path, "--samples", "3"], rule, "has a dynamic bound '_'")
