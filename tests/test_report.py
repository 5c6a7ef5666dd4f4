"""evowatt report: one self-contained HTML page, real figures, opened in real headless Chromium."""

import os
import re
import sqlite3
import subprocess
import sys

import pytest
import yaml

pytest.importorskip("matplotlib")

from evowatt.cli import main  # noqa: E402
from evowatt.config import validate_config  # noqa: E402
from evowatt.experiment import run  # noqa: E402
from evowatt.report import FIGURES, write_report  # noqa: E402
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
    assert "the ES parents and final models" in text and "estimated:model" in text
    assert "computed:evo_test" in text and "resolved config" in text and "finished" in text


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


def test_report_of_a_pareto_store_highlights_the_front_and_plots_hypervolume(tmp_path):
    import numpy as np

    from evowatt.config import NetworkConfig
    from evowatt.genome import random_genome
    from evowatt.grammar import load_grammar
    from evowatt.report import fig_generations, highlighted, load_run
    from evowatt.store import RunStore

    genome = random_genome(load_grammar("cnn"), NetworkConfig(**SMALL_NETWORK), np.random.default_rng(0))
    store = RunStore(tmp_path / "p", create=True)
    store.set_meta("config", {"seed": 3, "dataset": {"name": "digits"}})
    for i, (acc, energy) in enumerate([(0.9, 2e-8), (0.8, 1e-8), (0.7, 3e-8)]):
        metrics = {
            "accuracy": {"value": acc, "method": "computed:evo_test"},
            "energy": {"value": energy, "method": "estimated:model"},
            "accuracy_1": {"value": acc - 0.1, "method": "computed:evo_test"},
            "energy_1": {"value": energy / 2, "method": "estimated:model"},
        }
        result = {"id": i, "status": "ok", "metrics": metrics, "wall_seconds": 1.0, "measure_seconds": 0.1}
        store.record({"kind": "random", "generation": 0, "genome": genome.to_json(), "seed": i}, result, None)
    front = [{"id": 0, "exit": "0"}, {"id": 1, "exit": "0"}, {"id": 1, "exit": "1"}]
    for g, volume in ((0, 0.5), (1, 0.6)):
        store.record_generation(
            {
                "generation": g,
                "evaluations": [0, 1, 2],
                "survivors": [0, 1],
                "best_id": None,
                "front": front,
                "hypervolume": volume,
                "best_fitness": None,
            }  # fmt: skip
        )
    store.close()
    data = load_run(tmp_path / "p")
    assert highlighted(data) == ({(0, 0), (1, 0), (1, 1)}, "front")
    figure = fig_generations(data)
    assert [line.get_label() for ax in figure.axes for line in ax.get_lines()] == ["hypervolume"]
    text = write_report(tmp_path / "p").read_text(encoding="utf-8")
    _self_contained(text)
    assert "<h2>the front</h2>" in text and "has not finished" in text
    assert text.count("<tr><td>#") == 3  # the three front members, each with its figures


def test_report_says_where_evaluations_ran_and_warns_when_meters_differ(tmp_path):
    import numpy as np

    from evowatt.config import NetworkConfig
    from evowatt.genome import random_genome
    from evowatt.grammar import load_grammar
    from evowatt.store import RunStore

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
        result = {"id": i, "status": "ok", "metrics": metrics, "host": host, "device": device, "meter": meter}
        store.record({"kind": "random", "generation": 0, "genome": genome.to_json(), "seed": i}, result, None)
    store.close()
    text = write_report(tmp_path / "r").read_text(encoding="utf-8")
    assert "<th>evaluated on</th><td>node-a cpu estimate (1); node-b cuda:0 nvml (1)</td>" in text
    assert "2 different meters or device kinds" in text and "comparable only within one" in text
