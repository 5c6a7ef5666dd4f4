"""evowatt measure on .onnx and .pt2 as well as TorchScript: one protocol, one set of labels."""

import json
import subprocess
import sys
import zipfile

import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from evowatt.cli.main import main  # noqa: E402
from evowatt.energy.estimate import EstimateMeter  # noqa: E402
from evowatt.energy.exported import model_format, onnx_estimate  # noqa: E402
from evowatt.handover.formats import write_model  # noqa: E402


def toy() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(4, 3, 2, bias=False),
        nn.Sigmoid(),
        nn.AvgPool2d(2, 1),
        nn.Flatten(),
        nn.Linear(12, 7),
        nn.Tanh(),
        nn.Dropout(0.3),
        nn.Linear(7, 5),
    ).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("measure")
    net, x = toy(), torch.randn(2, 1, 8, 8)
    out = {}
    for fmt, suffix in (("onnx", ".onnx"), ("pt2", ".pt2"), ("torchscript", ".ts.pt")):
        out[fmt] = tmp / f"toy{suffix}"
        write_model(net, x, fmt, out[fmt])
    return out


def test_formats_are_recognised_by_content(files, tmp_path):
    assert {fmt: model_format(path) for fmt, path in files.items()} == {f: f for f in files}
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(files["pt2"].read_bytes())
    assert model_format(renamed) == "pt2"


def test_onnx_graph_is_counted_as_torch_counts_the_module():
    import tempfile
    from pathlib import Path

    net = toy()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "toy.onnx"
        write_model(net, torch.randn(2, 1, 8, 8), "onnx", path)
        counted = onnx_estimate(path)(64)
    expected = EstimateMeter().estimate(net, torch.randn(1, 1, 8, 8), batch_size=64)
    assert counted.flops == expected.flops and counted.params == expected.params
    assert counted.param_bytes == pytest.approx(expected.param_bytes, rel=0.01)
    assert counted.activation_bytes == pytest.approx(expected.activation_bytes, rel=0.01)
    assert counted.energy_j == pytest.approx(expected.energy_j, rel=0.01)
    assert counted.uncounted_ops == ()


def test_measure_gives_the_same_figures_for_every_format(files, capsys):
    figures = {}
    for fmt, path in files.items():
        assert main(["measure", str(path), "--input-shape", "1,8,8", "--json", "--time-cap", "0.2"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["format"] == fmt
        metrics = data["metrics"]
        assert metrics["energy"]["method"] == "estimated:model"
        assert metrics["latency"]["method"] == "measured:clock" and metrics["latency"]["value"] > 0
        figures[fmt] = (metrics["flops"]["value"], metrics["params"]["value"], metrics["energy"]["value"])
    assert figures["pt2"] == figures["torchscript"]
    assert figures["onnx"][:2] == figures["pt2"][:2]
    assert figures["onnx"][2] == pytest.approx(figures["pt2"][2], rel=0.01)


@pytest.mark.parametrize("kind", ["random", "foreign zip", "text", "truncated onnx", "truncated pt2"])
def test_corrupt_or_foreign_file_is_one_message(files, tmp_path, kind):
    name = {"random": "m.onnx", "foreign zip": "m.pt2", "text": "m.pt", "truncated onnx": "t.onnx"}
    path = tmp_path / name.get(kind, "t.pt2")
    if kind == "random":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "foreign zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("hello.txt", "not a model")
    elif kind == "text":
        path.write_text("just some text\n")
    else:
        source = files["onnx" if kind == "truncated onnx" else "pt2"].read_bytes()
        path.write_bytes(source[: len(source) // 2])
    out = subprocess.run(
        [sys.executable, "-m", "evowatt.cli", "measure", str(path), "--input-shape", "1,8,8"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("evowatt: error:") and str(path) in lines[0], out.stderr
    assert "ONNX" in lines[0] and "TorchScript" in lines[0]  # names what it expected
