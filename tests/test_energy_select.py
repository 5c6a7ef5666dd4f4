"""Choosing a meter (auto and named, never a silent fallback), metric checks, commands, training energy."""

from __future__ import annotations

import io
import json
import os
import time
import warnings
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

from evowatt.cli.energy_commands import format_si, measure_command, meters_command
from evowatt.energy.base import MeterUnavailable
from evowatt.energy.estimate import EstimateMeter
from evowatt.energy.fakes import FakeNvml, NVMLError_DriverNotLoaded, write_rapl_tree
from evowatt.energy.nvml import NvmlMeter
from evowatt.energy.protocol import MeasureSettings
from evowatt.energy.rapl import RaplMeter
from evowatt.energy.select import check_metrics, list_meters, open_meter, select_meter
from evowatt.energy.training import TrainingEnergy
from evowatt.errors import EvowattError

BIG = 262_143_328_850


def rapl_tree(tmp_path: Path) -> Path:
    return write_rapl_tree(tmp_path / "powercap", {"intel-rapl:0": ("package-0", 0, BIG)})


def no_driver() -> FakeNvml:
    return FakeNvml(init_error=NVMLError_DriverNotLoaded())


def test_auto_on_cpu_picks_readable_rapl(tmp_path: Path) -> None:
    meter, why = select_meter("auto", "cpu", rapl_root=rapl_tree(tmp_path), nvml_module=no_driver())
    assert isinstance(meter, RaplMeter)
    assert why.startswith("auto chose rapl") and "package-0" in why


def test_auto_on_cpu_without_rapl_picks_the_estimate_and_says_why(tmp_path: Path) -> None:
    meter, why = select_meter("auto", "cpu", rapl_root=tmp_path / "absent")
    assert isinstance(meter, EstimateMeter)
    assert "auto chose estimate" in why and "virtual machines expose no RAPL" in why and "no power" in why


def test_auto_on_cuda_picks_readable_nvml() -> None:
    meter, why = select_meter("auto", "cuda:0", nvml_module=FakeNvml(energy_mj=lambda: 0))
    assert isinstance(meter, NvmlMeter) and why.startswith("auto chose nvml")
    meter.close()


def test_nvml_index_follows_the_cuda_ordinal_unless_given() -> None:
    fake = FakeNvml(energy_mj=lambda: 0, count=4)
    assert isinstance(m := open_meter("nvml", "cuda:2", nvml_module=fake), NvmlMeter) and m.index == 2
    assert (
        isinstance(m := open_meter("nvml", "cuda:2", nvml_module=fake, nvml_index=3), NvmlMeter)
        and m.index == 3
    )
    assert isinstance(m := open_meter("nvml", "cuda", nvml_module=fake), NvmlMeter) and m.index == 0


def test_auto_on_cuda_without_nvml_picks_estimate_not_rapl(tmp_path: Path) -> None:
    """RAPL meters the CPU package: for a model on a GPU it would measure the wrong device."""
    meter, why = select_meter("auto", "cuda", nvml_module=no_driver(), rapl_root=rapl_tree(tmp_path))
    assert isinstance(meter, EstimateMeter) and "cannot initialise NVML" in why


def test_named_meter_that_cannot_be_read_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    with pytest.raises(MeterUnavailable, match="virtual machines expose no RAPL"):
        select_meter("rapl", "cpu", rapl_root=tmp_path / "absent")
    with pytest.raises(MeterUnavailable, match="NVIDIA driver"):
        select_meter("nvml", "cuda", nvml_module=no_driver())
    with pytest.raises(MeterUnavailable, match="meters a GPU"):
        open_meter("nvml", "cpu", nvml_module=FakeNvml(energy_mj=lambda: 0))
    with pytest.raises(MeterUnavailable, match="not the accelerator"):
        open_meter("rapl", "cuda", rapl_root=rapl_tree(tmp_path))
    with pytest.raises(EvowattError, match="unknown meter"):
        select_meter("wattmeter", "cpu")
    meter, why = select_meter("estimate", "cpu")
    assert isinstance(meter, EstimateMeter) and why.startswith("estimate: requested")


def test_list_meters_reports_every_meter_with_a_reason(tmp_path: Path) -> None:
    statuses = {s.name: s for s in list_meters(rapl_root=tmp_path / "absent", nvml_module=no_driver())}
    assert list(statuses) == ["nvml", "rapl", "estimate"]
    assert not statuses["nvml"].available and "NVML" in statuses["nvml"].reason
    assert not statuses["rapl"].available
    assert (
        "rapl: " in statuses["rapl"].reason and "virtual machines expose no RAPL" in statuses["rapl"].reason
    )
    assert statuses["estimate"].available
    readable = {s.name: s.available for s in list_meters(rapl_root=rapl_tree(tmp_path))}
    assert readable["rapl"]


def test_power_with_the_estimate_points_to_energy() -> None:
    with pytest.raises(EvowattError) as err:
        check_metrics(["accuracy_1", "power_1"], "estimate")
    assert "'energy_1'" in str(err.value) and "no time base" in str(err.value)
    with pytest.raises(EvowattError, match="'energy'"):
        check_metrics(["power"], "estimate")
    with pytest.raises(EvowattError, match="'energy_0'"):
        check_metrics(["power_gross_0"], "estimate")
    check_metrics(["energy_1", "latency", "flops_0", "accuracy"], "estimate")
    check_metrics(["power_1"], "rapl")
    check_metrics(["power"], "nvml")


def test_meters_command_json(tmp_path: Path) -> None:
    buf = io.StringIO()
    rc = meters_command(
        as_json=True, console=Console(file=buf), rapl_root=tmp_path / "absent", nvml_module=no_driver()
    )
    rows = json.loads(buf.getvalue())
    assert rc == 0
    assert [(r["name"], r["available"]) for r in rows] == [
        ("nvml", False),
        ("rapl", False),
        ("estimate", True),
    ]
    assert "virtual machines expose no RAPL" in rows[1]["reason"]
    table = io.StringIO()
    assert meters_command(console=Console(file=table, width=200), rapl_root=tmp_path / "absent") == 0
    assert "estimate" in table.getvalue() and "yes" in table.getvalue()


QUICK = MeasureSettings(batch_size=8, warmup=1, min_window_s=0.01, time_cap_s=0.2, min_repeats=2)


@pytest.fixture
def scripted_model(tmp_path: Path) -> Path:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    path = tmp_path / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated since 2.10
        scripted = torch.jit.script(model)
    torch.jit.save(scripted, str(path))
    return path


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_measure_command_on_a_saved_torchscript_model(scripted_model: Path, tmp_path: Path) -> None:
    buf = io.StringIO()
    rc = measure_command(
        str(scripted_model), (1, 8, 8), meter="auto", device="cpu", settings=QUICK, as_json=True,
        console=Console(file=buf), rapl_root=tmp_path / "absent",
    )  # fmt: skip
    record = json.loads(buf.getvalue())
    assert rc == 0 and record["valid"] and record["meter"] == "estimate"
    assert record["metrics"]["energy"]["method"] == "estimated:model"
    assert record["metrics"]["latency"]["method"] == "measured:clock"
    conv, relu, fc = 2 * 9 * 72 + 72, 72, 2 * 72 * 3 + 3  # 72 conv outputs of 9 multiply-adds, plus biases
    assert record["metrics"]["flops"]["value"] == conv + relu + fc
    assert "power" not in record["metrics"] and record["batch_size"] == 8
    text = io.StringIO()
    rc = measure_command(
        str(scripted_model),
        (1, 8, 8),
        meter="estimate",
        settings=QUICK,
        console=Console(file=text, width=200),
    )
    assert rc == 0 and "estimated:model" in text.getvalue() and "J" in text.getvalue()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_measure_command_user_errors(scripted_model: Path, tmp_path: Path) -> None:
    with pytest.raises(EvowattError, match="not found"):
        measure_command(str(tmp_path / "missing.pt"), (1, 8, 8), meter="estimate", settings=QUICK)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a zip archive")
    with pytest.raises(EvowattError, match="not a readable TorchScript model"):
        measure_command(str(corrupt), (1, 8, 8), meter="estimate", settings=QUICK)
    with pytest.raises(EvowattError, match="check --input-shape") as err:
        measure_command(str(scripted_model), (3, 8, 8), meter="estimate", settings=QUICK)
    assert "channels" in str(err.value)  # torch's own reason, not TorchScript's traceback
    with pytest.raises(EvowattError, match="unknown device"):
        measure_command(str(scripted_model), (1, 8, 8), device="gpu0", settings=QUICK)
    with pytest.raises(MeterUnavailable):
        measure_command(
            str(scripted_model), (1, 8, 8), meter="rapl", settings=QUICK, rapl_root=tmp_path / "x"
        )


def test_format_si() -> None:
    assert format_si(0.000123, "J") == "123 µJ"
    assert format_si(2.5e6, "FLOP") == "2.5 MFLOP"
    assert format_si(0.0, "W") == "0 W"


def test_training_energy_with_a_hardware_meter_and_with_the_estimate(tmp_path: Path) -> None:
    root = write_rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 900_000, 1_000_000)})
    meter = RaplMeter(root=root)
    with TrainingEnergy(meter, poll_s=3600) as te:
        (root / "intel-rapl:0" / "energy_uj").write_text("100000\n")  # wrapped once: +200 000 uJ
    assert te.energy_j == pytest.approx(0.2) and te.method == "measured:rapl"
    metric = te.to_metric()
    assert (
        metric is not None and metric["method"] == "measured:rapl" and metric["value"] == pytest.approx(0.2)
    )
    with TrainingEnergy(EstimateMeter()) as none:
        pass
    assert none.energy_j is None and none.method is None and none.to_metric() is None
    with TrainingEnergy(None) as nothing:
        pass
    assert nothing.energy_j is None


def test_training_energy_polls_so_a_long_run_keeps_every_lap(tmp_path: Path) -> None:
    root = write_rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 0, 1_000_000)})
    meter = RaplMeter(root=root)
    energy_file = root / "intel-rapl:0" / "energy_uj"
    with TrainingEnergy(meter, poll_s=0.01) as te:
        for value in (600_000, 200_000, 800_000, 400_000):  # three laps would look like one without polling
            tmp = energy_file.with_suffix(".tmp")
            tmp.write_text(f"{value}\n")
            os.replace(tmp, energy_file)  # sysfs reads are atomic; a half-written file is not
            time.sleep(0.05)
    assert te.energy_j == pytest.approx(2.4) and te.poll_error is None


def test_training_energy_closes_its_window_when_training_fails(tmp_path: Path) -> None:
    root = write_rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 0, BIG)})
    with pytest.raises(RuntimeError), TrainingEnergy(RaplMeter(root=root), poll_s=3600) as te:
        raise RuntimeError("diverged")
    assert te.energy_j == 0.0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cli_wiring(scripted_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from evowatt.cli.main import main

    assert main(["meters", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["nvml", "rapl", "estimate"] and rows[2]["available"]
    argv = ["measure", str(scripted_model), "--input-shape", "1,8,8", "--meter", "estimate", "--json"]
    assert main([*argv, "--batch-size", "8", "--time-cap", "0.2"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["energy"]["method"] == "estimated:model"
    assert main(["measure", str(tmp_path / "nope.pt"), "--input-shape", "1,8,8"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main([*argv, "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err  # refused by the argument parser, with the range
