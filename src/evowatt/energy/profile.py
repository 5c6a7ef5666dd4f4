"""Calibrated profiles: a device's cost predictor as plain JSON, and how a run checks the one it is given.

Why data and not a pickled model: a profile travels (it is made on the Raspberry Pi and used by the
search on the workstation), it is read by people deciding whether to trust it, and loading it must never
run code. A profile says which device and meter it describes, for which input shape and torch version,
its predictors (feature names and non-negative coefficients, see `features.py`) and how well they did on
held-out networks; its digest is the SHA-256 of that content, so a run names exactly the profile its
numbers came from and a file changed after `evowatt calibrate` wrote it is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evowatt.errors import EvowattError, require_file

FORMAT = "evowatt-profile"
VERSION = 1
METHOD_CALIBRATED = "estimated:calibrated"
#: What each calibration meter measures; the clock gives latency only.
TARGETS = {"clock": ("latency",), "rapl": ("latency", "energy"), "nvml": ("latency", "energy")}
UNITS = {"latency": "s", "energy": "J"}
FIX = "make a new one with evowatt calibrate (see docs/meters.md#calibrated-profiles)"


@dataclass(frozen=True)
class DeviceInfo:
    """What a profile's numbers describe: the processor or GPU, its cores, torch's threads and version."""

    kind: str  # cpu | cuda
    name: str
    cores: int
    threads: int
    torch: str
    machine: str = ""

    def same_device(self, other: DeviceInfo) -> bool:
        """The same hardware (threads and torch version may still differ: warnings, not another device)."""
        return (self.kind, self.name, self.cores, self.machine) == (
            other.kind,
            other.name,
            other.cores,
            other.machine,
        )

    def describe(self) -> str:
        return (
            f"{self.name} ({self.kind}, {self.cores} cores, {self.threads} torch threads, torch {self.torch})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "cores": self.cores,
            "threads": self.threads,
            "torch": self.torch,
            "machine": self.machine,
        }


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (else what the platform says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def this_device(device: str = "cpu", threads: int | None = None) -> DeviceInfo:
    """The device a model runs on here (``threads``: the torch threads it runs with; default torch's)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        cores = int(torch.cuda.get_device_properties(dev).multi_processor_count)
    else:
        name, cores = cpu_name(), _cores()
    return DeviceInfo(
        kind=dev.type,
        name=name,
        cores=cores,
        threads=int(threads if threads is not None else torch.get_num_threads()),
        torch=torch.__version__,
        machine=platform.machine(),
    )


@dataclass(frozen=True)
class Predictor:
    """One target (latency s or energy J per inference) as a non-negative sum of per-batch features."""

    target: str
    features: tuple[str, ...]
    coefficients: tuple[float, ...]
    batch_size: int

    def per_inference(self, features: Mapping[str, float]) -> float:
        total = sum(c * features.get(f, 0.0) for f, c in zip(self.features, self.coefficients, strict=True))
        return total / self.batch_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": UNITS[self.target],
            "per": f"inference: features of a batch of {self.batch_size} . coefficients / {self.batch_size}",
            "features": list(self.features),
            "coefficients": list(self.coefficients),
        }


@dataclass(frozen=True)
class Profile:
    """A device's calibrated cost predictors and the evidence for them."""

    device: DeviceInfo
    meter: str
    input_shape: tuple[int, ...]
    classes: int
    batch_size: int
    grammar: str
    samples: int
    seed: int
    predictors: dict[str, Predictor]
    held_out: dict[str, dict[str, dict[str, Any]]]  # target -> flops | estimate | calibrated -> Accuracy
    seconds: float
    created: str
    solver: str
    features_seen: tuple[str, ...] = ()  # every feature the sampled networks had: others are unseen kinds
    extra: dict[str, Any] = field(default_factory=dict)

    def content(self) -> dict[str, Any]:
        """Everything but the digest, as written."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "device": self.device.to_dict(),
            "meter": self.meter,
            "input_shape": list(self.input_shape),
            "classes": self.classes,
            "batch_size": self.batch_size,
            "grammar": self.grammar,
            "samples": self.samples,
            "seed": self.seed,
            "solver": self.solver,
            "predictors": {name: p.to_dict() for name, p in self.predictors.items()},
            "features_seen": list(self.features_seen),
            "held_out": self.held_out,
            "seconds": self.seconds,
            "created": self.created,
            **({"extra": self.extra} if self.extra else {}),
        }

    @property
    def digest(self) -> str:
        return digest_of(self.content())

    def to_dict(self) -> dict[str, Any]:
        return {**self.content(), "digest": self.digest}

    def summary(self) -> dict[str, Any]:
        """What a run records about the profile it used (meta and each metric): no coefficients."""
        return {
            "digest": self.digest,
            "device": self.device.to_dict(),
            "meter": self.meter,
            "input_shape": list(self.input_shape),
            "batch_size": self.batch_size,
            "targets": sorted(self.predictors),
            "samples": self.samples,
            "held_out": {t: self.held_out.get(t, {}).get("calibrated") for t in sorted(self.predictors)},
        }


def digest_of(content: Mapping[str, Any]) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_profile(profile: Profile, path: str | Path) -> Path:
    """Write the profile as JSON (atomically: a killed calibration leaves no half file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(profile.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


class _Bad(Exception):
    """One malformed field: the message says which."""


def _get(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    if key not in data:
        raise _Bad(f"'{where}{key}' is missing")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _Bad(f"'{where}{key}' is {type(value).__name__}, not {getattr(kind, '__name__', kind)}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Bad(f"'{where}' must be a finite number, got {value!r}")
    return float(value)


def profile_from_dict(data: Any) -> Profile:
    """A profile from its JSON, or _Bad naming the first field that is wrong."""
    if not isinstance(data, dict):
        raise _Bad("it is not a JSON object")
    if data.get("format") != FORMAT:
        raise _Bad(f"'format' is {data.get('format')!r}, not {FORMAT!r}: this is not an evowatt profile")
    if data.get("version") != VERSION:
        raise _Bad(f"'version' is {data.get('version')!r}; this evowatt reads version {VERSION}")
    dev = _get(data, "device", dict)
    device = DeviceInfo(
        kind=_get(dev, "kind", str, "device."),
        name=_get(dev, "name", str, "device."),
        cores=_get(dev, "cores", int, "device."),
        threads=_get(dev, "threads", int, "device."),
        torch=_get(dev, "torch", str, "device."),
        machine=str(dev.get("machine", "")),
    )
    meter = _get(data, "meter", str)
    if meter not in TARGETS:
        raise _Bad(f"'meter' is {meter!r}, not one of {', '.join(TARGETS)}")
    shape = _get(data, "input_shape", list)
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise _Bad(f"'input_shape' must be positive integers, got {shape!r}")
    batch = _get(data, "batch_size", int)
    if batch < 1:
        raise _Bad(f"'batch_size' must be 1 or more, got {batch}")
    raw = _get(data, "predictors", dict)
    if "latency" not in raw:
        raise _Bad("'predictors' has no 'latency'")
    predictors: dict[str, Predictor] = {}
    for target, spec in raw.items():
        if target not in TARGETS[meter]:
            raise _Bad(
                f"'predictors.{target}' is not a target of the {meter} meter ({', '.join(TARGETS[meter])})"
            )
        if not isinstance(spec, dict):
            raise _Bad(f"'predictors.{target}' is not an object")
        names = _get(spec, "features", list, f"predictors.{target}.")
        coefs = _get(spec, "coefficients", list, f"predictors.{target}.")
        if len(names) != len(coefs) or not all(isinstance(n, str) for n in names):
            raise _Bad(f"'predictors.{target}' needs as many feature names (strings) as coefficients")
        values = tuple(_number(c, f"predictors.{target}.coefficients") for c in coefs)
        if any(c < 0 for c in values):
            raise _Bad(f"'predictors.{target}.coefficients' must not be negative")
        predictors[target] = Predictor(target, tuple(names), values, batch)
    held_out = _get(data, "held_out", dict)
    profile = Profile(
        device=device,
        meter=meter,
        input_shape=tuple(shape),
        classes=_get(data, "classes", int),
        batch_size=batch,
        grammar=_get(data, "grammar", str),
        samples=_get(data, "samples", int),
        seed=_get(data, "seed", int),
        predictors=predictors,
        held_out=held_out,
        seconds=_number(_get(data, "seconds", (int, float)), "seconds"),
        created=_get(data, "created", str),
        solver=_get(data, "solver", str),
        features_seen=tuple(str(f) for f in _get(data, "features_seen", list)),
        extra=dict(data.get("extra") or {}),
    )
    digest = _get(data, "digest", str)
    if digest != profile.digest:
        raise _Bad(
            "its digest does not match its content: the file was changed after evowatt calibrate wrote it"
        )
    return profile


def read_profile(path: str | Path) -> Profile:
    """Read and check a profile; anything wrong is one EvowattError naming the file, the fault and the fix."""
    require_file(path, "profile", FIX)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvowattError(f"profile {path} is not readable JSON ({exc}); {FIX}") from None
    try:
        return profile_from_dict(data)
    except _Bad as exc:
        raise EvowattError(f"profile {path} is malformed: {exc}; {FIX}") from None


@dataclass(frozen=True)
class ProfileUse:
    """How a run uses a profile: for this device or as the target of a search run elsewhere, and what to
    warn about. ``to_dict`` is what the run records (store meta) and what every evaluation receives."""

    profile: Profile
    path: str
    here: DeviceInfo
    this_device: bool
    warnings: tuple[str, ...]
    check_every: int | None = None  # measure every k-th network as well (only for this device)

    def sentence(self) -> str:
        p = self.profile
        where = (
            "this device"
            if self.this_device
            else f"the target device {p.device.name}, NOT the device this run runs on ({self.here.name})"
        )
        targets = " and ".join(sorted(p.predictors))
        text = f"{targets} predicted by the calibrated profile {self.path} ({p.digest[:19]}) for {where}"
        return text + "".join(f"; warning: {w}" for w in self.warnings)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.profile.summary(),
            "path": self.path,
            "this_device": self.this_device,
            "run_device": self.here.to_dict(),
            "warnings": list(self.warnings),
            "check_every": self.check_every,
            "note": self.sentence(),
            "predictors": {name: p.to_dict() for name, p in self.profile.predictors.items()},
            "features_seen": list(self.profile.features_seen),
        }


def use_profile(
    path: str | Path,
    here: DeviceInfo,
    input_shape: tuple[int, ...] | None,
    batch_size: int | None,
    check_every: int | None = None,
) -> ProfileUse:
    """Read the profile a run names and compare it with where and how the run measures (an input shape
    or batch of None is not compared)."""
    profile = read_profile(path)
    same = profile.device.same_device(here)
    warnings: list[str] = []
    if profile.device.torch != here.torch:
        warnings.append(
            f"the profile was measured with torch {profile.device.torch}, this run uses torch {here.torch}: "
            "kernels change between versions; calibrate again with this torch"
        )
    if input_shape is not None and tuple(profile.input_shape) != tuple(input_shape):
        shown = ",".join(str(d) for d in profile.input_shape)
        warnings.append(
            f"the profile was fitted on inputs of shape {shown}, this run's are "
            f"{','.join(str(d) for d in input_shape)}: predictions extrapolate; calibrate with "
            f"--input-shape {','.join(str(d) for d in input_shape)}"
        )
    if batch_size is not None and profile.batch_size != batch_size:
        warnings.append(
            f"the profile was measured at batch {profile.batch_size}, this run measures at batch "
            f"{batch_size} (energy.batch_size): per-layer overheads do not scale with the batch"
        )
    if same and profile.device.threads != here.threads:
        warnings.append(
            f"the profile was measured with {profile.device.threads} torch threads, this run's evaluations "
            f"use {here.threads} (training.threads)"
        )
    if check_every and not same:
        warnings.append(
            f"energy.check_every is ignored: the profile describes {profile.device.name}, and a measurement "
            "here would describe this device instead"
        )
        check_every = None
    return ProfileUse(profile, str(path), here, same, tuple(warnings), check_every)
