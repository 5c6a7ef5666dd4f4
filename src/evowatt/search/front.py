"""Pareto machinery: objective points of a result, constrained non-dominated ranks, crowding, hypervolume.

Everything works in minimisation form (a maximised objective is negated). Non-dominated sorting and
hypervolume come from moocore (a maintained C library, exact in 2-D and 3-D, with numpy as its only heavy
dependency; pymoo would bring matplotlib, autograd and cma into the core for the same two functions).
Crowding distance is NSGA-II's formula (Deb et al. 2002), written here because moocore has none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import moocore
import numpy as np

from evowatt.config.search import Constraint, Objective
from evowatt.provenance import point_source
from evowatt.records import EvalResult

EXITS = {"0": "", "1": "_1"}  # exit -> metric suffix: the full model and the early exit


def exits_of(result: EvalResult) -> list[str]:
    """The model exits a result holds: the full model, and the early exit when it was partitioned."""
    return ["0", "1"] if "accuracy_1" in result.metrics else ["0"]


def violation(value: float, constraint: Constraint) -> float:
    """How far a value lies outside a constraint, relative to the bound (0 when it holds)."""
    scale = abs(constraint.value) or 1.0
    if constraint.type == "less_than":
        excess = value - constraint.value if value >= constraint.value else 0.0
    else:
        excess = constraint.value - value if value <= constraint.value else 0.0
    if excess == 0.0 and value == constraint.value:
        excess = scale * 1e-12  # a strict bound: equal is outside, by the smallest margin
    return excess / scale


def points_of(
    result: EvalResult, objectives: Sequence[Objective], constraints: Sequence[Constraint]
) -> tuple[dict[str, dict[str, Any]], str | None]:
    """One point per exit: ``{"values": [...] (as measured), "violation": v, "reason": ...}``.

    The violation is that of the fixed constraints; ``with_floors`` adds the relative ones for a pool. A
    result that is not ok has no point; an exit missing an objective or constraint metric has none either
    (the reason says which), so it can never outrank a measured one.
    """
    if not result.ok:
        return {}, result.reason or result.status.value
    constraints = [c for c in constraints if not c.relative]  # a pool's, not a point's: with_floors
    points: dict[str, dict[str, Any]] = {}
    missing = []
    for exit_, suffix in EXITS.items():
        if exit_ not in exits_of(result):
            continue
        values = [result.metric(o.metric + suffix) for o in objectives]
        bounds = [result.metric(c.metric + suffix) for c in constraints]
        absent = [o.metric + suffix for o, v in zip(objectives, values, strict=True) if v is None]
        absent += [c.metric + suffix for c, v in zip(constraints, bounds, strict=True) if v is None]
        if absent:
            missing.append(f"metric {', '.join(absent)} is missing")
            continue
        broken = [c.text() for c, v in zip(constraints, bounds, strict=True) if violation(v, c) > 0]
        total = sum(violation(v, c) for c, v in zip(constraints, bounds, strict=True))
        points[exit_] = {
            "values": values,
            "violation": total,
            "reason": f"violates {', '.join(broken)}" if broken else None,
            "source": point_source(result, [o.metric + suffix for o in objectives]),
        }
    return points, ("; ".join(missing) if missing else None)


def with_floors(
    values: Sequence[Sequence[float]],
    violations: Sequence[float],
    objectives: Sequence[Objective],
    constraints: Sequence[Constraint],
) -> list[float]:
    """The points' violations plus those of the relative constraints ("accuracy > best - 0.01"), whose
    bound is fixed by the best value among the points that meet every fixed constraint (among all points
    where none does). Computed per pool, never stored: the floor rises as the search finds better networks.
    """
    total = [float(v) for v in violations]
    relative = [c for c in constraints if c.relative]
    if not relative or not total:
        return total
    names = [o.metric for o in objectives]
    feasible = [i for i, v in enumerate(total) if v == 0] or list(range(len(total)))
    for constraint in relative:
        column = names.index(constraint.metric)
        pool = [values[i][column] for i in feasible if not math.isnan(values[i][column])]
        if not pool:
            continue
        maximise = objectives[column].objective == "maximize"
        bound = constraint.bound(max(pool) if maximise else min(pool))
        total = [t + violation(point[column], bound) for t, point in zip(total, values, strict=True)]
    return total


def minimisation(values: Sequence[Sequence[float]], objectives: Sequence[Objective]) -> np.ndarray:
    """Points as rows, every objective turned into one to minimise."""
    signs = np.array([-1.0 if o.objective == "maximize" else 1.0 for o in objectives])
    array = np.asarray(values, dtype=float).reshape(-1, len(objectives))
    return array * signs


def constrained_ranks(points: np.ndarray, violations: Sequence[float]) -> np.ndarray:
    """Constrained domination (NSGA-II): feasible points by non-dominated rank (0 = the front), then every
    infeasible one after all of them, ordered by total violation (equal violations share a rank)."""
    violations = np.asarray(violations, dtype=float)
    ranks = np.zeros(len(violations), dtype=int)
    feasible = violations == 0
    if feasible.any():
        ranks[feasible] = moocore.pareto_rank(points[feasible])
    start = int(ranks[feasible].max()) + 1 if feasible.any() else 0
    if (~feasible).any():
        levels = np.unique(violations[~feasible])
        ranks[~feasible] = start + np.searchsorted(levels, violations[~feasible])
    return ranks


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of points of one front: boundary points infinite, others the sum over
    objectives of the normalised gap between their neighbours."""
    n, m = points.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, math.inf)
    for j in range(m):
        order = np.argsort(points[:, j], kind="stable")
        column = points[order, j]
        span = column[-1] - column[0]
        distance[order[0]] = distance[order[-1]] = math.inf
        if span > 0:
            distance[order[1:-1]] += (column[2:] - column[:-2]) / span
    return distance


def hypervolume(points: np.ndarray, reference: Sequence[float]) -> float:
    """Volume dominated by the points up to the reference point (points beyond it count nothing)."""
    if len(points) == 0:
        return 0.0
    reference = np.asarray(reference, dtype=float)
    inside = points[np.all(points < reference, axis=1)]
    return float(moocore.hypervolume(inside, ref=reference)) if len(inside) else 0.0


def hv_contributions(points: np.ndarray, reference: Sequence[float]) -> np.ndarray:
    """Each point's exclusive share of the hypervolume (0 for dominated or outside points)."""
    reference = np.asarray(reference, dtype=float)
    out = np.zeros(len(points))
    inside = np.all(points < reference, axis=1)
    if inside.any():
        out[inside] = moocore.hv_contributions(points[inside], ref=reference)
    return out


def default_reference(points: np.ndarray) -> list[float]:
    """A reference point just beyond the worst of each objective (10 % of its range, or of its size)."""
    worst, best = points.max(axis=0), points.min(axis=0)
    span = worst - best
    margin = np.where(span > 0, 0.1 * span, np.maximum(0.1 * np.abs(worst), 1e-12))
    return [float(v) for v in worst + margin]


def nondominated(points: np.ndarray) -> np.ndarray:
    """Mask of the points no other point dominates (duplicates all kept)."""
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    return moocore.is_nondominated(points, keep_weakly=True)
