"""Fitting a cost predictor to measured networks, and the held-out figures that say how far to trust it.

Why non-negative least squares on relative errors: every feature is a cost the device pays (FLOPs, bytes,
calls), so no coefficient may be negative, and a fit with signs free finds cancelling pairs that predict
nonsense for networks unlike the samples. Latencies of sampled networks span orders of magnitude, and a
search compares them by ratio, so each row is divided by its measured value: the fit minimises the
squared *relative* error, and a small network counts as much as a large one. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: A column whose part outside the span of the columns before it is below this share of its own norm
#: repeats them (a ReLU's bytes are always 8 x its FLOPs): it is dropped, since its weight is not
#: identifiable and the ones kept predict the same.
DEPENDENT = 1e-7
NEGLIGIBLE = 1e-9


@dataclass(frozen=True)
class Fit:
    """Coefficients per kept feature (same unit as the target per unit of feature)."""

    features: tuple[str, ...]
    coefficients: tuple[float, ...]
    solver: str

    def predict(self, rows: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Predictions for feature rows whose columns are ``names`` (features absent there count 0)."""
        index = {name: i for i, name in enumerate(names)}
        out = np.zeros(rows.shape[0])
        for name, coef in zip(self.features, self.coefficients, strict=True):
            if name in index:
                out += coef * rows[:, index[name]]
        return out


def independent_columns(x: np.ndarray) -> list[int]:
    """The columns, in order, that are not zero and not a combination of the columns kept before them."""
    kept: list[int] = []
    basis: list[np.ndarray] = []
    for j in range(x.shape[1]):
        column = x[:, j].astype(float)
        norm = float(np.linalg.norm(column))
        if norm == 0 or not math.isfinite(norm):
            continue
        residual = column / norm
        for _ in range(2):  # Gram-Schmidt twice: orthogonal to working precision
            for b in basis:
                residual = residual - float(b @ residual) * b
        left = float(np.linalg.norm(residual))
        if left > DEPENDENT:
            kept.append(j)
            basis.append(residual / left)
    return kept


def _nnls(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, str]:
    try:
        from scipy.optimize import nnls
    except ImportError:  # scikit-learn's positive least squares gives the same solution
        from sklearn.linear_model import LinearRegression

        model = LinearRegression(positive=True, fit_intercept=False).fit(a, b)
        return np.asarray(model.coef_, dtype=float), "sklearn LinearRegression(positive=True)"
    solution, _ = nnls(a, b, maxiter=50 * a.shape[1])
    return solution, "scipy.optimize.nnls"


def _solve(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, str]:
    """Non-negative ``c`` minimising sum(((x @ c) / y - 1) ** 2), columns scaled for the solver."""
    a = x / y[:, None]  # each row relative to its own target
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    solution, solver = _nnls(a / scale, np.ones(len(y)))
    return solution / scale, solver


def fit_nonnegative(x: np.ndarray, y: np.ndarray, names: Sequence[str]) -> Fit:
    """Non-negative coefficients minimising the relative squared error of ``x @ c`` against ``y`` (> 0)."""
    if x.shape[0] != y.shape[0] or x.shape[1] != len(names):
        raise ValueError("features, targets and names do not match")
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("targets must be positive and finite")
    kept = independent_columns(x)
    coefficients, solver = _solve(x[:, kept], y)
    a = x[:, kept] / y[:, None]
    # a term worth less than NEGLIGIBLE of every target it touches is the solver's rounding, not a cost
    share = coefficients * np.max(np.abs(a), axis=0)
    chosen = [
        (names[j], float(c))
        for j, c, s in zip(kept, coefficients, share, strict=True)
        if c > 0 and s > NEGLIGIBLE
    ]
    return Fit(tuple(n for n, _ in chosen), tuple(c for _, c in chosen), solver)


def scale_factor(x: np.ndarray, y: np.ndarray) -> float:
    """The one factor ``k`` for which ``k * x`` best matches ``y`` in ratio (geometric mean of y / x):
    how good a single proxy (FLOPs, the estimate) is once its unit is fixed."""
    ok = (x > 0) & (y > 0)
    if not np.any(ok):
        return 0.0
    return float(np.exp(np.mean(np.log(y[ok] / x[ok]))))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (NaN for fewer than 3 values or a constant side)."""
    if len(a) < 3:
        return math.nan
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    if np.std(ra) == 0 or np.std(rb) == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass(frozen=True)
class Accuracy:
    """How well predictions match measurements on networks the fit did not see."""

    n: int
    spearman: float
    mdape: float  # median absolute percentage error, as a fraction (0.08 = 8 %)
    within_10: float  # share of networks predicted within ±10 %
    within_25: float

    def to_dict(self) -> dict[str, float | int | None]:
        def clean(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {
            "n": self.n,
            "spearman": clean(self.spearman),
            "mdape": clean(self.mdape),
            "within_10": clean(self.within_10),
            "within_25": clean(self.within_25),
        }


def accuracy(predicted: np.ndarray, measured: np.ndarray) -> Accuracy:
    if len(measured) == 0:
        return Accuracy(0, math.nan, math.nan, math.nan, math.nan)
    error = np.abs(predicted - measured) / measured
    return Accuracy(
        n=len(measured),
        spearman=spearman(predicted, measured),
        mdape=float(np.median(error)),
        within_10=float(np.mean(error <= 0.10)),
        within_25=float(np.mean(error <= 0.25)),
    )
