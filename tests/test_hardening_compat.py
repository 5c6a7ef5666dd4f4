"""Class 7 of issue 14: ENERGIZE configs of the wrong shape are named by their JSON path, exit 2."""

from __future__ import annotations

import copy
import json

import pytest

from tests.conftest import COMPAT
from tests.hardening import fails

BASE = json.loads((COMPAT / "energize_config.json").read_text())


def _arch(d):
    return d["network"]["architecture"]


def _terms(d):
    return d["evolutionary"]["fitness_function"]


CASES = {
    "modules hold strings": (
        lambda d: _arch(d).update(modules=["features", "classification"]),
        "'network.architecture.modules[0]' must be an object",
    ),
    "modules an object": (
        lambda d: _arch(d).update(modules={"name": "features"}),
        "'network.architecture.modules' must be a list",
    ),
    "conditions hold strings": (
        lambda d: _terms(d)[1].update(conditions=["accuracy_1 > 0.7"]),
        "'evolutionary.fitness_function[1].conditions[0]' must be an object with metric, type",
    ),
    "conditions an object": (
        lambda d: _terms(d)[1].update(conditions={"metric": "accuracy_1"}),
        "'evolutionary.fitness_function[1].conditions' must be a list",
    ),
    "a condition with an unknown key": (
        lambda d: _terms(d)[1]["conditions"][0].update(kind="x"),
        "unknown key(s) ['kind'] in 'evolutionary.fitness_function[1].conditions[0]'",
    ),
    "a condition value a word": (
        lambda d: _terms(d)[1]["conditions"][0].update(value="high"),
        "'evolutionary.fitness_function[1].conditions[0].value' must be a number, got 'high'",
    ),
    "a term a string": (
        lambda d: _terms(d).__setitem__(0, "accuracy_1"),
        "evolutionary.fitness_function[0] must be an object",
    ),
    "a weight a word": (
        lambda d: _terms(d)[1].update(weight="ten"),
        "'evolutionary.fitness_function[1].weight' must be a number",
    ),
    "a metric a number": (
        lambda d: _terms(d)[0].update(metric=5),
        "'evolutionary.fitness_function[0].metric' must be a metric name",
    ),
    "an init a string": (
        lambda d: _arch(d)["modules"][0].update(network_structure_init="1,2"),
        "'network.architecture.modules[0].network_structure_init'",
    ),
    "bounds of one number": (
        lambda d: _arch(d)["modules"][1].update(network_structure=[5]),
        "'network.architecture.modules[1].network_structure[1]'",
    ),
    "a rate a word": (
        lambda d: d["evolutionary"]["mutation"].update(add_layer="often"),
        "'evolutionary.mutation.add_layer' must be a rate",
    ),
    "generations true": (
        lambda d: d["evolutionary"].update(generations=True),
        "'evolutionary.generations' must be int",
    ),
    "a split a string": (
        lambda d: d["network"]["learning"]["data_splits"].update(evo_test="0.1"),
        "'network.learning.data_splits.evo_test' must be a fraction",
    ),
    "macro of numbers": (
        lambda d: _arch(d).update(macro_structure=[1, 2]),
        "'network.architecture.macro_structure[0]'",
    ),
    "a section a list": (lambda d: d.update(energize=[1]), "'energize' must be an object"),
    "a condition type unknown": (
        lambda d: _terms(d)[1]["conditions"][0].update(type="above"),
        "'evolutionary.fitness_function[1].conditions[0].type' must be greater_than or less_than",
    ),
    "a condition without a value": (
        lambda d: _terms(d)[1]["conditions"][0].pop("value"),
        "'evolutionary.fitness_function[1].conditions[0]' lacks value",
    ),
    "a module bound a word (mapped back)": (
        lambda d: _arch(d)["modules"][0].update(levels_back="one"),
        "'network.architecture.modules[0].levels_back' (evowatt's network.modules.0.levels_back)",
    ),
    "reuse a string": (
        lambda d: _arch(d).update(reuse_layer="0.7"),
        "'network.architecture.reuse_layer' must be float",
    ),
    "partition a string": (
        lambda d: d["energize"].update(model_partition="yes"),
        "'energize.model_partition' must be true or false",
    ),
    "a path a number": (lambda d: d.update(checkpoints_path=5), "'checkpoints_path' must be a path"),
}


@pytest.mark.parametrize("meter", ["estimate", "auto"])
@pytest.mark.parametrize("form", ["weighted", "pareto"])
@pytest.mark.parametrize("name", list(CASES))
def test_an_energize_config_of_the_wrong_shape_is_named_by_json_path(name, meter, form, tmp_path, capsys):
    change, message = CASES[name]
    data = copy.deepcopy(BASE)
    change(data)
    path = tmp_path / "energize.json"
    path.write_text(json.dumps(data))
    argv = [
        "import-config",
        path,
        "--grammar",
        COMPAT / "energize.grammar",
        "--dataset",
        "digits",
        "--meter",
        meter,
    ]
    fails(capsys, [*argv, "--form", form], message)


def test_the_json_itself_of_the_wrong_shape(tmp_path, capsys):
    path = tmp_path / "energize.json"
    for text, message in (
        ("[1, 2]", "must hold a JSON object"),
        ("{", "cannot read ENERGIZE config"),
        ('"x"', "JSON object"),
    ):
        path.write_text(text)
        fails(capsys, ["import-config", path, "--grammar", "g", "--dataset", "digits"], str(path), message)
