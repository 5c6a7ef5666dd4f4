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
