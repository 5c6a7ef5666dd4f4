"""A run's set-up: what is checked and chosen once, before any evaluation.

The grammar, the network section and the dataset are checked before a run writes anything; the search
the config names is built; the meter is chosen once (``MeterChoice``: why it was chosen, its idle
baseline, the calibrated profile in use) and recorded, so every evaluation of the run measures alike.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from evowatt.config.schema import RunConfig
from evowatt.driver.evaluate import resolve_device
from evowatt.driver.measure import idle_to_json
from evowatt.driver.runners import check_runner
from evowatt.driver.store import RunStore
from evowatt.driver.tasks import data_ref
from evowatt.energy.choice import MeterChoice, meter_per_worker
from evowatt.errors import EvowattError
from evowatt.representation.genome import Genome, check_network_against_grammar
from evowatt.representation.grammar import Grammar, load_grammar
from evowatt.search import EvolutionStrategy, Search
from evowatt.search.fidelity import Rungs, SuccessiveHalving
from evowatt.search.genomes import Fits


def make_search(config: RunConfig, grammar: Grammar) -> Search:
    """The search the config names; each implements ``evowatt.search.Search``."""
    from evowatt.search.pareto import ParetoSearch, RandomSearch

    kinds = {"es": EvolutionStrategy, "pareto": ParetoSearch, "random": RandomSearch}
    fits = within_caps(config, grammar) if config.experimental.draw_within_caps else None
    search: Search = kinds[config.search.algorithm](config, grammar, fits=fits)
    fidelity = config.search.fidelity
    if fidelity is not None:
        unit = "steps" if config.training.budget.steps is not None else "seconds"
        rungs = Rungs(fidelity.min_budget, fidelity.eta, fidelity.rungs, unit)
        search = SuccessiveHalving(search, rungs, config.seed)
    return search


def within_caps(config: RunConfig, grammar: Grammar) -> Fits:
    """Whether a genome makes a network that search.caps admit on this dataset's input (the same check an
    evaluation makes before it trains), for a search that draws again what would be invalid."""
    from evowatt.nn.builder import InvalidNetwork, plan_network

    data = data_ref(config).load()
    shape, classes, caps = tuple(data.input_shape), data.num_classes, config.search.caps

    def fits(genome: dict[str, Any]) -> bool:
        try:
            plan_network(Genome.from_json(genome), grammar, shape, classes, caps.max_params, caps.max_flops)
        except InvalidNetwork:
            return False
        return True

    return fits


def planned_evaluations(config: RunConfig) -> int:
    """The search evaluations a run makes unless its time limit stops it first: the progress bar's total.

    ES: λ, then λ mutants and the retrained parent a generation; Pareto: the population, then λ
    offspring a generation; random: λ a generation; successive halving adds each rung's promotions.
    """
    search = config.search
    if search.algorithm == "es":
        batches = [search.lambda_] + [search.lambda_ + 1] * search.generations
    elif search.algorithm == "pareto":
        batches = [search.population] + [search.lambda_] * search.generations
    else:
        batches = [search.lambda_] * (search.generations + 1)
    if search.fidelity is None:
        return sum(batches)
    rungs = Rungs(search.fidelity.min_budget, search.fidelity.eta, search.fidelity.rungs)
    return sum(rungs.keep(n, r) for n in batches for r in range(rungs.rungs))


def prepare(config: RunConfig) -> tuple[Grammar, str]:
    """Check what a user can get wrong before any work: grammar, rule names, dataset."""
    check_runner(config.runner)
    grammar = load_grammar(config.grammar)
    problems = check_network_against_grammar(grammar, config.network)
    if problems:
        listed = "\n  ".join(problems)
        raise EvowattError(f"the grammar {grammar.source} and the network section do not fit:\n  {listed}")
    data_ref(config).load()
    return grammar, Path(grammar.source).read_text(encoding="utf-8")


def choose_profile(config: RunConfig) -> dict[str, Any] | None:
    """The calibrated profile the run uses (energy.profile), read and compared with this device, its input
    shape, batch and torch; None without one. A malformed profile is an EvowattError."""
    if config.energy.profile is None:
        return None
    from evowatt.energy.profile import this_device, use_profile
    from evowatt.nn.threads import resolve_threads

    share = config.runner.workers if config.runner.kind == "process" else 1
    here = this_device(
        str(resolve_device(config.training.device)), resolve_threads(config.training.threads, share)
    )
    use = use_profile(
        config.energy.profile,
        here,
        tuple(data_ref(config).load().input_shape),
        config.energy.batch_size,
        config.energy.check_every,
    )
    return use.to_dict()


def choose_meter(config: RunConfig) -> MeterChoice:
    """Pick the run's meter once, say why, refuse metrics it cannot give, and measure the idle baseline
    (on Ray each worker does both where it runs: ``meter_per_worker``)."""
    from evowatt.energy.protocol import measure_idle
    from evowatt.energy.select import check_metrics, select_meter

    energy = config.energy
    profile = choose_profile(config)
    if profile and "energy" in profile["predictors"]:  # the predicted energy has no time base: no power
        from evowatt.energy.calibrated import refuse_power

        refuse_power(config.metrics_used(), profile["path"])
    if meter_per_worker(config.runner.kind):  # the driver may have no GPU, or another meter than the workers
        if energy.meter == "estimate":
            check_metrics(config.metrics_used(), "estimate")
        reason = (
            f"each Ray worker opens its own meter (energy.meter: {energy.meter}) where it runs and measures "
            "its own idle baseline; every evaluation records its meter"
        )
        if profile:
            reason += f"; {profile['note']}"
        return MeterChoice(energy.meter, None, reason, None, per_worker=True, profile=profile, local=True)
    device = resolve_device(config.training.device)
    meter, reason = select_meter(
        energy.meter,
        device,
        nvml_index=energy.nvml_index,
        rapl_root=energy.rapl_root,
        estimate_constants=energy.estimate,
    )
    try:
        check_metrics(config.metrics_used(), meter.name)
        idle = measure_idle(meter, energy)
    finally:
        meter.close()
    if profile:
        reason += f"; {profile['note']}"
    return MeterChoice(meter.name, meter.method, reason, idle_to_json(idle), profile=profile)


def session_meter(config: RunConfig, store: RunStore) -> MeterChoice | None:
    """The meter choice the run recorded, as this session's runner opens it (None: none recorded)."""
    recorded = store.meta("meter")
    if recorded is None:
        return None
    return MeterChoice.from_json(recorded).for_runner(config.runner.kind)


def default_run_dir(config: RunConfig) -> Path:
    name = config.output.name or f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-seed{config.seed}"
    return Path(config.output.dir) / name
