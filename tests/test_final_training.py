"""The final training recipe: schedule over the budget, tensor augmentation, no early stop, start point."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from evowatt.config.load import validate_config
from evowatt.data.datasets import load_splits
from evowatt.driver.session import run
from evowatt.driver.store import Evaluation, RunStore
from evowatt.nn.train import Recipe, augment, evaluate_split, train
from evowatt.records import Budget
from tests.conftest import FAST_ESTIMATE, SMALL_NETWORK, config_dict

ADAM = {
    "learning": "adam",
    "lr": 0.01,
    "beta1": 0.9,
    "beta2": 0.999,
    "weight_decay": 1e-5,
    "batch_size": 64,
    "early_stop": 1,
}


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10))


def test_schedules_span_the_budget():
    cosine, cycle, flat = Recipe(schedule="cosine"), Recipe(schedule="one_cycle"), Recipe()
    assert cosine.factor(0) == 1 and math.isclose(cosine.factor(0.5), 0.5) and cosine.factor(1) < 1e-12
    assert cycle.factor(0) == pytest.approx(0.04) and cycle.factor(0.25) == pytest.approx(1)
    assert cycle.factor(1) < 1e-12 and cycle.factor(0.1) < cycle.factor(0.2)
    assert flat.factor(0.7) == 1
    with pytest.raises(ValueError, match="schedule"):
        Recipe(schedule="step").factor(0.5)


def test_shifts_move_each_image_within_the_range_and_flips_mirror():
    x = torch.zeros(64, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0  # one lit pixel in the centre
    g = torch.Generator().manual_seed(0)
    shifted = augment(x, 2, False, g)
    assert shifted.shape == x.shape and torch.equal(shifted.sum((1, 2, 3)), x.sum((1, 2, 3)))
    where = shifted[:, 0].flatten(1).argmax(1)
    rows, cols = where // 9, where % 9
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(where.tolist())) > 5  # per image, not one shift for the batch
    ramp = torch.arange(9.0).expand(32, 1, 9, 9)
    flipped = augment(ramp, 0, True, torch.Generator().manual_seed(1))
    mirrored = flipped[:, 0, 0, 0] == 8
    assert 0 < int(mirrored.sum()) < 32
    assert torch.equal(flipped[mirrored], ramp[mirrored].flip(3))
    assert torch.equal(flipped[~mirrored], ramp[~mirrored])
    assert torch.equal(augment(torch.ones(4, 10), 2, True, g), torch.ones(4, 10))  # vectors untouched


def test_no_early_stop_trains_the_whole_budget_and_keeps_the_best_weights(digits):
    budget = Budget(steps=200)
    stopped = train(cnn(), digits["evo_train"], digits["evo_validation"], ADAM, budget, seed=0)
    model = cnn()
    recipe = Recipe(schedule="cosine", shift=1, early_stopping=False)
    outcome = train(model, digits["evo_train"], digits["evo_validation"], ADAM, budget, seed=0, recipe=recipe)
    assert outcome.steps == 200 and outcome.stop_reason == "budget"
    assert stopped.steps <= 200
    loss, _ = evaluate_split(model, *digits["evo_validation"])
    assert loss == pytest.approx(outcome.best_validation_loss)  # the kept weights are the best validated


def test_recipe_training_is_deterministic(digits):
    recipe = Recipe(schedule="one_cycle", shift=2, flip=True, early_stopping=False)
    a, b = cnn(), cnn()
    for m in (a, b):
        train(m, digits["evo_train"], digits["evo_validation"], ADAM, Budget(steps=40), seed=5, recipe=recipe)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


BASE = {
    "seed": 2,
    "network": SMALL_NETWORK,
    "search": {"generations": 0, "lambda": 2},
    "training": {"budget": {"steps": 10}, "threads": 1},
    "energy": FAST_ESTIMATE,
}


def test_flips_are_refused_for_digits():
    with pytest.raises(Exception, match="flip"):
        validate_config(config_dict(BASE, **{"training.final_training": {"augment": {"flip": True}}}))
    final = validate_config(config_dict(BASE)).training.final_training
    assert final.schedule == "cosine" and final.start_from == "search" and final.early_stopping is False


@pytest.mark.parametrize("start_from", ["scratch", "search"])
def test_final_training_starts_where_configured(tmp_path, start_from):
    final = {"budget": {"steps": 30}, "start_from": start_from, "augment": {"shift": 1}}
    result = run(validate_config(config_dict(BASE, **{"training.final_training": final})), out=tmp_path / "r")
    assert result.final is not None and result.final.status == "ok"
    assert result.final.train["steps"] == 30  # no early stop: the whole budget
    store = RunStore(tmp_path / "r")
    try:
        row = store.get(result.final.id)
    finally:
        store.close()
    if start_from == "search":
        assert row.continue_from == result.best.id
        assert row.result.inherited["from"] == result.best.id
        assert row.result.inherited["fresh"] == []
    else:
        assert row.continue_from is None and row.result.inherited is None


class _Rows:
    """A store's ``get`` over given rows (all the final-training choice reads); each row from the fields
    it reads, the others as a store holds them."""

    def __init__(self, rows: dict[int, dict]):
        self.rows = {
            i: Evaluation.from_json({"id": i, "kind": "random", "recorded_at": 0.0, **row})
            for i, row in rows.items()
        }

    def get(self, evaluation_id: int) -> Evaluation | None:
        return self.rows.get(evaluation_id)


def _genomes():
    import numpy as np

    from evowatt.config.network import NetworkConfig
    from evowatt.representation.genome import random_genome
    from evowatt.representation.grammar import load_grammar

    grammar = load_grammar("cnn")
    network = NetworkConfig(
        modules=[{"name": "features", "network_structure_init": [2], "network_structure": [0, 4]}],
        macro_structure=["learning"],
    )
    rng = np.random.default_rng(3)
    first = random_genome(grammar, network, rng)
    relearned = first.copy()  # the same network reached with other learning genes and other layer ids
    relearned.macro["learning"] = grammar.sample("learning", rng)
    for layer in relearned.layers():
        layer.id = layer.id + 100
    other = random_genome(grammar, network, rng)
    return first, relearned, other


def test_a_network_key_ignores_ids_and_learning_genes_only():
    first, relearned, other = _genomes()
    assert first.to_json() != relearned.to_json()
    assert first.network_key() == relearned.network_key()
    assert first.network_key() != other.network_key()
    shorter = first.copy()
    del shorter.modules[0].layers[-1], shorter.modules[0].connections[-1]
    assert shorter.network_key() != first.network_key()


@pytest.mark.parametrize("models, expected", [(2, [1, 3]), (3, [1, 3, 5]), ("all", [1, 3, 5])])
def test_final_training_trains_each_network_once_in_handover_order(models, expected):
    """A front holding one network twice (other learning genes) trains it once, the first handed copy."""
    from evowatt.driver.handover import final_picks

    first, relearned, other = _genomes()
    third = other.copy()
    del third.modules[0].layers[-1], third.modules[0].connections[-1]
    ok = {"status": "ok"}
    rows = {
        1: {**ok, "genome": first.to_json()},
        2: {**ok, "genome": relearned.to_json()},
        3: {**ok, "genome": other.to_json()},
        4: {"status": "invalid", "genome": third.to_json()},
        5: {**ok, "genome": third.to_json()},
    }
    config = validate_config(config_dict(BASE, **{"training.final_training": {"models": models}}))
    assert [i for i, _ in final_picks(config, _Rows(rows), [1, 2, 3, 4, 5])] == expected


def test_the_most_accurate_model_trains_for_budget_and_the_others_for_others_budget(tmp_path):
    search = {"algorithm": "pareto", "generations": 1, "lambda": 4, "population": 4}
    final = {"budget": {"steps": 30}, "others_budget": {"steps": 10}, "models": "all"}
    config = config_dict(BASE, **{"search": search, "training.final_training": final})
    result = run(validate_config(config), out=tmp_path / "r")
    assert len(result.finals) >= 2
    assert result.finals[0].parent_id == result.handed[0].id  # the most accurate first
    assert [f.train["steps"] for f in result.finals] == [30] + [10] * (len(result.finals) - 1)
    assert [f.budget_steps for f in result.finals] == [30] + [10] * (len(result.finals) - 1)
    from evowatt.cli.show import show_data

    assert show_data(str(tmp_path / "r"))["final"]["id"] == result.finals[0].id  # the most accurate's


def test_without_a_hold_out_no_epoch_is_validated_and_the_last_weights_are_kept(digits, monkeypatch):
    import evowatt.nn.train as train_module

    calls = []
    real = train_module.evaluate_split
    monkeypatch.setattr(train_module, "evaluate_split", lambda *a, **k: calls.append(1) or real(*a, **k))
    recipe = Recipe(schedule="cosine", early_stopping=False, hold_out=False)
    model = cnn()
    outcome = train(model, digits["evo_train"], None, ADAM, Budget(steps=100), seed=0, recipe=recipe)
    assert outcome.steps == 100 and outcome.epochs >= 4 and outcome.best_validation_loss is None
    assert calls == []
    again = cnn()
    train(again, digits["evo_train"], None, ADAM, Budget(steps=100), seed=0, recipe=recipe)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )
    with pytest.raises(ValueError, match="validation split"):
        train(cnn(), digits["evo_train"], None, ADAM, Budget(steps=5), seed=0, recipe=Recipe())


def test_train_on_validation_trains_on_both_splits_and_needs_no_early_stopping(tmp_path, monkeypatch):
    import evowatt.driver.evaluate as evaluate_module

    seen = []  # (training images, validation images or None, final training or not) per training
    real = evaluate_module.train

    def spy(model, train_xy, validation_xy, *args, **kwargs):
        held = None if validation_xy is None else len(validation_xy[1])
        seen.append((len(train_xy[1]), held, kwargs.get("recipe") is not None))
        return real(model, train_xy, validation_xy, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "train", spy)
    final = {"budget": {"steps": 40}, "train_on_validation": True}
    result = run(validate_config(config_dict(BASE, **{"training.final_training": final})), out=tmp_path / "r")
    splits = load_splits("digits", seed=2)
    train_n, validation_n = len(splits.evo_train.y), len(splits.evo_validation.y)
    assert seen[-1] == (train_n + validation_n, None, True)  # the final training: both splits
    assert set(seen[:-1]) == {(train_n, validation_n, False)}  # the search: evo_train only
    final_row = result.finals[0]
    assert final_row.train["steps"] == 40 and final_row.train["best_validation_loss"] is None
    with pytest.raises(Exception, match="early_stopping: false"):
        validate_config(config_dict(BASE, **{"training.final_training": {**final, "early_stopping": True}}))


def test_final_learning_genes_replace_the_evolved_ones_in_the_final_training_only(tmp_path, monkeypatch):
    import evowatt.driver.evaluate as evaluate_module

    seen = []  # (learning genes, final training or not) per training
    real = evaluate_module.train

    def spy(model, train_xy, validation_xy, learning, *args, **kwargs):
        seen.append((dict(learning), kwargs.get("recipe") is not None))
        return real(model, train_xy, validation_xy, learning, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "train", spy)
    wanted = {"learning": "adam", "lr": 0.002, "batch_size": 100, "weight_decay": 0.0005}
    final = {"budget": {"steps": 20}, "learning": wanted}
    result = run(validate_config(config_dict(BASE, **{"training.final_training": final})), out=tmp_path / "r")
    finals = [learning for learning, is_final in seen if is_final]
    searched = [learning for learning, is_final in seen if not is_final]
    assert len(finals) == 1 and {k: finals[0][k] for k in wanted} == wanted
    assert not any({k: s.get(k) for k in wanted} == wanted for s in searched)  # the search keeps its genes
    assert result.finals[0].train["learning"] == wanted  # recorded with the final model
    assert result.finals[0].train["steps"] == 20


def test_final_learning_genes_are_checked():
    with pytest.raises(Exception, match="needs lr too"):
        validate_config(config_dict(BASE, **{"training.final_training": {"learning": {"learning": "adam"}}}))
    with pytest.raises(Exception, match="lars|literal|Input should be"):
        validate_config(
            config_dict(BASE, **{"training.final_training": {"learning": {"learning": "lars", "lr": 0.1}}})
        )
    with pytest.raises(Exception, match="momentum is gradient_descent's"):
        validate_config(
            config_dict(
                BASE,
                **{"training.final_training": {"learning": {"learning": "adam", "lr": 0.1, "momentum": 0.9}}},
            )
        )
    partial = validate_config(config_dict(BASE, **{"training.final_training": {"learning": {"lr": 0.003}}}))
    assert partial.training.final_training.learning.overrides() == {"lr": 0.003}


def test_label_smoothing_softens_the_training_targets_only(digits, monkeypatch):
    import evowatt.nn.train as train_module

    smoothings = []
    real = train_module.F.cross_entropy

    def spy(*args, **kwargs):
        smoothings.append(kwargs.get("label_smoothing", 0.0))
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module.F, "cross_entropy", spy)
    plain = Recipe(schedule="cosine", early_stopping=False)
    models = {}
    for smoothing in (0.0, 0.1):
        recipe = Recipe(schedule="cosine", early_stopping=False, label_smoothing=smoothing)
        smoothings.clear()
        models[smoothing] = cnn()
        train(
            models[smoothing],
            digits["evo_train"],
            digits["evo_validation"],
            ADAM,
            Budget(steps=20),
            0,
            recipe=recipe,
        )
        assert smoothings.count(0.1) == (20 if smoothing else 0)  # every training step's loss
        assert len(smoothings) > 20 and set(smoothings) == {smoothing, 0.0}  # validation: the plain loss
    default = cnn()
    train(default, digits["evo_train"], digits["evo_validation"], ADAM, Budget(steps=20), 0, recipe=plain)
    assert all(
        torch.equal(a, b)
        for a, b in zip(default.state_dict().values(), models[0.0].state_dict().values(), strict=True)
    )
    assert not torch.equal(models[0.0][3].weight, models[0.1][3].weight)
    with pytest.raises(Exception, match="label_smoothing"):
        validate_config(config_dict(BASE, **{"experimental.final_training.label_smoothing": 1.0}))
