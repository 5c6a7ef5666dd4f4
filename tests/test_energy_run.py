"""Energy inside a run: the meter chosen once and said, labelled figures for both models, power refused
without hardware, and the paper's three contributions working together on digits."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from evowatt.config.load import validate_config
from evowatt.driver.session import run
from evowatt.driver.store import RunStore
from evowatt.search.fitness import score
from tests.conftest import COMPAT, SMALL_NETWORK

BASE = {
    "seed": 1,
    "grammar": "cnn",
    "dataset": {"name": "digits"},
    "network": {**SMALL_NETWORK, "macro_structure": ["learning", "model_partition"]},
    "search": {"generations": 2, "lambda": 2, "mutation": {"reuse_module": 0.5}},
    "training": {"budget": {"steps": 10}, "threads": 1},
    "energy": {"meter": "estimate", "time_cap_s": 0.05, "min_window_s": 0.01, "min_repeats": 2, "warmup": 1},
    "fitness": {
        "terms": [
            {"metric": "accuracy_1"},
            {
                "metric": "energy_1",
                "objective": "minimize",
                "weight": 1e-8,
                "conditions": [{"metric": "accuracy_1", "type": "greater_than", "value": 0.2}],
            },
        ]
    },
}


@pytest.fixture(scope="module")
def energy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("energy") / "run"
    config = validate_config(json.loads(json.dumps(BASE)))
    result = run(config, out=out)
    store = RunStore(out)
    rows = store.select()
    meter = store.meta("meter")
    checkpoint = json.loads((out / "checkpoint.json").read_text())
    store.close()
    return config, result, rows, meter, checkpoint


def test_meter_recorded_once_with_its_reason(energy_run):
    _, _, _, meter, _ = energy_run
    assert meter["name"] == "estimate" and meter["method"] == "estimated:model"
    assert "requested" in meter["reason"] and meter["idle"] is None  # nothing to subtract for a model


def test_every_valid_evaluation_has_labelled_figures_for_both_models(energy_run):
    _, result, rows, _, _ = energy_run
    ok = [r for r in rows if r.status == "ok"]
    assert ok
    from evowatt.driver.results import answer, front

    shown = {m.id for m in front(result.run_dir)} | {answer(result.run_dir).id}
    assert {r.id for r in result.handed} <= shown
    for row in ok:
        m = row.metrics
        assert m["energy"]["method"] == "estimated:model" and m["energy"]["value"] > 0
        # the fitness reads no latency: only the models the run shows are timed (its front, its answer)
        if row.id in shown:
            assert m["latency"]["method"] == "measured:clock" and m["latency"]["value"] > 0
        else:
            assert "latency" not in m
        assert (
            "power" not in m and "training_energy" not in m
        )  # the estimate has no watts and no training meter
        assert m["energy"]["measured_by"] <= row.id
        assert row.measure_seconds > 0 or m["energy"]["measured_by"] < row.id  # else reused
        if "accuracy_1" in m:  # a partition model exists whenever there is a hidden layer
            assert m["energy_1"]["method"] == "estimated:model"
            assert m["energy_1"]["value"] <= m["energy"]["value"] * 1.5
            assert m["params_1"]["value"] > 0


def test_recorded_fitness_is_the_configured_formula(energy_run):
    config, _, rows, _, _ = energy_run
    for row in rows:
        if row.kind == "final":
            continue
        expected, _ = score({"status": row.status, "metrics": row.metrics}, config.fitness)
        assert row.fitness == pytest.approx(expected) if expected is not None else row.fitness is None


def test_module_archive_fills_and_travels_in_the_checkpoint(energy_run):
    _, _, rows, _, checkpoint = energy_run
    state = checkpoint.get("search", checkpoint)
    entries = state["archive"]["entries"]
    assert entries, "modules of valid individuals are costed and archived"
    ids = {r.id for r in rows}
    for entry in entries:
        assert entry["metric"] == "energy" and entry["method"] == "estimated:model" and entry["cost"] > 0
        assert entry["source_id"] in ids
    assert len({e["key"] for e in entries}) == len(entries)


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "evowatt.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_power_with_the_estimate_is_refused_pointing_to_energy(tmp_path):
    data = json.loads(json.dumps(BASE))
    data["fitness"] = {"terms": [{"metric": "accuracy"}, {"metric": "power_1", "objective": "minimize"}]}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))
    done = _cli("run", str(cfg), "--out", str(tmp_path / "r"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "needs a hardware meter" in done.stderr and "'energy_1'" in done.stderr
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_unreadable_meter_is_an_error_not_a_fallback(tmp_path):
    data = json.loads(json.dumps(BASE))
    data["energy"]["meter"] = "rapl"
    data["energy"]["rapl_root"] = str(tmp_path / "no-powercap")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))
    done = _cli("run", str(cfg), "--out", str(tmp_path / "r"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("evowatt: error: rapl:")


def test_import_config_then_run_with_the_compat_grammar(tmp_path):
    done = _cli(
        "import-config",
        str(COMPAT / "energize_config.json"),
        "--grammar",
        str(COMPAT / "energize.grammar"),
        "--dataset",
        "digits",
        "--meter",
        "estimate",
    )
    assert done.returncode == 0, done.stderr
    assert "dropped 'statistics_format'" in done.stderr and "power_1 (watts) became energy_1" in done.stderr
    cfg = tmp_path / "imported.yaml"
    cfg.write_text(done.stdout)
    imported = yaml.safe_load(done.stdout)
    assert imported["fitness"]["terms"][1]["metric"] == "energy_1"
    small = [
        "--set",
        "search.generations=1",
        "--set",
        "search.lambda=2",
        "--set",
        "training.budget={steps: 5}",
        "--set",
        "energy.time_cap_s=0.05",
        "--set",
        "energy.min_window_s=0.01",
        "--set",
        "output.dir=" + str(tmp_path),
    ]
    ran = _cli("run", str(cfg), "--out", str(tmp_path / "r"), *small)
    assert ran.returncode == 0, ran.stderr
    shown = json.loads(_cli("show", str(tmp_path / "r"), "--json").stdout)
    assert shown["evaluations"] == 2 + 3
