"""Budgeted training, early stopping, divergence, optimisers, split evaluation (src/evowatt/nn/train.py)."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from evowatt.nn import train as train_module
from evowatt.nn.train import evaluate_split, make_optimiser, train
from evowatt.records import Budget

ADAM = {
    "learning": "adam",
    "lr": 0.01,
    "beta1": 0.9,
    "beta2": 0.999,
    "weight_decay": 1e-5,
    "batch_size": 64,
    "early_stop": 100,
}


def mlp(seed: int = 0, dropout: float = 0.2, inputs: int = 64, hidden: int = 32, classes: int = 10):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(inputs, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes)
    )


def states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def train_val(digits):
    return digits["evo_train"], digits["evo_validation"]


@pytest.fixture
def captured_optimiser(monkeypatch):
    """Record the optimiser that train() builds, to count the steps it took."""
    made = []

    def capture(model, learning):
        made.append(make_optimiser(model, learning))
        return made[-1]

    monkeypatch.setattr(train_module, "make_optimiser", capture)
    return made


# ---------------------------------------------------------------------------------------------- budgets


def test_step_budget_trains_exactly_n_steps_and_is_deterministic(digits, captured_optimiser):
    # 1006 samples / 64 = 16 batches an epoch: 37 steps end inside the third epoch
    rng_before = torch.get_rng_state()
    a, b, c = mlp(), mlp(), mlp()
    torch.set_rng_state(rng_before)
    out_a = train(a, digits["evo_train"], digits["evo_validation"], ADAM, Budget(steps=37), seed=5)
    assert torch.equal(torch.get_rng_state(), rng_before)  # dropout was seeded inside, the caller's RNG kept
    out_b = train(b, digits["evo_train"], digits["evo_validation"], ADAM, Budget(steps=37), seed=5)
    out_c = train(c, digits["evo_train"], digits["evo_validation"], ADAM, Budget(steps=37), seed=6)
    assert out_a.steps == out_b.steps == out_c.steps == 37
    assert out_a.epochs == 2 and out_a.stop_reason == "budget"
    assert (out_a.budget_steps, out_a.budget_seconds) == (37, None)
    for optimiser in captured_optimiser:
        assert {int(s["step"]) for s in optimiser.state.values()} == {37}
    assert states_equal(a, b)
    assert not states_equal(a, c)
    assert out_a.best_validation_loss == out_b.best_validation_loss
    assert out_a.to_json()["steps"] == 37


def test_zero_step_budget_leaves_weights_untouched(digits):
    model, reference = mlp(), mlp()
    outcome = train(model, digits["evo_train"], digits["evo_validation"], ADAM, Budget(steps=0), seed=0)
    assert (outcome.steps, outcome.epochs, outcome.stop_reason) == (0, 0, "budget")
    assert states_equal(model, reference)


def test_seconds_budget_stops_mid_epoch_within_a_small_margin():
    # an epoch is 3125 small steps: far longer than the 0.3 s budget even on a fast machine
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(100_000, 32, generator=generator)
    y = torch.randint(0, 10, (100_000,), generator=generator)
    model = mlp(inputs=32, hidden=64, dropout=0.0)
    learning = {**ADAM, "batch_size": 32}
    start = time.perf_counter()
    outcome = train(model, (x, y), (x[:256], y[:256]), learning, Budget(seconds=0.3), seed=0)
    wall = time.perf_counter() - start
    assert outcome.stop_reason == "budget"
    assert outcome.epochs == 0 and 0 < outcome.steps < 3125
    assert outcome.seconds >= 0.3
    assert outcome.seconds < 0.3 + 0.5 and wall < 0.3 + 0.5
    assert outcome.budget_seconds == 0.3 and outcome.budget_steps is None


def test_max_epochs_from_the_argument_and_from_the_genome(digits):
    outcome = train(
        mlp(), digits["evo_train"], digits["evo_validation"], ADAM, Budget(steps=1000), seed=0, max_epochs=2
    )
    assert (outcome.stop_reason, outcome.epochs, outcome.steps) == ("max_epochs", 2, 32)
    outcome = train(
        mlp(),
        digits["evo_train"],
        digits["evo_validation"],
        {**ADAM, "epochs": 1},
        Budget(steps=1000),
        seed=0,
    )
    assert (outcome.stop_reason, outcome.epochs, outcome.steps) == ("max_epochs", 1, 16)


def test_trailing_batch_of_one_sample_does_not_break_batch_norm():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(33, 4, generator=generator), torch.randint(0, 3, (33,), generator=generator)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    outcome = train(model, (x, y), (x, y), {**ADAM, "batch_size": 32}, Budget(steps=5), seed=0)
    assert (outcome.steps, outcome.stop_reason) == (5, "budget")
    assert outcome.epochs == 4  # one step an epoch; the lone 33rd sample is skipped


def test_batch_size_one_trains_on_every_sample():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 4, generator=generator), torch.randint(0, 3, (5,), generator=generator)
    model = mlp(inputs=4, hidden=8, classes=3)
    outcome = train(model, (x, y), (x, y), {**ADAM, "batch_size": 1}, Budget(steps=12), seed=0)
    assert (outcome.steps, outcome.epochs, outcome.stop_reason) == (12, 2, "budget")


# --------------------------------------------------------------------------------- early stop, best weights


@pytest.mark.parametrize("patience", [1, 3])
def test_early_stop_honours_patience(digits, patience):
    # lr 0: the validation loss never improves after the first epoch
    learning = {
        "learning": "gradient_descent",
        "lr": 0.0,
        "momentum": 0.0,
        "batch_size": 128,
        "early_stop": patience,
    }
    model, reference = mlp(dropout=0.0), mlp(dropout=0.0)
    outcome = train(model, *train_val(digits), learning, Budget(steps=10_000), seed=0)
    assert outcome.stop_reason == "early_stop"
    assert outcome.epochs == patience + 1
    assert outcome.steps == (patience + 1) * 8  # ceil(1006 / 128) batches an epoch
    assert states_equal(model, reference)
    first_loss, _ = evaluate_split(reference, *digits["evo_validation"])
    assert outcome.best_validation_loss == pytest.approx(first_loss)


def test_best_validation_weights_are_kept(digits):
    # a learning rate far too high: validation loss bounces, early stopping ends it
    learning = {**ADAM, "lr": 0.2, "early_stop": 2, "batch_size": 32}
    model = mlp(dropout=0.0)
    outcome = train(model, *train_val(digits), learning, Budget(steps=5000), seed=0)
    assert outcome.stop_reason == "early_stop"
    assert outcome.epochs < 5000 / 32
    loss, _ = evaluate_split(model, *digits["evo_validation"])
    assert loss == outcome.best_validation_loss


# --------------------------------------------------------------------------------------------- divergence


def test_huge_learning_rate_diverges_without_raising(digits):
    learning = {"learning": "gradient_descent", "lr": 1e10, "momentum": 0.9, "batch_size": 32}
    outcome = train(
        mlp(dropout=0.0), digits["evo_train"], digits["evo_validation"], learning, Budget(steps=500), seed=0
    )
    assert outcome.stop_reason == "diverged" and outcome.diverged
    assert outcome.steps < 500


def test_nan_loss_diverges_at_the_first_step(digits):
    x, y = digits["evo_train"]
    poisoned = x.clone()
    poisoned[0, 0, 0, 0] = math.nan
    outcome = train(
        mlp(), (poisoned, y), digits["evo_validation"], {**ADAM, "batch_size": 2000}, Budget(steps=10), seed=0
    )
    assert (outcome.stop_reason, outcome.steps) == ("diverged", 0)
    assert outcome.best_validation_loss is None


def test_nan_validation_loss_diverges(digits):
    vx, vy = digits["evo_validation"]
    poisoned = vx.clone()
    poisoned[3] = math.inf
    outcome = train(mlp(), digits["evo_train"], (poisoned, vy), ADAM, Budget(steps=100), seed=0)
    assert outcome.stop_reason == "diverged"
    assert outcome.steps == 16 and outcome.epochs == 1


# --------------------------------------------------------------------------------------------- optimisers


def conv_bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 10))


def test_gradient_descent_with_nesterov():
    learning = {
        "learning": "gradient_descent",
        "lr": 0.05,
        "momentum": 0.8,
        "weight_decay": 1e-4,
        "nesterov": True,
    }
    opt = make_optimiser(conv_bn_net(), learning)
    assert type(opt) is torch.optim.SGD
    (group,) = opt.param_groups
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.05, 0.8, 1e-4)
    assert group["nesterov"] is True
    assert len(group["params"]) == 6
    plain = make_optimiser(conv_bn_net(), {**learning, "nesterov": False}).param_groups[0]
    assert plain["nesterov"] is False and plain["momentum"] == 0.8


def test_adam():
    learning = {"learning": "adam", "lr": 0.003, "beta1": 0.7, "beta2": 0.95, "weight_decay": 1e-5}
    opt = make_optimiser(conv_bn_net(), learning)
    assert type(opt) is torch.optim.Adam
    (group,) = opt.param_groups
    assert (group["lr"], group["betas"], group["weight_decay"]) == (0.003, (0.7, 0.95), 1e-5)


def test_rmsprop():
    learning = {"learning": "rmsprop", "lr": 0.002, "alpha": 0.93, "weight_decay": 1e-6}
    opt = make_optimiser(conv_bn_net(), learning)
    assert type(opt) is torch.optim.RMSprop
    (group,) = opt.param_groups
    assert (group["lr"], group["alpha"], group["weight_decay"]) == (0.002, 0.93, 1e-6)


def test_lars_maps_to_sgd_with_weight_and_bias_groups():
    model = conv_bn_net()
    learning = {
        "learning": "lars",
        "lr_weights": 0.2,
        "lr_biases": 0.005,
        "momentum": 0.75,
        "weight_decay": 1e-6,
    }
    opt = make_optimiser(model, learning)
    assert type(opt) is torch.optim.SGD
    weights, others = opt.param_groups
    conv, bn, _, linear = model
    assert {id(p) for p in weights["params"]} == {id(conv.weight), id(linear.weight)}
    assert {id(p) for p in others["params"]} == {id(conv.bias), id(bn.weight), id(bn.bias), id(linear.bias)}
    assert (weights["lr"], weights["weight_decay"], weights["momentum"]) == (0.2, 1e-6, 0.75)
    assert (others["lr"], others["weight_decay"], others["momentum"]) == (0.005, 0.0, 0.75)


def test_unknown_optimiser_is_named():
    with pytest.raises(ValueError, match="unknown optimiser .adagrad.; expected one of gradient_descent"):
        make_optimiser(conv_bn_net(), {"learning": "adagrad", "lr": 0.1})


def test_each_optimiser_trains_the_network(digits):
    learnings = [
        {"learning": "gradient_descent", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": True},
        {"learning": "adam", "lr": 0.01, "beta1": 0.9, "beta2": 0.999, "weight_decay": 1e-5},
        {"learning": "rmsprop", "lr": 0.003, "alpha": 0.9, "weight_decay": 1e-5},
        {"learning": "lars", "lr_weights": 0.1, "lr_biases": 0.005, "momentum": 0.9, "weight_decay": 1e-6},
    ]
    before, _ = evaluate_split(mlp(dropout=0.0), *digits["evo_validation"])
    for learning in learnings:
        model = mlp(dropout=0.0)
        train(
            model,
            digits["evo_train"],
            digits["evo_validation"],
            {**learning, "batch_size": 64},
            Budget(steps=48),
            seed=0,
        )
        loss, accuracy = evaluate_split(model, *digits["evo_validation"])
        assert loss < before / 2 and accuracy > 0.8, learning["learning"]


# ----------------------------------------------------------------------------------------- evaluate_split


def test_evaluate_split_matches_a_manual_computation(digits):
    model = mlp(dropout=0.5)
    train(model, digits["evo_train"], digits["evo_validation"], ADAM, Budget(steps=5), seed=0)
    model.train()
    x, y = digits["evo_test"]
    loss, accuracy = evaluate_split(model, x, y, batch_size=13)  # 144 samples: a ragged last batch
    assert model.training  # the mode is restored
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert accuracy == (logits.argmax(1) == y).sum().item() / len(y)
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert 0 < accuracy < 1
    assert evaluate_split(model, x, y, batch_size=1024) == pytest.approx((loss, accuracy), rel=1e-6)


def test_evaluate_split_on_hand_logits():
    class Fixed(nn.Module):
        def forward(self, x):
            return x

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    target = torch.tensor([0, 0, 0])
    loss, accuracy = evaluate_split(Fixed(), logits, target)
    assert accuracy == pytest.approx(2 / 3)
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1)) + math.log(1 + math.exp(-2))) / 3
    assert loss == pytest.approx(expected, rel=1e-6)
