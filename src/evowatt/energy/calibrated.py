"""A run's use of a calibrated profile: one model's predicted latency (and energy), and its checks.

Each predicted metric is labelled ``estimated:calibrated`` and carries the profile's digest and the device
it describes, so a number never loses which device and which fit it stands for. A check (``energy.
check_every``) measures the same model with the run's meter as well and records the predictor's relative
error beside the prediction (``latency_error``); the prediction stays the value the search ranks on, so
every network is ranked the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from evowatt.energy.features import network_features
from evowatt.energy.profile import METHOD_CALIBRATED, Predictor
from evowatt.errors import EvowattError

METHOD_CHECK = "computed:check"


def refuse_power(metrics: Iterable[str], path: str) -> None:
    """A profile that predicts energy gives no power: refuse a fitness or objective on it before a run."""
    from evowatt.energy.select import POWER_METRICS

    for metric in metrics:
        base, _, suffix = metric.rpartition("_")
        family = base if base and suffix.isdigit() else metric
        if family in POWER_METRICS:
            alt = "energy" + metric[len(family) :]
            raise EvowattError(
                f"metric {metric!r} needs power over time, and the profile {path} predicts energy per "
                f"inference without a time base — use {alt!r} (J per inference) instead, or run without "
                "energy.profile"
            )


def _predictors(profile: Mapping[str, Any]) -> dict[str, Predictor]:
    batch = int(profile["batch_size"])
    return {
        target: Predictor(target, tuple(spec["features"]), tuple(spec["coefficients"]), batch)
        for target, spec in profile["predictors"].items()
    }


def predicts(profile: Mapping[str, Any] | None, target: str) -> bool:
    return profile is not None and target in profile.get("predictors", {})


def calibrated_metrics(
    profile: Mapping[str, Any], model: torch.nn.Module, sample: torch.Tensor
) -> dict[str, dict[str, Any]]:
    """The profile's predictions for ``model`` (latency, and energy where the profile has it), per
    inference; features are taken at the profile's batch size, the batch its coefficients describe."""
    features = network_features(model, sample[:1], int(profile["batch_size"]))
    seen = set(profile.get("features_seen") or ())
    unseen = sorted(
        {name.rpartition(".")[0] for name, v in features.items() if v and seen and name not in seen}
    )
    detail: dict[str, Any] = {
        "profile": profile["digest"],
        "device": profile["device"]["name"],
        "this_device": bool(profile.get("this_device", True)),
    }
    if unseen:  # layer kinds the calibration never saw: their cost is not in the prediction
        detail["unseen"] = unseen
    return {
        target: {
            "value": predictor.per_inference(features),
            "ci": None,
            "n": 1,
            "method": METHOD_CALIBRATED,
            **detail,
        }
        for target, predictor in _predictors(profile).items()
    }


def check_metrics(
    predicted: Mapping[str, Mapping[str, Any]], measured: Mapping[str, Mapping[str, Any]], digest: str
) -> dict[str, dict[str, Any]]:
    """``<target>_measured`` and ``<target>_error`` ((predicted - measured) / measured) for every target
    measured for real (a clock or hardware reading, not the estimate)."""
    out: dict[str, dict[str, Any]] = {}
    for target, guess in predicted.items():
        real = measured.get(target)
        if real is None or not str(real.get("method", "")).startswith("measured:"):
            continue
        value = float(real["value"])
        out[f"{target}_measured"] = dict(real)
        if value > 0:
            error = (float(guess["value"]) - value) / value
            out[f"{target}_error"] = {"value": error, "method": METHOD_CHECK, "profile": digest}
    return out
