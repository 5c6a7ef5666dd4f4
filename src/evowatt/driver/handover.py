"""Everything after the search: the models the run hands over, their screening and final training.

The search names the models to hand over (``best``); the handover scores their test set, screens the
networks the whole run ranks highest, trains the chosen ones for the final budget and times what the run
ends by showing. Its trainings and timings are evaluations like the search's: they go through the
session's runner (on Ray they run on a worker) and are recorded as they finish, so a resumed run never
trains one twice. What is handed over is read back by ``evowatt.handover`` (results, report, export).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evowatt.config.schema import RunConfig
from evowatt.driver.costs import NetworkCosts
from evowatt.driver.evaluate import score_on_test, time_models
from evowatt.driver.loop import keep_weights
from evowatt.driver.observe import DONE, STARTED, Note, Observers, Screened
from evowatt.driver.rows import Evaluation
from evowatt.driver.runners import Runner
from evowatt.driver.store import RunStore
from evowatt.driver.task_records import EvalTask
from evowatt.driver.tasks import final_candidate, final_task, search_task
from evowatt.energy.choice import MeterChoice
from evowatt.records import Budget, EvalResult, Status
from evowatt.representation.genome import Genome
from evowatt.search import Search
from evowatt.search.protocol import Evaluated


@dataclass
class Handover:
    """The handover of one session of a run, its trainings submitted through ``runner`` (still open).

    ``evaluate`` is the function the runner maps for a training (the session's, so a test that counts
    the evaluations counts these too); ``meter`` the session's meter choice."""

    config: RunConfig
    grammar_text: str
    search: Search
    store: RunStore
    hooks: Observers
    runner: Runner
    evaluate: Callable[..., Any]
    meter: MeterChoice | None
    costs: NetworkCosts | None = None
    time_left: Callable[[], float] | None = None  # a run planned from minutes: what its trainings may take

    def __call__(self, stopped: str) -> tuple[list[Evaluation], list[Evaluation]]:
        """The rows of the models handed over and of their final trainings; ``stopped`` is why the search
        stopped (``generations`` or ``time_limit``)."""
        search, hooks = self.search, self.hooks
        chosen = search.best() or best_of_unfinished_generation(search, self.store, stopped, hooks)
        if not chosen and (message := search.unmet()):  # a constrained search with nothing feasible says so
            hooks(Note(message))
        handed = [self.report_test(i) for i in chosen]
        handed = [row for row in handed if row is not None]
        finals = self.final_training(chosen)
        for row in self.time_answer():  # after the finals: what is left to time
            handed = [row if h.id == row.id else h for h in handed]
        return handed, finals

    def _run(self, fn: Callable[..., Any], task: EvalTask) -> Any:
        """``fn(task)`` through the runner: where the run's evaluations run."""
        (result,) = self.runner.map(fn, [task])
        return result

    def _task(self, row: Evaluation) -> EvalTask:
        """The search's task of a recorded evaluation (its network, its seed), to score or time it again."""
        return search_task(self.config, self.grammar_text, self.store, row.candidate(), meter=self.meter)

    def report_test(self, evaluation_id: int) -> Evaluation | None:
        """An evaluation handed to the user, with its test-set accuracy added (once, from its saved
        weights, which are the driver's: it is scored here)."""
        store = self.store
        best = store.get(evaluation_id)
        if best is not None and best.ok and best.weights and "test_accuracy" not in best.metrics:
            task = self._task(best)
            store.add_metrics(best.id, score_on_test(task, best.weights))  # the full model's and exit's
            best = store.get(best.id)
        return best

    def time_answer(self) -> list[Evaluation]:
        """The clock latency of every model the run ends by showing (its front and the model to take) that
        has none yet: the search timed only what it selected on, and a final training times its own. A
        network timed before (another of these models, a final training) is not timed again. Returns the
        rows it changed."""
        from evowatt.driver.results import answer, front

        store, costs = self.store, self.costs
        rows: dict[int, Evaluation] = {}
        if store.meta("config") is None:  # a store from before configs were recorded: no front to show
            return []
        shown = [*front(store.dir), *([chosen] if (chosen := answer(store.dir)) else [])]
        for model in shown:
            row = store.get(model.id)
            meter = row.meter if row is not None else None
            if row is None or meter is None or "latency" in row.metrics:
                continue
            before = store.max_id() + 1
            known = costs.lookup(row.genome, meter, latency=True, before=before) if costs else None
            if known is not None:
                added = {k: v for k, v in known.metrics.items() if k.startswith("latency")}
            else:
                added = self._run(time_models, self._task(row))
                if isinstance(added, EvalResult):  # its Ray worker kept dying: a resume times it again
                    self.hooks(Note(f"evaluation {row.id} is not timed: {added.reason}"))
                    continue
            store.add_metrics(row.id, added)  # every exit's in one write
            timed = store.get(row.id)
            assert timed is not None  # just written
            rows[row.id] = timed
            if costs is not None:
                costs.add(timed)  # the next model of the same network reuses the timing
        return list(rows.values())

    def final_training(self, handed: list[int]) -> list[Evaluation]:
        """The final training of the models the run hands over (``final_training.models`` of them, the
        screening's winner first where configured): the first for ``budget`` at ``width``, the others for
        ``others_budget`` at ``others_width`` where set."""
        final = self.config.training.final_training
        if final.budget is None:
            return []
        first = self.screen() or self.prefer_params()  # a network chosen for the first final training
        rows = []
        for place, (_source_id, row) in enumerate(final_picks(self.config, self.store, handed, first)):
            chosen = final.budget if place == 0 or final.others_budget is None else final.others_budget
            width = self.config.experimental.final_training.width_of(place)
            trained = self.train_after_search("final", row, chosen.to_budget(), width)
            if trained is not None:
                rows.append(trained)
        return rows

    def screen(self) -> Evaluation | None:
        """The screening's winner (its evaluation row), or None without a screening or a valid result.

        Each screened network trains for ``screen.budget`` with the final training's data and recipe, is
        recorded (kind ``screen``, its source as parent) and, on resume, not trained again."""
        screen = self.config.experimental.final_training.screen
        if not screen.models:
            return None
        trained = [
            self.train_after_search("screen", source, screen.budget.to_budget())
            for source in screen_picks(self.search, self.store, screen.models)
        ]
        rows = [row for row in trained if row is not None]
        values = [(handover_value(self.search, row), row) for row in rows]
        ranked = [(value, -row.id, row) for value, row in values if value is not None]
        if not ranked:
            return None
        winner = max(ranked, key=lambda item: item[:2])[2]
        self.hooks(Screened(winner, rows))
        return winner

    def prefer_params(self) -> Evaluation | None:
        """With ``prefer_params_within``: the network of the final training, the one with the most
        parameters among those ranked within that much of the most accurate (None: option unset, or no
        valid network). The short rungs favour small networks; a long training rewards capacity."""
        within = self.config.experimental.final_training.prefer_params_within
        if within is None:
            return None
        ranked = ranked_networks(self.search, self.store)
        if not ranked:
            return None
        top_value, top = ranked[0]
        near = [(value, row) for value, row in ranked if value >= top_value - within]
        value, chosen = max(near, key=lambda item: (item[1].metric("params") or 0.0, item[0]))
        if chosen.id != top.id:
            self.hooks(
                Note(
                    f"the final training goes to #{chosen.id} ({_params(chosen)} parameters, accuracy "
                    f"{value:.4g}): the most parameters within {within:g} of the most accurate, #{top.id} "
                    f"({_params(top)} parameters, {top_value:.4g})"
                )
            )
        return chosen

    def within_time(self, budget: Budget) -> Budget | None:
        """``budget`` cut to the time a run planned from ``minutes`` has left (a search that ran over its
        share, an earlier final), so the run ends within T; None when less than a second is left."""
        if self.time_left is None or budget.seconds is None:
            return budget
        left = self.time_left()
        if left >= budget.seconds:
            return budget
        return Budget(seconds=round(left, 1)) if left >= 1.0 else None

    def train_after_search(
        self, kind: str, row: Evaluation, budget: Budget, width: float = 1.0
    ) -> Evaluation | None:
        """The ``kind`` (``screen`` or ``final``) training of the evaluation ``row`` for ``budget``:
        trained through the runner, its weights kept, recorded (``row`` as its parent) and told to the
        observers (``ScreeningStarted`` and ``ScreeningDone``, or ``FinalTraining`` and ``FinalDone``); on
        resume the one recorded before, never trained twice."""
        config, search, store, hooks = self.config, self.search, self.store, self.hooks
        existing = store.select(kind=kind, parent_id=row.id)
        if existing:
            return existing[-1]
        budget = self.within_time(budget)
        if budget is None:
            hooks(Note(f"no time left for the {kind} training of evaluation {row.id}"))
            return None
        new_id = max(search.next_id, store.max_id() + 1)
        candidate = final_candidate(config, new_id, search.generation, row, width, kind=kind)
        task = final_task(
            config, self.grammar_text, store, candidate, row, budget, self.costs, meter=self.meter
        )
        hooks(STARTED[kind](candidate, budget))
        result = keep_weights(EvalResult.coerce(self._run(self.evaluate, task)), store)
        scored = search.score(result)
        store.record(candidate, result, scored, budget)
        hooks(DONE[kind](candidate, result, scored.fitness))
        return store.get(new_id)


def best_of_unfinished_generation(
    search: Search, store: RunStore, stopped: str, hooks: Observers
) -> list[int]:
    """When the time limit fell inside the first generation the search has no best yet: hand over what
    it would select if that generation had ended with the evaluations recorded so far, and say so.

    A copy of the search is told them, so the run's own search (and its checkpoint) stays as it was."""
    if stopped != "time_limit":
        return []
    rows = [r for r in store.searched(Status.OK) if r.weights]
    if not rows:
        return []
    evaluated = []
    for r in rows:
        result = r.to_result()
        score = r.score if r.score is not None else search.score(result)
        evaluated.append(Evaluated(r.candidate(), result, score))
    chosen = search.best_if_told(evaluated)
    if chosen:
        hooks(
            Note(
                f"the time limit fell inside generation {search.generation}, before the search had a "
                f"best: handing over what it selects from the {len(rows)} evaluations recorded so far (#"
                + ", #".join(map(str, chosen))
                + "); a longer search.time_limit or a smaller population lets it select among a whole "
                "generation"
            )
        )
    return chosen


def final_picks(
    config: RunConfig, store: RunStore, handed: list[int], first: Evaluation | None = None
) -> list[tuple[int, Evaluation]]:
    """The handed models that get a final training: ``final_training.models`` of them, in handover order,
    each a different network (a front can hold one network twice, reached with other learning genes:
    training it again would spend the budget on a model of the same cost). ``first``, when given (the
    screening's winner, or the ``prefer_params_within`` pick), takes the first place."""
    count = config.training.final_training.models
    picks: list[tuple[int, Evaluation]] = []
    networks: set[str] = set()
    rows = [(first.id, first)] if first is not None else []
    rows += [(source_id, row) for source_id in handed if (row := store.get(source_id)) is not None]
    for source_id, row in rows:
        if count != "all" and len(picks) >= int(count):
            break
        if not row.ok:
            continue
        network = Genome.from_json(row.genome).network_key()
        if network not in networks:
            networks.add(network)
            picks.append((source_id, row))
    return picks


def handover_value(search: Search, row: Evaluation) -> float | None:
    """The search's handover value of a recorded evaluation (None: not valid, infeasible, or NaN)."""
    if not row.ok:
        return None
    score = row.score if row.score is not None else search.score(row.to_result())
    value = search.handover_value(score)
    return None if value is None or value != value else float(value)


def screen_picks(search: Search, store: RunStore, count: int) -> list[Evaluation]:
    """The ``count`` networks the whole run ranks highest for the handover (``ranked_networks``)."""
    return [row for _value, row in ranked_networks(search, store)[:count]]


def ranked_networks(search: Search, store: RunStore) -> list[tuple[float, Evaluation]]:
    """Every network the run evaluated validly, the highest handover value first, each with its best
    evaluation's value at any rung (a longer rung may have scored it lower, and the population may have
    lost it) and its latest evaluation whose weights are kept (that best evaluation's genome, fresh,
    when none is)."""
    best: dict[str, tuple[float, int]] = {}
    kept: dict[str, Evaluation] = {}
    by_id: dict[int, Evaluation] = {}
    for row in store.searched(Status.OK):
        value = handover_value(search, row)
        if value is None:
            continue
        network = Genome.from_json(row.genome).network_key()
        if network not in best or value > best[network][0]:
            best[network] = (value, row.id)
            by_id[row.id] = row
        if row.weights:
            kept[network] = row
    ranked = sorted(best, key=lambda network: (-best[network][0], best[network][1]))
    return [(best[network][0], kept.get(network) or by_id[best[network][1]]) for network in ranked]


def _params(row: Evaluation) -> str:
    params = row.metric("params")
    return f"{params:,.0f}" if params is not None else "unknown"
