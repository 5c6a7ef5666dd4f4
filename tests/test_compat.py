"""ENERGIZE configs import into evowatt configs: every key mapped, dropped with a warning, or refused."""

import json

import pytest

from evowatt.config.energize import import_energize_config
from evowatt.config.load import validate_config
from evowatt.errors import EvowattError
from tests.conftest import COMPAT

GRAMMAR = str(COMPAT / "energize.grammar")


def test_energize_config_maps_every_key():
    imp = import_energize_config(COMPAT / "energize_config.json", GRAMMAR, "fashion-mnist", meter="rapl")
    config = validate_config(imp.config)
    assert config.search.generations == 150 and config.search.lambda_ == 4
    assert config.training.max_epochs == 1_000_000 and config.training.budget.seconds == 300
    assert config.search.mutation.reuse_module == 0.15 and config.search.mutation.train_longer == 0.2
    assert config.network.reuse_layer == 0.7
    assert config.network.macro_structure == ["learning", "model_partition"]
    assert [m.name for m in config.network.modules] == ["features", "classification"]
    assert config.network.modules[0].network_structure == (0, 50)
    assert config.dataset.splits == (0.7, 0.2, 0.1) and config.dataset.name == "fashion-mnist"
    assert config.energy.max_repeats == 30 and config.energy.training_energy is True
    assert config.output.dir == "experiments" and config.output.name == "example"
    power = config.fitness.terms[1]
    assert power.metric == "power_1" and power.weight == 10  # a hardware meter keeps watts
    assert [(c.type, c.value) for c in power.conditions] == [("greater_than", 0.7), ("less_than", 0.9)]
    dropped = " ".join(imp.warnings)
    for key in (
        "statistics_format",
        "energize.ensure_gpu_exclusivity",
        "evolutionary.track_mutations",
        "network.learning.augmentation",
    ):
        assert f"dropped '{key}'" in dropped
    assert any("stays in watts" in n for n in imp.notes)


def test_power_becomes_energy_under_the_estimate_and_says_why():
    imp = import_energize_config(
        COMPAT / "energize_config.json", GRAMMAR, "digits", meter="estimate", energy_reference_j=2e-6
    )
    config = validate_config(imp.config)
    term = config.fitness.terms[1]
    assert term.metric == "energy_1" and term.objective == "minimize"
    assert term.weight == pytest.approx(10 * 2e-6 / 100)
    note = next(n for n in imp.notes if "power_1 (watts) became energy_1" in n)
    assert "tuned to ~100 W" in note


def test_denser_config_is_the_accuracy_only_baseline():
    imp = import_energize_config(
        COMPAT / "denser_config.json", str(COMPAT / "denser.grammar"), "fashion-mnist"
    )
    config = validate_config(imp.config)
    assert config.fitness.metric == "accuracy" and config.fitness.terms is None
    assert config.network.macro_structure == ["learning"]
    assert config.training.budget.seconds == 5
    # Fast-DENSER has no module mutations: absent rates are off, not evowatt's defaults
    assert config.search.mutation.reuse_module == 0 and config.search.mutation.remove_module == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(colour="blue"), "unknown ENERGIZE config key 'colour'"),
        (lambda d: d["evolutionary"].update(elitism=1), "unknown ENERGIZE config key 'evolutionary.elitism'"),
        (
            lambda d: d["evolutionary"]["mutation"].update(swap=0.1),
            "unknown mutation 'evolutionary.mutation.swap'",
        ),
        (lambda d: d["energize"].update(model_partition_n=3), "evowatt trains exactly two models"),
        (
            lambda d: d["network"]["learning"].update(learning_type="self-supervised"),
            "supervised learning only",
        ),
        (lambda d: d["network"]["learning"].update(default_train_time=-1), "positive number of seconds"),
        (lambda d: d["evolutionary"].update(generations="many"), "must be int"),
        (lambda d: d["evolutionary"]["mutation"].update(add_layer=2.0), "less than or equal to 1"),
    ],
)
def test_values_evowatt_cannot_honour_are_errors(tmp_path, change, message):
    data = json.loads((COMPAT / "energize_config.json").read_text())
    change(data)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    with pytest.raises(EvowattError, match=message):
        import_energize_config(path, GRAMMAR, "digits")


def test_unreadable_file(tmp_path):
    with pytest.raises(EvowattError, match="not found"):
        import_energize_config(tmp_path / "none.json", GRAMMAR, "digits")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(EvowattError, match="cannot read ENERGIZE config"):
        import_energize_config(bad, GRAMMAR, "digits")


@pytest.mark.parametrize("meter, energy", [("estimate", "energy"), ("rapl", "power")])
def test_energize_config_imports_in_pareto_form(meter, energy):
    imp = import_energize_config(
        COMPAT / "energize_config.json", GRAMMAR, "fashion-mnist", meter, form="pareto"
    )
    config = validate_config(imp.config)
    assert config.search.algorithm == "pareto" and "fitness" not in imp.config
    assert [(o.metric, o.objective) for o in config.search.objectives] == [
        ("accuracy", "maximize"),
        (energy, "minimize"),
    ]
    # accuracy_1 > 0.7 is a constraint on every exit; accuracy_1 < 0.9 would exclude the best: dropped
    assert [c.text() for c in config.search.constraints] == ["accuracy > 0.7"]
    notes = " ".join(imp.notes)
    assert "wrote the Pareto form" in notes and "accuracy_1 < 0.9 dropped" in notes


def test_import_config_cli_says_which_form(capsys):
    from evowatt.cli.main import main

    args = [
        "import-config",
        str(COMPAT / "energize_config.json"),
        "--grammar",
        GRAMMAR,
        "--dataset",
        "digits",
    ]
    assert main([*args, "--meter", "estimate", "--form", "pareto"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# imported from") and "Pareto search form" in out and "algorithm: pareto" in out
    assert main([*args, "--meter", "estimate"]) == 0
    assert "weighted fitness (ES) form" in capsys.readouterr().out
