"""The report's figures, drawn with matplotlib's Agg backend (no display needed) and saved as PNGs.

A module of its own because placing the trade-off's labels (each at the first spot around its point that
collides with no other label, leader line, point or step of the front) is most of the drawing code, and
the page (report.py) only needs the PNG files ``render_figures`` writes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from evowatt.driver.results import FrontModel
from evowatt.handover.report_data import CHANCE, RunData, exported, number, points

FIGURES = ("tradeoff", "generations", "budget", "measurement")


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
        x, y = (number(metrics.get(n)) for n in (cost, "accuracy"))
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
