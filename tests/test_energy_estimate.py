"""The analytical estimate against hand-computed operation and byte counts.

Every network here takes a batch of B=2 single-channel 8x8 images; float32, so 4 bytes per value.
"""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from evowatt.energy.estimate import EstimateConstants, EstimateMeter

B = 2
PJ = 1e-12


def batch() -> torch.Tensor:
    return torch.randn(B, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def layers_of(model: nn.Module, constants: EstimateConstants | None = None) -> dict:
    est = EstimateMeter(constants).estimate(model, batch())
    return {layer.name: layer for layer in est.layers}


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),  # 0
        nn.BatchNorm2d(4),  # 1
        nn.ReLU(),  # 2
        nn.MaxPool2d(2),  # 3
        nn.Dropout(0.5),  # 4
        nn.Flatten(),  # 5
        nn.Linear(4 * 4 * 4, 3),  # 6
    )


def test_per_layer_counts_of_conv_bn_relu_pool_dropout_fc() -> None:
    layers = layers_of(small_cnn())
    conv_out = B * 4 * 8 * 8  # 512 outputs
    # conv: 9 multiply-adds per output (1 channel x 3x3) = 18 FLOPs, plus one bias addition
    conv = layers["0"]
    assert conv.matmul_flops == 2 * 9 * conv_out
    assert (conv.adds, conv.mults) == (9 * conv_out + conv_out, 9 * conv_out)
    assert conv.activation_bytes == 4 * (B * 64) + 4 * conv_out  # read the images, write the maps
    assert conv.param_bytes == 4 * (4 * 9 + 4)  # weight + bias, once per batch
    # batch norm (eval): one multiply and one add per element; weight, bias, running mean and var
    bn = layers["1"]
    assert (bn.adds, bn.mults) == (conv_out, conv_out)
    assert bn.activation_bytes == 2 * 4 * conv_out
    assert bn.param_bytes == 4 * 4 * 4
    # relu: one comparison per element
    assert (layers["2"].adds, layers["2"].mults) == (conv_out, 0)
    assert layers["2"].activation_bytes == 2 * 4 * conv_out
    # max pool 2x2: 3 comparisons per output; the indices are not counted
    pool_out = B * 4 * 4 * 4  # 128
    assert (layers["3"].adds, layers["3"].mults) == (3 * pool_out, 0)
    assert layers["3"].activation_bytes == 4 * conv_out + 4 * pool_out
    # dropout in eval and flatten (a view) cost nothing
    assert "4" not in layers and "5" not in layers
    # fc 64 -> 3: 64 multiply-adds per output plus a bias addition
    fc = layers["6"]
    assert fc.matmul_flops == 2 * 64 * 3 * B
    assert (fc.adds, fc.mults) == (64 * 3 * B + 3 * B, 64 * 3 * B)
    assert fc.activation_bytes == 4 * (B * 64) + 4 * (B * 3)
    assert fc.param_bytes == 4 * (64 * 3 + 3)


def test_totals_energy_and_per_inference_scaling() -> None:
    model = small_cnn()
    est = EstimateMeter().estimate(model, batch())
    adds = 5120 + 512 + 512 + 384 + 390
    mults = 4608 + 512 + 384
    param_bytes = 160 + 64 + 780
    act_bytes = 2560 + 4096 + 4096 + 2560 + 536
    assert est.batch_size == B
    assert est.flops == (adds + mults) / B
    assert est.param_bytes == param_bytes
    assert est.activation_bytes == act_bytes / B
    assert est.params == sum(p.numel() for p in model.parameters())
    expected = (adds * 0.9 + mults * 3.7 + param_bytes * 162.5 + act_bytes * 1.25) / B * PJ
    assert est.energy_j == pytest.approx(expected)
    assert est.uncounted_ops == ()


def test_conv_and_matmul_flops_agree_with_flop_counter_mode() -> None:
    model = small_cnn().eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(batch())
    est = EstimateMeter().estimate(model, batch())
    assert est.matmul_flops * B == counter.get_total_flops()


def test_avg_pool_and_sigmoid_and_softmax_counts() -> None:
    model = nn.Sequential(nn.AvgPool2d(2), nn.Sigmoid(), nn.Flatten(), nn.Softmax(dim=1))
    layers = layers_of(model)
    out = B * 1 * 4 * 4  # 32
    assert (layers["0"].adds, layers["0"].mults) == (3 * out, out)  # 3 additions and a division per output
    assert (layers["1"].adds, layers["1"].mults) == (5 * out, 5 * out)  # exp (4+4) + add + divide
    assert (layers["3"].adds, layers["3"].mults) == (7 * out, 5 * out)


class TwoBranch(nn.Module):
    """Two convolutions of the same input, merged by a sum: the merge is the parent's own work."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(1, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(x)


def test_two_input_merge_counts_one_addition_per_element() -> None:
    layers = layers_of(nn.Sequential(TwoBranch(), nn.ReLU()))
    out = B * 2 * 8 * 8  # 256
    merge = layers["0"]  # the sum runs in TwoBranch.forward, outside both convolutions
    assert (merge.adds, merge.mults, merge.param_bytes) == (out, 0, 0)
    assert merge.activation_bytes == 3 * 4 * out  # read both branches, write the sum
    assert (layers["0.a"].adds, layers["0.a"].mults) == (9 * out + out, 9 * out)
    assert (layers["0.b"].adds, layers["0.b"].mults) == (out + out, out)
    assert layers["0.b"].param_bytes == 4 * (2 + 2)


def test_wider_layers_never_cost_less() -> None:
    def conv_net(width: int, fc: int = 16, kernel: int = 3) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, width, kernel, padding=kernel // 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(width * 16, fc),
            nn.ReLU(),
            nn.Linear(fc, 10),
        )

    meter = EstimateMeter()
    previous = None
    for width in (1, 2, 4, 8, 16, 32):
        est = meter.estimate(conv_net(width), batch())
        if previous is not None:
            assert est.energy_j > previous.energy_j
            assert est.flops > previous.flops
            assert est.param_bytes > previous.param_bytes
            assert est.activation_bytes > previous.activation_bytes
        previous = est
    for fc in (16, 64, 256):
        assert (
            meter.estimate(conv_net(4, fc=fc * 2), batch()).energy_j
            > meter.estimate(conv_net(4, fc=fc), batch()).energy_j
        )
    assert (
        meter.estimate(conv_net(4, kernel=5), batch()).energy_j
        > meter.estimate(conv_net(4), batch()).energy_j
    )


def test_deterministic_and_batch_amortises_parameters() -> None:
    model = small_cnn()
    meter = EstimateMeter()
    first = meter.estimate(model, batch())
    assert meter.estimate(model, batch()) == first
    double = meter.estimate(model, torch.cat([batch(), batch()]))
    assert double.flops == first.flops
    assert double.activation_bytes == first.activation_bytes
    assert double.param_memory_j == pytest.approx(first.param_memory_j / 2)
    one_sample = meter.estimate(model, batch()[:1], batch_size=B)  # what the protocol counts: cheapest
    assert one_sample.flops == first.flops and one_sample.energy_j == pytest.approx(first.energy_j)


def test_constants_are_overridable_and_validated() -> None:
    model = small_cnn()
    base = EstimateMeter().estimate(model, batch())
    on_chip = EstimateMeter(EstimateConstants(params_level="sram")).estimate(model, batch())
    assert on_chip.param_memory_j == pytest.approx(base.param_memory_j * 1.25 / 162.5)
    costly = EstimateMeter(EstimateConstants(pj_fp_mult=7.4)).estimate(model, batch())
    assert costly.compute_j > base.compute_j
    with pytest.raises(ValidationError):
        EstimateConstants(pj_fp_add=-1.0)
    with pytest.raises(ValidationError):
        EstimateConstants(activations_level="l3")  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_and_inference_mode_give_the_same_counts() -> None:
    model = small_cnn().eval()
    meter = EstimateMeter()
    eager = meter.estimate(model, batch())
    scripted = meter.estimate(torch.jit.script(model), batch())
    with torch.inference_mode():
        inside = meter.estimate(model, batch())
    for other in (scripted, inside):
        assert (other.flops, other.param_bytes, other.activation_bytes) == (
            eager.flops,
            eager.param_bytes,
            eager.activation_bytes,
        )
        assert other.energy_j == pytest.approx(eager.energy_j)


def test_estimate_restores_training_mode_and_reports_unknown_ops() -> None:
    class Odd(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumsum(x, dim=-1)

    model = nn.Sequential(nn.Conv2d(1, 1, 1), Odd())
    model.train()
    est = EstimateMeter().estimate(model, batch())
    assert model.training
    assert "cumsum" in est.uncounted_ops
