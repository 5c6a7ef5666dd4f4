"""evaluate(task) -> result on digits: metrics, purity, weights, continuing, invalid and failed ones."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load

import evowatt.driver.evaluate as evaluate_module
from evowatt.driver.evaluate import evaluate, score_on_test
from evowatt.driver.task_records import DataRef, EvalSettings, EvalTask
from evowatt.records import Budget, EvalResult
from evowatt.representation.genome import Genome, Module
from evowatt.representation.grammar import Node

GRAMMAR = "\n".join(
    [
        "<features> ::= layer:conv [out_channels,int,1,2,16] [kernel_size,int,1,1,5] stride:1"
        " <padding> <act>",
        "<padding> ::= padding:same | padding:valid",
        "<act> ::= act:relu bias:True",
        "<classification> ::= layer:fc act:relu [out_features,int,1,8,64] bias:True",
        "<softmax> ::= layer:fc act:softmax out_features:10 bias:True",
        "<learning> ::= <adam> early_stop:5 batch_size:64 | <sgd> early_stop:5 batch_size:32",
        "<adam> ::= learning:adam [lr,float,1,0.0001,0.1] beta1:0.9 beta2:0.999 weight_decay:0.0",
        "<sgd> ::= learning:gradient_descent [lr,float,1,0.0001,1e12] momentum:0.9 nesterov:False <no_decay>",
        "<no_decay> ::= weight_decay:0.0",
    ]
)


def conv(channels: int, kernel: int, padding: str) -> Node:
    return Node(
        "features",
        0,
        {"out_channels": [channels], "kernel_size": [kernel]},
        [Node("padding", ["same", "valid"].index(padding)), Node("act", 0)],
    )


def genome(features: list[Node], lr: float = 0.01, sgd: bool = False) -> Genome:
    if sgd:
        learning = Node("learning", 1, children=[Node("sgd", 0, {"lr": [lr]}, [Node("no_decay", 0)])])
    else:
        learning = Node("learning", 0, children=[Node("adam", 0, {"lr": [lr]})])
    return Genome(
        [
            Module("features", features, [[i - 1] for i in range(len(features))]),
            Module("classification", [Node("classification", 0, {"out_features": [24]})], [[-1]]),
        ],
        Node("softmax", 0),
        {"learning": learning},
    )


GOOD = genome([conv(6, 3, "same"), conv(8, 3, "valid")])  # 1x8x8 -> 6x8x8 -> 8x6x6 -> 24 -> 10
GOOD_PARAMS = (9 * 6 + 6) + (9 * 6 * 8 + 8) + (288 * 24 + 24) + (24 * 10 + 10)


def task_for(g: Genome, steps: int | None = 30, seconds: float | None = None, seed: int = 3, **kwargs):
    report_test = kwargs.pop("report_test", True)
    settings = EvalSettings(budget=Budget(seconds, steps), report_test=report_test)
    return EvalTask(
        id=kwargs.pop("id", 1),
        genome=g.to_json(),
        grammar_text=GRAMMAR,
        data=DataRef("digits"),
        settings=settings,
        seed=seed,
        **kwargs,
    )


def round_trip(task: EvalTask) -> EvalTask:
    return EvalTask.from_json(json.loads(json.dumps(task.to_json())))


@pytest.fixture(scope="module")
def first():
    """One evaluation of GOOD, shared by the tests that only read its result."""
    task = task_for(GOOD, return_weights=True)
    return task, evaluate(task)


def test_evaluate_ok_with_labelled_metrics_and_saved_weights(first):
    task, result = first
    assert isinstance(result, EvalResult)
    assert (result.status, result.reason, result.id) == ("ok", None, 1)
    assert {k: v["method"] for k, v in result.metrics.items()} == {
        "params": "counted:plan",
        "flops": "counted:plan",
        "accuracy": "computed:evo_test",
        "loss": "computed:evo_test",
        "test_accuracy": "computed:test",
    }
    assert result.metrics["params"]["value"] == GOOD_PARAMS
    assert result.metrics["flops"]["value"] > 2 * GOOD_PARAMS
    assert 0.3 < result.metrics["accuracy"]["value"] <= 1  # 30 steps of Adam on digits: far above chance
    assert 0 < result.metrics["loss"]["value"] < 2.3
    assert 0.3 < result.metrics["test_accuracy"]["value"] <= 1
    assert result.train["steps"] == 30 and result.train["budget_steps"] == 30
    assert result.train["stop_reason"] == "budget"
    assert result.wall_seconds > 0 and result.device == "cpu"
    assert result.weights_path is None  # the worker writes no file: the weights come back in the result
    weights = load(result.weights)
    assert sum(t.numel() for t in weights.values()) == GOOD_PARAMS
    assert json.loads(json.dumps(result.to_json()))["metrics"] == result.metrics
    assert "weights" not in result.to_json()  # bytes are written by the driver, never recorded as JSON


def test_evaluate_is_a_pure_function_of_its_json_task(first):
    task, result = first
    copy = round_trip(task)
    assert copy == task
    rng_before = torch.get_rng_state()
    again = evaluate(copy)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert again.status == "ok"
    for name in ("accuracy", "loss", "test_accuracy", "params", "flops"):
        assert again.metrics[name] == result.metrics[name], name
    assert {k: v for k, v in again.train.items() if k != "seconds"} == {
        k: v for k, v in result.train.items() if k != "seconds"
    }
    a, b = load(result.weights), load(again.weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_different_seed_gives_different_weights(first):
    _, result = first
    other = evaluate(task_for(GOOD, seed=4, return_weights=True))
    assert other.status == "ok"
    a, b = load(result.weights), load(other.weights)
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_continuing_from_sent_weights_starts_from_them(first):
    """The weights a task starts from travel in it (safetensors bytes, base64 in its JSON)."""
    _, result = first
    resumed = round_trip(task_for(GOOD, steps=0, init_weights=result.weights, return_weights=True))
    assert resumed.init_weights == result.weights
    continued = evaluate(resumed)
    assert continued.status == "ok" and continued.train["steps"] == 0
    assert continued.metrics["accuracy"] == result.metrics["accuracy"]
    assert continued.metrics["loss"] == result.metrics["loss"]
    a, b = load(result.weights), load(continued.weights)
    assert all(torch.equal(a[k], b[k]) for k in a)
    fresh = evaluate(task_for(GOOD, steps=0))  # the same seed without init_weights: untrained
    assert fresh.metrics["loss"]["value"] > result.metrics["loss"]["value"]
    assert fresh.weights is None  # not asked for
    longer = evaluate(task_for(GOOD, steps=30, init_weights=result.weights))
    assert longer.train["steps"] == 30
    assert longer.metrics["loss"]["value"] < result.metrics["loss"]["value"]


def test_score_on_test_matches_the_reported_test_accuracy(first, tmp_path):
    task, result = first
    path = tmp_path / "good.safetensors"
    path.write_bytes(result.weights)
    assert score_on_test(task, str(path))["test_accuracy"] == result.metrics["test_accuracy"]


def test_report_test_off_scores_no_test_metric():
    result = evaluate(task_for(GOOD, steps=2, report_test=False))
    assert result.status == "ok"
    assert "test_accuracy" not in result.metrics and "accuracy" in result.metrics


def test_spatial_size_below_one_is_invalid_with_its_reason():
    bad = genome([conv(4, 5, "valid"), conv(4, 5, "valid")])  # 8 -> 4 -> 0
    result = evaluate(round_trip(task_for(bad, return_weights=True)))
    assert result.status == "invalid"
    assert result.reason.startswith("layer 1 (conv)") and "below 1" in result.reason
    assert result.train is None and result.weights is None
    assert "accuracy" not in result.metrics


def test_caps_make_an_individual_invalid():
    task = task_for(GOOD)
    task.settings = EvalSettings(budget=Budget(steps=5), max_params=GOOD_PARAMS - 1)
    result = evaluate(task)
    assert result.status == "invalid" and "search.caps.max_params" in result.reason


def test_diverging_individual_is_invalid():
    exploding = genome([conv(6, 3, "same")], lr=1e11, sgd=True)
    result = evaluate(task_for(exploding, steps=200, return_weights=True))
    assert result.status == "invalid"
    assert "diverged" in result.reason
    assert result.train["stop_reason"] == "diverged" and result.train["steps"] < 200
    assert "accuracy" not in result.metrics
    assert result.weights is None


def test_an_individual_that_raises_fails_without_raising(monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(evaluate_module, "train", out_of_memory)
    result = evaluate(task_for(GOOD))
    assert result.status == "failed"
    assert "out of memory" in result.reason and "RuntimeError" in result.reason
    assert result.metrics["params"]["value"] == GOOD_PARAMS  # planned before it failed
    assert result.wall_seconds > 0


def test_seconds_budget_is_recorded():
    result = evaluate(task_for(GOOD, steps=None, seconds=0.2, report_test=False))
    assert result.status == "ok"
    assert result.train["budget_seconds"] == 0.2 and result.train["budget_steps"] is None
    assert result.train["steps"] > 0
    assert result.train["seconds"] < 0.2 + 0.5


def test_thread_setting_holds_for_the_evaluation_only(monkeypatch):
    seen: list[int] = []
    original = evaluate_module.train

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "train", spy)
    task = task_for(GOOD, steps=2, report_test=False)
    threaded = EvalTask(**{**task.__dict__, "settings": EvalSettings(budget=Budget(steps=2), threads=2)})
    assert torch.get_num_threads() == 1  # conftest: one thread for the session
    assert evaluate(threaded).status == "ok"
    assert seen == [2] and torch.get_num_threads() == 1
