"""Where each evaluation's energy came from, and whether two evaluations' energies may be compared.

On one machine every evaluation is measured the same way. Spread over a cluster, workers open their own
meters: one node may read NVML on a GPU, another fall back to the estimate. A measured joule and an
estimated one are different quantities, and a GPU's joules are not a CPU's, so a search must not rank
them against each other. Torch-free: the search side calls this.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from evowatt.errors import EvowattError
from evowatt.records import Status

#: Metric families whose values depend on how and where they were measured (`_0` / `_1` suffixes too).
MEASURED_FAMILIES = ("energy", "power", "energy_gross", "power_gross", "idle_power", "latency")


FIX = (
    "give every worker the same meter (energy.meter: estimate everywhere, or a hardware meter every "
    "node can read), or run the search on one kind of node"
)


def _get(record: Any, key: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(key, default)
    return getattr(record, key, default)


def _family(metric: str) -> str:
    base, _, suffix = metric.rpartition("_")
    return base if base and suffix.isdigit() else metric


def _method(metric: Any) -> str | None:
    return _get(metric, "method")


def _status(record: Any) -> Status:
    return Status(_get(record, "status", Status.OK))


def _device_kind(record: Any) -> str:
    return str(_get(record, "device") or "unknown").split(":")[0]


def meter_of(record: Any) -> str | None:
    """The meter of one evaluation: recorded with it, else read off its energy metric's method."""
    result = _get(record, "result")  # a store row's recorded result (a mapping or an EvalResult)
    meter = _get(record, "meter") or (_get(result, "meter") if result else None)
    if meter:
        return str(meter)
    metrics = _get(record, "metrics") or {}
    for name in sorted(metrics):
        method = _method(metrics[name])
        if _family(name) == "energy" and method:
            return method.split(":", 1)[-1] if method.startswith("measured:") else "estimate"
    return None


def check_comparable(results: Iterable[Any], metrics: Iterable[str] | None = None) -> dict[str, Any]:
    """Refuse to compare evaluations whose energies were obtained differently; say how they were.

    ``results``: evaluation results or store rows (mappings or records with ``metrics``, ``device``,
    ``status``, ``id``). ``metrics``: the objectives to compare (default: every energy, power and latency
    metric). Estimated and measured values of one metric may not meet on one front, nor measurements
    from different meters or device kinds. Returns ``{"methods": [...], "devices": [...]}``.
    """
    wanted = None if metrics is None else set(metrics)
    by_method: dict[str, list[Any]] = {}
    measured_on: dict[tuple[str, str], list[Any]] = {}
    for record in results:
        if _status(record) is not Status.OK:
            continue
        for name, metric in (_get(record, "metrics") or {}).items():
            if (wanted is not None and name not in wanted) or _family(name) not in MEASURED_FAMILIES:
                continue
            method = _method(metric)
            if not method:
                continue
            ident = _get(record, "id")
            if _family(name) != "latency":  # latency is always a clock reading
                by_method.setdefault(method, []).append(ident)
            if method.startswith("measured:"):
                key = (method if _family(name) != "latency" else "", _device_kind(record))
                measured_on.setdefault(key, []).append(ident)

    def ids(values: list[Any]) -> str:
        shown = sorted({v for v in values if v is not None})
        more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
        return ", ".join(f"#{v}" for v in shown[:5]) + more

    estimated = {m: v for m, v in by_method.items() if m.startswith("estimated:")}
    measured = {m: v for m, v in by_method.items() if m.startswith("measured:")}
    if estimated and measured:
        raise EvowattError(
            "cannot compare estimated and measured energies on one front: "
            + "; ".join(f"{m}: {ids(v)}" for m, v in sorted({**measured, **estimated}.items()))
            + f". {FIX}"
        )
    if len(measured) > 1:
        raise EvowattError(
            "cannot compare energies measured by different meters on one front: "
            + "; ".join(f"{m}: {ids(v)}" for m, v in sorted(measured.items()))
            + f". {FIX}"
        )
    kinds = sorted({kind for _, kind in measured_on})
    if len(kinds) > 1:
        raise EvowattError(
            "cannot compare measurements taken on different kinds of device on one front: "
            + "; ".join(f"{kind}: {ids(v)}" for (_, kind), v in sorted(measured_on.items()))
            + f". {FIX}"
        )
    return {"methods": sorted(by_method), "devices": kinds}


def point_source(result: Any, metrics: Iterable[str]) -> str | None:
    """How a front point's measured objectives were obtained, e.g. ``estimated:model`` or
    ``measured:nvml on cuda``; None when no objective depends on a meter (accuracy, FLOPs, ...)."""
    methods = set()
    measured = False
    for name in metrics:
        if _family(name) not in MEASURED_FAMILIES:
            continue
        method = _method((_get(result, "metrics") or {}).get(name))
        if method:
            measured |= method.startswith("measured:")
            if _family(name) != "latency":  # latency is always a clock reading: its device tells
                methods.add(method)
    if not methods and not measured:
        return None
    label = "+".join(sorted(methods)) or "measured:clock"
    return f"{label} on {_device_kind(result)}" if measured else label


def check_one_source(points: Mapping[Any, str | None], where: str = "on one front") -> None:
    """Refuse a front (or a generation, ``where``) whose points (id -> `point_source`) were obtained in
    more than one way."""
    by_source: dict[str, list[Any]] = {}
    for ident, source in points.items():
        if source is not None:
            by_source.setdefault(source, []).append(ident)
    if len(by_source) > 1:
        what = f"cannot compare energies obtained in different ways {where}"
        listed = "; ".join(
            f"{source}: " + ", ".join(f"#{i}" for i in sorted(ids)[:5]) + (" ..." if len(ids) > 5 else "")
            for source, ids in sorted(by_source.items())
        )
        raise EvowattError(f"{what}: {listed}. {FIX}")


def sources(results: Iterable[Any]) -> list[dict[str, Any]]:
    """How many evaluations each (host, device, meter) produced, most first."""
    counts = Counter(
        (str(_get(r, "host") or "?"), str(_get(r, "device") or "?"), meter_of(r) or "none") for r in results
    )
    return [
        {"host": host, "device": device, "meter": meter, "evaluations": n}
        for (host, device, meter), n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]


def mixed_sources(results: Iterable[Any]) -> str | None:
    """A sentence when the evaluations come from different meters or device kinds; None when they agree."""
    rows = sources(results)
    kinds = {(r["device"].split(":")[0], r["meter"]) for r in rows if r["meter"] != "none"}
    if len(kinds) <= 1:
        return None
    listed = ", ".join(f"{r['evaluations']} on {r['host']} {r['device']} ({r['meter']})" for r in rows)
    return (
        f"evaluations come from {len(kinds)} different meters or device kinds ({listed}): their energies "
        "are comparable only within one"
    )
