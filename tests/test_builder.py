"""Genome -> network: shapes, counts, FLOPs, merges, caps and determinism (src/evowatt/nn/builder.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from evowatt.config.network import CapsConfig, NetworkConfig
from evowatt.nn.builder import InvalidNetwork, Network, NetworkPlan, build_network, plan_network
from evowatt.representation.genome import Genome, Module, random_genome
from evowatt.representation.grammar import Node, load_grammar, parse_grammar

COMPAT = Path(__file__).parent / "fixtures" / "compat"
OUTPUT_RULE = "<softmax> ::= layer:fc act:softmax out_features:10 bias:True"
IDENTITY = {"layer": "dropout", "rate": 0.0}  # a layer that passes its (merged) input through


# ------------------------------------------------------------------------------------------------ helpers


def hand_genome(
    modules: list[tuple[str, list[dict]]],
    connections: list[list[list[int]]] | None = None,
    output: str = OUTPUT_RULE,
):
    """A grammar with one all-terminal rule per layer, and the genome that picks exactly those layers."""
    lines, built = [output], []
    for m, (mtype, specs) in enumerate(modules):
        nodes = []
        for spec in specs:
            name = f"l{len(lines)}"
            lines.append(f"<{name}> ::= " + " ".join(f"{k}:{v}" for k, v in spec.items()))
            nodes.append(Node(name, 0))
        conns = connections[m] if connections else [[i - 1] for i in range(len(nodes))]
        built.append(Module(mtype, nodes, conns))
    grammar = parse_grammar("\n".join(lines))
    return Genome(built, Node("softmax", 0)), grammar


def plan_of(layers: list[dict], shape=(1, 8, 8), classes: int = 10, **kwargs) -> NetworkPlan:
    genome, grammar = hand_genome([("features", layers)])
    return plan_network(genome, grammar, shape, classes, **kwargs)


def conv(out: int, k: int, s: int = 1, padding: str = "valid", act: str = "linear", bias: bool = True):
    return {
        "layer": "conv",
        "out_channels": out,
        "kernel_size": k,
        "stride": s,
        "padding": padding,
        "act": act,
        "bias": bias,
    }


def pool(kind: str, k: int, s: int, padding: str) -> dict:
    return {"layer": f"pool_{kind}", "kernel_size": k, "stride": s, "padding": padding}


def fc(out: int, act: str = "linear", bias: bool = True) -> dict:
    return {"layer": "fc", "act": act, "out_features": out, "bias": bias}


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -------------------------------------------------------------- acceptance: 500 genomes per compat grammar


@pytest.mark.parametrize(
    ("grammar_file", "config_file", "seed_base"),
    [("energize.grammar", "energize_config.json", 0), ("denser.grammar", "denser_config.json", 10_000)],
)
def test_random_compat_genomes_build_or_are_rejected_with_a_reason(grammar_file, config_file, seed_base):
    grammar = load_grammar(COMPAT / grammar_file)
    architecture = json.loads((COMPAT / config_file).read_text())["network"]["architecture"]
    network = NetworkConfig.model_validate(architecture)
    assert [m.network_structure for m in network.modules] == [(0, 50), (0, 25)]
    assert network.output == "softmax"
    caps = CapsConfig()
    built, reasons = 0, []
    for seed in range(seed_base, seed_base + 500):
        genome = random_genome(grammar, network, np.random.default_rng(seed))
        try:
            plan = plan_network(genome, grammar, (1, 28, 28), 10, caps.max_params, caps.max_flops)
        except InvalidNetwork as exc:
            assert str(exc).strip(), f"seed {seed}: empty reason"
            reasons.append(str(exc))
            continue
        built += 1
        assert len(plan.layers) == genome.layer_count
        assert plan.params <= caps.max_params and plan.flops <= caps.max_flops
        with torch.device("meta"):
            net = build_network(plan, seed)
            x = torch.empty(2, 1, 28, 28)
            hidden = net.hidden(x)
            out = net(x)
        assert all(p.device.type == "meta" for p in net.parameters())
        assert out.shape == (2, 10)
        assert len(hidden) == len(plan.layers)
        for i, (h, layer) in enumerate(zip(hidden, plan.layers, strict=True)):
            assert tuple(h.shape) == (2, *layer.out_shape), f"seed {seed} layer {i} ({layer.kind})"
        head = plan.exit_head.params if plan.exit_head is not None else 0  # the partition model's extra head
        assert count_params(net) == plan.params + head
        if plan.exit_head is not None:
            with torch.device("meta"):
                main, early = net.forward_both(x)
            assert main.shape == early.shape == (2, 10)
    assert built >= 0.6 * 500, f"only {built} of 500 built; reasons: {reasons[:5]}"
    # both kinds of rejection occur in such a sample, and each names its cause
    assert any("search.caps.max_params" in r for r in reasons)
    assert any("below 1" in r and r.startswith("layer ") for r in reasons)


def test_huge_network_builds_on_meta_without_allocating():
    plan = plan_of([conv(256, 3, padding="same"), fc(2048)], shape=(1, 28, 28))
    assert plan.params > 400_000_000  # 1.6 GB as float32
    with pytest.raises(InvalidNetwork, match="search.caps.max_params"):
        plan_of([conv(256, 3, padding="same"), fc(2048)], (1, 28, 28), max_params=CapsConfig().max_params)
    with torch.device("meta"):
        net = build_network(plan, 0)
        out = net(torch.empty(2, 1, 28, 28))
    assert out.shape == (2, 10) and out.device.type == "meta"
    assert count_params(net) == plan.params


# ------------------------------------------------------------------------------------------ layer shapes


@pytest.mark.parametrize(
    ("size", "k", "s", "padding", "expected"),
    [
        (8, 3, 1, "valid", 6),
        (8, 3, 2, "valid", 3),
        (7, 2, 2, "valid", 3),
        (8, 3, 1, "same", 8),
        (8, 4, 1, "same", 8),  # even kernel: pad 1 top/left, 2 bottom/right
        (7, 3, 2, "same", 4),  # ceil(7 / 2)
        (8, 2, 2, "same", 4),
        (5, 5, 3, "same", 2),
    ],
)
def test_conv_output_size(size, k, s, padding, expected):
    plan = plan_of([conv(5, k, s, padding)], shape=(2, size, size))
    assert plan.layers[0].out_shape == (5, expected, expected)
    net = build_network(plan, 0).eval()
    x = torch.randn(3, 2, size, size)
    assert net.hidden(x)[0].shape == (3, 5, expected, expected)


def test_same_padding_follows_tensorflow_extra_on_bottom_right():
    plan = plan_of([conv(3, 4, 1, "same")], shape=(2, 8, 8))
    assert plan.layers[0].pad == (1, 2, 1, 2)  # left, right, top, bottom
    net = build_network(plan, 0).eval()
    x = torch.randn(2, 2, 8, 8)
    conv_layer = next(m for m in net.layers[0].modules() if isinstance(m, nn.Conv2d))
    expected = F.conv2d(F.pad(x, (1, 2, 1, 2)), conv_layer.weight, conv_layer.bias)
    torch.testing.assert_close(net.hidden(x)[0], expected)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize(
    ("size", "k", "s", "padding", "expected"),
    [
        (8, 3, 2, "valid", 3),
        (8, 3, 2, "same", 4),
        (7, 2, 2, "same", 4),
        (8, 2, 2, "valid", 4),
        (5, 3, 1, "same", 5),
    ],
)
def test_pooling_output_size(kind, size, k, s, padding, expected):
    plan = plan_of([pool(kind, k, s, padding)], shape=(3, size, size))
    assert plan.layers[0].out_shape == (3, expected, expected)
    assert plan.layers[0].params == 0
    net = build_network(plan, 0)
    out = net.hidden(torch.randn(2, 3, size, size))[0]
    assert out.shape == (2, 3, expected, expected)


def test_max_pool_same_pads_with_minus_infinity_and_avg_pool_with_zeros():
    x = -torch.ones(1, 1, 7, 7)  # same, k2 s2 on 7: one row/column of padding at the bottom/right
    x[0, 0, 6, 6] = -5.0
    max_net = build_network(plan_of([pool("max", 2, 2, "same")], shape=(1, 7, 7)), 0)
    max_out = max_net.hidden(x)[0]
    assert max_out.shape == (1, 1, 4, 4)
    assert max_out[0, 0, 3, 3].item() == -5.0  # the padded window's only real value, not the zero padding
    assert torch.all(max_out <= -1)
    avg_net = build_network(plan_of([pool("avg", 2, 2, "same")], shape=(1, 7, 7)), 0)
    avg_out = avg_net.hidden(x)[0]
    assert avg_out[0, 0, 0, 0].item() == -1.0
    assert avg_out[0, 0, 3, 3].item() == pytest.approx(-5.0 / 4)  # zeros padding counts in the average


def test_batch_norm_on_images_and_on_vectors():
    plan = plan_of([conv(6, 3), {"layer": "batch_norm"}, fc(12), {"layer": "batch_norm"}])
    assert [p.out_shape for p in plan.layers] == [(6, 6, 6), (6, 6, 6), (12,), (12,)]
    assert plan.layers[1].params == 2 * 6 and plan.layers[3].params == 2 * 12
    net = build_network(plan, 0)
    assert isinstance(net.layers[1], nn.BatchNorm2d) and net.layers[1].num_features == 6
    assert isinstance(net.layers[3], nn.BatchNorm1d) and net.layers[3].num_features == 12
    assert count_params(net) == plan.params
    assert net(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_batch_norm_directly_on_the_input_and_on_a_vector_input():
    plan = plan_of([{"layer": "batch_norm"}], shape=(3, 5, 5))
    assert isinstance(build_network(plan, 0).layers[0], nn.BatchNorm2d)
    assert plan.layers[0].out_shape == (3, 5, 5)


def test_dropout():
    plan = plan_of([{"layer": "dropout", "rate": 0.25}])
    assert plan.layers[0].out_shape == (1, 8, 8) and plan.layers[0].params == 0
    layer = build_network(plan, 0).layers[0]
    assert isinstance(layer, nn.Dropout) and layer.p == 0.25


def test_fc_after_conv_flattens():
    plan = plan_of([conv(4, 3), fc(7, act="relu")])
    assert plan.layers[1].in_shape == (4, 6, 6) and plan.layers[1].out_shape == (7,)
    assert plan.layers[1].params == 4 * 6 * 6 * 7 + 7
    net = build_network(plan, 0)
    assert isinstance(net.layers[1][0], nn.Flatten)
    assert isinstance(net.layers[1][1], nn.Linear) and net.layers[1][1].in_features == 144
    assert net.hidden(torch.randn(2, 1, 8, 8))[1].shape == (2, 7)


def test_bias_on_off_changes_the_parameter_count_exactly():
    with_bias = plan_of([conv(8, 3, bias=True), fc(16, bias=True)])
    without = plan_of([conv(8, 3, bias=False), fc(16, bias=False)])
    assert with_bias.layers[0].params - without.layers[0].params == 8
    assert with_bias.layers[1].params - without.layers[1].params == 16
    assert without.layers[0].params == 3 * 3 * 1 * 8
    assert without.layers[1].params == 8 * 6 * 6 * 16
    for plan, has_bias in ((with_bias, True), (without, False)):
        net = build_network(plan, 0)
        assert count_params(net) == plan.params
        linears = [m for m in net.layers.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert [m.bias is not None for m in linears] == [has_bias, has_bias]


@pytest.mark.parametrize(
    ("act", "module"), [("linear", nn.Identity), ("relu", nn.ReLU), ("sigmoid", nn.Sigmoid)]
)
def test_activations(act, module):
    net = build_network(plan_of([conv(4, 3, act=act), fc(5, act=act)]), 0)
    assert type(net.layers[0][-1]) is module
    assert type(net.layers[1][-1]) is module
    hidden = net.hidden(torch.randn(3, 1, 8, 8))
    if act == "relu":
        assert all(torch.all(h >= 0) for h in hidden)
    if act == "sigmoid":
        assert all(torch.all((h > 0) & (h < 1)) for h in hidden)
    if act == "linear":
        assert all(torch.any(h < 0) for h in hidden)


def test_unknown_activation_or_padding_is_invalid_before_building():
    with pytest.raises(InvalidNetwork, match=r"^layer 1 \(fc\): unknown activation 'tanh'; expected one of"):
        plan_of([conv(4, 3), fc(5, act="tanh")])
    with pytest.raises(InvalidNetwork, match=r"^layer 0 \(conv\): unknown activation 'softmax'"):
        plan_of([conv(4, 3, act="softmax")])
    with pytest.raises(InvalidNetwork, match=r"^layer 0 \(pool_max\): unknown padding 'full'"):
        plan_of([pool("max", 2, 2, "full")])


def test_output_softmax_is_dropped_and_width_is_the_class_count():
    plan = plan_of([conv(4, 3), fc(6, act="relu")], classes=3)  # the rule says out_features:10
    assert plan.output.out_shape == (3,)
    assert plan.output.params == 6 * 3 + 3
    net = build_network(plan, 0).eval()
    assert isinstance(net.output[-1], nn.Linear) and net.output[-1].out_features == 3
    assert not any(isinstance(m, (nn.Softmax, nn.LogSoftmax)) for m in net.modules())
    out = net(torch.randn(16, 1, 8, 8) * 3)
    assert out.shape == (16, 3)
    assert torch.any(out < 0)
    assert not torch.allclose(out.sum(1), torch.ones(16))


def test_genome_without_hidden_layers_is_a_linear_classifier():
    genome, grammar = hand_genome([("features", []), ("classification", [])])
    plan = plan_network(genome, grammar, (1, 8, 8), 4)
    assert plan.layers == [] and plan.params == 64 * 4 + 4
    assert build_network(plan, 0)(torch.randn(2, 1, 8, 8)).shape == (2, 4)


def test_spatial_size_below_one_names_the_layer():
    with pytest.raises(InvalidNetwork, match=r"^layer 1 \(pool_max\).*below 1"):
        plan_of([conv(4, 5), pool("max", 5, 1, "valid")])  # 8 -> 4 -> 0
    with pytest.raises(InvalidNetwork, match=r"^layer 2 \(conv\).*below 1"):
        plan_of([conv(4, 3, 2), conv(4, 3, 2), conv(4, 3, 1)])  # 8 -> 3 -> 1 -> -1


def test_conv_after_a_vector_is_invalid_with_a_reason():
    genome, grammar = hand_genome([("features", [fc(8)]), ("classification", [conv(4, 1)])])
    with pytest.raises(InvalidNetwork, match=r"layer 1 \(conv\) needs an image input"):
        plan_network(genome, grammar, (1, 8, 8), 10)


def test_caps_reject_with_the_config_key():
    plan = plan_of([conv(8, 3), fc(16)])
    assert plan_of([conv(8, 3), fc(16)], max_params=plan.params, max_flops=plan.flops).params == plan.params
    with pytest.raises(InvalidNetwork, match=r"search\.caps\.max_params"):
        plan_of([conv(8, 3), fc(16)], max_params=plan.params - 1)
    with pytest.raises(InvalidNetwork, match=r"search\.caps\.max_flops"):
        plan_of([conv(8, 3), fc(16)], max_flops=plan.flops - 1)


def test_conv_flops_on_a_hand_example():
    # 1x8x8 -> 4x6x6, k 3: 2*k*k*Cin*Cout*Ho*Wo multiply-add FLOPs; bias adds one per output, relu one
    bare = plan_of([conv(4, 3, bias=False, act="linear")]).layers[0]
    assert bare.flops == 2 * 3 * 3 * 1 * 4 * 6 * 6 == 2592
    full = plan_of([conv(4, 3, bias=True, act="relu")]).layers[0]
    assert full.flops == 2592 + 144 + 144
    sigmoid = plan_of([conv(4, 3, bias=False, act="sigmoid")]).layers[0]
    assert sigmoid.flops == 2592 + 4 * 144
    plan = plan_of([conv(4, 3, bias=True, act="relu"), fc(5, bias=False)])
    assert plan.layers[1].flops == 2 * 144 * 5
    assert plan.output.flops == 2 * 5 * 10 + 10
    assert plan.flops == full.flops + 2 * 144 * 5 + 2 * 5 * 10 + 10


# ----------------------------------------------------------------------------------------------- merges


def merge_net(layers, connections, shape=(1, 8, 8)):
    genome, grammar = hand_genome([("features", layers)], [connections])
    plan = plan_network(genome, grammar, shape, 10)
    return plan, build_network(plan, 0).eval()


def test_merge_pools_down_and_zero_pads_channels():
    # layer 0: 4x6x6; layer 1: 6x3x3; layer 2 reads [1, 0]: target is layer 1's shape (6, 3, 3)
    plan, net = merge_net([conv(4, 3, act="relu"), conv(6, 3, 2, "same"), IDENTITY], [[-1], [0], [1, 0]])
    assert [p.out_shape for p in plan.layers] == [(4, 6, 6), (6, 3, 3), (6, 3, 3)]
    assert plan.input_shapes[2] == [(6, 3, 3), (4, 6, 6)]
    x = torch.randn(2, 1, 8, 8)
    h0, h1, h2 = net.hidden(x)
    pooled = F.avg_pool2d(h0, 2)  # 6x6 -> 3x3
    expected = h1 + torch.cat([pooled, torch.zeros(2, 2, 3, 3)], dim=1)
    torch.testing.assert_close(h2, expected)
    assert net(x).shape == (2, 10)
    torch.testing.assert_close(net(x), net.output(h2))


def test_merge_upsamples_and_truncates_channels():
    # layer 2 reads [0, 1]: target is layer 0's shape (4, 6, 6); layer 1 (6x3x3) grows, loses 2 channels
    plan, net = merge_net([conv(4, 3), conv(6, 3, 2, "same", act="sigmoid"), IDENTITY], [[-1], [0], [0, 1]])
    assert plan.layers[2].out_shape == (4, 6, 6)
    x = torch.randn(2, 1, 8, 8)
    h0, h1, h2 = net.hidden(x)
    grown = h1.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)[:, :4]
    torch.testing.assert_close(h2, h0 + grown)


def test_merge_with_a_vector_flattens_and_pads():
    # module input 1x8x8 (64 values) merged with an fc of 10 features: target is layer 0's (10,)
    plan, net = merge_net([fc(10), IDENTITY, fc(3)], [[-1], [0, -1], [1]])
    assert plan.layers[1].out_shape == (10,)
    x = torch.randn(2, 1, 8, 8)
    h0, h1, _ = net.hidden(x)
    torch.testing.assert_close(h1, h0 + x.flatten(1)[:, :10])
    plan, net = merge_net([fc(100), IDENTITY], [[-1], [0, -1]])
    h0, h1 = net.hidden(x)
    torch.testing.assert_close(h1, h0 + F.pad(x.flatten(1), (0, 36)))


def test_merge_from_random_connections_with_levels_back_builds():
    grammar = load_grammar("cnn")
    network = NetworkConfig.model_validate(
        {
            "modules": [
                {
                    "name": "features",
                    "network_structure_init": [6],
                    "network_structure": [1, 10],
                    "levels_back": 3,
                },
                {
                    "name": "classification",
                    "network_structure_init": [3],
                    "network_structure": [1, 5],
                    "levels_back": 2,
                },
            ]
        }
    )
    merged = 0
    for seed in range(40):
        genome = random_genome(grammar, network, np.random.default_rng(seed))
        try:
            plan = plan_network(genome, grammar, (1, 8, 8), 10)
        except InvalidNetwork:
            continue
        net = build_network(plan, seed).eval()
        assert not net.is_chain or all(len(c) == 1 for m in genome.modules for c in m.connections)
        merged += any(len(inputs) > 1 for inputs in net.inputs)
        hidden = net.hidden(torch.randn(2, 1, 8, 8))
        assert [tuple(h.shape[1:]) for h in hidden] == [p.out_shape for p in plan.layers]
        assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert merged >= 5


# ------------------------------------------------------------------------------ round trip, determinism


def valid_cnn_genomes(count: int):
    grammar = load_grammar("cnn")
    network = NetworkConfig.model_validate(
        {
            "modules": [
                {"name": "features", "network_structure_init": [2, 3, 4], "network_structure": [0, 10]},
                {"name": "classification", "network_structure_init": [1, 2], "network_structure": [0, 5]},
            ]
        }
    )
    seed = 0
    while count:
        genome = random_genome(grammar, network, np.random.default_rng(seed))
        seed += 1
        try:
            plan_network(genome, grammar, (1, 8, 8), 10)
        except InvalidNetwork:
            continue
        count -= 1
        yield genome, grammar


def test_json_round_trip_builds_identical_outputs():
    x = torch.randn(5, 1, 8, 8)
    kinds = set()
    for genome, grammar in valid_cnn_genomes(8):
        restored = Genome.from_json(json.loads(json.dumps(genome.to_json())))
        assert restored.to_json() == genome.to_json()
        plan_a = plan_network(genome, grammar, (1, 8, 8), 10)
        plan_b = plan_network(restored, grammar, (1, 8, 8), 10)
        kinds.update(p.kind for p in plan_a.layers)
        net_a, net_b = build_network(plan_a, 7).eval(), build_network(plan_b, 7).eval()
        assert torch.equal(net_a(x), net_b(x))
    assert {"conv", "fc"} <= kinds


def test_same_seed_same_weights_different_seed_different_and_global_rng_untouched():
    plan = plan_of([conv(4, 3), {"layer": "batch_norm"}, fc(8)])
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b, c = build_network(plan, 1), build_network(plan, 1), build_network(plan, 2)
    assert torch.equal(torch.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() == sc.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["layers.0.0.weight"], sc["layers.0.0.weight"])
    assert isinstance(a, Network)
