"""`evowatt calibrate`: fit latency (and energy) to the user's own device from networks the grammar makes.

Why: the analytical estimate ranks networks by counted work, but on a small device per-layer overhead and
memory traffic decide what a network really costs, and a search for a Raspberry Pi run on a workstation
can measure nothing of the Pi at all. So: sample networks spread over sizes from the grammar, measure
each with the search's own protocol on the device, fit non-negative per-layer-kind costs (`fit.py`) on
three quarters of them, and report on the rest how the predictor compares with FLOPs alone and with the
uncalibrated estimate, each scaled by its best single factor. The predictor is written as JSON data
(`profile.py`) that a run on any machine can use (`energy.profile`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from evowatt.config.energy import MeasureSettings
from evowatt.config.network import CapsConfig, ModuleConfig, NetworkConfig
from evowatt.energy.base import Clock, HardwareMeter, Meter
from evowatt.energy.estimate import EstimateMeter
from evowatt.energy.features import feature_order, network_features
from evowatt.energy.fit import Accuracy, accuracy, fit_nonnegative, scale_factor
from evowatt.energy.profile import TARGETS, Predictor, Profile, this_device
from evowatt.energy.protocol import measure_idle, measure_model, synthetic_batch
from evowatt.errors import EvowattError
from evowatt.nn.builder import InvalidNetwork, NetworkPlan, build_network, plan_network
from evowatt.representation.genome import check_network_against_grammar, random_genome
from evowatt.representation.grammar import Grammar

#: Candidate networks planned per network measured: the ones measured are picked evenly over log FLOPs.
POOL = 20
#: The default FLOPs cap of a calibration: larger networks take seconds per pass on a small CPU, and a
#: per-layer-kind model extrapolates to them along its FLOPs and bytes terms.
MAX_FLOPS = 200_000_000
BASELINES = ("flops", "estimate", "calibrated")

#: What the progress callback receives: networks measured, of how many, seconds so far.
Progress = Callable[[int, int, float], None]
#: Called with each built model and its features before it is measured (tests use it to drive a fake
#: meter whose reading is a known function of the features).
Instrument = Callable[[torch.nn.Module, dict[str, float]], None]


@dataclass(frozen=True)
class Sample:
    """One measured network: its features (per batch), counted FLOPs and estimate, measured values."""

    features: dict[str, float]
    flops: float  # per inference
    estimate_j: float  # the uncalibrated estimate's energy per inference
    measured: dict[str, float]  # target -> value per inference (latency s, energy J)


@dataclass
class Calibration:
    """A finished calibration: the profile, and the samples with the held-out split it was judged on."""

    profile: Profile
    samples: list[Sample]
    held_out: list[int]
    skipped: dict[str, int] = field(default_factory=dict)
    plans: list[NetworkPlan] = field(default_factory=list)  # the measured networks, as `samples`


def sampling_network(grammar: Grammar) -> NetworkConfig:
    """The network section calibration samples with: features and classification modules of the grammar,
    1-6 feature layers and 0-2 classification layers, no partition (each exit is one network)."""
    modules = []
    if "features" in grammar:
        modules.append(
            ModuleConfig(
                name="features", network_structure_init=[1, 2, 3, 4, 5, 6], network_structure=(0, 30)
            )
        )
    if "classification" in grammar:
        modules.append(
            ModuleConfig(name="classification", network_structure_init=[0, 1, 2], network_structure=(0, 30))
        )
    if not modules:
        raise EvowattError(
            f"{grammar.source} has no <features> or <classification> rule: calibrate samples networks from "
            "those start symbols"
        )
    output = "softmax" if "softmax" in grammar else "output"
    network = NetworkConfig(modules=modules, macro_structure=[], output=output)
    problems = check_network_against_grammar(grammar, network)
    if problems:
        raise EvowattError(f"cannot sample networks from {grammar.source}: " + "; ".join(problems))
    return network


def sample_plans(
    grammar: Grammar,
    input_shape: tuple[int, ...],
    classes: int,
    count: int,
    rng: np.random.Generator,
    max_flops: int = MAX_FLOPS,
    max_params: int | None = None,
) -> list[NetworkPlan]:
    """``count`` network plans spread evenly over log FLOPs: plan ``POOL`` times as many random genomes,
    then for evenly spaced sizes between the smallest and the largest take the nearest one not yet taken."""
    network = sampling_network(grammar)
    caps = CapsConfig(max_flops=max_flops, **({"max_params": max_params} if max_params else {}))
    pool: list[NetworkPlan] = []
    seen: set[str] = set()
    for _ in range(count * POOL):
        genome = random_genome(grammar, network, rng)
        key = genome.network_key()
        if key in seen:
            continue
        seen.add(key)
        try:
            pool.append(plan_network(genome, grammar, input_shape, classes, caps.max_params, caps.max_flops))
        except InvalidNetwork:
            continue
    if len(pool) < count:
        raise EvowattError(
            f"only {len(pool)} distinct networks of {count * POOL} sampled from {grammar.source} plan on "
            f"input {','.join(map(str, input_shape))} within {max_flops:,} FLOPs: ask for fewer --samples, "
            "or a larger --max-flops"
        )
    sizes = np.log10([max(p.flops, 1) for p in pool])
    order = np.argsort(sizes)
    sizes = sizes[order]
    taken = np.zeros(len(pool), dtype=bool)
    chosen: list[NetworkPlan] = []
    for target in np.linspace(sizes[0], sizes[-1], count):
        at = int(np.searchsorted(sizes, target))
        best, best_gap = -1, math.inf
        for i in range(max(0, at - count), min(len(pool), at + count)):  # nearest free one around `at`
            if not taken[i] and abs(sizes[i] - target) < best_gap:
                best, best_gap = i, abs(sizes[i] - target)
        if best < 0:
            best = int(np.flatnonzero(~taken)[0])
        taken[best] = True
        chosen.append(pool[order[best]])
    rng.shuffle(chosen)  # measured in random order: drift over the run is not confused with size
    return chosen


def measure_sample(
    model: torch.nn.Module,
    batch: torch.Tensor,
    meter: Meter,
    settings: MeasureSettings,
    idle: Any,
    targets: Sequence[str],
    clock: Clock = time.perf_counter,
    instrument: Instrument | None = None,
) -> Sample | None:
    """Measure one network with the search's protocol; None when its measurement is invalid."""
    features = network_features(model, batch[:1], batch.shape[0])
    if instrument is not None:
        instrument(model, features)
    m = measure_model(model, batch, meter, settings, idle=idle, clock=clock, latency=True)
    if not m.valid or m.latency is None or m.estimate is None:
        return None
    measured = {"latency": m.latency.value}
    if "energy" in targets and m.energy is not None:
        measured["energy"] = m.energy.value
    if any(not (v > 0 and math.isfinite(v)) for v in measured.values()):
        return None
    return Sample(features, m.estimate.flops, m.estimate.energy_j, measured)


def split(count: int, held_out: float, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Seeded train / held-out indices (at least 2 held out and 2 for training where there are 4)."""
    indices = [int(i) for i in rng.permutation(count)]
    n_test = min(max(2, round(count * held_out)), count - 2) if count >= 4 else 0
    return sorted(indices[n_test:]), sorted(indices[:n_test])


def feature_matrix(samples: Sequence[Sample]) -> tuple[np.ndarray, list[str]]:
    names = sorted({name for s in samples for name in s.features}, key=feature_order)
    rows = np.array([[s.features.get(n, 0.0) for n in names] for s in samples], dtype=float)
    return rows, names


def fit_profile_targets(
    samples: Sequence[Sample],
    train: Sequence[int],
    test: Sequence[int],
    targets: Sequence[str],
    batch_size: int,
) -> tuple[dict[str, Predictor], dict[str, dict[str, dict[str, Any]]], str]:
    """Fit each target on ``train`` and judge it on ``test`` against FLOPs alone and the estimate."""
    x, names = feature_matrix(samples)
    flops = np.array([s.flops for s in samples])
    estimate = np.array([s.estimate_j for s in samples])
    predictors: dict[str, Predictor] = {}
    held: dict[str, dict[str, dict[str, Any]]] = {}
    solver = ""
    tr, te = np.array(train, dtype=int), np.array(test, dtype=int)
    for target in targets:
        rows = [i for i, s in enumerate(samples) if target in s.measured]
        y = np.array([samples[i].measured.get(target, math.nan) for i in range(len(samples))])
        tr_t = np.array([i for i in tr if i in rows], dtype=int)
        te_t = np.array([i for i in te if i in rows], dtype=int)
        if len(tr_t) < 2:
            raise EvowattError(
                f"too few valid {target} measurements to fit ({len(tr_t)}): ask for more --samples"
            )
        fit = fit_nonnegative(x[tr_t], y[tr_t] * batch_size, names)  # per batch, as the features are
        solver = fit.solver
        predictors[target] = Predictor(target, fit.features, fit.coefficients, batch_size)
        calibrated = fit.predict(x, names) / batch_size
        figures: dict[str, Accuracy] = {}
        for name, proxy in (("flops", flops), ("estimate", estimate)):
            k = scale_factor(proxy[tr_t], y[tr_t])
            figures[name] = accuracy(k * proxy[te_t], y[te_t])
        figures["calibrated"] = accuracy(calibrated[te_t], y[te_t])
        held[target] = {name: figures[name].to_dict() for name in BASELINES}
    return predictors, held, solver


def calibrate(
    grammar: Grammar,
    input_shape: tuple[int, ...],
    classes: int,
    samples: int,
    meter_name: str,
    meter: Meter,
    settings: MeasureSettings,
    device: str = "cpu",
    seed: int = 0,
    held_out: float = 0.25,
    max_flops: int = MAX_FLOPS,
    progress: Progress | None = None,
    clock: Clock = time.perf_counter,
    instrument: Instrument | None = None,
) -> Calibration:
    """Sample, measure, fit and judge; returns the profile (not yet written) and the samples."""
    if meter_name not in TARGETS:
        raise EvowattError(f"unknown calibration meter {meter_name!r}: choose one of {', '.join(TARGETS)}")
    if samples < 8:
        raise EvowattError(f"--samples {samples} is too few to fit and judge a predictor: give 8 or more")
    targets = TARGETS[meter_name]
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    plans = sample_plans(grammar, input_shape, classes, samples, rng, max_flops)
    batch = synthetic_batch(tuple(input_shape), settings.batch_size, device, seed=seed)
    idle = measure_idle(meter, settings) if isinstance(meter, HardwareMeter) else None
    measured: list[Sample] = []
    kept: list[NetworkPlan] = []
    skipped = {"invalid measurement": 0, "failed to run": 0}
    for i, plan in enumerate(plans):
        model = build_network(plan, seed + i).to(device).eval()
        try:
            sample = measure_sample(model, batch, meter, settings, idle, targets, clock, instrument)
        except (RuntimeError, MemoryError):  # a network this device cannot run is left out, and counted
            skipped["failed to run"] += 1
            sample = None
        else:
            if sample is None:
                skipped["invalid measurement"] += 1
        if sample is not None:
            measured.append(sample)
            kept.append(plan)
        del model
        if progress is not None:
            progress(i + 1, len(plans), time.perf_counter() - started)
    train, test = split(len(measured), held_out, rng)
    predictors, held, solver = fit_profile_targets(measured, train, test, targets, settings.batch_size)
    here = this_device(device)
    profile = Profile(
        device=here,
        meter=meter_name,
        input_shape=tuple(int(d) for d in input_shape),
        classes=classes,
        batch_size=settings.batch_size,
        grammar=grammar.source,
        samples=len(measured),
        seed=seed,
        predictors=predictors,
        held_out=held,
        seconds=round(time.perf_counter() - started, 3),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        solver=solver,
        features_seen=tuple(feature_matrix(measured)[1]),
        extra={
            "held_out_networks": len(test),
            "max_flops": max_flops,
            "skipped": {k: v for k, v in skipped.items() if v},
        },
    )
    return Calibration(profile, measured, test, {k: v for k, v in skipped.items() if v}, kept)


def open_calibration_meter(name: str, device: str, **options: Any) -> Meter:
    """``clock`` times with the estimate meter's protocol (latency only); rapl and nvml read energy too."""
    from evowatt.energy.base import MeterUnavailable
    from evowatt.energy.select import open_meter

    if name == "clock":
        return EstimateMeter()
    if name not in TARGETS:
        raise EvowattError(f"unknown calibration meter {name!r}: choose one of {', '.join(TARGETS)}")
    try:
        return open_meter(name, device, **options)
    except MeterUnavailable as exc:
        raise MeterUnavailable(f"{exc}. To calibrate latency alone, any machine can: --meter clock") from None
