"""Two models in one training step: the early-exit head, one step on the summed loss, extraction."""

import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from evowatt.config.network import MutationConfig, NetworkConfig
from evowatt.nn.builder import EarlyExit, build_network, extract_models, plan_network
from evowatt.nn.train import evaluate_split, train
from evowatt.records import Budget
from evowatt.representation.genome import PARTITION_RULE, Genome, Module
from evowatt.representation.grammar import Node, parse_grammar
from evowatt.representation.mutation import Mutator

GRAMMAR = parse_grammar(
    "<features> ::= layer:conv [out_channels,int,1,2,6] [kernel_size,int,1,3,3]"
    " [stride,int,1,1,1] padding:same act:relu bias:True"
    " | layer:batch_norm | layer:dropout [rate,float,1,0.3,0.3]\n"
    "<classification> ::= layer:fc act:relu [out_features,int,1,8,12] bias:True\n"
    "<softmax> ::= layer:fc act:softmax out_features:10 bias:True\n"
    "<learning> ::= learning:gradient_descent [lr,float,1,0.1,0.1] [momentum,float,1,0.0,0.0]"
    " [weight_decay,float,1,0,0] nesterov:False [early_stop,int,1,5,5] [batch_size,int,1,16,16]\n"
    "<model_partition> ::= model_partition:_ [partition_point,int,1,0,_]\n"
)


def conv(channels: int) -> Node:
    return Node("features", 0, {"out_channels": [channels], "kernel_size": [3], "stride": [1]})


def genome(point: int, levels: list[list[int]] | None = None) -> Genome:
    features = Module("features", [conv(3), Node("features", 1), conv(4)], levels or [[-1], [0], [1]])
    classification = Module("classification", [Node("classification", 0, {"out_features": [9]})], [[-1]])
    macro = {
        "learning": GRAMMAR.sample("learning", np.random.default_rng(0)),
        PARTITION_RULE: Node("model_partition", 0, {"partition_point": [point]}),
    }
    return Genome([features, classification], Node("softmax", 0), macro)


def test_partition_plan_counts_the_early_model():
    plan = plan_network(genome(1), GRAMMAR, (1, 6, 6), 10)
    assert plan.exit_layer == 1 and plan.ancestors(1) == [0, 1]
    # model 1: conv(1->3) + batch norm + head (3*6*6 -> 10)
    assert plan.partition_params == (9 * 3 + 3) + 6 + (3 * 36 * 10 + 10)
    assert plan.partition_flops < plan.flops + plan.exit_head.flops
    no_partition = plan_network(genome(1), GRAMMAR, (1, 6, 6), 10, partition=False)
    assert no_partition.exit_head is None and no_partition.partition_params is None


def test_no_hidden_layer_means_no_partition_model():
    g = genome(0)
    g.modules = [Module("features", [], []), Module("classification", [], [])]
    plan = plan_network(g, GRAMMAR, (1, 6, 6), 10)
    assert plan.exit_head is None
    net = build_network(plan, 0)
    full, early = extract_models(net, plan)
    assert early is None and full(torch.randn(2, 1, 6, 6)).shape == (2, 10)


@pytest.mark.parametrize("point", [0, 1, 2, 3])
def test_extracted_models_give_exactly_the_heads_outputs(point):
    plan = plan_network(genome(point), GRAMMAR, (1, 6, 6), 10)
    net = build_network(plan, seed=3)
    # train a little so batch norm statistics are not the defaults
    x, y = torch.randn(64, 1, 6, 6), torch.randint(0, 10, (64,))
    train(net, (x, y), (x, y), {"learning": "adam", "lr": 0.01, "batch_size": 16}, Budget(steps=5), seed=1)
    net.eval()
    full, early = extract_models(net, plan)
    assert isinstance(early, EarlyExit) and early.order == list(range(point + 1))
    full.eval(), early.eval()
    probe = torch.randn(5, 1, 6, 6)
    main_out, early_out = net.forward_both(probe)
    assert torch.equal(full(probe), main_out)
    assert torch.equal(early(probe), early_out)
    assert full.exit_head is None
    # standalone: changing the original does not change the extracted models
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    assert torch.equal(early(probe), early_out)
    n_early = sum(p.numel() for p in early.parameters())
    assert n_early == plan.partition_params


def test_early_model_keeps_only_the_layers_it_depends_on():
    # layer 2 reads layers 1 and 0 (levels_back 2); the partition point at 0 needs only layer 0
    plan = plan_network(genome(0, [[-1], [0], [1, 0]]), GRAMMAR, (1, 6, 6), 10)
    net = build_network(plan, seed=0).eval()
    _, early = extract_models(net, plan)
    assert early.order == [0] and list(early.layers.keys()) == ["0"]
    probe = torch.randn(3, 1, 6, 6)
    assert torch.equal(early(probe), net.forward_both(probe)[1])


def test_one_step_updates_shared_layers_with_the_summed_loss():
    plan = plan_network(genome(1), GRAMMAR, (1, 6, 6), 10)
    net = build_network(plan, seed=5)
    manual = copy.deepcopy(net)
    x, y = torch.randn(16, 1, 6, 6), torch.randint(0, 10, (16,))
    learning = {
        "learning": "gradient_descent",
        "lr": 0.1,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "batch_size": 16,
    }
    outcome = train(net, (x, y), (x, y), learning, Budget(steps=1), seed=0)
    assert outcome.steps == 1
    # the manual step: same batch order (one batch holds all 16 samples), loss = CE(main) + CE(early)
    optimiser = torch.optim.SGD(manual.parameters(), lr=0.1)
    manual.train()
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    main, early = manual.forward_both(x[order])
    loss = F.cross_entropy(main, y[order]) + F.cross_entropy(early, y[order])
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    trained, expected = dict(net.named_parameters()), dict(manual.named_parameters())
    for name in ("layers.0.0.weight", "layers.1.weight", "exit_head.1.weight", "output.0.weight"):
        assert torch.allclose(trained[name], expected[name], atol=1e-6), name
    # a step on the main loss alone moves the shared layer differently: the early head's gradient counts
    alone = build_network(plan, seed=5)
    sgd = torch.optim.SGD(alone.parameters(), lr=0.1)
    alone.train()
    F.cross_entropy(alone.forward_both(x[order])[0], y[order]).backward()
    sgd.step()
    assert not torch.allclose(
        trained["layers.0.0.weight"], dict(alone.named_parameters())["layers.0.0.weight"]
    )


def test_validation_loss_is_the_sum_of_both_heads():
    plan = plan_network(genome(2), GRAMMAR, (1, 6, 6), 10)
    net = build_network(plan, seed=0).eval()
    x, y = torch.randn(20, 1, 6, 6), torch.randint(0, 10, (20,))
    both, accuracy = evaluate_split(net, x, y, batch_size=7, both_heads=True)
    with torch.no_grad():
        main, early = net.forward_both(x)
    assert both == pytest.approx(float(F.cross_entropy(main, y) + F.cross_entropy(early, y)), rel=1e-6)
    assert accuracy == pytest.approx(float((main.argmax(1) == y).float().mean()))


def test_partition_point_follows_layer_count_under_mutation():
    network = NetworkConfig(
        modules=[
            {"name": "features", "network_structure_init": [3], "network_structure": [0, 6]},
            {"name": "classification", "network_structure_init": [1], "network_structure": [0, 2]},
        ],
        macro_structure=["learning", "model_partition"],
    )
    rates = MutationConfig(
        **{**dict.fromkeys(MutationConfig.model_fields, 0.0), "add_layer": 0.5, "remove_layer": 0.5}
    )
    mutator = Mutator(GRAMMAR, network, rates)
    rng = np.random.default_rng(0)
    g = genome(3)
    for _ in range(200):
        g = mutator.mutate(g, rng).genome
        point = GRAMMAR.decode(g.macro[PARTITION_RULE])["partition_point"]
        assert 0 <= point <= max(g.layer_count - 1, 0)
        plan = plan_network(g, GRAMMAR, (1, 6, 6), 10)
        assert (plan.exit_layer is None) == (g.layer_count == 0)
