"""Energy of a training run, recorded beside the inference figures (reported; fitness only if configured).

Only a hardware meter can say what training cost; with the estimate the result is None rather than a
number of another kind.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from evowatt.energy.base import HardwareMeter, Meter, Reading


class TrainingEnergy:
    """`with TrainingEnergy(meter) as te: train(...)`, then `te.energy_j`, `te.method`, `te.to_metric()`.

    A background poll folds counter progress in every `poll_s`, so a counter that wraps (RAPL every few
    minutes at high power on some CPUs) cannot lose a lap during a long run.
    """

    def __init__(self, meter: Meter | None, poll_s: float = 10.0) -> None:
        self._meter = meter if isinstance(meter, HardwareMeter) else None
        self._poll_s = poll_s
        self._state: Any = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._lock = threading.Lock()
        self.reading: Reading | None = None
        self.poll_error: BaseException | None = None

    @property
    def energy_j(self) -> float | None:
        return self.reading.energy_j if self.reading is not None else None

    @property
    def seconds(self) -> float | None:
        return self.reading.work_seconds if self.reading is not None else None

    @property
    def method(self) -> str | None:
        return self._meter.method if self._meter is not None and self.reading is not None else None

    def to_metric(self) -> dict[str, Any] | None:
        """The `training_energy` metric (J for the whole run), or None without a hardware meter."""
        if self.reading is None or self._meter is None:
            return None
        return {"value": self.reading.energy_j, "ci": None, "n": 1, "method": self._meter.method}

    def _poll(self) -> None:
        assert self._meter is not None
        while not self._stop.wait(self._poll_s):
            with self._lock:
                try:
                    self._meter.update(self._state)
                except Exception as exc:  # noqa: BLE001 - a failed poll only risks a lap; the close re-reads
                    self.poll_error = exc

    def __enter__(self) -> TrainingEnergy:
        if self._meter is not None:
            self._state = self._meter.begin()
            self._poller = threading.Thread(target=self._poll, daemon=True, name="evowatt-training-energy")
            self._poller.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._meter is None:
            return
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
        with self._lock:
            self.reading = self._meter.end(self._state)
