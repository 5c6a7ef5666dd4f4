"""The run's meter choice: made once when a run starts, recorded in its store, carried in every task.

One record instead of a dict, names and flags: the driver makes it at set-up (``driver.setup``), the
store keeps it as JSON (meta ``meter``, the same keys since meters were first recorded), and each
``EvalTask`` carries it to ``evaluate``. "Ray means a meter per worker" is decided here alone, in
``meter_per_worker``: the driver may have no GPU, or another meter than the workers. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


def meter_per_worker(runner_kind: str) -> bool:
    """Whether each worker opens its own meter and measures its own idle baseline where it runs: on Ray,
    whose workers may sit on other machines than the driver (no GPU there, or another meter)."""
    return runner_kind == "ray"


@dataclass(frozen=True)
class MeterChoice:
    """What measures a run's evaluations, and why.

    ``per_worker`` is what the run recorded at its start (it started on Ray: ``name`` is ``energy.meter``
    as configured, e.g. ``auto``, resolved by each worker). ``local`` is this session's: its evaluations
    open their meter where they run, as a run recorded per worker or a session on Ray does; it is not
    recorded, since a resume may change the runner.
    """

    name: str  # nvml | rapl | estimate; per worker: energy.meter as configured
    method: str | None = None
    reason: str = ""
    idle: dict[str, Any] | None = None  # the idle baseline measured once at the start (per worker: None)
    per_worker: bool = False
    profile: dict[str, Any] | None = None  # the calibrated profile in use (energy.profile: ProfileUse)
    local: bool = False

    @property
    def cost_key(self) -> str | None:
        """The meter a run's measured costs are shared under; None per worker (``auto`` may resolve
        differently on each worker, so their costs are not shared)."""
        return None if self.per_worker else self.name

    def for_runner(self, runner_kind: str) -> MeterChoice:
        """This choice for a session on ``runner_kind``: where its evaluations open their meter."""
        return replace(self, local=self.per_worker or meter_per_worker(runner_kind))

    def to_json(self) -> dict[str, Any]:
        """As the store records it (meta ``meter``)."""
        data: dict[str, Any] = {
            "name": self.name,
            "method": self.method,
            "reason": self.reason,
            "idle": self.idle,
        }
        if self.per_worker:
            data["per_worker"] = True
        if self.profile:
            data["profile"] = self.profile
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MeterChoice:
        """From the store's record (``to_json``) or a task's (every field)."""
        return cls(
            name=data["name"],
            method=data.get("method"),
            reason=data.get("reason", ""),
            idle=data.get("idle"),
            per_worker=bool(data.get("per_worker", False)),
            profile=data.get("profile") or None,
            local=bool(data.get("local", False)),
        )
