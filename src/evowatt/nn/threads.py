"""How many torch threads an evaluation may use: ``training.threads: auto`` (the default).

``auto`` counts the cores this process may run on (``os.sched_getaffinity``: taskset, numactl, a container's
cpuset) and caps them by the cgroup CPU quota (``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us`` in v1: a
container limited to 1.5 CPUs gets 2 threads at most, rounded up), then divides them among the evaluations
that run at once (the process runner's workers). torch's own default counts every core of the machine:
on 2 cores shared with one other busy process, that oversubscription took a tiny network from 44k to
1.1k images/s (docs/results.md). Torch-free, so the search and the CLI can use it.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def affinity_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _own_cgroup_dirs(root: Path, proc_cgroup: Path) -> list[Path]:
    """This process's cgroup directory and its ancestors (a limit anywhere above applies too)."""
    text = _read(proc_cgroup) or ""
    dirs = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers not in ("", "cpu", "cpu,cpuacct", "cpuacct,cpu"):
            continue
        base = root if controllers == "" else root / "cpu"
        if not base.is_dir() and controllers:
            base = root / "cpu,cpuacct"
        current = base / path.lstrip("/")
        while True:
            dirs.append(current)
            if current == base or current.parent == current:
                break
            current = current.parent
    dirs.append(root)
    return dirs


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The tightest CPU quota (in CPUs) over this process's cgroups, or None when there is none."""
    limits = []
    for directory in _own_cgroup_dirs(root, proc_cgroup):
        v2 = _read(directory / "cpu.max")
        if v2:
            quota, _, period = v2.partition(" ")
            if quota != "max" and period:
                with contextlib.suppress(ValueError):
                    limits.append(int(quota) / int(period))
        quota_v1, period_v1 = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
        if quota_v1 and period_v1:
            try:
                if int(quota_v1) > 0:
                    limits.append(int(quota_v1) / int(period_v1))
            except ValueError:
                pass
    return min(limits) if limits else None


def count_cores() -> int:
    """Cores this process may use: its affinity, capped by the cgroup quota (rounded up)."""
    cores = affinity_cores()
    limit = cgroup_cpu_limit()
    if limit is not None and limit > 0:
        cores = min(cores, max(1, math.ceil(limit)))
    return cores


available_cores = count_cores  # what ``auto`` asks (the test suite pins it to 1: its workers share cores)


def resolve_threads(setting: int | str | None, share: int = 1) -> int | None:
    """The thread count for a setting: a number as given, ``auto`` the available cores divided by
    ``share`` (evaluations running at once; at least 1), None to leave torch's choice."""
    if setting is None:
        return None
    if setting == "auto":
        return max(1, available_cores() // max(1, share))
    return int(setting)
