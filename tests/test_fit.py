"""evowatt.fit: a search on arrays in memory that hands back a model which predicts, in the labels it was
given, exactly what its exported ONNX file computes on the same raw images."""

from __future__ import annotations

import numpy as np
import pytest

import evowatt
from evowatt.errors import EvowattError
from evowatt.fitting import fit_config
from tests.conftest import FAST_ESTIMATE, SMALL_NETWORK

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TINY = {  # one generation of two networks, twenty steps each: a few seconds
    "search": {"population": 2, "lambda": 2, "generations": 0},
    "training": {
        "budget": {"steps": 20},
        "threads": 1,
        "final_training": {"budget": {"steps": 20}, "models": 1},
    },
    "network": {"modules": SMALL_NETWORK["modules"]},
    "energy": FAST_ESTIMATE,
}


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target + 10  # labels 10..19: predict gives them back


@pytest.fixture(scope="module")
def fitted(digits, tmp_path_factory):
    x, y = digits
    return evowatt.fit(x, y, out=tmp_path_factory.mktemp("fit") / "run", seed=1, **TINY)


def test_fit_predicts_what_its_onnx_computes(fitted, digits, tmp_path):
    import onnxruntime as ort

    x, y = digits
    result = fitted
    assert result.model is not None and result.front
    assert (result.model.id, result.model.exit) in {(m.id, m.exit) for m in result.front}
    assert (result.run_dir / "data.npz").is_file() and result.input_shape == (1, 8, 8)
    assert result.classes.tolist() == list(range(10, 20))

    logits = result.logits(x[:64])
    labels = result.predict(x[:64])
    assert logits.shape == (64, 10) and set(labels.tolist()) <= set(range(10, 20))
    assert (labels == y[:64]).mean() > 0.5  # it learned in forty steps (chance: 0.1)

    exported = result.export(out=tmp_path / "models")
    assert len(exported) == 1 and set(exported[0].files) == {"onnx"}
    session = ort.InferenceSession(str(exported[0].files["onnx"]), providers=["CPUExecutionProvider"])
    onnx = session.run(None, {"input": x[:64, None, :, :]})[0]  # raw pixels, (N, C, H, W)
    np.testing.assert_allclose(logits, onnx, rtol=0, atol=1e-4 * max(1.0, float(np.abs(onnx).max())))
    assert (result.classes[onnx.argmax(axis=1)] == labels).all()


def test_predict_takes_any_layout_and_refuses_other_shapes(fitted, digits):
    x, _ = digits
    first = fitted.predict(x[:16])
    assert (fitted.predict(x[:16, :, :, None]) == first).all()  # (N, H, W, C)
    assert (fitted.predict(x[:16, None, :, :]) == first).all()  # (N, C, H, W)
    with pytest.raises(EvowattError, match=r"the model takes \(1, 8, 8\)"):
        fitted.predict(np.zeros((2, 9, 9), np.float32))


def test_the_config_fit_builds():
    config = fit_config(
        minutes=2, objectives=["accuracy", "params"], constraints=["params < 50k"], data_path="d"
    )
    assert config.minutes == 2 and config.search.time_limit is None  # planned when the run starts
    assert config.training.final_training.budget is None  # the plan's, not the example's 5 s
    assert [(o.metric, o.objective) for o in config.search.objectives] == [
        ("accuracy", "maximize"),
        ("params", "minimize"),
    ]
    assert config.search.constraints[0].value == 50_000
    assert config.dataset.name == "npz" and config.dataset.path == "d"
    assert config.search.algorithm == "pareto"  # the defaults: examples/digits-pareto.yaml's search

    plain = fit_config(
        data_path="d", overrides={"search.population": 3, "training": {"budget": {"steps": 9}}}
    )
    assert plain.search.time_limit is None and plain.search.generations == 5
    assert plain.search.population == 3 and plain.training.budget.steps == 9
    assert plain.training.final_training.models == 2  # a section override merges, it does not replace

    given = fit_config(config={"dataset": {"name": "digits", "train_subset": 500}, **TINY}, data_path="d")
    assert given.dataset.name == "npz" and given.dataset.train_subset == 500  # the arrays replace digits

    for bad in (0, -1, float("nan"), "5"):
        with pytest.raises(EvowattError, match="minutes must be"):
            fit_config(minutes=bad, data_path="d")
    with pytest.raises(EvowattError, match="search.bogus: unknown key"):
        fit_config(data_path="d", overrides={"search.bogus": 1})


def test_bad_arrays_are_refused_before_anything_is_written(digits, tmp_path):
    x, y = digits
    for args, says in (
        ((x, y[:-1]), "y must hold one label per image"),
        ((x, np.zeros(len(x), int)), "y holds a single class"),
        ((x.reshape(len(x), -1), y), "expected \\(N, H, W\\)"),
        ((x, y.astype(float)), "integer \\(or string\\) class labels"),
    ):
        with pytest.raises(EvowattError, match=says):
            evowatt.fit(*args, out=tmp_path / "run")
        assert not (tmp_path / "run").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep")
    with pytest.raises(EvowattError, match="not an empty directory"):
        evowatt.fit(x, y, out=tmp_path / "full", **TINY)
