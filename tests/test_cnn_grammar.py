"""The shipped cnn grammar's conv+BN+activation blocks, growing widths and global average pooling."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from evowatt.config.network import NetworkConfig
from evowatt.nn.builder import build_network, conv_bn_channels, plan_network
from evowatt.representation.genome import Genome, Module, random_genome
from evowatt.representation.grammar import Node, load_grammar

CNN = load_grammar("cnn")


def _layer(symbol: str, choice: int, **params) -> Node:
    return Node(symbol, choice, {k: [v] for k, v in params.items()})


def _block(widen: float, stride: int = 1) -> Node:
    return Node("features", 0, {}, [_layer("conv_block", 0, widen=widen, stride=stride)])


def _gap() -> Node:
    return Node("classification", 0, {}, [Node("global_pool", 0)])


def _genome(features: list[Node], classification: list[Node]) -> Genome:
    modules = [
        Module("features", features, [[i - 1] for i in range(len(features))]),
        Module("classification", classification, [[i - 1] for i in range(len(classification))]),
    ]
    return Genome(modules, CNN.sample("softmax", np.random.default_rng(0))).assign_ids()


def test_widths_grow_with_depth_in_multiples_of_eight():
    assert conv_bn_channels(1, 1.0) == 16  # at least 16
    assert conv_bn_channels(16, 2.0) == 32 and conv_bn_channels(24, 1.3) == 32
    assert conv_bn_channels(200, 2.5) == 256  # at most 256
    plan = plan_network(_genome([_block(1.0), _block(2.0, 2), _block(1.5)], [_gap()]), CNN, (1, 28, 28), 10)
    assert [p.out_shape for p in plan.layers] == [(16, 28, 28), (32, 14, 14), (48, 14, 14), (48,)]


def test_block_is_conv_batch_norm_relu_and_counts_match_the_module():
    genome = _genome([_block(1.0), _block(2.0, 2)], [_gap()])
    plan = plan_network(genome, CNN, (1, 28, 28), 10)
    net = build_network(plan, 0)
    block = net.layers[0]  # stride 1: symmetric padding inside the convolution
    kinds = [type(m) for m in block]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] and block[0].bias is None
    assert plan.params == sum(p.numel() for p in net.parameters())
    assert isinstance(net.layers[2][0], nn.AdaptiveAvgPool2d)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert plan.output.in_shape == (32,)  # the classifier reads 32 pooled features, not 32x14x14


def test_global_pool_after_a_dense_layer_is_the_identity():
    dense = Node("classification", 2, {}, [CNN.sample("fully_connected", np.random.default_rng(1))])
    plan = plan_network(_genome([_block(1.0)], [dense, _gap()]), CNN, (1, 8, 8), 10)
    assert plan.layers[-1].out_shape == plan.layers[-2].out_shape
    assert isinstance(build_network(plan, 0).layers[-1], nn.Identity)


def test_sampled_networks_build_and_use_the_new_blocks():
    network = NetworkConfig(
        modules=[
            {"name": "features", "network_structure_init": [2, 3, 4], "network_structure": [0, 8]},
            {"name": "classification", "network_structure_init": [1], "network_structure": [0, 2]},
        ]
    )
    rng, kinds, built = np.random.default_rng(0), set(), 0
    for _ in range(60):
        genome = random_genome(CNN, network, rng)
        try:
            plan = plan_network(genome, CNN, (1, 28, 28), 10, max_params=5_000_000)
        except Exception:
            continue
        built += 1
        kinds |= {p.kind for p in plan.layers}
    assert built >= 50 and {"conv_bn", "global_avg_pool"} <= kinds
