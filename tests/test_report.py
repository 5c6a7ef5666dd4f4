"""evowatt report: one self-contained HTML page, real figures, opened in real headless Chromium."""

import html
import os
import re
import sqlite3
import subprocess
import sys

import pytest
import yaml

pytest.importorskip("matplotlib")

from evowatt.cli.main import main  # noqa: E402
from evowatt.config.load import validate_config  # noqa: E402
from evowatt.driver.session import run  # noqa: E402
from evowatt.handover.figures import FIGURES  # noqa: E402
from evowatt.handover.report import write_report  # noqa: E402
from tests.chromium import find_chromium  # noqa: E402
from tests.conftest import SMALL_NETWORK, config_dict  # noqa: E402

BASE = {
    "seed": 0,
    "grammar": "cnn",
    "dataset": {"name": "digits"},
    "network": {**SMALL_NETWORK, "macro_structure": ["learning", "model_partition"]},
    "search": {"generations": 1, "lambda": 2},
    "training": {"budget": {"steps": 10}, "threads": 1, "final_training": {"budget": {"steps": 10}}},
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return run(validate_config(config_dict(BASE)), out=tmp_path_factory.mktemp("report") / "run").run_dir


def _self_contained(text: str) -> None:
    # nothing to fetch: no remote (or any) URL in src/href, no script, no stylesheet link
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", text)
    assert "<script" not in text and "<link" not in text and "http://" not in text and "https://" not in text
    assert text.count('src="data:image/png;base64,') == len(FIGURES)


def test_report_is_one_self_contained_file_with_pngs_beside(finished_run, tmp_path):
    path = write_report(finished_run, tmp_path / "r.html")
    text = path.read_text(encoding="utf-8")
    _self_contained(text)
    for name in FIGURES:
        png = tmp_path / f"r-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert '<h2 id="front">the front</h2>' in text and "estimated:model" in text
    assert "computed:evo_test" in text and "resolved config" in text and "finished" in text


def test_report_of_an_es_run_names_the_model_to_take(finished_run, tmp_path):
    text = write_report(finished_run, tmp_path / "r.html").read_text(encoding="utf-8")
    _assert_answers(finished_run, text)


def test_report_of_a_run_in_progress(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(BASE))
    killed = subprocess.run(
        [sys.executable, "-m", "evowatt.cli", "run", str(cfg), "--out", str(tmp_path / "r")],
        env={**os.environ, "EVOWATT_KILL_AT": "after-record:1"},
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == 137  # killed after its first evaluation: no generation, not finished
    assert main(["report", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    _self_contained(text)
    assert "has not finished" in text
    assert _header(text, "the model to take") == "none yet: no generation has ended"
    assert _header(text, "searched evaluations") == "1 (of which 1 ok)"
    assert _header(text, "final trainings") == "0"


def test_report_of_a_first_version_store(finished_run, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(finished_run, old)
    db = sqlite3.connect(old / "evowatt.sqlite")
    # the first store version: no generation record, no score, no result, no measurement columns
    for table, column in (
        ("generations", "record"),
        ("evaluations", "score"),
        ("evaluations", "result"),
        ("evaluations", "measure_seconds"),
    ):
        db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.execute("DELETE FROM meta WHERE key IN ('meter', 'started_at', 'elapsed_seconds')")
    db.commit()
    db.close()
    path = write_report(old)
    _self_contained(path.read_text(encoding="utf-8"))


@pytest.mark.skipif(
    find_chromium() is None,
    reason="no chromium here: apt-get install chromium (Debian) to open the report in a real browser",
)
def test_report_opens_in_headless_chromium(finished_run, tmp_path):
    pytest.importorskip("websocket", reason="websocket-client talks to chromium's DevTools protocol")
    from tests.chromium import inspect_page

    subprocess.run(  # an exported model, so the figure labels it and the page lists it
        [sys.executable, "-m", "evowatt.cli", "export", str(finished_run), "--best", "--format", "pt2"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    path = write_report(finished_run, tmp_path / "report.html")
    screenshot = tmp_path / "report-screenshot.png"
    page = inspect_page(find_chromium(), path, tmp_path / "profile", screenshot)
    print(f"report screenshot: {screenshot}")
    assert page.console_errors == []
    assert page.title.startswith("evowatt report")
    # only the file itself and its inline images: no network
    assert all(url.startswith(("file:", "data:")) for url in page.requests), page.requests
    assert [i["id"] for i in page.images] == [f"fig-{name}" for name in FIGURES]
    for image in page.images:
        assert image["complete"] and image["data"], image
        assert image["width"] > 100 and image["height"] > 100 and image["shown"] > 0, image
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
    assert "exported models" in path.read_text(encoding="utf-8")


def _genomes(n: int) -> list[dict]:
    """n genomes of distinct networks (the front keeps one model per network)."""
    import numpy as np

    from evowatt.config.network import NetworkConfig
    from evowatt.representation.genome import random_genome
    from evowatt.representation.grammar import load_grammar

    grammar, network = load_grammar("cnn"), NetworkConfig(**SMALL_NETWORK)
    return [random_genome(grammar, network, np.random.default_rng(s)).to_json() for s in range(n)]


def _metrics(acc: float, energy: float, early: tuple[float, float] | None = None) -> dict:
    metrics = {
        "accuracy": {"value": acc, "method": "computed:evo_test"},
        "test_accuracy": {"value": acc - 0.01, "method": "computed:test"},
        "energy": {"value": energy, "method": "estimated:model"},
        "latency": {"value": energy * 100, "method": "measured:clock"},
        "params": {"value": 1000 * acc, "method": "counted:model"},
        "flops": {"value": 5000 * acc, "method": "counted:model"},
    }
    if early is not None:
        metrics["accuracy_1"] = {"value": early[0], "method": "computed:evo_test"}
        metrics["energy_1"] = {"value": early[1], "method": "estimated:model"}
    return metrics


def _pareto_store(path, evaluations, front, finals=(), constraints=()):
    """A Pareto run's store: each searched evaluation (accuracy, energy[, early exit]) of its own network,
    the last generation's recorded front, and final trainings (id, parent id, accuracy, energy)."""
    from evowatt.driver.store import RunStore
    from evowatt.records import EvalResult
    from evowatt.search.protocol import Candidate, GenerationRecord

    genomes = _genomes(len(evaluations))
    store = RunStore(path, create=True)
    search = {"algorithm": "pareto", "constraints": list(constraints)}
    config = {"seed": 3, "dataset": {"name": "digits"}, "network": SMALL_NETWORK, "search": search}
    store.set_meta("config", config)
    for i, (acc, energy, *early) in enumerate(evaluations):
        result = EvalResult(i, "ok", metrics=_metrics(acc, energy, *early), wall_seconds=1.0)
        store.record(Candidate(i, 0, "random", genomes[i], seed=i), result)
    store.record(  # a failed search evaluation: counted, never plotted
        Candidate(len(evaluations), 1, "mutant", genomes[0], seed=99),
        EvalResult(len(evaluations), "invalid", reason="too small"),
    )
    for g, volume in ((0, 0.5), (1, 0.6)):
        store.record_generation(
            GenerationRecord(
                generation=g,
                evaluations=list(range(len(evaluations))),
                survivors=[m["id"] for m in front],
                best_id=None,
                front=front,
                hypervolume=volume,
                best_fitness=None,
            )
        )
    for final_id, parent, acc, energy in finals:
        task = Candidate(final_id, None, "final", genomes[parent], seed=0, parent_id=parent)
        store.record(task, EvalResult(final_id, "ok", metrics=_metrics(acc, energy)))
    store.close()
    return path


def _table_models(text: str) -> list[tuple[int, str]]:
    return [
        (int(i), e) for i, e in re.findall(r'<tr(?: class="take")? data-id="(\d+)" data-exit="(\d)">', text)
    ]


def _header(text: str, name: str) -> str:
    found = re.search(rf"<tr><th>{name}</th><td>([^<]*)</td></tr>", text)
    assert found, name
    return found.group(1)


def _store_counts(run_dir) -> tuple[int, int, int]:
    db = sqlite3.connect(run_dir / "evowatt.sqlite")
    try:
        searched, ok = db.execute(
            "SELECT COUNT(*), SUM(status = 'ok') FROM evaluations WHERE kind NOT IN ('screen', 'final')"
        ).fetchone()
        finals = db.execute("SELECT COUNT(*) FROM evaluations WHERE kind = 'final'").fetchone()[0]
    finally:
        db.close()
    return searched, ok, finals


def _assert_answers(run_dir, text: str) -> None:
    """The report's table is results.front (plus the answer where it is off the front, and exports), its
    answer results.answer, marked once, and its header counts the store's."""
    from evowatt.driver.results import answer, front

    models, chosen = front(run_dir), answer(run_dir)
    listed = _table_models(text)
    assert len(listed) == len(set(listed))  # no model twice
    assert listed[: len(models)] == [(m.id, m.exit) for m in models]  # exactly the front, in its order
    assert text.count('class="take"') == 1
    assert f'<tr class="take" data-id="{chosen.id}" data-exit="{chosen.exit}">' in text
    assert _header(text, "the model to take").startswith(html.escape(chosen.label) + " (")
    assert f"The model to take: <b>{html.escape(chosen.label)} (" in text
    assert "<th>best individual</th>" not in text  # the old header row ("-" for a Pareto run)
    searched, ok, finals = _store_counts(run_dir)
    assert _header(text, "searched evaluations").startswith(f"{searched} (of which {ok} ok")
    assert _header(text, "final trainings") == str(finals)
    assert _header(text, "the front") == f"{len(models)} distinct models"


def test_report_of_a_pareto_store_draws_results_front_and_marks_the_answer(tmp_path):
    from evowatt.driver.results import answer, front
    from evowatt.handover.figures import fig_generations, fig_tradeoff
    from evowatt.handover.report_data import load_run

    run_dir = _pareto_store(
        tmp_path / "p",
        [
            (0.90, 2e-8, (0.80, 1e-8)),  # #0: final-trained as #7 (its early exit is not)
            (0.85, 1.5e-8),  # #1: not on the last generation's front
            (0.70, 3e-8),  # #2: dominated by #0
            (0.95, 9e-8),  # #3: the most accurate
            (0.60, 5e-9),  # #4: the cheapest feasible one
            (0.09, 1e-9),  # #5: chance level, cheapest of all, infeasible (accuracy > 0.5)
        ],
        front=[{"id": i, "exit": e} for i, e in ((0, "0"), (0, "1"), (2, "0"), (3, "0"), (4, "0"), (5, "0"))],
        finals=[(7, 0, 0.93, 1.8e-8)],
        constraints=["accuracy > 0.5"],
    )
    models = front(run_dir)
    chosen = answer(run_dir)
    assert [(m.id, m.exit) for m in models] == [(3, "0"), (7, "0"), (0, "1"), (4, "0")]
    assert chosen is not None and (chosen.id, chosen.exit) == (3, "0")
    text = write_report(run_dir).read_text(encoding="utf-8")
    _self_contained(text)
    _assert_answers(run_dir, text)
    assert '<h2 id="front">the front</h2>' in text and "has not finished" in text
    assert "final training of #0" in text  # #7 is #0's final training
    data = load_run(run_dir)
    figure = fig_generations(data)
    assert [line.get_label() for ax in figure.axes for line in ax.get_lines()] == ["hypervolume"]
    labels = _labels(fig_tradeoff(data))
    assert f"take this: {chosen.label}" in labels
    assert set(labels) - {f"take this: {chosen.label}"} == {
        m.label for m in models if m.label != chosen.label
    }


def _labels(figure) -> list[str]:
    """The trade-off's labels, after checking that no two overlap and each lies inside the axes."""
    from matplotlib.text import Text

    ax = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    boxes = []
    for text in ax.texts:
        text.update_positions(renderer)
        box = Text.get_window_extent(text, renderer)
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        assert not any(box.overlaps(other) for other in boxes), text.get_text()
        boxes.append(box)
    return [t.get_text() for t in ax.texts]


def test_trade_off_labels_of_a_crowded_front_never_overlap(tmp_path):
    from evowatt.handover.figures import fig_tradeoff, staircase
    from evowatt.handover.report_data import load_run

    n = 16  # a front of 16 networks, bunched: accuracy rises slowly with energy
    evaluations = [(0.80 + 0.01 * i, 1e-8 * (1.15**i)) for i in range(n)]
    evaluations += [(0.5, 1e-7), (0.1, 2e-9)]  # one dominated, one at chance level
    run_dir = _pareto_store(tmp_path / "crowded", evaluations, [{"id": i, "exit": "0"} for i in range(n)])
    data = load_run(run_dir)
    assert len(data.front) == n
    figure = fig_tradeoff(data)
    labels = _labels(figure)
    assert labels[0] == f"take this: {data.answer.label}"  # placed first, so never crowded out
    assert len(labels) == len(set(labels)) >= n // 2
    # background: the dominated one grey, the chance-level one faint and smaller
    collections = {c.get_label(): c for c in figure.axes[0].collections}
    chance = collections["chance level (accuracy ≤ 0.15)"]
    other = collections["other evaluations, full model"]
    assert chance.get_sizes()[0] < other.get_sizes()[0]
    assert [tuple(o) for o in chance.get_offsets()] == [(2e-9, 0.1)]
    assert [tuple(o) for o in other.get_offsets()] == [(1e-7, 0.5)]
    assert staircase([(2.0, 0.9), (1.0, 0.5), (3.0, 0.8), (1.5, 0.5)]) == [(1.0, 0.5), (2.0, 0.9)]


def test_report_table_lists_exported_models_beside_the_front(tmp_path):
    import json

    from evowatt.driver.results import front

    run_dir = _pareto_store(
        tmp_path / "x",
        [(0.9, 2e-8), (0.7, 3e-8), (0.6, 1e-8)],
        front=[{"id": 0, "exit": "0"}, {"id": 2, "exit": "0"}],
    )
    (run_dir / "export").mkdir()
    for evaluation_id, acc in ((0, 0.9), (1, 0.7)):  # a front model and a dominated one were exported
        card = {
            "name": f"evowatt-{evaluation_id}-exit0",
            "evaluation": {"id": evaluation_id, "kind": "random", "generation": 0, "exit": 0},
            "classes": {"count": 10},
            "metrics": _metrics(acc, 3e-8 if evaluation_id else 2e-8),
            "files": {"onnx": {"file": f"evowatt-{evaluation_id}-exit0.onnx"}},
        }
        (run_dir / "export" / f"evowatt-{evaluation_id}-exit0.card.json").write_text(json.dumps(card))
    text = write_report(run_dir).read_text(encoding="utf-8")
    _assert_answers(run_dir, text)
    assert [m.id for m in front(run_dir)] == [0, 2]
    assert _table_models(text) == [(0, "0"), (2, "0"), (1, "0")]  # the front, then the other export
    assert "the model to take, front, exported (evowatt-0-exit0)" in text
    assert "<td>exported (evowatt-1-exit0)</td>" in text
    assert "<h2>exported models</h2>" in text


def test_report_says_where_evaluations_ran_and_warns_when_meters_differ(tmp_path):
    import numpy as np

    from evowatt.config.network import NetworkConfig
    from evowatt.driver.store import RunStore
    from evowatt.records import EvalResult
    from evowatt.representation.genome import random_genome
    from evowatt.representation.grammar import load_grammar
    from evowatt.search.protocol import Candidate

    genome = random_genome(load_grammar("cnn"), NetworkConfig(**SMALL_NETWORK), np.random.default_rng(0))
    store = RunStore(tmp_path / "r", create=True)
    store.set_meta("config", {"seed": 0, "dataset": {"name": "digits"}})
    for i, (host, device, meter, method) in enumerate(
        [("node-a", "cpu", None, "estimated:model"), ("node-b", "cuda:0", "nvml", "measured:nvml")]
    ):
        metrics = {
            "accuracy": {"value": 0.9 - i / 10, "method": "computed:evo_test"},
            "energy": {"value": 1e-6, "method": method},
        }
        result = EvalResult(i, "ok", metrics=metrics, host=host, device=device, meter=meter)
        store.record(Candidate(i, 0, "random", genome.to_json(), seed=i), result)
    store.close()
    text = write_report(tmp_path / "r").read_text(encoding="utf-8")
    assert "<th>evaluated on</th><td>node-a cpu estimate (1); node-b cuda:0 nvml (1)</td>" in text
    assert "2 different meters or device kinds" in text and "comparable only within one" in text
