"""events.jsonl: one JSON object a line, flushed as the run goes; plain progress lines off a terminal."""

import json
import os
import subprocess
import sys

import yaml

from evowatt.config.load import validate_config
from evowatt.driver.events import EVENTS_NAME, EventLog, read_events
from evowatt.driver.observe import RunFailed
from evowatt.driver.session import run
from evowatt.driver.store import RunStore
from tests.conftest import SMALL_NETWORK, config_dict

BASE = {
    "seed": 0,
    "grammar": "cnn",
    "dataset": {"name": "digits"},
    "network": SMALL_NETWORK,
    "search": {"generations": 1, "lambda": 2},
    "training": {"budget": {"steps": 10}, "threads": 1, "final_training": {"budget": {"steps": 10}}},
}


def test_events_parse_line_by_line_and_equal_the_store(tmp_path):
    result = run(validate_config(config_dict(BASE)), out=tmp_path / "r")
    lines = (result.run_dir / EVENTS_NAME).read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("generation") == 2  # generation 0 and 1, each as the store records it
    assert "final_training" in kinds and "final_result" in kinds
    store = RunStore(result.run_dir)
    rows = {r.id: r for r in store.select()}
    generations = store.generations()
    store.close()
    logged = [e for e in events if e["event"] in ("evaluation", "final_result")]
    assert sorted(e["id"] for e in logged) == sorted(rows)
    for e in logged:
        row = rows[e["id"]]
        assert e["status"] == row.status and e["fitness"] == row.fitness
        assert e["kind"] == row.kind and e["steps"] == row.steps
        # test accuracy is added to the store afterwards (reported only); every logged figure is the store's
        assert {k: v for k, v in row.metrics.items() if k in e["metrics"]} == e["metrics"]
        assert e["metrics"]["accuracy"]["method"] == "computed:evo_test"
    assert [e["parent_id"] for e in events if e["event"] == "generation"] == [g.best_id for g in generations]
    assert all(isinstance(e["time"], float) for e in events)


def test_event_log_appends_after_a_torn_line_and_records_errors(tmp_path):
    (tmp_path / EVENTS_NAME).write_text('{"event": "start", "time": 1}\n{"event": "evalu')
    log = EventLog(tmp_path)
    log(RunFailed(type="EvowattError", message="disk full"))
    log.close()
    events = read_events(tmp_path)
    assert [e["event"] for e in events] == ["start", "error"]
    assert events[1]["message"] == "disk full"


def test_non_terminal_run_prints_a_line_per_evaluation(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(BASE))
    out = subprocess.run(
        [sys.executable, "-m", "evowatt.cli", "run", str(cfg), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    store = RunStore(tmp_path / "r")
    ids = [r.id for r in store.select() if r.kind != "final"]
    store.close()
    lines = [line for line in out.stdout.splitlines() if line.startswith("gen ")]
    assert len(lines) == len(ids)
    for line, evaluation_id in zip(lines, ids, strict=True):
        assert f"individual {evaluation_id} " in line and "fitness" in line
    assert any(line.startswith("final training of the best genome") for line in out.stdout.splitlines())


def test_a_run_killed_after_a_record_and_resumed_logs_every_evaluation_once(tmp_path):
    """The event log sees each result before the crash point does, so a kill loses no line."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(BASE))
    killed = subprocess.run(
        [sys.executable, "-m", "evowatt.cli", "run", str(cfg), "--out", str(tmp_path / "r")],
        env={**os.environ, "EVOWATT_KILL_AT": "after-record:2"},
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == 137
    logged = [e["id"] for e in read_events(tmp_path / "r") if e["event"] == "evaluation"]
    store = RunStore(tmp_path / "r")
    assert logged == [r.id for r in store.select()] and len(logged) == 2
    store.close()
    resumed = subprocess.run(
        [sys.executable, "-m", "evowatt.cli", "resume", str(tmp_path / "r")],
        capture_output=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    logged = [e["id"] for e in read_events(tmp_path / "r") if e["event"] in ("evaluation", "final_result")]
    store = RunStore(tmp_path / "r")
    assert sorted(logged) == [r.id for r in store.select()]  # each once: reused ones log no line
    store.close()


def test_progress_takes_typed_events_or_the_older_name_and_keywords_form():
    """``progress=`` as a user wrote it before events were typed still gets ``(name, **info)``, a recorded
    result as its JSON; an observer taking the event alone gets the typed record."""
    from types import SimpleNamespace

    from evowatt.driver.observe import EvaluationDone, Note, as_observer
    from evowatt.records import EvalResult

    result = EvalResult.coerce({"id": 3, "status": "ok", "metrics": {"accuracy": {"value": 0.5}}})
    done = EvaluationDone(candidate=SimpleNamespace(id=3), result=result, fitness=0.5)
    calls: list[tuple] = []

    def older(event: str, **info: object) -> None:
        calls.append((event, info))

    observer = as_observer(older)
    assert observer is not None
    observer(done)
    observer(Note("hello"))
    assert calls[0][0] == "result" and calls[0][1]["result"] == result.to_json()
    assert calls[0][1]["fitness"] == 0.5 and calls[0][1]["score"] is None
    assert calls[1] == ("note", {"message": "hello"})
    typed = [].append
    assert as_observer(typed) is typed and as_observer(None) is None
