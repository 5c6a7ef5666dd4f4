"""Import an ENERGIZE (or Fast-DENSER) JSON run configuration into an evowatt config.

Every key is mapped, dropped with a warning that names it (it has no meaning here), or refused when
evowatt cannot honour its value. Where a term would change meaning, the importer says what it did:
ENERGIZE's ``power`` is watts from an NVIDIA GPU, which the analytical estimate cannot give, so under
the estimate it becomes energy per inference with a weight rescaled to keep the term's size.

(One module, under 500 lines: ``import_energize_config`` holds a handler for each of ENERGIZE's keys,
about 200 lines that are read against ENERGIZE's documentation in one place.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from evowatt.config.network import MutationConfig
from evowatt.config.schema import RunConfig
from evowatt.errors import EvowattError, require_file

# ENERGIZE's power weights are tuned to a GPU drawing about this much during inference
ENERGIZE_REFERENCE_WATTS = 100.0


class ConfigImport:
    """The result: the evowatt config as a dict, and the messages for the user."""

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.notes: list[str] = []
        # evowatt dotted key -> the JSON path in the ENERGIZE file it came from, to name it in errors
        self.origin: dict[str, str] = {}

    def set(self, dotted: str, value: Any, source: str | None = None) -> None:
        if source is not None:
            self.origin[dotted] = source
        node = self.config
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    def drop(self, key: str, why: str) -> None:
        self.warnings.append(f"dropped '{key}': {why}")


def _take(data: dict[str, Any], key: str, where: str, imp: ConfigImport, handled: dict[str, Any]) -> None:
    """Apply the handler for one key, or refuse an unknown key by its full name."""
    name = f"{where}.{key}" if where else key
    if key not in handled:
        raise EvowattError(
            f"unknown ENERGIZE config key '{name}'; evowatt knows: {', '.join(sorted(handled))}"
        )
    handled[key](data[key], name, imp)


def _section(handlers: dict[str, Any]):
    def apply(value: Any, name: str, imp: ConfigImport) -> None:
        if not isinstance(value, dict):
            raise EvowattError(f"ENERGIZE config key '{name}' must be an object, got {value!r}")
        for key in value:
            _take(value, key, name, imp, handlers)

    return apply


_KIND_NAMES = {bool: "true or false", int: "an integer", str: "a string", list: "a list", float: "a number"}


def _is(value: Any, kind: type) -> bool:
    """JSON types: true is not an integer, and an integer is a number."""
    if kind is not bool and isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _to(target: str, kind: type | None = None):
    def apply(value: Any, name: str, imp: ConfigImport) -> None:
        if kind is not None and not _is(value, kind):
            raise EvowattError(
                f"ENERGIZE config key '{name}' must be {kind.__name__} ({_KIND_NAMES.get(kind, 'JSON')}), "
                f"got {value!r}"
            )
        imp.set(target, value, source=name)

    return apply


def _dropped(why: str):
    def apply(value: Any, name: str, imp: ConfigImport) -> None:
        imp.drop(name, why)

    return apply


def import_energize_config(
    path: str | Path,
    grammar: str,
    dataset: str,
    meter: str = "auto",
    energy_reference_j: float = 1e-6,
    form: str = "weighted",
) -> ConfigImport:
    """Map an ENERGIZE JSON config to an evowatt config dict; raises EvowattError for what cannot map.

    ``form`` "weighted" keeps ENERGIZE's weighted fitness (the ES); "pareto" writes the Pareto search, its
    terms becoming objectives and its conditions constraints.
    """
    require_file(path, "ENERGIZE config", "give ENERGIZE's (or Fast-DENSER's) JSON run configuration")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvowattError(f"cannot read ENERGIZE config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise EvowattError(f"ENERGIZE config {path} must hold a JSON object")
    imp = ConfigImport()
    imp.set("grammar", grammar)
    imp.set("dataset.name", dataset)
    imp.set("energy.meter", meter)
    state: dict[str, Any] = {"partition": None, "fitness_terms": None}

    def checkpoints(value: Any, name: str, imp: ConfigImport) -> None:
        if not isinstance(value, str) or not value:
            raise EvowattError(f"ENERGIZE config key '{name}' must be a path (a string), got {value!r}")
        target = Path(value)
        imp.set("output.dir", str(target.parent))
        imp.set("output.name", target.name)

    def measure_test(value: Any, name: str, imp: ConfigImport) -> None:
        if value is not True:
            imp.notes.append(
                f"'{name}' is false: evowatt measures inference energy of every individual anyway"
            )

    def measurements(value: Any, name: str, imp: ConfigImport) -> None:
        if not _is(value, int) or value < 2:
            raise EvowattError(f"'{name}' must be an integer of at least 2, got {value!r}")
        imp.set("energy.max_repeats", value, source=name)
        imp.set("energy.min_repeats", min(5, value))
        imp.notes.append(
            f"'{name}' {value} -> energy.max_repeats {value}: ENERGIZE repeats {value} fixed passes; evowatt "
            "repeats measurement windows until the 95 % confidence interval is tight, at most this many"
        )

    def measure_modules(value: Any, name: str, imp: ConfigImport) -> None:
        if value is not True:
            imp.notes.append(f"'{name}' is false: evowatt costs modules whenever reuse_module > 0")

    def partition(value: Any, name: str, imp: ConfigImport) -> None:
        if not isinstance(value, bool):
            raise EvowattError(f"ENERGIZE config key '{name}' must be true or false, got {value!r}")
        state["partition"] = value

    def partition_n(value: Any, name: str, imp: ConfigImport) -> None:
        if value != 2:
            raise EvowattError(
                f"'{name}' is {value!r}: evowatt trains exactly two models (full and early exit)"
            )

    def mutation(value: Any, name: str, imp: ConfigImport) -> None:
        if not isinstance(value, dict):
            raise EvowattError(f"ENERGIZE config key '{name}' must be an object, got {value!r}")
        for key in MutationConfig.model_fields:
            if key not in value:  # e.g. Fast-DENSER has no module mutations: they stay off
                imp.set(f"search.mutation.{key}", 0.0)
                imp.notes.append(f"'{name}' has no '{key}': set to 0")
        for key, rate in value.items():
            if key not in MutationConfig.model_fields:
                raise EvowattError(
                    f"unknown mutation '{name}.{key}'; evowatt knows: "
                    f"{', '.join(MutationConfig.model_fields)}"
                )
            if not _is(rate, float):
                raise EvowattError(f"'{name}.{key}' must be a rate (a number in [0, 1]), got {rate!r}")
            imp.set(f"search.mutation.{key}", rate, source=f"{name}.{key}")

    def fitness_function(value: Any, name: str, imp: ConfigImport) -> None:
        if not isinstance(value, list) or not value:
            raise EvowattError(f"'{name}' must be a non-empty list of terms")
        state["fitness_terms"] = value

    def modules(value: Any, name: str, imp: ConfigImport) -> None:
        if not isinstance(value, list):
            raise EvowattError(f"'{name}' must be a list of modules, got {value!r}")
        out = []
        for i, module in enumerate(value):
            known = {"name", "network_structure_init", "network_structure", "levels_back"}
            if not isinstance(module, dict):
                raise EvowattError(
                    f"'{name}[{i}]' must be an object with {', '.join(sorted(known))}; got {module!r}"
                )
            imp.origin[f"network.modules.{i}"] = f"{name}[{i}]"
            unknown = set(module) - known
            if unknown:
                raise EvowattError(
                    f"unknown key(s) {sorted(unknown)} in '{name}[{i}]'; known: {sorted(known)}"
                )
            out.append(dict(module))
        imp.set("network.modules", out, source=name)

    def splits(value: Any, name: str, imp: ConfigImport) -> None:
        for i, key in enumerate(("evo_train", "evo_validation", "evo_test")):
            imp.origin[f"dataset.splits.{i}"] = f"{name}.{key}"
        try:
            imp.set(
                "dataset.splits",
                [value["evo_train"], value["evo_validation"], value["evo_test"]],
                source=name,
            )
        except (KeyError, TypeError):
            raise EvowattError(
                f"'{name}' must give evo_train, evo_validation and evo_test fractions"
            ) from None
        for key in ("evo_train", "evo_validation", "evo_test"):
            if not _is(value[key], float):
                raise EvowattError(f"'{name}.{key}' must be a fraction (a number), got {value[key]!r}")
        extra = set(value) - {"evo_train", "evo_validation", "evo_test"}
        if extra:
            raise EvowattError(f"unknown split(s) {sorted(extra)} in '{name}'")

    def learning_type(value: Any, name: str, imp: ConfigImport) -> None:
        if value != "supervised":
            raise EvowattError(f"'{name}' is {value!r}: evowatt does supervised learning only")

    def train_time(value: Any, name: str, imp: ConfigImport) -> None:
        if not _is(value, float) or value <= 0:
            raise EvowattError(f"'{name}' must be a positive number of seconds, got {value!r}")
        imp.set("training.budget", {"seconds": value}, source=name)
        imp.origin["training.budget.seconds"] = name

    handlers = {
        "checkpoints_path": checkpoints,
        "statistics_format": _dropped("evowatt records everything in its SQLite run store"),
        "energize": _section(
            {
                "measure_power": _section(
                    {
                        "train": _to("energy.training_energy", bool),
                        "test": measure_test,
                        "num_measurements_test": measurements,
                        "modules": measure_modules,
                    }
                ),
                "model_partition": partition,
                "model_partition_n": partition_n,
                "ensure_gpu_exclusivity": _dropped(
                    "evowatt measures the idle baseline once per run and subtracts it; "
                    "keep other jobs off the device yourself"
                ),
            }
        ),
        "evolutionary": _section(
            {
                "generations": _to("search.generations", int),
                "lambda": _to("search.lambda", int),
                "max_epochs": _to("training.max_epochs", int),
                "mutation": mutation,
                "track_mutations": _dropped("evowatt always records each individual's mutations"),
                "fitness_function": fitness_function,
                "fitness_metric": _to("fitness.metric", str),
            }
        ),
        "network": _section(
            {
                "architecture": _section(
                    {
                        "reuse_layer": _to("network.reuse_layer", float),
                        "macro_structure": _to("network.macro_structure", list),
                        "output": _to("network.output", str),
                        "modules": modules,
                    }
                ),
                "learning": _section(
                    {
                        "data_splits": splits,
                        "learning_type": learning_type,
                        "default_train_time": train_time,
                        "augmentation": _dropped(
                            "evowatt trains at the data's own resolution; ENERGIZE resized images "
                            "to 32x32, which costs time and energy without adding information"
                        ),
                    }
                ),
            }
        ),
    }
    for key in data:
        _take(data, key, "", imp, handlers)
    _apply_partition(imp, state["partition"])
    if state["fitness_terms"] is not None:
        imp.set("fitness", {"terms": _fitness_terms(state["fitness_terms"], meter, energy_reference_j, imp)})
    if form == "pareto":
        _to_pareto(imp)
    _validate(imp, path)
    return imp


def _json_path(loc: tuple, origin: dict[str, str]) -> str:
    """The ENERGIZE JSON path of an evowatt config location, from the longest recorded origin."""
    parts = [str(p) for p in loc]
    for n in range(len(parts), 0, -1):
        source = origin.get(".".join(parts[:n]))
        if source is not None:
            rest = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts[n:])
            return source + rest
    return ""


def _validate(imp: ConfigImport, path: str | Path) -> None:
    """The imported config checked by evowatt's model; a problem is named by the JSON path it came from."""
    try:
        RunConfig.model_validate(imp.config)
    except ValidationError as exc:
        lines = [f"the ENERGIZE config {path} does not convert to a valid evowatt config:"]
        for item in exc.errors():
            where = ".".join(str(p) for p in item["loc"]) or "(top level)"
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = "unknown key"
            elif item["type"] == "missing":
                message = "required key is missing"
            elif "input" in item:
                message += f" (got {item['input']!r})"
            source = _json_path(item["loc"], imp.origin)
            named = f"'{source}' (evowatt's {where})" if source else f"evowatt's {where}"
            lines.append(f"  {named}: {message}")
        raise EvowattError("\n".join(lines)) from None


def _apply_partition(imp: ConfigImport, partition: bool | None) -> None:
    macro = list(imp.config.get("network", {}).get("macro_structure", ["learning"]))
    if partition is True and "model_partition" not in macro:
        macro.append("model_partition")
        imp.notes.append("energize.model_partition is true: added model_partition to network.macro_structure")
    elif partition is False and "model_partition" in macro:
        macro.remove("model_partition")
        imp.notes.append(
            "energize.model_partition is false: removed model_partition from network.macro_structure"
        )
    if "network" in imp.config:
        imp.set("network.macro_structure", macro)


def _check_condition(condition: dict[str, Any], where: str) -> None:
    """One ENERGIZE condition: metric, type and value, each of its type (both import forms read them)."""
    unknown = sorted(set(condition) - {"metric", "type", "value"})
    if unknown:
        raise EvowattError(f"unknown key(s) {unknown} in '{where}'; a condition has metric, type and value")
    missing = [k for k in ("metric", "type", "value") if k not in condition]
    if missing:
        raise EvowattError(f"'{where}' lacks {', '.join(missing)}; a condition has metric, type and value")
    if not isinstance(condition["metric"], str):
        raise EvowattError(f"'{where}.metric' must be a metric name (a string), got {condition['metric']!r}")
    if condition["type"] not in ("greater_than", "less_than"):
        raise EvowattError(f"'{where}.type' must be greater_than or less_than, got {condition['type']!r}")
    if not _is(condition["value"], float):
        raise EvowattError(f"'{where}.value' must be a number, got {condition['value']!r}")


def _fitness_terms(terms: list[Any], meter: str, energy_reference_j: float, imp: ConfigImport) -> list[dict]:
    out = []
    for i, term in enumerate(terms):
        if not isinstance(term, dict) or "metric" not in term:
            raise EvowattError(f"evolutionary.fitness_function[{i}] must be an object with a 'metric'")
        known = {"metric", "objective", "weight", "conditions"}
        if set(term) - known:
            raise EvowattError(
                f"unknown key(s) {sorted(set(term) - known)} in evolutionary.fitness_function[{i}]"
            )
        where = f"evolutionary.fitness_function[{i}]"
        imp.origin[f"fitness.terms.{i}"] = where
        if not isinstance(term["metric"], str):
            raise EvowattError(f"'{where}.metric' must be a metric name (a string), got {term['metric']!r}")
        if "weight" in term and not _is(term["weight"], float):
            raise EvowattError(f"'{where}.weight' must be a number, got {term['weight']!r}")
        new = {k: term[k] for k in known if k in term}
        raw = term.get("conditions", [])
        if not isinstance(raw, list):
            raise EvowattError(f"'{where}.conditions' must be a list of conditions, got {raw!r}")
        conditions = []
        for j, condition in enumerate(raw):
            if not isinstance(condition, dict):
                raise EvowattError(
                    f"'{where}.conditions[{j}]' must be an object with metric, type (greater_than or "
                    f'less_than) and value, e.g. {{"metric": "accuracy_1", "type": "greater_than", '
                    f'"value": 0.7}}; got {condition!r}'
                )
            imp.origin[f"fitness.terms.{i}.conditions.{j}"] = f"{where}.conditions[{j}]"
            _check_condition(condition, f"{where}.conditions[{j}]")
            conditions.append(dict(condition))
        metric = term["metric"]
        if metric.startswith("power"):
            if meter == "estimate":
                energy = "energy" + metric[len("power") :]
                weight = float(term.get("weight", 1.0))
                new_weight = weight * energy_reference_j / ENERGIZE_REFERENCE_WATTS
                new["metric"], new["weight"] = energy, new_weight
                ref_w, ref_j = ENERGIZE_REFERENCE_WATTS, energy_reference_j
                imp.notes.append(
                    f"fitness term {metric} (watts) became {energy} (joules per inference): the estimate "
                    f"meter has no watts. Its weight {weight:g} was tuned to ~{ref_w:g} W, so it became "
                    f"{new_weight:.3g} to keep the term's size for a network of ~{ref_j:g} J per inference "
                    "(--energy-reference); tune it with --set"
                )
            else:
                imp.notes.append(
                    f"fitness term {metric} stays in watts: it needs a hardware meter (nvml or rapl) at run "
                    f"time. ENERGIZE's weight {term.get('weight', 1)} was tuned to a GPU at "
                    f"~{ENERGIZE_REFERENCE_WATTS:g} W; a CPU package under RAPL draws less."
                    " evowatt subtracts the idle power, so its watts are smaller than"
                    " ENERGIZE's gross readings; consider energy "
                    "(J per inference) instead, since watts reward slow models"
                )
        for condition in conditions:
            if str(condition.get("metric", "")).startswith("power") and meter == "estimate":
                raise EvowattError("a fitness condition on power cannot be imported for the estimate meter")
        if conditions:
            new["conditions"] = conditions
        out.append(new)
    return out


def _to_pareto(imp: ConfigImport) -> None:
    """The weighted fitness as a Pareto search: each term's metric an objective (on every exit), no weights.

    A ``greater_than`` condition becomes a constraint. A ``less_than`` condition on a maximised metric
    (ENERGIZE's ``accuracy_1 < 0.9``, which stops rewarding power past that accuracy) is dropped: as a
    constraint it would make the most accurate models infeasible, and a front needs no such switch.
    """
    fitness = imp.config.pop("fitness", {"metric": "accuracy"})
    terms = fitness.get("terms") or [{"metric": fitness.get("metric", "accuracy"), "objective": "maximize"}]
    objectives: dict[str, str] = {}
    constraints: list[str] = []
    for term in terms:
        metric = _bare(str(term["metric"]))
        objective = term.get("objective", "maximize")
        if objectives.get(metric, objective) != objective:
            raise EvowattError(f"fitness terms both maximise and minimise {metric}; keep one")
        objectives[metric] = objective
        for condition in term.get("conditions", []):
            name, kind = _bare(str(condition["metric"])), condition["type"]
            text = f"{name} {'<' if kind == 'less_than' else '>'} {float(condition['value']):g}"
            if kind == "less_than" and objectives.get(name, "maximize") == "maximize":
                imp.notes.append(
                    f"condition {condition['metric']} < {condition['value']} dropped: as a constraint it "
                    "would make the most accurate models infeasible; the front shows the trade-off instead"
                )
            elif text not in constraints:
                constraints.append(text)
    imp.set("search.algorithm", "pareto")
    imp.set("search.objectives", [{"metric": m, "objective": o} for m, o in objectives.items()])
    if constraints:
        imp.set("search.constraints", constraints)
    weights = [t.get("weight") for t in terms if t.get("weight") not in (None, 1, 1.0)]
    imp.notes.append(
        "wrote the Pareto form (search.algorithm: pareto): objectives "
        + ", ".join(f"{o} {m}" for m, o in objectives.items())
        + (f"; constraints {', '.join(constraints)}" if constraints else "")
        + (f"; the weights {weights} are not needed" if weights else "")
        + "; every exit (full model, early exit) is its own point on the front"
    )


def _bare(metric: str) -> str:
    """Objectives and constraints apply to every exit: accuracy_1 -> accuracy."""
    return metric[:-2] if metric.endswith(("_0", "_1")) else metric
