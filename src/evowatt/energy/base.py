"""The meter interface: one class per device kind, as in Zeus.

Two kinds of meter exist and the difference matters for what may be reported:

* a *hardware* meter (NVML, RAPL) reads an energy counter or samples power over a window of wall time,
  so it gives energy **and** power;
* the *estimate* meter computes energy from the model's operations and memory traffic; it has no time
  base, so it gives energy (J per inference) but never power.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from evowatt.errors import EvowattError

#: Method labels stored beside every value, so a number never loses how it was obtained.
METHOD_NVML = "measured:nvml"
METHOD_RAPL = "measured:rapl"
METHOD_ESTIMATE = "estimated:model"
METHOD_CLOCK = "measured:clock"
METHOD_COUNTED = "counted:model"

Clock = Callable[[], float]


class MeterUnavailable(EvowattError):
    """A meter that cannot be read here; the message names the meter, why, and the fix."""


def setting_hint(key: str, value: str, option: str) -> str:
    """How to choose ``value``, in both places the same meter message reaches: a run's config (`evowatt
    run` has no --meter or --device option) and the option of `evowatt measure`."""
    return (
        f"{key}: {value} in a run's config (evowatt run --set {key}={value}), "
        f"--{option} {value} in evowatt measure"
    )


@dataclass(frozen=True)
class Reading:
    """Energy consumed over one closed window, with the window's duration by the meter's own clock.

    `seconds` is the span the energy covers. A meter that waits for its counter to tick at the window's
    close covers an idle tail after the work; `busy_seconds` is the span up to the close call, so the
    idle tail can be priced at idle power instead of being charged to the work.
    """

    energy_j: float
    seconds: float
    busy_seconds: float | None = None

    @property
    def work_seconds(self) -> float:
        return self.seconds if self.busy_seconds is None else self.busy_seconds

    @property
    def power_w(self) -> float:
        return self.energy_j / self.seconds if self.seconds > 0 else float("nan")


def no_sync() -> None:
    """A CPU has nothing in flight to wait for."""


def device_sync(device: Any) -> Callable[[], None]:
    """Waits for the device's queued work, so a window's edges are where the work really starts and ends."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return lambda: torch.cuda.synchronize(dev)
    if dev.type == "mps":
        return torch.mps.synchronize
    return no_sync


class Meter(abc.ABC):
    """What every meter tells about itself: a name, the label of its values, and whether it gives power."""

    name: ClassVar[str]
    method: ClassVar[str]
    gives_power: ClassVar[bool]

    @abc.abstractmethod
    def describe(self) -> str:
        """One line saying what is read (device, counter), shown when a run starts and by `evowatt meters`."""

    def close(self) -> None:  # noqa: B027 - optional hook, most meters hold nothing
        """Release the library handle or threads the meter holds."""

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WindowResult:
    """Filled when a `HardwareMeter.window()` closes; lets callers use a `with` block and read afterwards."""

    reading: Reading | None = None


class HardwareMeter(Meter):
    """A meter that reads real energy over windows of wall time.

    `begin()` returns an opaque start state; `end(state)` closes the window. Both first call the meter's
    `sync` so that work queued on an accelerator is inside the window it belongs to.
    """

    gives_power: ClassVar[bool] = True

    def __init__(self, sync: Callable[[], None] | None = None, clock: Clock = time.perf_counter) -> None:
        self._sync = sync or no_sync
        self._clock = clock

    def begin(self) -> Any:
        self._sync()
        return self._begin()

    def end(self, state: Any) -> Reading:
        self._sync()
        return self._end(state)

    def update(self, state: Any) -> None:  # noqa: B027 - only counters that can wrap need it
        """Fold counter progress into `state` so a long window survives counter wrap-around."""

    @abc.abstractmethod
    def _begin(self) -> Any: ...

    @abc.abstractmethod
    def _end(self, state: Any) -> Reading: ...

    @contextmanager
    def window(self) -> Iterator[WindowResult]:
        result = WindowResult()
        state = self.begin()
        try:
            yield result
        finally:
            result.reading = self.end(state)
