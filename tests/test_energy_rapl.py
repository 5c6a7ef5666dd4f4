"""RAPL meter against powercap trees the tests write."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from evowatt.energy.base import MeterUnavailable
from evowatt.energy.fakes import PowerModel, simulated_rapl, write_rapl_tree
from evowatt.energy.rapl import RaplMeter

BIG = 262_143_328_850


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def two_sockets(root: Path) -> Path:
    return write_rapl_tree(
        root,
        {
            "intel-rapl:0": ("package-0", 1_000_000, BIG),
            "intel-rapl:0:0": ("core", 50, BIG),
            "intel-rapl:0:1": ("dram", 2_000_000, BIG),
            "intel-rapl:1": ("package-1", 3_000_000, BIG),
            "intel-rapl:1:0": ("core", 70, BIG),
            "intel-rapl:1:1": ("dram", 4_000_000, BIG),
            "intel-rapl:2": ("psys", 9_000_000, BIG),
        },
    )


def set_energy(root: Path, zone: str, uj: int) -> None:
    """Update a zone everywhere it is exposed (top-level link and nested directory)."""
    for path in [root / zone, *root.glob(f"*/{zone}")]:
        (path / "energy_uj").write_text(f"{uj}\n")


def test_sums_every_package_and_dram_but_not_core_or_psys(tmp_path: Path) -> None:
    root = two_sockets(tmp_path / "powercap")
    clock = FakeClock()
    meter = RaplMeter(root=root, clock=clock)
    assert [z.label for z in meter.zones] == ["package-0", "dram:0", "package-1", "dram:1"]
    state = meter.begin()
    set_energy(root, "intel-rapl:0", 1_000_000 + 1_500_000)  # +1.5 J
    set_energy(root, "intel-rapl:0:1", 2_000_000 + 250_000)  # +0.25 J
    set_energy(root, "intel-rapl:1", 3_000_000 + 2_000_000)  # +2 J
    set_energy(root, "intel-rapl:1:1", 4_000_000 + 250_000)  # +0.25 J
    set_energy(root, "intel-rapl:0:0", 999_999_999)  # core is inside package-0: ignored
    set_energy(root, "intel-rapl:2", 99_999_999)  # psys contains the packages: ignored
    clock.t += 2.0
    reading = meter.end(state)
    assert reading.energy_j == pytest.approx(4.0)
    assert reading.seconds == pytest.approx(2.0)
    assert reading.power_w == pytest.approx(2.0)
    assert "package-0" in meter.describe() and "dram:1" in meter.describe()


def test_counter_wrap_around_uses_max_energy_range(tmp_path: Path) -> None:
    root = write_rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 999_000, 1_000_000)})
    meter = RaplMeter(root=root, clock=FakeClock())
    state = meter.begin()
    set_energy(root, "intel-rapl:0", 500)  # wrapped: 1000 uJ to the top, then 500
    assert meter.end(state).energy_j == pytest.approx(1500e-6)


def test_update_keeps_several_laps_of_a_long_window(tmp_path: Path) -> None:
    root = write_rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 900_000, 1_000_000)})
    meter = RaplMeter(root=root, clock=FakeClock())
    state = meter.begin()
    set_energy(root, "intel-rapl:0", 100_000)  # one wrap: +200_000
    meter.update(state)
    set_energy(root, "intel-rapl:0", 50_000)  # a second wrap: +950_000
    assert meter.end(state).energy_j == pytest.approx(1.15)


def test_nested_only_dram_zone_is_found(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    write_rapl_tree(root, {"intel-rapl:0": ("package-0", 0, BIG)})
    nested = root / "intel-rapl:0" / "intel-rapl:0:0"
    nested.mkdir()
    (nested / "name").write_text("dram\n")
    (nested / "energy_uj").write_text("0\n")
    (nested / "max_energy_range_uj").write_text(f"{BIG}\n")
    assert [z.label for z in RaplMeter(root=root).zones] == ["package-0", "dram:0"]


def test_permission_denied_names_the_fix(tmp_path: Path) -> None:
    root = two_sockets(tmp_path / "powercap")

    def read_text(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return path.read_text()

    with pytest.raises(MeterUnavailable) as err:
        RaplMeter(root=root, read_text=read_text)
    msg = str(err.value)
    assert msg.startswith("rapl:")
    assert "permission denied" in msg and "5.10" in msg
    assert "sudo chmod a+r" in msg and "intel-rapl:*/energy_uj" in msg and "root" in msg


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied_through_real_file_modes(tmp_path: Path) -> None:
    root = write_rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 0, BIG)})
    (root / "intel-rapl:0" / "energy_uj").chmod(0)
    with pytest.raises(MeterUnavailable, match="chmod a\\+r"):
        RaplMeter(root=root)


def test_absent_powercap_says_virtual_machines_have_no_rapl(tmp_path: Path) -> None:
    with pytest.raises(MeterUnavailable) as err:
        RaplMeter(root=tmp_path / "absent")
    assert f"rapl: {tmp_path / 'absent'} is absent — virtual machines expose no RAPL" in str(err.value)


def test_powercap_without_packages_is_unavailable(tmp_path: Path) -> None:
    write_rapl_tree(tmp_path, {"intel-rapl:0": ("psys", 0, BIG)})
    with pytest.raises(MeterUnavailable, match="no intel-rapl package zone"):
        RaplMeter(root=tmp_path)


def test_garbage_counter_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    root = write_rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 0, BIG)})
    (root / "intel-rapl:0" / "energy_uj").write_text("n/a\n")
    with pytest.raises(MeterUnavailable, match="cannot read"):
        RaplMeter(root=root)


def test_simulated_rapl_reads_idle_power_while_sleeping(tmp_path: Path) -> None:
    power = PowerModel(idle_w=40.0, w_per_cpu=0.0)
    root, read_text = simulated_rapl(tmp_path, power, packages=2, noise=0.0)
    meter = RaplMeter(root=root, read_text=read_text)
    assert len(meter.zones) == 4
    state = meter.begin()
    time.sleep(0.2)
    reading = meter.end(state)
    # 1 ms counter updates: the edges cost at most a few ms of 40 W
    assert reading.power_w == pytest.approx(40.0, rel=0.05)
