"""Runners map ``evaluate`` over tasks and yield results as each finishes.

Sequential (the default) runs in this process. The process pool runs tasks in spawned workers; that
works because ``evaluate`` is a pure function of a picklable task.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from evowatt.config import RunnerConfig
from evowatt.threads import available_cores


class SequentialRunner:
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
        for future in as_completed(futures):
            yield future.result()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def make_runner(config: RunnerConfig) -> SequentialRunner | ProcessRunner:
    if config.kind == "process":
        return ProcessRunner(config.workers)
    return SequentialRunner()
