"""`evowatt report`: one self-contained HTML page of a run, its figures inline, nothing fetched when opened.

It answers the run's question first, with the views the terminal uses (``evowatt.handover.results``): the
header
names the model to take (``results.answer``, the one ``evowatt run`` names at its end) and counts the
searched evaluations and the final trainings apart; the trade-off figure draws the run's front
(``results.front``: distinct networks at their best-trained weights) as a staircase with the model to take
starred and every other evaluation behind it, the chance-level ones faint; a table lists the front's and
the exported models with each figure's method label. Then: best fitness and hypervolume per generation;
each individual's training time against its budget; what measuring cost; the resolved config. Figures are
drawn with matplotlib's Agg backend (no display needed), written as PNGs beside the HTML and embedded in it
as base64.

It reads the store without locking it, so it works on a run still in progress, and on a run directory
written by the first store version (generation records without survivors, front or hypervolume).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evowatt import __version__
from evowatt.data.loaders import CLASS_NAMES
from evowatt.driver.store import Evaluation, RunStore
from evowatt.energy.sources import mixed_sources, sources
from evowatt.errors import EvowattError
from evowatt.handover.results import FrontModel, answer, front, profile_drift
from evowatt.records import Status
from evowatt.search.protocol import GenerationRecord
from evowatt.units import format_si

FIGURES = ("tradeoff", "generations", "budget", "measurement")
COSTS = ("energy", "latency", "flops", "params")  # what the trade-off's x axis may show
CHANCE = 1.5  # an accuracy at most CHANCE / classes is chance level: drawn faint, it answers nothing


@dataclass
class Point:
    id: int
    exit: int
    kind: str
    generation: int | None
    accuracy: float
    cost: float | None  # the x axis's metric (energy per inference by default)
    status: Status


@dataclass
class RunData:
    run_dir: Path
    config: dict[str, Any]
    meter: dict[str, Any]
    evaluations: list[Evaluation]
    generations: list[GenerationRecord]
    meta: dict[str, Any] = field(default_factory=dict)
    cards: list[dict[str, Any]] = field(default_factory=list)
    front: list[FrontModel] = field(default_factory=list)  # results.front: the one front of every view
    answer: FrontModel | None = None  # results.answer: the model to take
    no_answer: str = ""  # why there is none (yet)

    @property
    def in_progress(self) -> bool:
        return self.meta.get("finished_at") is None

    @property
    def classes(self) -> int | None:
        """The dataset's class count (from a model card, else the known datasets'); None when unknown."""
        for card in self.cards:
            count = (card.get("classes") or {}).get("count")
            if count:
                return int(count)
        names = CLASS_NAMES.get(str((self.config.get("dataset") or {}).get("name")))
        return len(names) if names else None


def load_run(run_dir: str | Path) -> RunData:
    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    try:
        config = store.meta("config")
        if config is None and (run_dir / "config.yaml").is_file():
            config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        meta = {k: store.meta(k) for k in ("started_at", "finished_at", "elapsed_seconds", "evowatt_version")}
        data = RunData(
            run_dir=run_dir,
            config=config or {},
            meter=store.meta("meter") or {},
            evaluations=store.select(),
            generations=store.generations(),
            meta=meta,
        )
    finally:
        store.close()
    for path in sorted(run_dir.glob("export/*.card.json")):
        try:
            data.cards.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    data.front, data.answer, data.no_answer = _answer(data)
    return data


def _answer(data: RunData) -> tuple[list[FrontModel], FrontModel | None, str]:
    """The run's front and the model to take, as `evowatt run` and `evowatt show` name them: no model
    before a generation ended or a final training, and none from a store without a recorded config."""
    try:
        models = front(data.run_dir)
        if not data.generations and not any(r.kind == "final" for r in data.evaluations):
            return models, None, "none yet: no generation has ended"
        chosen = answer(data.run_dir)
    except EvowattError as exc:
        return [], None, f"none: {exc}"
    return models, chosen, "" if chosen else "none: no model meets the run's constraints"


def cost_axis(data: RunData) -> str:
    """The trade-off's x axis: the run's cost objective (energy by default) where evaluations have it,
    else energy where any was measured, else FLOPs."""
    search = data.config.get("search") or {}
    objectives = search.get("objectives") or [{"metric": "accuracy"}, {"metric": "energy"}]
    named = [o.get("metric") for o in objectives if isinstance(o, dict)]
    for name in [*(n for n in named if n in COSTS), "energy"]:
        if any(r.metric(name) is not None for r in data.evaluations if r.ok):
            return name
    return "flops"


def points(data: RunData) -> tuple[list[Point], str]:
    """Every exit of every evaluation with an accuracy, and the cost axis used (see ``cost_axis``)."""
    rows = [r for r in data.evaluations if r.ok]
    cost = cost_axis(data)
    out = []
    for row in rows:
        for exit_index, suffix in ((0, ""), (1, "_1")):
            accuracy = row.metric(f"accuracy{suffix}")
            if accuracy is None:
                continue
            out.append(
                Point(
                    row.id,
                    exit_index,
                    row.kind,
                    row.generation,
                    accuracy,
                    row.metric(f"{cost}{suffix}"),
                    row.status,
                )
            )
    return out, cost


def exported(data: RunData) -> dict[tuple[int, str], dict[str, Any]]:
    """{(evaluation id, exit): its model card} of the models exported into RUN/export."""
    out = {}
    for card in data.cards:
        evaluation = card.get("evaluation") or {}
        if "id" in evaluation:
            out[(int(evaluation["id"]), str(evaluation.get("exit", 0)))] = card
    return out


# --------------------------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def staircase(models: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, accuracy) points no other beats on both, cheapest first: the steps of the front's line
    (all of a two-objective front; a front on more objectives also holds points these two axes hide)."""
    steps: list[tuple[float, float]] = []
    for cost, accuracy in sorted(models, key=lambda p: (p[0], -p[1])):
        if not steps or accuracy > steps[-1][1]:
            steps.append((cost, accuracy))
    return steps


# label spots around a point, in points: up-left first (above a front's staircase nothing is plotted),
# then around it, further out with a leader line
_DIRECTIONS = ((-1, 1), (-1, 0), (0, 1), (1, 1), (-1, -1), (1, 0), (0, -1), (1, -1))
_SPOTS = [(dx * r, dy * r) for r in (5, 14, 26, 42, 62, 84) for dx, dy in _DIRECTIONS]


def _leader(point, box) -> list:
    """A leader line from ``point`` to the centre of its label's ``box`` (pixels), as small boxes every 3
    pixels outside the box and clear of the point's marker."""
    from matplotlib.transforms import Bbox

    (px, py), (cx, cy) = point, ((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)
    steps = max(int(math.hypot(cx - px, cy - py) / 3), 1)
    out = []
    for k in range(1, steps):
        qx, qy = px + (cx - px) * k / steps, py + (cy - py) * k / steps
        if math.hypot(qx - px, qy - py) > 7 and not box.contains(qx, qy):
            out.append(Bbox.from_extents(qx - 1, qy - 1, qx + 1, qy + 1))
    return out


def place_labels(
    ax,
    labels: list[tuple[float, float, str, dict[str, Any]]],
    avoid: list[tuple[float, float]],
    lines: list[tuple[float, float]] = (),
):
    """Annotate each (x, y, text, text style) at the first spot where it stays inside the axes, its text
    overlaps no placed label or leader line, no point in ``avoid`` and no segment of the axis-aligned
    polyline ``lines`` (the front's staircase), and its leader line crosses no label, leader or point. A
    label with no free spot is left out (the table lists every model), but the first one (the model to
    take) always gets the least crowded spot. Returns the annotations placed, in the order given."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.canvas.draw()  # the final layout: positions in pixels hold from here on
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = []  # labels, leaders, points: nothing may cross them
    for x, y in avoid:
        px, py = ax.transData.transform((x, y))
        taken.append(Bbox.from_extents(px - 6, py - 6, px + 6, py + 6))
    corners = [ax.transData.transform(xy) for xy in lines]
    steps = [  # the staircase: no label on it, but a thin leader may cross it
        Bbox.from_extents(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)).padded(1)
        for (x0, y0), (x1, y1) in zip(corners, corners[1:], strict=False)
    ]

    def annotate(x: float, y: float, text: str, style: dict[str, Any], dx: float, dy: float):
        far = abs(dx) + abs(dy) > 12
        annotation = ax.annotate(
            text,
            (x, y),
            textcoords="offset points",
            xytext=(dx, dy),
            ha="right" if dx < 0 else "left" if dx > 0 else "center",
            va="bottom" if dy > 0 else "top" if dy < 0 else "center",
            fontsize=8,
            zorder=6,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
            arrowprops={"arrowstyle": "-", "color": "0.45", "lw": 0.6} if far else None,
            **style,
        )
        annotation.update_positions(renderer)
        box = Text.get_window_extent(annotation, renderer).padded(3)
        leader = _leader(ax.transData.transform((x, y)), box) if far else []
        inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        crowding = sum(box.overlaps(o) for o in [*taken, *steps]) + sum(
            b.overlaps(o) for b in leader for o in taken
        )
        return annotation, [box, *leader], crowding if inside else math.inf

    placed = []
    for k, (x, y, text, style) in enumerate(labels):
        least = (math.inf, 0.0, 0.0)
        for dx, dy in _SPOTS:
            annotation, needs, crowding = annotate(x, y, text, style, dx, dy)
            if crowding == 0:
                break
            annotation.remove()
            least = min(least, (crowding, dx, dy), key=lambda c: c[0])
        else:
            if k > 0 or least[0] == math.inf:
                continue
            annotation, needs, _ = annotate(x, y, text, style, least[1], least[2])
        taken += needs
        placed.append(annotation)
    return placed


def fig_tradeoff(data: RunData):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9.0, 5.0), dpi=110)
    pts, cost = points(data)
    on_front = {(m.id, int(m.exit)) for m in data.front}
    cards = exported(data)

    def where(model: FrontModel) -> tuple[float, float] | None:
        x, y = model.value(cost), model.value("accuracy")
        return None if x is None or y is None or not x > 0 or math.isnan(y) else (x, y)

    shown = [(m, xy) for m in data.front if (xy := where(m)) is not None]
    usable = [p for p in pts if p.cost is not None and p.cost > 0 and (p.id, p.exit) not in on_front]
    if not usable and not shown:
        _empty(ax, "no evaluation with accuracy and cost yet")
        ax.set_title("the front: accuracy against cost")
        fig.tight_layout()
        return fig
    chance = CHANCE / data.classes if data.classes else None
    faint = [p for p in usable if chance is not None and p.accuracy <= chance]
    rest = [p for p in usable if chance is None or p.accuracy > chance]
    for exit_index, marker, name in ((0, "o", "full model"), (1, "^", "early exit")):
        group = [p for p in rest if p.exit == exit_index]
        if group:
            ax.scatter([p.cost for p in group], [p.accuracy for p in group], marker=marker, s=16,
                       color="0.62", linewidths=0, zorder=2, label=f"other evaluations, {name}")  # fmt: skip
    if faint:
        ax.scatter([p.cost for p in faint], [p.accuracy for p in faint], marker=".", s=14, color="0.8",
                   linewidths=0, zorder=1, label=f"chance level (accuracy ≤ {chance:.2f})")  # fmt: skip
    steps = staircase([xy for _, xy in shown])
    if shown:
        ax.plot([x for x, _ in steps], [y for _, y in steps], drawstyle="steps-post", color="tab:red",
                lw=1.3, zorder=3)  # fmt: skip
        ax.plot([], [], color="tab:red", lw=1.3, marker="o", mfc="tab:red", mec="black", ms=6,
                label=f"the front ({len(data.front)} models)")  # fmt: skip
        for exit_index, marker in ((0, "o"), (1, "^")):
            group = [xy for m, xy in shown if m.exit == str(exit_index)]
            if group:
                ax.scatter([x for x, _ in group], [y for _, y in group], marker=marker, s=44,
                           color="tab:red", edgecolor="black", linewidth=0.6, zorder=4)  # fmt: skip
    exports = []
    for (evaluation_id, exit_), card in cards.items():
        metrics = card.get("metrics") or {}
        x, y = (_number(metrics.get(n)) for n in (cost, "accuracy"))
        if x is not None and y is not None and x > 0:
            exports.append((evaluation_id, exit_, x, y))
    if exports:
        ax.scatter([e[2] for e in exports], [e[3] for e in exports], marker="s", s=150, facecolors="none",
                   edgecolors="tab:blue", linewidths=1.3, zorder=4, label="exported")  # fmt: skip
    take = where(data.answer) if data.answer is not None else None
    if take is not None:
        ax.scatter([take[0]], [take[1]], marker="*", s=320, color="gold", edgecolor="black", linewidth=0.8,
                   zorder=5, label="the model to take")  # fmt: skip
    ax.set_xscale("log")
    ax.margins(x=0.06, y=0.08)  # room for labels at the edges
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    method = data.meter.get("method") or ""
    unit = {"energy": "J", "latency": "s", "flops": "FLOPs", "params": "parameters"}[cost]
    per = " per inference" if cost != "params" else ""
    ax.set_xlabel(f"{cost} ({unit}{per}{', ' + method if cost == 'energy' and method else ''})")
    ax.set_ylabel("evo_test accuracy")
    ax.set_title(f"the front: accuracy against {cost}, every other evaluation behind it")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    labels = []
    if take is not None:
        labels.append((*take, f"take this: {data.answer.label}", {"fontweight": "bold"}))
    for model, xy in shown:
        if data.answer is None or (model.id, model.exit) != (data.answer.id, data.answer.exit):
            labels.append((*xy, model.label, {}))
    handed = (data.answer.id, data.answer.exit) if data.answer is not None else None
    for evaluation_id, exit_, x, y in exports:  # the front's and the answer's are labelled already
        if (evaluation_id, int(exit_)) not in on_front and (evaluation_id, exit_) != handed:
            name = f"#{evaluation_id}" + (f" exit {exit_}" if exit_ != "0" else "")
            labels.append((x, y, f"{name} exported", {"color": "tab:blue"}))
    corners = [c for a, b in zip(steps, steps[1:], strict=False) for c in (a, (b[0], a[1]))] + steps[-1:]
    place_labels(ax, labels, [(x, y) for x, y, _, _ in labels], corners)
    return fig


def fig_generations(data: RunData):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=110)
    gens = data.generations
    fitness = [(g.generation, g.best_fitness) for g in gens if g.best_fitness is not None]
    # the share of the reference box the front covers (a raw volume in joules reads 4e-06); older runs
    # recorded only the raw volume
    shared = any(g.hypervolume_share is not None for g in gens)
    volume = [(g.generation, g.hypervolume_share if shared else g.hypervolume) for g in gens]
    volumes = [(g, v * (100 if shared else 1)) for g, v in volume if v is not None]
    volume_label = "hypervolume (% of the reference box)" if shared else "hypervolume"
    if not fitness and not volumes:
        _empty(ax, "no finished generation yet")
    if fitness:
        ax.plot(
            [g for g, _ in fitness], [f for _, f in fitness], "o-", color="tab:blue", label="best fitness"
        )
        ax.set_ylabel("best fitness")
    if volumes:
        target = ax.twinx() if fitness else ax
        target.plot([g for g, _ in volumes], [v for _, v in volumes], "s--", color="tab:green",
                    label=volume_label)  # fmt: skip
        target.set_ylabel(volume_label)
    if fitness or volumes:
        fig.legend(fontsize=8, loc="lower right")
        ax.set_xlabel("generation")
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title("best fitness / hypervolume per generation")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def fig_budget(data: RunData):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=110)
    rows = [r for r in data.evaluations if r.wall_seconds is not None]
    if not rows:
        _empty(ax, "no evaluation recorded yet")
    else:
        ids = [r.id for r in rows]
        seconds_budget = any(r.budget_seconds for r in rows)
        if seconds_budget:
            ax.bar(ids, [r.wall_seconds or 0 for r in rows], color="0.75", label="wall time")
            ax.bar(ids, [r.train_seconds or 0 for r in rows], color="tab:blue", width=0.5,
                   label="training")  # fmt: skip
            ax.scatter(ids, [r.budget_seconds or float("nan") for r in rows], marker="_", s=200,
                       color="tab:red", label="budget", zorder=3)  # fmt: skip
            ax.set_ylabel("seconds")
        else:
            ax.bar(ids, [r.steps or 0 for r in rows], color="tab:blue", label="steps trained")
            ax.scatter(ids, [r.budget_steps or float("nan") for r in rows], marker="_", s=200,
                       color="tab:red", label="budget (steps)", zorder=3)  # fmt: skip
            ax.set_ylabel("optimiser steps")
        ax.set_xlabel("evaluation id")
        ax.legend(fontsize=8)
    ax.set_title("each individual's training against its budget")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def fig_measurement(data: RunData):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.4), dpi=110)
    rows = [r for r in data.evaluations if r.measure_seconds is not None]
    if not rows:
        _empty(ax, "no energy measurement recorded")
    else:
        ids = [r.id for r in rows]
        ax.bar(ids, [r.measure_seconds for r in rows], color="tab:orange", label="measuring")
        ax.set_ylabel("seconds")
        ax.set_xlabel("evaluation id")
        total = sum(r.measure_seconds or 0.0 for r in rows)
        wall = sum(r.wall_seconds or 0 for r in rows)
        share = f" ({100 * total / wall:.1f} % of evaluation time)" if wall else ""
        ax.set_title(f"measurement cost: {total:.1f} s in all{share}")
    if not rows:
        ax.set_title("measurement cost")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def render_figures(data: RunData, out_dir: Path, stem: str) -> dict[str, Path]:
    plt = _plt()
    makers = {
        "tradeoff": fig_tradeoff,
        "generations": fig_generations,
        "budget": fig_budget,
        "measurement": fig_measurement,
    }
    paths = {}
    for name, make in makers.items():
        fig = make(data)
        path = out_dir / f"{stem}-{name}.png"
        fig.savefig(path, format="png")
        plt.close(fig)
        paths[name] = path
    return paths


# --------------------------------------------------------------------------------------------- page

_FIGURES_UNITS = {"energy": "J", "latency": "s", "power": "W"}
COLUMNS = {  # the table's figures, bare metric names: one exit's
    "accuracy": "accuracy (evo_test)",
    "test_accuracy": "test accuracy",
    "energy": "energy / inference",
    "latency": "latency / inference",
    "params": "params",
    "flops": "FLOPs",
}


def _number(metric: Any) -> float | None:
    value = metric.get("value") if isinstance(metric, dict) else metric
    return None if value is None else float(value)


def _cell(metric: Any, name: str) -> str:
    """One figure with the method label that produced it (``estimated:model``, ``measured:nvml``...)."""
    value = _number(metric)
    if value is None:
        return "-"
    method = metric.get("method") if isinstance(metric, dict) else None
    if name in _FIGURES_UNITS:
        text = format_si(value, _FIGURES_UNITS[name])
    elif name in ("flops", "params"):
        text = f"{int(value):,}"
    else:
        text = f"{value:.4f}"
    label = f' <span class="m">{html.escape(method)}</span>' if method else ""
    return html.escape(text) + label


@dataclass
class TableRow:
    id: int
    exit: str
    label: str
    trained: str
    metrics: dict[str, Any]
    tags: list[str] = field(default_factory=list)


def _origin(model: FrontModel) -> str:
    if model.trained == "final":
        return f"final training of #{model.source}"
    return "search" + (f", generation {model.generation}" if model.generation is not None else "")


def table_rows(data: RunData) -> list[TableRow]:
    """The front's models (most accurate first), then the model to take where it is off the front (an ES
    hands over its best individual), then the exported models not among them."""
    cards = exported(data)
    rows: dict[tuple[int, str], TableRow] = {}
    models = [*data.front, *([data.answer] if data.answer is not None else [])]
    for model in models:
        key = (model.id, model.exit)
        row = rows.setdefault(key, TableRow(model.id, model.exit, model.label, _origin(model), model.metrics))
        if model in data.front and "front" not in row.tags:
            row.tags.append("front")
    for (evaluation_id, exit_), card in cards.items():
        row = rows.get((evaluation_id, exit_))
        if row is None:
            evaluation = card.get("evaluation") or {}
            name = f"#{evaluation_id}" + (f" exit {exit_}" if exit_ != "0" else "")
            kind = str(evaluation.get("kind") or "?")
            row = rows[(evaluation_id, exit_)] = TableRow(
                evaluation_id, exit_, name, kind, card.get("metrics") or {}
            )
        row.tags.append(f"exported ({card.get('name', '?')})")
    if data.answer is not None:
        rows[(data.answer.id, data.answer.exit)].tags.insert(0, "the model to take")
    return list(rows.values())


def _table(data: RunData) -> str:
    rows = table_rows(data)
    title = "the front and the exported models" if data.cards else "the front"
    if not rows:
        return f'<h2 id="front">{title}</h2><p>none yet</p>'
    head = "".join(f"<th>{c}</th>" for c in ("model", "trained", "role", *COLUMNS.values()))
    body = []
    for row in rows:
        take = "the model to take" in row.tags
        cells = [
            ("★ " if take else "") + html.escape(row.label),
            html.escape(row.trained),
            html.escape(", ".join(row.tags)),
            *(_cell(row.metrics.get(name), name) for name in COLUMNS),
        ]
        css = ' class="take"' if take else ""
        body.append(
            f'<tr{css} data-id="{row.id}" data-exit="{html.escape(row.exit)}">'
            + "".join(f"<td>{c}</td>" for c in cells)
            + "</tr>"
        )
    return (
        f'<h2 id="front">{title}</h2><p>The front: distinct networks, each at its best-trained weights (its '
        "final training's where it has one), none dominated, most accurate first. Accuracy and energy are "
        "evo_test figures, the ones selected on; the test accuracy is reported only, never selected on; "
        "each value with the method that produced it.</p>"
        f'<table id="models"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def _cards(data: RunData) -> str:
    if not data.cards:
        return ""
    rows = []
    for card in data.cards:
        files = ", ".join(f"{k}: {v['file']}" for k, v in card.get("files", {}).items())
        diffs = ", ".join(
            f"{k} {v:.2g}" for k, v in card.get("verification", {}).get("max_abs_diff", {}).items()
        )
        rows.append(
            f"<tr><td>{html.escape(card.get('name', '?'))}</td><td>{html.escape(files)}</td>"
            f"<td>{html.escape(diffs)}</td></tr>"
        )
    return (
        "<h2>exported models</h2><table><thead><tr><th>model</th><th>files</th><th>max |diff| at export</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4}.m{color:#777;font-size:.85em}
#models{width:100%}#models .m{display:block}
#models td:nth-child(-n+3),#models th:nth-child(-n+3){text-align:left}
#models td:first-child{white-space:nowrap}
tr.take td{background:#fff4c2;font-weight:600}
.answer{background:#fff4c2;border-left:4px solid #e0b000;padding:.6em 1em}
img{max-width:100%;display:block;margin:.6em 0}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.8em}
.note{color:#a60}
"""


def _when(seconds: Any) -> str:
    if not seconds:
        return "-"
    return _dt.datetime.fromtimestamp(float(seconds), tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def counts(data: RunData) -> dict[str, Any]:
    """What the header counts, the search's and the after-search evaluations apart."""
    searched = [r for r in data.evaluations if r.searched]
    statuses: dict[str, int] = {}
    for r in searched:
        statuses[r.status.value] = statuses.get(r.status.value, 0) + 1
    finals = [r for r in data.evaluations if r.kind == "final"]
    return {
        "searched": len(searched),
        "statuses": statuses,
        "finals": len(finals),
        "finals_ok": sum(r.ok for r in finals),
        "screenings": sum(r.kind == "screen" for r in data.evaluations),
    }


def _the_model(data: RunData) -> str:
    """The model to take in one line, as the end of `evowatt run` names it."""
    chosen = data.answer
    if chosen is None:
        return data.no_answer or "none"
    origin = (
        f"the final training of #{chosen.source}" if chosen.trained == "final" else "trained in the search"
    )
    exit_text = ", the early exit" if chosen.exit == "1" else ""
    return f"{chosen.label} ({origin}{exit_text})"


def _answer_box(data: RunData) -> str:
    chosen = data.answer
    if chosen is None:
        return f'<p class="answer">The model to take: {html.escape(data.no_answer or "none")}</p>'
    figures = [f"evo_test accuracy {_cell(chosen.metrics.get('accuracy'), 'accuracy')}"]
    figures.append(f"test accuracy {_cell(chosen.metrics.get('test_accuracy'), 'test_accuracy')}")
    for name in ("energy", "latency"):
        if chosen.metrics.get(name) is not None:
            figures.append(f"{name} / inference {_cell(chosen.metrics[name], name)}")
    command = f"evowatt export {shlex.quote(str(data.run_dir))} --best"
    aside = ""
    if all((m.id, m.exit) != (chosen.id, chosen.exit) for m in data.front):
        aside = "<br>It is not on the front: the ES hands over its best individual, chosen by its fitness."
    return (
        f'<p class="answer" id="answer">The model to take: <b>{html.escape(_the_model(data))}</b><br>'
        + "; ".join(figures)
        + aside
        + f"<br>export it: <code>{html.escape(command)}</code></p>"
    )


def render_html(data: RunData, figures: dict[str, Path]) -> str:
    searched = [r for r in data.evaluations if r.searched]
    places = sources(searched)  # host, device, meter: where the evaluations ran
    n = counts(data)
    ok = n["statuses"].get(Status.OK.value, 0)
    others = ", ".join(f"{v} {k}" for k, v in n["statuses"].items() if k != Status.OK.value)
    finals = str(n["finals"]) + ("" if n["finals_ok"] == n["finals"] else f" ({n['finals_ok']} ok)")
    summary = [
        ("run directory", str(data.run_dir)),
        ("state", "in progress (or stopped before its end)" if data.in_progress else "finished"),
        ("started", _when(data.meta.get("started_at"))),
        # the time search.time_limit counts (every session of a resumed run), final trainings apart
        (
            "search time",
            f"{float(data.meta.get('elapsed_seconds') or 0):.1f} s (final trainings not included)",
        ),
        ("searched evaluations", f"{n['searched']} (of which {ok} ok{', ' + others if others else ''})"),
        *([("screenings", str(n["screenings"]))] if n["screenings"] else []),
        ("final trainings", finals),
        ("generations recorded", str(len(data.generations))),
        ("the front", f"{len(data.front)} distinct models"),
        ("the model to take", _the_model(data)),
        ("energy meter", f"{data.meter.get('name', '-')} ({data.meter.get('reason', '')})"),
        *[("profile check", line) for line in profile_drift(data.evaluations)],
        (
            "evaluated on",
            "; ".join(f"{s['host']} {s['device']} {s['meter']} ({s['evaluations']})" for s in places) or "-",
        ),
        ("dataset", str((data.config.get("dataset") or {}).get("name", "-"))),
        ("seed", str(data.config.get("seed", "-"))),
    ]
    info = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary)
    chance = f" (accuracy at most {CHANCE:g} / {data.classes} classes)" if data.classes else ""
    captions = {
        "tradeoff": "The front (red staircase: no model is both cheaper and more accurate than a step), the "
        "model to take starred, exported models boxed; every other evaluation in grey, chance-level ones"
        f"{chance} faint. Each exit of a partitioned network is a model of its own (triangles: early exits). "
        "Labels sit where they do not overlap; the table below lists every front model.",
        "generations": "The best fitness (and hypervolume, for a Pareto search) after each generation.",
        "budget": "Each individual's training and wall time against the budget it was given.",
        "measurement": "Time spent measuring energy and latency per evaluation.",
    }
    images = []
    for name in FIGURES:
        encoded = base64.b64encode(figures[name].read_bytes()).decode("ascii")
        images.append(
            f"<h2>{name}</h2><p>{html.escape(captions[name])}</p>"
            f'<img id="fig-{name}" alt="{name}" src="data:image/png;base64,{encoded}">'
        )
        if name == "tradeoff":
            images.append(_table(data))
    config = yaml.safe_dump(data.config, sort_keys=False) if data.config else "(no config recorded)"
    note = (
        '<p class="note">This run has not finished: the report shows what is recorded so far.</p>'
        if data.in_progress
        else ""
    )
    mixed = mixed_sources(searched)
    if mixed:  # a cluster whose nodes measured differently: say so before any figure
        note += f'<p class="note">{html.escape(mixed)}</p>'

    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>evowatt report: {html.escape(data.run_dir.name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>evowatt report: {html.escape(data.run_dir.name)}</h1>{note}{_answer_box(data)}"
        f'<table id="summary">{info}</table>'
        + "".join(images)
        + _cards(data)
        + f"<h2>resolved config</h2><pre>{html.escape(config)}</pre>"
        + f'<p class="m">written by evowatt {__version__} on {_when(_dt.datetime.now().timestamp())}</p>'
        + "</body></html>\n"
    )


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report (and its PNGs beside it); returns the HTML file's path."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise EvowattError("evowatt report needs matplotlib: pip install 'evowatt[report]'") from None
    data = load_run(run_dir)
    path = Path(out) if out is not None else data.run_dir / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = render_figures(data, path.parent, path.stem)
    path.write_text(render_html(data, figures), encoding="utf-8")
    return path
