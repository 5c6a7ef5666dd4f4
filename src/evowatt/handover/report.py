"""`evowatt report`: one self-contained HTML page of a run, its figures inline, nothing fetched when opened.

It answers the run's question first, with the views the terminal uses (``evowatt.driver.results``): the
header
names the model to take (``results.answer``, the one ``evowatt run`` names at its end) and counts the
searched evaluations and the final trainings apart; the trade-off figure draws the run's front
(``results.front``: distinct networks at their best-trained weights) as a staircase with the model to take
starred and every other evaluation behind it, the chance-level ones faint; a table lists the front's and
the exported models with each figure's method label. Then: best fitness and hypervolume per generation;
each individual's training time against its budget; what measuring cost; the resolved config. Figures are
written as PNGs beside the HTML and embedded in it as base64.

This module writes the page; what it shows is read by report_data.py and drawn by figures.py.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evowatt.driver.results import FrontModel, profile_drift
from evowatt.errors import EvowattError
from evowatt.handover.figures import FIGURES, render_figures
from evowatt.handover.report_data import CHANCE, RunData, counts, exported, load_run, number
from evowatt.provenance import mixed_sources, sources
from evowatt.records import Status
from evowatt.units import format_si
from evowatt.version import __version__

_FIGURES_UNITS = {"energy": "J", "latency": "s", "power": "W"}
COLUMNS = {  # the table's figures, bare metric names: one exit's
    "accuracy": "accuracy (evo_test)",
    "test_accuracy": "test accuracy",
    "energy": "energy / inference",
    "latency": "latency / inference",
    "params": "params",
    "flops": "FLOPs",
}


def _cell(metric: Any, name: str) -> str:
    """One figure with the method label that produced it (``estimated:model``, ``measured:nvml``...)."""
    value = number(metric)
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
