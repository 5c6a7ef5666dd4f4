"""The Ray runner on a two-node Ray cluster on this machine, inside a network namespace with only loopback.

A Ray node registers the machine's own address even when told 127.0.0.1; inside a namespace that has only
loopback it can register nothing else, so no Ray traffic leaves the machine. ``test_ray_in_a_loopback_
namespace`` re-runs this module inside such a namespace (root and ``ip`` needed); there the
``EVOWATT_RAY_NETNS`` variable is set and the cluster tests run. They share one cluster (start-up is slow).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from evowatt.config.load import validate_config
from evowatt.driver.session import run
from evowatt.driver.store import RunStore
from evowatt.errors import EvowattError
from tests.conftest import SMALL_NETWORK, config_dict

INSIDE = os.environ.get("EVOWATT_RAY_NETNS") == "1"
ROOT = Path(__file__).resolve().parent.parent

BASE = {
    "seed": 0,
    "grammar": "cnn_v1",  # the grammar these seeds were chosen on (a train_longer mutant)
    "dataset": {"name": "digits"},
    "network": SMALL_NETWORK,
    "search": {"generations": 1, "lambda": 2, "mutation": {"train_longer": 0.5}},
    "training": {"budget": {"steps": 15}, "threads": 1},
}
RAY = {"kind": "ray", "cpus": 1, "retries": 2}


def make_config(**overrides):
    return validate_config(config_dict(BASE, **overrides))


def history(run_dir: Path) -> list[tuple]:
    store = RunStore(run_dir)
    rows = [
        (
            e.id,
            e.kind,
            json.dumps(e.genome),
            e.status,
            e.fitness,
            (e.train or {}).get("steps"),
        )
        for e in store.select()
    ]
    store.close()
    return rows


def steps(row) -> int | None:
    return (row["train"] or {}).get("steps")


def weights(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run_dir / "weights").iterdir())}


# --- outside the namespace ------------------------------------------------------------------------
def test_ray_runner_without_ray_is_one_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(EvowattError, match=r"pip install 'evowatt\[ray\]'"):
        run(make_config(runner=RAY), out=tmp_path / "r")
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_a_ray_run_leaves_the_meter_to_each_worker(monkeypatch):
    """The driver may have no GPU (training.device cuda) or no meter the workers have: it opens none."""
    import evowatt.energy.select
    from evowatt.driver.setup import choose_meter
    from evowatt.driver.tasks import eval_settings

    def no_meter_here(*_, **__):
        raise AssertionError("the driver opened a meter")

    monkeypatch.setattr(evowatt.energy.select, "select_meter", no_meter_here)
    config = make_config(runner=RAY, **{"training.device": "cuda"})
    meter = choose_meter(config)
    assert meter.per_worker and meter.idle is None and "each Ray worker" in meter.reason
    assert eval_settings(config, meter=meter).local_meter


def test_ray_in_a_loopback_namespace():
    """Runs the cluster tests below inside a fresh network namespace that has only loopback."""
    if INSIDE:
        pytest.skip("already inside the namespace")
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("the Ray tests need root and iproute2's `ip` to run inside a loopback-only namespace")
    pytest.importorskip("ray")
    name = f"evowatt-ray-{os.getpid()}"
    created = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if created.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {created.stderr.strip()}")
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        env = {**os.environ, "EVOWATT_RAY_NETNS": "1", "RAY_ADDRESS": ""}
        env.pop("PYTEST_XDIST_WORKER", None)
        inner = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                name,
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:xdist",
                "-p",
                "no:cacheprovider",
                "-x",
                str(Path(__file__)),
                "-k",
                "not without_ray and not namespace",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    output = inner.stdout[-6000:] + inner.stderr[-3000:]
    assert inner.returncode == 0, output
    assert " passed" in inner.stdout and "skipped" not in inner.stdout, output


# --- inside the namespace -------------------------------------------------------------------------
inside = pytest.mark.skipif(
    not INSIDE, reason="runs inside a loopback-only namespace: test_ray_in_a_loopback_namespace"
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two Ray nodes of one CPU each; workers start in a working directory of their own (a copy of an
    empty folder), so they cannot see the driver's run directory."""
    import ray
    from ray.cluster_utils import Cluster

    empty = tmp_path_factory.mktemp("worker-cwd")
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address, runtime_env={"working_dir": str(empty)}, logging_level="warning")
    try:
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}, "Ray left loopback"
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        yield ray
    finally:
        ray.shutdown()
        nodes.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sequential runner's run of the same config."""
    out = tmp_path_factory.mktemp("seq") / "run"
    run(make_config(), out=out)
    return out


def _ours(pid: int) -> bool:
    """Whether a process descends from this test process: the pid namespace is shared with whatever else
    runs on the machine (other people's Ray included), and only our own cluster's processes are ours."""
    me = os.getpid()
    while pid > 1:
        if pid == me:
            return True
        try:
            with open(f"/proc/{pid}/stat") as file:
                pid = int(file.read().rsplit(")", 1)[1].split()[1])  # the parent's pid
        except (OSError, ValueError, IndexError):
            return False
    return False


def _processes(prefix: bytes) -> dict[int, bytes]:
    """Our processes whose command line starts with ``prefix``, by pid."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                title = file.read(200).split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(prefix) and _ours(int(entry)):
            found[int(entry)] = title
    return found


def _worker_titles() -> dict[int, bytes]:
    """Our Ray workers now running an evaluation, by pid (Ray titles a busy worker after its task)."""
    return _processes(b"ray::evowatt-evaluate-")


class Killer(threading.Thread):
    """SIGKILLs the first ``times`` of our Ray workers seen running one evaluation for ``after`` seconds."""

    def __init__(self, times: int = 1, after: float = 0.05):
        super().__init__(daemon=True)
        self.times, self.after, self.killed, self.stop = times, after, [], threading.Event()

    def run(self) -> None:
        seen: dict[tuple[int, bytes], float] = {}
        while not self.stop.is_set() and len(self.killed) < self.times:
            now = time.monotonic()
            for pid, title in _worker_titles().items():
                first = seen.setdefault((pid, title), now)
                if now - first >= self.after and pid not in self.killed and len(self.killed) < self.times:
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
            time.sleep(0.01)


@inside
def test_two_node_search_equals_sequential_and_weights_come_back_in_results(
    cluster, reference, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the run directory is relative to the driver's directory only
    remote_cwd = cluster.get(cluster.remote(lambda: os.getcwd()).remote())
    assert Path(remote_cwd).resolve() != tmp_path.resolve()
    assert not cluster.get(cluster.remote(lambda: os.path.exists("run")).remote())  # workers cannot see it
    result = run(make_config(runner=RAY), out="run")
    assert history(tmp_path / "run") == history(reference)
    assert any(kind == "train_longer" for _, kind, *_ in history(reference))  # weights travelled in a task
    assert weights(tmp_path / "run") == weights(reference)  # written by the driver from the results
    store = RunStore(tmp_path / "run")
    rows, meter = store.select(), store.meta("meter")
    store.close()
    assert meter["per_worker"]  # the driver opened no meter: each worker did
    # every result says where it ran and what measured it: here each worker's own estimate meter
    assert all(r.host and r.device == "cpu" and r.result.meter == "estimate" for r in rows)
    assert result.best is not None and result.best.weights


@inside
def test_the_handovers_trainings_run_on_workers(cluster, tmp_path, monkeypatch):
    """The screening and the final training after the search go through the runner like the search's
    evaluations: on Ray they run on a worker, not in the driver, and are recorded as a sequential run
    records them."""
    from evowatt.driver import handover, session

    settings = {
        "training.final_training": {"budget": {"steps": 20}},
        "experimental.final_training.screen": {"models": 2, "budget": {"steps": 5}},
    }
    sequential = run(make_config(**settings), out=tmp_path / "seq")
    log = tmp_path / "where.log"  # an absolute path: the workers' directory is another one
    driver, evaluate, time_models = os.getpid(), session.evaluate, handover.time_models

    # defined here, so Ray sends them to the workers by value; each says which process ran it
    def evaluate_where(task, splits=None):
        with open(log, "a") as file:
            file.write(f"{task.kind} {task.id} {os.getpid()}\n")
        return evaluate(task, splits=splits)

    def time_where(task, splits=None):
        with open(log, "a") as file:
            file.write(f"time {task.id} {os.getpid()}\n")
        return time_models(task, splits=splits)

    monkeypatch.setattr(session, "evaluate", evaluate_where)
    monkeypatch.setattr(handover, "time_models", time_where)
    result = run(make_config(runner=RAY, **settings), out=tmp_path / "run")
    ran = [line.split() for line in log.read_text().splitlines()]
    assert history(tmp_path / "run") == history(tmp_path / "seq")
    assert weights(tmp_path / "run") == weights(tmp_path / "seq")
    assert result.final is not None and result.final.id == sequential.final.id
    assert [int(i) for kind, i, _ in ran if kind == "final"] == [result.final.id]
    assert len([kind for kind, *_ in ran if kind == "screen"]) == 2
    assert any(kind == "time" for kind, *_ in ran)  # the answer's latency, timed after the final training
    assert all(int(pid) != driver and _ours(int(pid)) for *_, pid in ran)  # each on one of our workers


@inside
def test_a_worker_killed_mid_evaluation_is_retried(cluster, reference, tmp_path):
    killer = Killer(times=1)
    killer.start()
    try:
        run(make_config(runner=RAY), out=tmp_path / "run")
    finally:
        killer.stop.set()
    assert len(killer.killed) == 1
    assert history(tmp_path / "run") == history(reference)


@inside
def test_an_evaluation_whose_worker_keeps_dying_is_recorded_failed(cluster, tmp_path):
    killer = Killer(times=1, after=0.5)
    killer.start()
    try:
        # long evaluations, so the kill cannot fall just after one finished
        config = make_config(runner={**RAY, "retries": 0}, **{"training.budget": {"steps": 1000}})
        config = config.model_copy(update={"search": config.search.model_copy(update={"generations": 0})})
        result = run(config, out=tmp_path / "run")
    finally:
        killer.stop.set()
    assert len(killer.killed) == 1
    rows = {r[0]: r for r in history(tmp_path / "run")}
    failed = [r for r in rows.values() if r[3] == "failed"]
    assert len(failed) == 1 and result.evaluations == 2  # the run went on
    store = RunStore(tmp_path / "run")
    reason = store.get(failed[0][0]).reason
    store.close()
    assert "Ray worker died" in reason and "tried 1 time" in reason


@inside
def test_close_cancels_running_evaluations(cluster):
    """What Ctrl-C does: the runner is closed with evaluations in flight, and no worker keeps running them."""
    import numpy as np

    from evowatt.driver.evaluate import evaluate
    from evowatt.driver.runners import RayRunner
    from evowatt.driver.setup import prepare
    from evowatt.driver.task_records import DataRef, EvalSettings, EvalTask
    from evowatt.records import Budget
    from evowatt.representation.genome import random_genome

    config = make_config(runner=RAY)
    grammar, grammar_text = prepare(config)
    genome = random_genome(grammar, config.network, np.random.default_rng(0)).to_json()
    tasks = [
        EvalTask(
            i, genome, grammar_text, DataRef("digits"), EvalSettings(budget=Budget(steps=100_000)), seed=i
        )
        for i in range(2)
    ]
    runner = RayRunner(config.runner)
    results = runner.map(evaluate, tasks)
    deadline = time.time() + 60
    while not _worker_titles() and time.time() < deadline:
        time.sleep(0.05)
    assert _worker_titles(), "no evaluation started"
    runner.close()
    results.close()
    deadline = time.time() + 30
    while _worker_titles() and time.time() < deadline:
        time.sleep(0.1)
    assert not _worker_titles()
    assert cluster.is_initialized()  # a Ray the caller connected is left connected


@inside
def test_a_killed_driver_resumes(cluster, reference, tmp_path):
    """The driver dies (as from SIGKILL) after its third record; `evowatt resume` on Ray finishes the run."""
    import yaml

    from evowatt.driver.session import resume

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(make_config(runner=RAY).to_dict()))
    address = cluster.get_runtime_context().gcs_address
    env = {**os.environ, "EVOWATT_KILL_AT": "after-record:3", "RAY_ADDRESS": address}
    killed = subprocess.run(
        [sys.executable, "-m", "evowatt.cli", "run", str(config), "--out", str(tmp_path / "run")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == 137, killed.stderr[-3000:]
    assert len(history(tmp_path / "run")) == 3
    resume(tmp_path / "run")
    assert history(tmp_path / "run") == history(reference)


@inside
def test_ctrl_c_stops_the_driver_its_evaluations_and_its_ray(cluster, tmp_path):
    import yaml

    config = tmp_path / "config.yaml"
    long = make_config(runner=RAY, **{"training.budget": {"steps": 100_000}})
    config.write_text(yaml.safe_dump(long.to_dict()))
    env = {**os.environ, "RAY_ADDRESS": ""}  # the driver starts a Ray of its own, and stops it
    rays_before = _rays()
    assert rays_before >= 1  # the fixture's cluster: the count sees Ray heads
    driver = subprocess.Popen(
        [sys.executable, "-m", "evowatt.cli", "run", str(config), "--out", str(tmp_path / "run")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        deadline = time.time() + 120
        while not _worker_titles() and time.time() < deadline and driver.poll() is None:
            time.sleep(0.05)
        assert _worker_titles(), "no evaluation started"
        os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C does: the whole group, Ray's daemons too
        _, err = driver.communicate(timeout=60)
    finally:
        driver.kill()
    assert driver.returncode == 130 and "evowatt resume" in err, err[-3000:]
    deadline = time.time() + 30
    while (_worker_titles() or _rays() > rays_before) and time.time() < deadline:
        time.sleep(0.1)
    assert not _worker_titles()
    assert _rays() == rays_before  # the Ray it started is gone
    assert cluster.is_initialized() and len(cluster.nodes()) == 2  # the other cluster is untouched


def _rays() -> int:
    """Our Ray heads (GCS servers)."""
    return sum(1 for title in _processes(b"").values() if title.rsplit(b"/", 1)[-1] == b"gcs_server")


@inside
@pytest.mark.parametrize("data", ["object_store", "shared"])
def test_the_dataset_travels_through_the_object_store(cluster, tmp_path, data):
    """The dataset file exists only while the driver loads it: workers get the splits from Ray's object
    store (``runner.data: shared`` would make them read the file, and they cannot)."""
    import numpy as np
    from sklearn.datasets import load_digits

    from evowatt.driver.tasks import data_ref

    digits = load_digits()
    file = tmp_path / "mine.npz"
    x, y = digits.images[:600], digits.target[:600]
    np.savez(file, x_train=x[:500], y_train=y[:500], x_test=x[500:], y_test=y[500:])
    config = make_config(runner={**RAY, "data": data}, dataset={"name": "npz", "path": str(file)})
    config = config.model_copy(update={"search": config.search.model_copy(update={"generations": 0})})
    data_ref(config).load()  # the driver's copy (memoised), then the file is gone
    file.unlink()
    if data == "shared":
        with pytest.raises(EvowattError, match="does not exist"):
            run(config, out=tmp_path / "run")
        return
    run(config, out=tmp_path / "run")
    assert [row[3] for row in history(tmp_path / "run")] == ["ok", "ok"]
