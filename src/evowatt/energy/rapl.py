"""RAPL through Linux powercap sysfs: CPU package and DRAM energy of Intel and AMD processors.

Every package zone (`intel-rapl:N`, named `package-N`; AMD uses the same interface) and its `dram`
sub-zone are summed. Core/uncore sub-zones are already inside their package and `psys` contains the
packages, so both are skipped to avoid counting energy twice. RAPL measures the whole socket: every
process on it counts, which is why the protocol subtracts the idle baseline.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from evowatt.energy.base import METHOD_RAPL, Clock, HardwareMeter, MeterUnavailable, Reading, setting_hint

DEFAULT_ROOT = Path("/sys/class/powercap")
_ZONE = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")
_ESTIMATE = setting_hint("energy.meter", "estimate", "meter")

ReadText = Callable[[Path], str]


def _read_text(path: Path) -> str:
    return path.read_text()


@dataclass(frozen=True)
class RaplZone:
    """One counter summed by the meter: a package or a package's dram."""

    label: str
    path: Path
    max_range_uj: int


@dataclass
class _RaplState:
    """Per-window progress: last raw value and energy accumulated so far, per zone."""

    t0: float
    last: dict[Path, int]
    acc_uj: dict[Path, int] = field(default_factory=dict)


def _zone_ids(zone_id: str) -> tuple[str, str | None]:
    match = _ZONE.match(zone_id)
    assert match is not None
    return match.group(1), match.group(2)


def _zone_key(zone_id: str) -> tuple[int, int]:
    pkg, sub = _zone_ids(zone_id)
    return int(pkg), -1 if sub is None else int(sub)


def _discover(root: Path, read_text: ReadText) -> list[tuple[str, Path]]:
    """Package zones and their dram sub-zones, found both as top-level links and as nested directories."""
    if not root.is_dir():
        raise MeterUnavailable(
            f"rapl: {root} is absent — virtual machines expose no RAPL (on bare-metal Linux load the "
            f"driver: sudo modprobe intel_rapl_msr; or use the estimate meter: {_ESTIMATE})"
        )
    dirs: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        if _ZONE.match(entry.name):
            dirs.setdefault(entry.name, entry)
            for sub in sorted(entry.iterdir()) if entry.is_dir() else []:
                if _ZONE.match(sub.name):
                    dirs.setdefault(sub.name, sub)
    zones: list[tuple[str, Path]] = []
    for zone_id in sorted(dirs, key=_zone_key):
        path = dirs[zone_id]
        try:
            name = read_text(path / "name").strip()
        except OSError:
            continue
        pkg, sub = _zone_ids(zone_id)
        if sub is None and name.startswith("package"):
            zones.append((name, path))
        elif sub is not None and name == "dram":
            zones.append((f"dram:{pkg}", path))
    if not any(not label.startswith("dram") for label, _ in zones):
        raise MeterUnavailable(
            f"rapl: no intel-rapl package zone under {root} — this CPU or kernel exposes no RAPL through "
            f"powercap (try: sudo modprobe intel_rapl_msr; or use the estimate meter: {_ESTIMATE})"
        )
    return zones


class RaplMeter(HardwareMeter):
    """Sums the energy counters of all CPU packages and their DRAM."""

    name = "rapl"
    method = METHOD_RAPL

    def __init__(
        self,
        root: str | Path = DEFAULT_ROOT,
        read_text: ReadText = _read_text,
        sync: Callable[[], None] | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        super().__init__(sync=sync, clock=clock)
        self.root = Path(root)
        self._read = read_text
        zones = []
        for label, path in _discover(self.root, read_text):
            try:
                max_range = int(read_text(path / "max_energy_range_uj").strip())
            except (OSError, ValueError) as exc:
                raise MeterUnavailable(f"rapl: cannot read {path / 'max_energy_range_uj'}: {exc}") from exc
            zones.append(RaplZone(label, path, max_range))
        self.zones: tuple[RaplZone, ...] = tuple(zones)
        self._read_all()  # fail now, with the fix, rather than inside the first measurement

    def describe(self) -> str:
        return f"rapl: {', '.join(z.label for z in self.zones)} under {self.root}"

    def _read_zone(self, zone: RaplZone) -> int:
        path = zone.path / "energy_uj"
        try:
            return int(self._read(path).strip())
        except PermissionError as exc:
            raise MeterUnavailable(
                f"rapl: cannot read {path}: permission denied (energy_uj is readable by root only since "
                f"Linux 5.10) — run as root or `sudo chmod a+r {self.root}/intel-rapl:*/energy_uj`"
            ) from exc
        except (OSError, ValueError) as exc:
            raise MeterUnavailable(f"rapl: cannot read {path}: {exc}") from exc

    def _read_all(self) -> dict[Path, int]:
        return {z.path: self._read_zone(z) for z in self.zones}

    def _begin(self) -> _RaplState:
        last = self._read_all()
        return _RaplState(t0=self._clock(), last=last, acc_uj={p: 0 for p in last})

    def update(self, state: _RaplState) -> None:
        """Each zone may wrap once between two reads; poll at least that often on long windows."""
        for zone in self.zones:
            now = self._read_zone(zone)
            prev = state.last[zone.path]
            delta = now - prev if now >= prev else now + zone.max_range_uj - prev
            state.acc_uj[zone.path] += delta
            state.last[zone.path] = now

    def _end(self, state: _RaplState) -> Reading:
        self.update(state)
        seconds = self._clock() - state.t0
        return Reading(energy_j=sum(state.acc_uj.values()) / 1e6, seconds=seconds)
