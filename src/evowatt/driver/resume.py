"""Reopening a run to resume it: its recorded config, what a resume may change, its search's state.

A resume keeps the run's config (``config_changes`` refuses any other change, naming every differing
key, except where and how evaluations run and, when asked, a larger budget) and its grammar, and loads
the search from the last checkpoint. Everything is checked before anything is written, so a refused
resume changes nothing; the loop then replays what the store already holds (``driver.session``).
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import yaml

from evowatt.config.load import apply_overrides, validate_config
from evowatt.config.schema import RunConfig
from evowatt.driver.checkpoint import CheckpointError
from evowatt.driver.rundir import CONFIG_NAME, GRAMMAR_NAME
from evowatt.driver.setup import choose_meter, make_search
from evowatt.driver.store import RunStore
from evowatt.driver.tasks import data_ref
from evowatt.errors import EvowattError
from evowatt.representation.grammar import parse_grammar
from evowatt.search import Search

# Keys that say where and how evaluations run, not what they compute: a resume may change them.
FREE_KEYS = ("output.", "runner.")
# Keys that --allow-larger-budget lets a resume raise (never lower).
BUDGET_KEYS = ("search.generations", "search.time_limit")


def reopen(
    store: RunStore,
    config: RunConfig | None,
    overrides: list[str] | None,
    allow_larger_budget: bool,
) -> tuple[RunConfig, str, Search]:
    """The config, grammar text and search (its checkpoint loaded) of the run in ``store``, checked
    against the run's own before the store is changed (see ``driver.session.resume``)."""
    run_dir = store.dir
    recorded, grammar_text = recorded_config(store)
    if config is None:
        wanted = apply_overrides(read_yaml(run_dir / CONFIG_NAME), list(overrides or []))
        config = validate_config(wanted, str(run_dir / CONFIG_NAME), list(overrides or []), recorded=True)
    changed = config_changes(recorded, config.to_dict(), allow_larger_budget, run_dir)
    grammar = parse_grammar(grammar_text, source=str(run_dir / GRAMMAR_NAME))
    data_ref(config).load()
    if store.meta("meter") is None:  # a run from before meters were recorded
        store.set_meta("meter", choose_meter(config).to_json())
    search = make_search(config, grammar)
    state = store.load_checkpoint()
    if state is not None:
        load_search_state(search, state, store)
    if not search.done() and has_final(store):
        # a finished run extended by a larger budget: new evaluations get ids after its final training's
        search.next_id = max(search.next_id, store.max_id() + 1)
    if changed:
        store.record_config(config.to_dict(), grammar_text, files=True)
        store.set_meta("resumed_with_changes", {**store.meta("resumed_with_changes", {}), **changed})
    return config, grammar_text, search


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise EvowattError(f"cannot read the run's config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise EvowattError(f"the run's config {path} is not a mapping of sections; restore it")
    return data


def recorded_config(store: RunStore) -> tuple[dict[str, Any], str]:
    """The config and grammar the run started with (the store's copy; config.yaml for older runs)."""
    grammar_path = store.dir / GRAMMAR_NAME
    try:
        grammar_text = grammar_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvowattError(f"cannot read the run's grammar {grammar_path}: {exc}") from None
    digest = store.meta("grammar_sha256")
    if digest is not None and hashlib.sha256(grammar_text.encode("utf-8")).hexdigest() != digest:
        raise EvowattError(
            f"{grammar_path} differs from the grammar the run started with; a resumed run must use its "
            "own grammar: restore the file, or start a new run for the new grammar"
        )
    recorded = store.meta("config")
    if recorded is None:
        recorded = read_yaml(store.dir / CONFIG_NAME)
    return validate_config(
        copy.deepcopy(recorded), source="the run's recorded config", recorded=True
    ).to_dict(), grammar_text


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a config; lists of sections are indexed (network.modules.0.name)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}{index}."))
        return out
    return {prefix.rstrip("."): value}


def _larger(old: Any, new: Any) -> bool:
    """A budget that is at least the old one (None is no limit)."""
    if new is None:
        return True
    return old is not None and new >= old


def config_changes(
    recorded: dict[str, Any], wanted: dict[str, Any], allow_larger_budget: bool, run_dir: Path
) -> dict[str, list[Any]]:
    """The changes a resume may make ({key: [old, new]}); refuses any other, naming every differing key."""
    old, new = flatten(recorded), flatten(wanted)
    differing = sorted(k for k in old.keys() | new.keys() if old.get(k, "<unset>") != new.get(k, "<unset>"))
    differing = [k for k in differing if not k.startswith(FREE_KEYS)]
    allowed = {
        k for k in differing if allow_larger_budget and k in BUDGET_KEYS and _larger(old.get(k), new.get(k))
    }
    refused = [k for k in differing if k not in allowed]
    if refused:
        listed = ", ".join(f"{k} ({old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r})" for k in refused)
        hint = ""
        if any(k in BUDGET_KEYS for k in refused):
            hint = (
                " --allow-larger-budget lets a resume raise search.generations and search.time_limit "
                "(never lower them)."
            )
        raise EvowattError(
            f"the config differs from the one {run_dir} started with at: {listed}. A resumed run keeps its "
            f"config; start a new run with `evowatt run` for a different one.{hint}"
        )
    return {k: [old.get(k), new.get(k)] for k in differing}


def load_search_state(search: Search, state: dict[str, Any], store: RunStore) -> None:
    """Load the checkpoint into the search; one message when it does not fit this search or this store."""
    try:
        search.load_state(state)
    except CheckpointError as exc:
        raise store.bad_checkpoint(f"not a valid evowatt checkpoint: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise store.bad_checkpoint(f"not a valid evowatt checkpoint ({type(exc).__name__}: {exc})") from None
    missing = [i for i in search.best() if store.get(i) is None]
    if missing:
        role = "the parent" if search.algorithm == "es" else "a survivor"
        raise EvowattError(
            f"checkpoint {store.dir / 'checkpoint.json'} names evaluation {missing[0]} as {role}, but "
            f"{store.db_path} does not hold it: the two files do not belong to the same run. Restore the "
            "matching pair from a backup; nothing was changed"
        )


def has_final(store: RunStore) -> bool:
    """Whether the run has trained anything after its search (a screening, a final training)."""
    return bool(store.select(searched=False))
