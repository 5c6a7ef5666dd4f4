"""`evowatt report`: one self-contained HTML page of a run, its figures inline, nothing fetched when opened.

What it shows: accuracy against energy per inference of every evaluation (each exit of a partitioned
network its own point) with the front, or the ES's parents, highlighted and the best and exported models
labelled; best fitness and hypervolume per generation; each individual's training time against its
budget; what measuring cost; a table of the front (or parents) with each model's figures and method
labels; the resolved config. Figures are drawn with matplotlib's Agg backend (no display needed), written
as PNGs beside the HTML and embedded in it as base64.

It reads the store without locking it, so it works on a run still in progress, and on a run directory
written by the first store version (generation records without survivors, front or hypervolume).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evowatt import __version__
from evowatt.energy.sources import mixed_sources, sources
from evowatt.errors import EvowattError
from evowatt.store import AFTER_SEARCH, RunStore
from evowatt.units import format_si

FIGURES = ("tradeoff", "generations", "budget", "measurement")


@dataclass
class Point:
    id: int
    exit: int
    kind: str
    generation: int | None
    accuracy: float
    cost: float | None  # energy (J) per inference, or FLOPs where no energy was measured
    status: str


@dataclass
class RunData:
    run_dir: Path
    config: dict[str, Any]
    meter: dict[str, Any]
    evaluations: list[dict[str, Any]]
    generations: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    cards: list[dict[str, Any]] = field(default_factory=list)

    @property
    def in_progress(self) -> bool:
        return self.meta.get("finished_at") is None


def _value(row: dict[str, Any], name: str) -> float | None:
    metric = (row.get("metrics") or {}).get(name)
    value = metric.get("value") if isinstance(metric, dict) else metric
    return None if value is None else float(value)


def _method(row: dict[str, Any], name: str) -> str | None:
    metric = (row.get("metrics") or {}).get(name)
    return metric.get("method") if isinstance(metric, dict) else None


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
            evaluations=store.evaluations(),
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
    return data


def points(data: RunData) -> tuple[list[Point], str]:
    """Every exit of every evaluation with an accuracy, and the cost axis used (energy, else FLOPs)."""
    rows = [r for r in data.evaluations if r["status"] == "ok"]
    has_energy = any(_value(r, "energy") is not None for r in rows)
    cost = "energy" if has_energy else "flops"
    out = []
    for row in rows:
        for exit_index, suffix in ((0, ""), (1, "_1")):
            accuracy = _value(row, f"accuracy{suffix}")
            if accuracy is None:
                continue
            out.append(
                Point(
                    row["id"],
                    exit_index,
                    row["kind"],
                    row["generation"],
                    accuracy,
                    _value(row, f"{cost}{suffix}"),
                    row["status"],
                )
            )
    return out, cost


def highlighted(data: RunData) -> tuple[set[tuple[int, int]], str]:
    """The last generation's front (id, exit) where the search records one, else every ES parent."""
    if data.generations and data.generations[-1].get("front"):
        front = {(int(m["id"]), int(m.get("exit") or 0)) for m in data.generations[-1]["front"]}
        return front, "front"
    parents = set()
    for g in data.generations:
        for i in g.get("survivors") or [g.get("best_id", g.get("parent_id"))]:
            if i is not None:
                parents.add((int(i), 0))
                parents.add((int(i), 1))
    return parents, "parents"


def best_id(data: RunData) -> int | None:
    if not data.generations:
        return None
    g = data.generations[-1]
    return g.get("best_id", g.get("parent_id"))


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


def fig_tradeoff(data: RunData):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    pts, cost = points(data)
    marked, what = highlighted(data)
    best = best_id(data)
    exported = {(c["evaluation"]["id"], c["evaluation"]["exit"]) for c in data.cards if "evaluation" in c}
    usable = [p for p in pts if p.cost is not None and p.cost > 0]
    if not usable:
        _empty(ax, "no evaluation with accuracy and cost yet")
    else:
        for exit_index, marker, label in ((0, "o", "exit 0 (full)"), (1, "^", "exit 1 (early exit)")):
            group = [
                p
                for p in usable
                if p.exit == exit_index and (p.id, p.exit) not in marked and p.kind not in AFTER_SEARCH
            ]
            if group:
                ax.scatter([p.cost for p in group], [p.accuracy for p in group], marker=marker, s=22,
                           color="0.65", label=f"{label}")  # fmt: skip
            top = [p for p in usable if p.exit == exit_index and (p.id, p.exit) in marked]
            if top:
                ax.scatter([p.cost for p in top], [p.accuracy for p in top], marker=marker, s=46,
                           color="tab:red", edgecolor="black", linewidth=0.6,
                           label=f"{label}: {what}")  # fmt: skip
        finals = [p for p in usable if p.kind == "final"]
        if finals:
            ax.scatter([p.cost for p in finals], [p.accuracy for p in finals], marker="*", s=110,
                       color="tab:blue", edgecolor="black", lw=0.5, label="final training")  # fmt: skip
        labelled = []
        for p in usable:
            tags = []
            if p.id == best and p.exit == 0:
                tags.append("best")
            if (p.id, p.exit) in exported:
                tags.append("exported")
            if p.kind == "final":
                tags.append("final")
            if tags:
                labelled.append((p, f"#{p.id}/{p.exit} {', '.join(tags)}"))
        labelled.sort(key=lambda item: -item[0].accuracy)
        for k, (p, text) in enumerate(labelled):  # staggered: the best and its final often coincide
            ax.annotate(text, (p.cost, p.accuracy), textcoords="offset points", xytext=(8, 6 - 12 * k),
                        fontsize=8, arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5})  # fmt: skip
        ax.set_xscale("log")
        ax.legend(fontsize=8, loc="lower right")
    method = data.meter.get("method") or ""
    unit = "J per inference" if cost == "energy" else "FLOPs per inference"
    ax.set_xlabel(f"{cost} ({unit}{', ' + method if cost == 'energy' and method else ''})")
    ax.set_ylabel("evo_test accuracy")
    ax.set_title("accuracy vs cost of every evaluation")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def fig_generations(data: RunData):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=110)
    gens = data.generations
    fitness = [(g["generation"], g.get("best_fitness")) for g in gens if g.get("best_fitness") is not None]
    volumes = [(g["generation"], g.get("hypervolume")) for g in gens if g.get("hypervolume") is not None]
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
                    label="hypervolume")  # fmt: skip
        target.set_ylabel("hypervolume")
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
    rows = [r for r in data.evaluations if r.get("wall_seconds") is not None]
    if not rows:
        _empty(ax, "no evaluation recorded yet")
    else:
        ids = [r["id"] for r in rows]
        seconds_budget = any(r.get("budget_seconds") for r in rows)
        if seconds_budget:
            ax.bar(ids, [r.get("wall_seconds") or 0 for r in rows], color="0.75", label="wall time")
            ax.bar(ids, [r.get("train_seconds") or 0 for r in rows], color="tab:blue", width=0.5,
                   label="training")  # fmt: skip
            ax.scatter(ids, [r.get("budget_seconds") or float("nan") for r in rows], marker="_", s=200,
                       color="tab:red", label="budget", zorder=3)  # fmt: skip
            ax.set_ylabel("seconds")
        else:
            ax.bar(ids, [r.get("steps") or 0 for r in rows], color="tab:blue", label="steps trained")
            ax.scatter(ids, [r.get("budget_steps") or float("nan") for r in rows], marker="_", s=200,
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
    rows = [r for r in data.evaluations if r.get("measure_seconds") is not None]
    if not rows:
        _empty(ax, "no energy measurement recorded")
    else:
        ids = [r["id"] for r in rows]
        ax.bar(ids, [r["measure_seconds"] for r in rows], color="tab:orange", label="measuring")
        ax.set_ylabel("seconds")
        ax.set_xlabel("evaluation id")
        total = sum(r["measure_seconds"] for r in rows)
        wall = sum(r.get("wall_seconds") or 0 for r in rows)
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


def _cell(row: dict[str, Any], name: str) -> str:
    value, method = _value(row, name), _method(row, name)
    if value is None:
        return "-"
    base = name.removesuffix("_1")
    if base in _FIGURES_UNITS:
        text = format_si(value, _FIGURES_UNITS[base])
    elif base in ("flops", "params"):
        text = f"{int(value):,}"
    else:
        text = f"{value:.4f}"
    label = f' <span class="m">{html.escape(method)}</span>' if method else ""
    return html.escape(text) + label


def _table(data: RunData) -> str:
    marked, what = highlighted(data)
    by_id = {r["id"]: r for r in data.evaluations}
    wanted = sorted(marked | {(r["id"], 0) for r in data.evaluations if r["kind"] == "final"})
    columns = ("accuracy", "test_accuracy", "energy", "latency", "flops", "params")
    head = "".join(f"<th>{c}</th>" for c in ("id", "exit", "kind", "gen", "fitness", *columns))
    body = []
    for evaluation_id, exit_index in wanted:
        row = by_id.get(evaluation_id)
        suffix = "" if exit_index == 0 else "_1"
        if row is None or _value(row, f"accuracy{suffix}") is None:
            continue
        fitness = row.get("fitness")
        cells = [
            f"#{evaluation_id}",
            str(exit_index),
            html.escape(row["kind"]),
            str(row["generation"]),
            "-" if fitness is None else f"{fitness:.4f}",
        ]
        cells += [_cell(row, f"{c}{suffix}") for c in columns]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    title = "the front" if what == "front" else "the ES parents and final models"
    if not body:
        return f"<h2>{title}</h2><p>none yet</p>"
    return (
        f"<h2>{title}</h2><p>evo_test figures (fitness and energy); test accuracy is reported only, never "
        "selected on; each value with the method that produced it.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
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
th{background:#f4f4f4}td:nth-child(3){text-align:left}.m{color:#777;font-size:.85em}
img{max-width:100%;display:block;margin:.6em 0}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.8em}
.note{color:#a60}
"""


def _when(seconds: Any) -> str:
    if not seconds:
        return "-"
    return _dt.datetime.fromtimestamp(float(seconds), tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_html(data: RunData, figures: dict[str, Path]) -> str:
    statuses: dict[str, int] = {}
    for r in data.evaluations:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    searched = [r for r in data.evaluations if r["kind"] not in AFTER_SEARCH]
    places = sources(searched)  # host, device, meter: where the evaluations ran
    summary = [
        ("run directory", str(data.run_dir)),
        ("state", "in progress (or stopped before its end)" if data.in_progress else "finished"),
        ("started", _when(data.meta.get("started_at"))),
        ("elapsed", f"{float(data.meta.get('elapsed_seconds') or 0):.1f} s"),
        ("evaluations", f"{len(searched)} (" + ", ".join(f"{v} {k}" for k, v in statuses.items()) + ")"),
        ("generations recorded", str(len(data.generations))),
        ("best individual", "-" if best_id(data) is None else f"#{best_id(data)}"),
        ("energy meter", f"{data.meter.get('name', '-')} ({data.meter.get('reason', '')})"),
        (
            "evaluated on",
            "; ".join(f"{s['host']} {s['device']} {s['meter']} ({s['evaluations']})" for s in places) or "-",
        ),
        ("dataset", str((data.config.get("dataset") or {}).get("name", "-"))),
        ("seed", str(data.config.get("seed", "-"))),
    ]
    info = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary)
    captions = {
        "tradeoff": "Accuracy against cost of every evaluation; each exit of a partitioned network is a "
        "point of its own.",
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
        f"<h1>evowatt report: {html.escape(data.run_dir.name)}</h1>{note}<table>{info}</table>"
        + "".join(images)
        + _table(data)
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
