"""evowatt export: every exit as ONNX, .pt2 and TorchScript, verified, loadable without evowatt, carded."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from evowatt.cli.main import main  # noqa: E402
from evowatt.config.load import validate_config  # noqa: E402
from evowatt.driver.session import run  # noqa: E402
from evowatt.driver.store import RunStore  # noqa: E402
from evowatt.driver.tasks import data_ref  # noqa: E402
from evowatt.errors import EvowattError  # noqa: E402
from evowatt.handover.export import export_run  # noqa: E402
from evowatt.handover.rebuild import rebuild  # noqa: E402
from tests.conftest import SMALL_NETWORK, config_dict  # noqa: E402

BASE = {
    "seed": 1,
    "grammar": "cnn_v1",  # the grammar this seed was chosen on (a front member with kept weights)
    "dataset": {"name": "digits"},
    "network": {**SMALL_NETWORK, "macro_structure": ["learning", "model_partition"]},
    "search": {"generations": 1, "lambda": 2},
    "training": {"budget": {"steps": 20}, "threads": 1},
    "fitness": {"terms": [{"metric": "accuracy_1", "objective": "maximize", "weight": 1}]},
}

FRESH = r"""
import sys, json
sys.modules["evowatt"] = None  # a deployer's process: importing evowatt fails
import numpy as np, onnxruntime as ort, torch
x = np.load(sys.argv[1])
out = {}
for fmt, path in json.loads(sys.argv[2]).items():
    if fmt == "onnx":
        s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        logits = s.run(None, {"input": x})[0]
    elif fmt == "pt2":
        logits = torch.export.load(path).module()(torch.from_numpy(x)).detach().numpy()
    else:
        logits = torch.jit.load(path)(torch.from_numpy(x)).detach().numpy()
    out[fmt] = logits.tolist()
assert not any(m.startswith("evowatt") for m in sys.modules if sys.modules[m] is not None)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    result = run(validate_config(config_dict(BASE)), out=tmp / "run")
    models = export_run(result.run_dir, best=True, formats=["onnx", "pt2", "torchscript"], out=tmp / "models")
    return result.run_dir, models


def test_every_exit_loads_without_evowatt_and_predicts_as_evowatt(exported, tmp_path):
    run_dir, models = exported
    assert sorted(m.exit for m in models) == [0, 1]  # a partitioned network exports both exits
    store = RunStore(run_dir)
    config = validate_config(store.meta("config"))
    splits = data_ref(config).load()
    rebuilt = rebuild(store, models[0].evaluation_id, splits.input_shape, splits.num_classes)
    store.close()
    norm = torch.from_numpy(np.array(splits.test.x))
    # raw pixel values as the dataset holds them (digits: integers 0..16)
    raw = np.round(
        (
            splits.test.x * np.array(splits.std)[None, :, None, None]
            + np.array(splits.mean)[None, :, None, None]
        )
        * 16.0
    ).astype(np.float32)
    np.save(tmp_path / "raw.npy", raw)
    for model in models:
        with torch.no_grad():
            expected = rebuilt.models[model.exit](norm).numpy()
        files = {fmt: str(path) for fmt, path in model.files.items()}
        out = subprocess.run(
            [sys.executable, "-c", FRESH, str(tmp_path / "raw.npy"), json.dumps(files)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr
        logits = json.loads(out.stdout)
        assert set(logits) == {"onnx", "pt2", "torchscript"}
        for fmt, values in logits.items():
            got = np.array(values, dtype=np.float32)
            assert got.shape == expected.shape == (len(raw), 10)
            assert (got.argmax(1) == expected.argmax(1)).all(), fmt  # the same predictions on the test split
            assert np.abs(got - expected).max() < 1e-3, fmt
            assert model.max_abs_diff[fmt] < 1e-4


def test_card_fields_equal_the_store(exported):
    run_dir, models = exported
    store = RunStore(run_dir)
    row = store.get(models[0].evaluation_id)
    store.close()
    for model in models:
        card = json.loads(model.card_json.read_text())
        suffix = "" if model.exit == 0 else "_1"
        for name in ("accuracy", "energy", "latency", "flops", "params"):
            assert card["metrics"][name] == row.metrics[f"{name}{suffix}"], name
            assert card["metrics"][name]["method"]
        assert card["metrics"]["test_accuracy"]["value"] == row.metrics[f"test_accuracy{suffix}"]["value"]
        assert card["input"]["shape"] == ["N", 1, 8, 8] and card["input"]["dtype"] == "float32"
        assert card["input"]["normalisation_baked_in"] is True
        assert card["classes"]["count"] == 10 and card["classes"]["names"][3] == "3"
        assert card["measured_on"]["meter"] == "estimate" and card["measured_on"]["device"] == row.device
        assert card["run"]["seed"] == 1 and len(card["run"]["config_sha256"]) == 64
        assert {"evowatt", "torch", "onnxruntime"} <= set(card["versions"])
        assert card["evaluation"]["exit"] == model.exit and len(card["usage"]) == 3
        assert set(card["verification"]["max_abs_diff"]) == {"onnx", "pt2", "torchscript"}
        text = model.card_md.read_text()
        assert "estimated:model" in text and "measured:clock" in text and "onnxruntime" in text


def test_verification_failure_names_the_difference(exported, tmp_path, monkeypatch):
    run_dir, models = exported
    import evowatt.handover.verify as verify

    real = verify.run_exported
    monkeypatch.setattr(verify, "run_exported", lambda p, f, x: real(p, f, x) + 0.5)
    with pytest.raises(EvowattError, match=r"verification failed: onnx .* max \|diff\| 0\.5"):
        export_run(run_dir, ids=[models[0].evaluation_id], formats=["onnx"], out=tmp_path)
    assert not list(tmp_path.glob("*.onnx"))  # an unverified file is not left behind


def test_measure_of_an_exported_model_reproduces_its_card(exported, tmp_path, capsys):
    run_dir, models = exported
    (model, *_) = export_run(
        run_dir, ids=[models[0].evaluation_id], formats=["pt2", "onnx"], out=tmp_path, normalise=False
    )
    card = json.loads(model.card_json.read_text())
    assert card["input"]["normalisation_baked_in"] is False
    assert model.max_abs_diff["pt2"] == 0.0
    for fmt, path in model.files.items():
        assert main(["measure", str(path), "--input-shape", "1,8,8", "--json", "--time-cap", "0.2"]) == 0
        metrics = json.loads(capsys.readouterr().out)["metrics"]
        for name in ("energy", "latency", "flops", "params"):
            assert metrics[name]["method"] == card["metrics"][name]["method"], (fmt, name)
        if fmt == "pt2":  # the same torch operations, counted by the same estimate: the card's figures
            for name in ("energy", "flops", "params"):
                assert metrics[name]["value"] == pytest.approx(card["metrics"][name]["value"], rel=1e-9)
        else:  # the ONNX exporter may fold a batch norm into its convolution: never more work
            assert metrics["params"]["value"] <= card["metrics"]["params"]["value"]
            assert metrics["flops"]["value"] <= card["metrics"]["flops"]["value"]
            assert metrics["energy"]["value"] <= card["metrics"]["energy"]["value"] * 1.001


def test_user_errors_are_one_message(exported, tmp_path, capsys):
    run_dir, _ = exported
    store = RunStore(run_dir)
    pruned = [r.id for r in store.select() if not r.weights and r.status == "ok"]
    store.close()
    assert main(["export", str(run_dir), "999", "--out", str(tmp_path)]) == 2
    assert "has no evaluation 999" in capsys.readouterr().err
    if pruned:
        assert main(["export", str(run_dir), str(pruned[0]), "--out", str(tmp_path)]) == 2
        assert "weights of evaluation" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--best", "--format", "tflite", "--out", str(tmp_path)]) == 2
    assert "unknown format tflite" in capsys.readouterr().err


def test_front_and_pick_choose_kept_models(exported):
    from evowatt.driver.results import front
    from evowatt.handover.export import choose

    run_dir, models = exported
    store = RunStore(run_dir)
    try:
        chosen, skipped = choose(store, front=True)
        rows = {r.id: r for r in store.select()}
        assert chosen and all(rows[i].weights for i in chosen)
        on_front = {f"#{m.id}/{m.exit}" for m in front(run_dir)}
        exported_points = {f"#{i}/{e}" for i, exits in chosen.items() for e in exits}
        assert exported_points | set(skipped) == on_front and not exported_points & set(skipped)
        assert choose(store, best=True) == ({models[0].evaluation_id: None}, [])
        with pytest.raises(EvowattError, match="no model of"):
            choose(store, pick=["params<1"])
    finally:
        store.close()
