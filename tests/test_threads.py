"""training.threads: auto picks the cores this process may use (issue 11, item 4)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest

from evowatt.config.load import validate_config
from evowatt.driver.tasks import eval_settings
from evowatt.nn import threads
from tests.conftest import SMALL_NETWORK

needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux affinity")


@needs_affinity
def test_auto_follows_a_restricted_affinity():
    """In a child restricted to one core, auto gives 1 thread and an evaluation runs on 1 torch thread."""
    code = textwrap.dedent(
        """
        import os, torch
        from evowatt.nn.threads import affinity_cores, resolve_threads
        first = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {first})
        print(affinity_cores(), resolve_threads("auto"), resolve_threads("auto", share=2), resolve_threads(3))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1", "1", "3"]


@needs_affinity
def test_count_follows_the_affinity():
    assert threads.affinity_cores() == len(os.sched_getaffinity(0))
    limit = threads.cgroup_cpu_limit()
    cores = len(os.sched_getaffinity(0))
    assert threads.count_cores() == (cores if limit is None else min(cores, max(1, math.ceil(limit))))
    assert threads.resolve_threads(None) is None  # torch's own choice
    assert threads.resolve_threads(4, share=2) == 4  # a number is taken as given


def test_cgroup_quota_caps_the_count(tmp_path):
    (tmp_path / "proc").write_text("0::/user.slice/job\n")
    job = tmp_path / "cg" / "user.slice" / "job"
    job.mkdir(parents=True)
    (tmp_path / "cg" / "cpu.max").write_text("max 100000\n")
    (job / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc") == 1.5
    (job / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc") is None
    # cgroup v1
    v1 = tmp_path / "v1"
    (v1 / "cpu" / "docker").mkdir(parents=True)
    (v1 / "cpu" / "docker" / "cpu.cfs_quota_us").write_text("50000")
    (v1 / "cpu" / "docker" / "cpu.cfs_period_us").write_text("100000")
    (tmp_path / "proc1").write_text("4:cpu,cpuacct:/docker\n")
    assert threads.cgroup_cpu_limit(v1, tmp_path / "proc1") == 0.5


def test_the_quota_caps_the_affinity_rounded_up(monkeypatch):
    monkeypatch.setattr(threads, "affinity_cores", lambda: 8)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 1.5)
    assert threads.count_cores() == 2
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.count_cores() == 8
    monkeypatch.setattr(threads, "available_cores", threads.count_cores)
    assert threads.resolve_threads("auto", share=3) == 2
    assert threads.resolve_threads("auto", share=16) == 1


def test_auto_is_the_default_and_the_process_runner_shares_the_cores(monkeypatch):
    base = {"network": SMALL_NETWORK}
    assert validate_config(base).training.threads == "auto"
    monkeypatch.setattr(threads, "available_cores", lambda: 6)
    sequential = eval_settings(validate_config(base))
    pool = eval_settings(validate_config({**base, "runner": {"kind": "process", "workers": 3}}))
    assert threads.resolve_threads(sequential.threads, sequential.thread_share) == 6
    assert threads.resolve_threads(pool.threads, pool.thread_share) == 2
    with pytest.raises(Exception, match="threads"):
        validate_config({**base, "training": {"threads": 0}})
