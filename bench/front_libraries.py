"""moocore (the core's dependency) against pymoo on what the Pareto search calls each generation.

    pip install pymoo && python bench/front_libraries.py

Non-dominated sorting and 2-D / 3-D hypervolume on random point sets of the sizes a generation holds (a
population of 8-64 with two exits each: 16-128 points) and larger; both libraries must agree exactly. Times
are medians of repeated calls in this process (microseconds per call).
"""

from __future__ import annotations

import statistics
import time

import moocore
import numpy as np


def per_call(fn, repeats: int = 50) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    from pymoo.indicators.hv import HV
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    rng = np.random.default_rng(0)
    sorter = NonDominatedSorting()
    print(
        "| points | objectives | sort moocore (µs) | sort pymoo (µs) "
        "| HV moocore (µs) | HV pymoo (µs) | equal |"
    )
    print("|---|---|---|---|---|---|---|")
    for n in (16, 128, 1024):
        for m in (2, 3):
            points = rng.integers(0, 20, size=(n, m)).astype(float)  # ties and duplicates, as accuracies have
            ranks = moocore.pareto_rank(points)
            fronts = sorter.do(points)
            theirs = np.empty(n, dtype=int)
            for rank, front in enumerate(fronts):
                theirs[front] = rank
            ref = np.full(m, 21.0)
            hv_ours = moocore.hypervolume(points, ref=ref)
            hv_theirs = HV(ref_point=ref)(points)
            equal = bool((ranks == theirs).all()) and abs(hv_ours - hv_theirs) < 1e-9 * max(1.0, hv_ours)
            row = [
                per_call(lambda p=points: moocore.pareto_rank(p)),
                per_call(lambda p=points: sorter.do(p)),
                per_call(lambda p=points, r=ref: moocore.hypervolume(p, ref=r)),
                per_call(lambda p=points, r=ref: HV(ref_point=r)(p)),
            ]
            print(f"| {n} | {m} | " + " | ".join(f"{v:.0f}" for v in row) + f" | {equal} |")


if __name__ == "__main__":
    main()
