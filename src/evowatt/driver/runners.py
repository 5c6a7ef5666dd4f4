"""Runners map ``evaluate`` over tasks and yield results as each finishes.

Sequential (the default) runs in this process. The process pool runs tasks in spawned workers; that
works because ``evaluate`` is a pure function of a picklable task. The Ray runner runs them on a Ray
cluster: a task carries the weights it starts from and its result brings the trained weights back, the
dataset goes once per run through Ray's object store, and each worker opens its own meter (the task's
``MeterChoice`` says so: ``energy.choice.meter_per_worker``), so no node needs the driver's filesystem.
Every runner is a ``Runner``: the loop and the handover know no runner in particular.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Protocol

from evowatt.config.schema import RunnerConfig
from evowatt.errors import EvowattError
from evowatt.nn.threads import available_cores

RAY_INSTALL = "pip install 'evowatt[ray]'"


class Runner(Protocol):
    """Maps a function of a task (``evaluate``, ``time_models``) over tasks: ``map`` yields each result as
    it finishes (in any order; each says its task's id), and stops the rest of its tasks when its caller
    stops reading; ``close`` (every exit path, Ctrl-C included) ends whatever still runs."""

    def map(self, fn: Callable[..., Any], tasks: list[Any]) -> Iterator[Any]: ...

    def close(self) -> None: ...


class SequentialRunner:
    """In this process, one task after the other: the default, and the reference every runner equals."""

    def map(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[Any]:
        for task in tasks:
            yield fn(task)

    def close(self) -> None:
        pass


def _limit_threads(threads: int) -> None:
    """Workers share the cores: each gets its share of torch threads, or they slow each other badly.

    Ctrl-C reaches every process of the terminal's group: the driver handles it (it stops the run and
    shuts the pool down), so a worker ignores it instead of printing its own KeyboardInterrupt traceback."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)


def _without_interrupts(start: Callable[[], Any]) -> Any:
    """Workers are spawned on submit; spawned with SIGINT ignored (inherited across exec, and Python then
    installs no handler), a Ctrl-C during their start-up cannot end one of them with a traceback."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return start()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return start()
    finally:
        signal.signal(signal.SIGINT, previous)


class ProcessRunner:
    """A pool of spawned workers; each worker loads the data once and keeps it for later tasks."""

    def __init__(self, workers: int):
        threads = max(1, available_cores() // workers)
        self.pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_limit_threads,
            initargs=(threads,),
        )

    def map(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[Any]:
        futures = _without_interrupts(lambda: [self.pool.submit(fn, task) for task in tasks])
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:  # a caller that stops early (the time limit): what has not started never runs
            for future in futures:
                future.cancel()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def import_ray():
    """Ray, or one message naming the install (it is an extra)."""
    try:
        import ray
    except ImportError:
        raise EvowattError(
            f"runner.kind is 'ray' but Ray is not installed: {RAY_INSTALL} (Ray >= 2.60), on the driver "
            "and on every node; or choose runner.kind sequential or process"
        ) from None
    return ray


def check_runner(config: RunnerConfig) -> None:
    """Refuse, before a run writes anything, a runner this installation cannot start."""
    if config.kind == "ray":
        import_ray()


def _ray_evaluate(fn: Callable[..., Any], task: Any, splits: Any) -> Any:
    """What a Ray worker runs: ``splits`` arrive through the object store (None: the worker loads them)."""
    if splits is None:
        return fn(task)
    return fn(task, splits=splits)


class RayRunner:
    """Evaluations as Ray tasks, recorded as each finishes.

    Connects to ``runner.address`` or ``$RAY_ADDRESS``; else starts a local Ray instance for the run and
    stops it at ``close``. An already connected Ray (``ray.init`` by the caller) is used as it is. A task
    whose worker or node dies is run again by Ray up to ``runner.retries`` times; after that it comes back
    as a failed evaluation with the reason. ``close`` (also on Ctrl-C) cancels what is still running.
    """

    def __init__(self, config: RunnerConfig):
        self.ray = ray = import_ray()
        self.config = config
        self.started = False
        if not ray.is_initialized():
            address = config.address or os.environ.get("RAY_ADDRESS") or None
            options: dict[str, Any] = {"logging_level": logging.WARNING, "configure_logging": True}
            if address is None:
                options["include_dashboard"] = False
            try:
                # "local": a new instance for this run, never a cluster `ray start` left on this machine.
                # A local Ray's daemons join the terminal's process group: started with SIGINT ignored,
                # a Ctrl-C leaves them to the driver, which cancels the evaluations and shuts Ray down.
                _without_interrupts(lambda: ray.init(address=address or "local", **options))
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise EvowattError(
                    f"cannot start or reach {where} ({type(exc).__name__}: {exc}); check runner.address "
                    "or $RAY_ADDRESS, or choose runner.kind sequential"
                ) from None
            self.started = address is None
        self.remote = ray.remote(_ray_evaluate)
        self.data: dict[Any, Any] = {}  # DataRef -> ObjectRef of its splits, put once per run
        self.pending: dict[Any, Any] = {}  # ObjectRef -> task, still running

    def _splits(self, data: Any) -> Any:
        if self.config.data == "shared":
            return None
        if data not in self.data:
            self.data[data] = self.ray.put(data.load())
        return self.data[data]

    def _gpus(self, device: str) -> float:
        if self.config.gpus is not None:
            return self.config.gpus
        if device.startswith("cuda"):
            return 1.0
        if device == "auto":
            return 1.0 if self.ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        return 0.0

    def _prepare(self, task: Any) -> Any:
        """The task as a remote worker runs it: threads to its CPUs (its meter is the task's: per worker)."""
        settings = task.settings
        if settings.threads is None:
            threads = max(1, int(self.config.cpus))
            task = dataclasses.replace(task, settings=dataclasses.replace(settings, threads=threads))
        return task

    def map(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[Any]:
        """Submits every task now (Ray runs them as workers free up); yields each result as it arrives."""
        for task in tasks:
            remote = self.remote.options(
                num_cpus=self.config.cpus,
                num_gpus=self._gpus(task.settings.device),
                max_retries=self.config.retries,
                retry_exceptions=False,
                name=f"evowatt-evaluate-{task.id}",
            )
            self.pending[remote.remote(fn, self._prepare(task), self._splits(task.data))] = task
        return self._collect()

    def _collect(self) -> Iterator[Any]:
        try:
            while self.pending:
                (ref,), _ = self.ray.wait(list(self.pending), num_returns=1)
                task = self.pending.pop(ref)
                yield self._result(ref, task)
        finally:
            self._cancel()

    def _result(self, ref: Any, task: Any) -> Any:
        from ray import exceptions

        try:
            return self.ray.get(ref)
        except exceptions.RayTaskError as exc:
            # evaluate raises only for user errors (EvowattError): the run's problem, not the individual's
            cause = getattr(exc, "cause", None)
            if isinstance(cause, EvowattError):
                raise EvowattError(str(cause)) from None
            raise
        except exceptions.RayError as exc:  # worker or node died, object lost, out of memory
            from evowatt.records import EvalResult, Status

            first = (str(exc).strip().splitlines() or [""])[0]
            tries = self.config.retries + 1
            return EvalResult(
                task.id,
                Status.FAILED,
                reason=f"its Ray worker died (tried {tries} time{'s' * (tries > 1)}; "
                f"{type(exc).__name__}: {first})",
            )

    def _cancel(self) -> None:
        for ref in list(self.pending):
            with contextlib.suppress(Exception):  # already finished, or its worker already gone
                self.ray.cancel(ref, force=True)
        self.pending.clear()

    def close(self) -> None:
        self._cancel()
        self.data.clear()
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
        self.started = False


def make_runner(config: RunnerConfig) -> Runner:
    if config.kind == "process":
        return ProcessRunner(config.workers)
    if config.kind == "ray":
        return RayRunner(config)
    return SequentialRunner()
