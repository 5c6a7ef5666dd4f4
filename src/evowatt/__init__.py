"""evowatt: power-aware neuroevolution for PyTorch.

``evowatt.run(config)`` runs a search; ``evowatt.load_config(path)`` reads and validates a config file;
``evowatt.front(run_dir)`` and ``evowatt.pick(run_dir, "energy<2e-6")`` read what a run found;
``evowatt.fit(x, y, minutes=5)`` searches on arrays in memory and returns a model that predicts and exports.
torch is imported only when a run starts, so the search side stays importable without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evowatt.errors import EvowattError
from evowatt.version import __version__

if TYPE_CHECKING:
    from evowatt.config.schema import RunConfig
    from evowatt.driver.results import FrontModel
    from evowatt.driver.session import RunResult
    from evowatt.fitting import FitResult


__all__ = ["EvowattError", "__version__", "fit", "front", "load_config", "pick", "run"]


def load_config(path: str, overrides: list[str] | None = None, seed: int | None = None) -> RunConfig:
    from evowatt.config.load import load_config as _load

    return _load(path, overrides, seed)


def run(config: RunConfig | str, out: str | None = None, **kwargs: Any) -> RunResult:
    """Run a search from a RunConfig (or a config file path) into a new run directory."""
    from evowatt.driver.session import run as _run

    if isinstance(config, str):
        config = load_config(config)
    return _run(config, out=out, **kwargs)


def front(run_dir: str) -> list[FrontModel]:
    """The run's non-dominated models (objectives on evo_test), the most accurate first."""
    from evowatt.driver.results import front as _front

    return _front(run_dir)


def pick(run_dir: str, *budgets: str) -> FrontModel | None:
    """The most accurate model of the run within every budget, e.g. ``pick(run, "energy<2e-6")``."""
    from evowatt.driver.results import pick as _pick

    return _pick(run_dir, *budgets)


def fit(x: Any, y: Any, minutes: float | None = None, **kwargs: Any) -> FitResult:
    """Search networks for images ``x`` with labels ``y`` (arrays in memory); see ``evowatt.fitting.fit``."""
    from evowatt.fitting import fit as _fit

    return _fit(x, y, minutes, **kwargs)
