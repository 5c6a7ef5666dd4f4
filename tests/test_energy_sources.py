"""Which evaluations' energies may meet on one front: same method, same meter, same device kind."""

import pytest

from evowatt.errors import EvowattError
from evowatt.provenance import check_comparable, meter_of, mixed_sources, sources
from evowatt.records import EvalResult


def result(i, method, device="cpu", host="a", status="ok", meter=None):
    return {
        "id": i,
        "status": status,
        "host": host,
        "device": device,
        "meter": meter,
        "metrics": {
            "accuracy": {"value": 0.9, "method": "computed:evo_test"},
            "energy": {"value": 1e-6, "method": method},
            "latency": {"value": 1e-3, "method": "measured:clock"},
        },
    }


def test_one_method_on_one_device_kind_is_comparable():
    rows = [result(0, "measured:rapl", host="a"), result(1, "measured:rapl", host="b")]
    assert check_comparable(rows) == {"methods": ["measured:rapl"], "devices": ["cpu"]}
    estimated = [result(0, "estimated:model"), result(1, "estimated:model", device="cuda:0")]
    # a model is the same anywhere; their latencies (clock readings on a CPU and a GPU) are not
    assert check_comparable(estimated, metrics=["energy"])["methods"] == ["estimated:model"]
    with pytest.raises(EvowattError, match="different kinds of device"):
        check_comparable(estimated)


def test_estimated_and_measured_energies_are_refused_with_the_evaluations_named():
    rows = [result(0, "measured:rapl"), result(1, "estimated:model"), result(2, "measured:rapl")]
    with pytest.raises(EvowattError, match="estimated and measured") as info:
        check_comparable(rows)
    assert "measured:rapl: #0, #2" in str(info.value) and "estimated:model: #1" in str(info.value)
    assert "energy.meter" in str(info.value)  # says what to do


def test_different_meters_or_device_kinds_are_refused():
    with pytest.raises(EvowattError, match="different meters"):
        check_comparable([result(0, "measured:rapl"), result(1, "measured:nvml", device="cuda:0")])
    latency_only = [
        {"id": 0, "status": "ok", "device": "cpu", "metrics": {"latency": {"method": "measured:clock"}}},
        {"id": 1, "status": "ok", "device": "cuda:0", "metrics": {"latency": {"method": "measured:clock"}}},
    ]
    with pytest.raises(EvowattError, match="different kinds of device"):
        check_comparable(latency_only)


def test_only_the_compared_metrics_and_ok_results_count():
    rows = [result(0, "measured:rapl"), result(1, "estimated:model", status="invalid")]
    check_comparable(rows)  # an invalid individual is on no front
    mixed = [result(0, "measured:rapl"), result(1, "estimated:model")]
    check_comparable(mixed, metrics=["accuracy"])  # an accuracy-only front compares no energies
    records = [EvalResult.from_json(r) for r in mixed]
    with pytest.raises(EvowattError):
        check_comparable(records, metrics=["energy"])  # typed records too


def test_sources_and_the_mixed_warning():
    rows = [
        result(0, "measured:rapl", host="a", meter="rapl"),
        result(1, "measured:rapl", host="a", meter="rapl"),
        result(2, "estimated:model", host="b"),
    ]
    assert meter_of(rows[2]) == "estimate"  # read off the method when the result names no meter
    assert sources(rows) == [
        {"host": "a", "device": "cpu", "meter": "rapl", "evaluations": 2},
        {"host": "b", "device": "cpu", "meter": "estimate", "evaluations": 1},
    ]
    assert "2 different meters or device kinds" in mixed_sources(rows)
    assert mixed_sources(rows[:2]) is None


def test_show_says_when_evaluations_come_from_different_meters(tmp_path, capsys):
    import sqlite3

    from evowatt.cli.main import main
    from evowatt.cli.show import show_data
    from evowatt.config.load import validate_config
    from evowatt.driver.session import run
    from tests.conftest import SMALL_NETWORK

    config = {
        "network": SMALL_NETWORK,
        "search": {"generations": 0, "lambda": 2},
        "training": {"budget": {"steps": 2}, "threads": 1},
        "energy": {"meter": "estimate"},
    }
    run(validate_config(config), out=tmp_path / "r")
    data = show_data(str(tmp_path / "r"))
    assert [s["meter"] for s in data["sources"]] == ["estimate"] and data["mixed_sources"] is None
    # as if evaluation 0 had run on a GPU node whose worker read NVML
    db = sqlite3.connect(tmp_path / "r" / "evowatt.sqlite")
    db.execute(
        "UPDATE evaluations SET device = 'cuda:0', result = json_set(result, '$.meter', 'nvml') WHERE id = 0"
    )
    db.commit()
    db.close()
    data = show_data(str(tmp_path / "r"))
    assert {(s["device"], s["meter"]) for s in data["sources"]} == {("cuda:0", "nvml"), ("cpu", "estimate")}
    assert main(["show", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "ran on:" in out and "different meters or device kinds" in out
