"""Calibrated profiles (issue 30): the fit recovers known per-feature costs, a profile round-trips as JSON,
a run with a profile labels what it predicts and names the device, a profile of another device is only
the run's target, and a malformed profile is one clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from rich.console import Console

from evowatt.cli.energy_commands import meters_command
from evowatt.cli.main import main
from evowatt.cli.show import show_data
from evowatt.config.energy import MeasureSettings
from evowatt.config.load import validate_config
from evowatt.driver.session import run
from evowatt.driver.store import RunStore
from evowatt.energy.base import METHOD_RAPL, HardwareMeter, Reading
from evowatt.energy.calibrate import calibrate
from evowatt.energy.estimate import EstimateMeter
from evowatt.energy.fit import fit_nonnegative
from evowatt.energy.profile import (
    METHOD_CALIBRATED,
    DeviceInfo,
    read_profile,
    this_device,
    write_profile,
)
from evowatt.errors import EvowattError
from evowatt.representation.grammar import load_grammar
from tests.conftest import FAST_ESTIMATE, SMALL_NETWORK, config_dict

DIGITS_SHAPE = (1, 8, 8)
# per batch: a fixed cost per forward pass, per convolution call, per FLOP of convolutions and linear
# layers, per linear call, per byte a max pooling moves
TRUE_LATENCY = {
    "network": 2e-4,
    "Conv2d.calls": 5e-5,
    "Conv2d.flops": 1e-10,
    "Linear.calls": 3e-5,
    "Linear.flops": 2e-10,
    "MaxPool2d.bytes": 1e-11,
}
TRUE_ENERGY = {"network": 3e-3, "Conv2d.flops": 4e-9, "Linear.flops": 6e-9, "ReLU.flops": 1e-9}
# a short protocol: with the fake clock every window reads exactly the cost of its passes
FAKE_PROTOCOL = MeasureSettings(
    batch_size=4,
    warmup=1,
    min_window_s=1e-9,
    min_repeats=2,
    max_repeats=2,
    idle_s=0.001,
    idle_windows=2,
)


class FakeDevice:
    """A clock and an energy counter that advance by exact linear functions of a network's features each
    time the network runs a forward pass: the device a calibration must recover."""

    def __init__(self, latency: dict[str, float], energy: dict[str, float] | None = None) -> None:
        self.now = 0.0
        self.joules = 0.0
        self.latency, self.energy = latency, energy or {}

    def clock(self) -> float:
        self.now += 1e-9  # time passes, a little, between any two readings
        return self.now

    def instrument(self, model: torch.nn.Module, features: dict[str, float]) -> None:
        seconds = sum(self.latency.get(k, 0.0) * v for k, v in features.items())
        joules = sum(self.energy.get(k, 0.0) * v for k, v in features.items())

        def run_pass(*_: Any) -> None:
            self.now += seconds
            self.joules += joules

        model.register_forward_pre_hook(run_pass)


class FakeEnergyMeter(HardwareMeter):
    """A hardware meter reading the fake device's counter by its clock; idle power is zero."""

    name = "rapl"
    method = METHOD_RAPL

    def __init__(self, device: FakeDevice) -> None:
        super().__init__(clock=device.clock)
        self.device = device

    def describe(self) -> str:
        return "fake energy counter"

    def _begin(self) -> tuple[float, float]:
        return self.device.clock(), self.device.joules

    def _end(self, state: tuple[float, float]) -> Reading:
        t0, e0 = state
        return Reading(self.device.joules - e0, self.device.clock() - t0)


def _calibrate(samples: int, meter: str = "clock", seed: int = 0):
    device = FakeDevice(TRUE_LATENCY, TRUE_ENERGY)
    chosen = FakeEnergyMeter(device) if meter == "rapl" else EstimateMeter()
    return calibrate(
        load_grammar("cnn"),
        DIGITS_SHAPE,
        10,
        samples,
        meter,
        chosen,
        FAKE_PROTOCOL,
        seed=seed,
        max_flops=2_000_000,
        clock=device.clock,
        instrument=device.instrument,
    )


@pytest.fixture(scope="module")
def rapl_calibration():
    return _calibrate(60, meter="rapl")


@pytest.fixture(scope="module")
def profiles(tmp_path_factory, rapl_calibration):
    """A profile of this device that predicts latency and energy, and a clock profile of a Raspberry Pi."""
    folder = tmp_path_factory.mktemp("profiles")
    here = write_profile(rapl_calibration.profile, folder / "here.json")
    pi = DeviceInfo("cpu", "Raspberry Pi 5 (Cortex-A76)", 4, 4, torch.__version__, "aarch64")
    elsewhere = replace(_calibrate(12, seed=1).profile, device=pi)
    return here, write_profile(elsewhere, folder / "pi.json")


def test_fit_recovers_the_known_costs_per_feature_within_2_percent(rapl_calibration):
    profile = rapl_calibration.profile
    for target, true in (("latency", TRUE_LATENCY), ("energy", TRUE_ENERGY)):
        fitted = dict(
            zip(profile.predictors[target].features, profile.predictors[target].coefficients, strict=True)
        )
        for feature, cost in true.items():
            assert fitted.get(feature, 0.0) == pytest.approx(cost, rel=0.02), (target, feature)
        # nothing else is charged: the other features get no weight worth a rounding error
        extra = {f: c for f, c in fitted.items() if f not in true}
        assert all(c * 1e6 < min(true.values()) for c in extra.values()), extra
        held = profile.held_out[target]
        assert held["calibrated"]["within_10"] == 1.0 and held["calibrated"]["spearman"] > 0.99
        # FLOPs alone, even at its best scale, cannot follow per-call and per-byte costs
        assert held["flops"]["within_10"] < held["calibrated"]["within_10"]
    assert profile.samples == 60 and rapl_calibration.held_out and profile.extra["held_out_networks"] == 15


def test_fit_is_non_negative_and_drops_a_feature_that_repeats_another():
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 10, size=(40, 3))
    x = np.column_stack([x, 8 * x[:, 1]])  # a ReLU's bytes are always 8 x its FLOPs
    y = x[:, :3] @ np.array([2.0, 0.5, 0.0]) + 1e-3
    fit = fit_nonnegative(x, y, ["a", "b", "c", "b_bytes"])
    assert "b_bytes" not in fit.features and all(c >= 0 for c in fit.coefficients)
    assert dict(zip(fit.features, fit.coefficients, strict=True))["a"] == pytest.approx(2.0, rel=0.01)


def test_profile_round_trips_as_json(tmp_path, rapl_calibration):
    profile = rapl_calibration.profile
    path = write_profile(profile, tmp_path / "p.json")
    data = json.loads(path.read_text())
    assert data["digest"] == profile.digest and data["digest"].startswith("sha256:")
    assert data["device"]["name"] == this_device().name and data["device"]["torch"] == torch.__version__
    assert data["predictors"]["latency"]["features"] and "extra" in data
    back = read_profile(path)
    assert back == profile and back.to_dict() == profile.to_dict()
    assert path.read_bytes().startswith(b"{")  # JSON, no pickle anywhere


@pytest.mark.parametrize(
    "damage, says",
    [
        (lambda d: "{ not json", "not readable JSON"),
        (
            lambda d: {**d, "predictors": {"latency": {"features": ["network"], "coefficients": [-1.0]}}},
            "negative",
        ),
        (lambda d: {k: v for k, v in d.items() if k != "device"}, "'device' is missing"),
        (lambda d: {**d, "seconds": d["seconds"] + 1}, "digest does not match"),
    ],
)
def test_malformed_profile_is_one_clear_error(tmp_path, rapl_calibration, damage, says):
    bad = damage(rapl_calibration.profile.to_dict())
    path = tmp_path / "bad.json"
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    with pytest.raises(EvowattError, match=says) as caught:
        read_profile(path)
    assert "evowatt calibrate" in str(caught.value) and "\n" not in str(caught.value)


def _config(profile: Path, **energy: Any) -> dict[str, Any]:
    return config_dict(
        {
            "seed": 3,
            "grammar": "cnn",
            "dataset": {"name": "digits"},
            "network": {**SMALL_NETWORK, "macro_structure": ["learning", "model_partition"]},
            "search": {"generations": 1, "lambda": 2},
            "training": {"budget": {"steps": 5}, "threads": 1},
            "energy": {
                **FAST_ESTIMATE,
                "batch_size": FAKE_PROTOCOL.batch_size,
                "profile": str(profile),
                **energy,
            },
            "fitness": {
                "terms": [
                    {"metric": "accuracy"},
                    {"metric": "latency", "objective": "minimize", "weight": 1e-6},
                ]
            },
        }
    )


def _run(tmp_path: Path, data: dict[str, Any]):
    out = tmp_path / "run"
    result = run(validate_config(data), out=out)
    store = RunStore(out)
    try:
        return result, store.select(), store.meta("meter")
    finally:
        store.close()


def test_a_run_with_a_profile_labels_what_it_predicts_and_names_the_device(tmp_path, profiles, capsys):
    here, _ = profiles
    profile = read_profile(here)
    _, rows, meter = _run(tmp_path, _config(here, check_every=2))
    recorded = meter["profile"]
    assert recorded["digest"] == profile.digest and recorded["this_device"] is True
    assert recorded["device"]["name"] == this_device().name and "this device" in meter["reason"]
    predicted = 0
    for row in (r for r in rows if r.status == "ok"):
        for name, metric in row.metrics.items():
            family = name.removesuffix("_1")
            if family in ("latency", "energy"):
                predicted += 1
                assert metric["method"] == METHOD_CALIBRATED, (row.id, name)
                assert metric["profile"] == profile.digest and metric["device"] == profile.device.name
                assert metric["value"] > 0
            assert not family.startswith("power")  # a predicted energy has no time base
    assert predicted
    checked = [r for r in rows if "latency_error" in r.metrics]
    assert checked and all(r.id % 2 == 0 for r in checked)
    for row in checked:  # the check measured with the clock, and the prediction stays what is ranked on
        assert row.metrics["latency_measured"]["method"] == "measured:clock"
        assert row.metrics["latency_error"]["profile"] == profile.digest
    shown = show_data(str(tmp_path / "run"))
    assert json.dumps(shown, default=str).count("estimated:calibrated") > 0
    # the drift the checks found shows in `show` and in the report's header
    from evowatt.driver.results import profile_drift

    drift = profile_drift(rows)
    errors = [abs(r.metrics[k]["value"]) for r in rows for k in r.metrics if k.startswith("latency_error")]
    assert drift[0].startswith(f"latency: {len(errors)} models measured as well, median error ")
    from evowatt.cli.main import main

    assert main(["show", str(tmp_path / "run")]) == 0
    assert f"profile check: {drift[0]}" in capsys.readouterr().out
    import html

    from evowatt.handover.report import write_report

    page = write_report(tmp_path / "run").read_text(encoding="utf-8")
    assert "<th>profile check</th>" in page and html.escape(drift[0]) in page


def test_a_profile_of_another_device_is_only_the_target_and_the_run_says_so(tmp_path, profiles):
    _, pi = profiles
    _, rows, meter = _run(tmp_path, _config(pi, check_every=1))
    recorded = meter["profile"]
    assert recorded["this_device"] is False and recorded["device"]["name"].startswith("Raspberry Pi")
    assert recorded["run_device"]["name"] == this_device().name
    assert "NOT the device this run runs on" in meter["reason"]
    assert (
        any("check_every is ignored" in w for w in recorded["warnings"]) and recorded["check_every"] is None
    )
    latencies = [r.metrics["latency"] for r in rows if r.status == "ok"]
    assert latencies and all(
        m["device"].startswith("Raspberry Pi") and m["this_device"] is False for m in latencies
    )
    assert all(m["method"] == METHOD_CALIBRATED for m in latencies)
    assert not any("latency_measured" in r.metrics for r in rows)  # nothing of this machine stands in
    # a clock profile predicts no energy: that stays the run's meter's, labelled as such
    assert all(r.metrics["energy"]["method"] == "estimated:model" for r in rows if r.status == "ok")


def test_profile_of_another_torch_or_input_shape_is_warned_about(tmp_path, rapl_calibration):
    other = replace(
        rapl_calibration.profile,
        input_shape=(3, 32, 32),
        device=replace(rapl_calibration.profile.device, torch="1.13.0"),
    )
    path = write_profile(other, tmp_path / "old.json")
    out = tmp_path / "m.txt"
    with out.open("w") as handle:
        assert meters_command(console=Console(file=handle, width=300), profile=str(path)) == 0
    text = out.read_text()
    assert other.digest[:19] in text and "torch 1.13.0" in text and "(this device)" in text
    from evowatt.energy.profile import use_profile

    use = use_profile(path, this_device(), DIGITS_SHAPE, FAKE_PROTOCOL.batch_size)
    assert len(use.warnings) == 2 and "3,32,32" in use.warnings[1] and "torch 1.13.0" in use.warnings[0]


def test_malformed_profile_in_a_run_exits_2_with_one_message(tmp_path, profiles):
    here, _ = profiles
    bad = tmp_path / "bad.json"
    data = json.loads(here.read_text())
    data["predictors"]["latency"]["coefficients"][0] = "fast"
    bad.write_text(json.dumps(data))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_config(bad)))
    done = subprocess.run(
        [sys.executable, "-m", "evowatt.cli", "run", str(cfg), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and "profile" in lines[0]
        and "malformed" in lines[0]
        and "evowatt calibrate" in lines[0]
    )
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_calibrate_command_writes_a_profile_that_meters_shows(tmp_path, capsys):
    out = tmp_path / "p.json"
    argv = ["calibrate", "--meter", "clock", "--input-shape", "1,8,8", "--samples", "8", "--out", str(out)]
    assert main([*argv, "--time-cap", "0.01", "--batch-size", "4", "--max-flops", "200000"]) == 0
    printed = capsys.readouterr().out
    assert "FLOPs alone" in printed and "calibrated" in printed and str(out) in printed
    profile = read_profile(out)
    assert profile.meter == "clock" and profile.samples == 8 and set(profile.predictors) == {"latency"}
    assert main(["meters", "--profile", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["profile"]["digest"] == profile.digest and shown["profile"]["this_device"] is True
    assert main(["calibrate", "--meter", "clock", "--samples", "8"]) == 2  # no input shape: one message
    assert "--input-shape" in capsys.readouterr().err


def test_meters_shows_the_profile_a_config_names_relative_to_the_config(tmp_path, profiles, capsys):
    _, pi = profiles
    (tmp_path / "pi.json").write_bytes(pi.read_bytes())
    cfg = tmp_path / "search.yaml"
    cfg.write_text(yaml.safe_dump(_config(Path("pi.json"))))  # relative: resolved beside the config
    assert main(["meters", "--config", str(cfg)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "Raspberry Pi 5" in printed and "NOT this device" in printed and "profile:" in printed
