"""How well a calibrated profile predicts this machine's latency, against FLOPs alone (issue 30).

Runs `evowatt calibrate`'s calibration in-process: samples `--samples` networks from the grammar spread
over sizes, measures each with the search's protocol, fits the per-layer-kind predictor on three
quarters and judges it on the rest. Prints the calibration's wall time and, on the held-out networks,
Spearman, the median absolute percentage error and the shares within ±10 % and ±25 % for FLOPs alone
(best single scale factor on the training part), the uncalibrated estimate (scaled the same way) and the
calibrated predictor. Then measures the held-out networks once more: how far a second measurement of
the same network lands from the first is the noise floor no predictor can beat on this machine.

    .venv/bin/python bench/calibrate.py --samples 200 --meter clock      # about 4-6 minutes on 2 cores
    .venv/bin/python bench/calibrate.py --samples 20                     # a smoke test, under a minute

Each run is appended as one JSON line to --report (default docs/calibrate-results.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from evowatt.config.energy import MeasureSettings
from evowatt.energy.calibrate import MAX_FLOPS, calibrate, open_calibration_meter
from evowatt.energy.fit import accuracy
from evowatt.energy.profile import write_profile
from evowatt.energy.protocol import measure_model, synthetic_batch
from evowatt.nn.builder import build_network
from evowatt.representation.grammar import load_grammar

ROOT = Path(__file__).resolve().parent.parent
LABELS = {
    "flops": "FLOPs alone (best scale)",
    "estimate": "uncalibrated estimate (best scale)",
    "calibrated": "calibrated",
    "remeasured": "a second measurement (noise floor)",
}


def _row(name: str, a: dict) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    sp = "-" if a["spearman"] is None else f"{a['spearman']:.3f}"
    return f"| {LABELS[name]} | {sp} | {pct(a['mdape'])} | {pct(a['within_10'])} | {pct(a['within_25'])} |"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--meter", default="clock", choices=["clock", "rapl", "nvml"])
    parser.add_argument("--grammar", default="cnn")
    parser.add_argument("--input-shape", default="1,28,28")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--max-flops", type=int, default=MAX_FLOPS)
    parser.add_argument("--no-remeasure", action="store_true", help="skip the second measurement")
    parser.add_argument("--profile", default=None, help="where to write the profile (default a temp file)")
    parser.add_argument("--report", default=str(ROOT / "docs" / "calibrate-results.jsonl"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = tuple(int(d) for d in args.input_shape.split(","))
    device = args.device or ("cuda" if args.meter == "nvml" else "cpu")
    settings = MeasureSettings()
    grammar = load_grammar(args.grammar)
    meter = open_calibration_meter(args.meter, device)
    load_before = os.getloadavg()[0]

    def progress(done: int, total: int, seconds: float) -> None:
        if done % max(1, total // 10) == 0 or done == total:
            left = seconds / done * (total - done)
            print(f"  measured {done}/{total} networks, {seconds:.0f} s, about {left:.0f} s left", flush=True)

    started = time.perf_counter()
    with meter:
        result = calibrate(
            grammar, shape, 10, args.samples, args.meter, meter, settings, device=device, seed=args.seed,
            max_flops=args.max_flops, progress=progress,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        held = {target: dict(rows) for target, rows in result.profile.held_out.items()}
        if not args.no_remeasure:  # the same held-out networks again: the noise floor
            batch = synthetic_batch(shape, settings.batch_size, device, seed=args.seed)
            again, first = [], []
            for i in result.held_out:
                model = build_network(result.plans[i], args.seed).to(device).eval()
                again.append(measure_model(model, batch, meter, settings, latency=True).latency.value)
                first.append(result.samples[i].measured["latency"])
            held["latency"]["remeasured"] = accuracy(np.array(again), np.array(first)).to_dict()
    profile_path = Path(args.profile or tempfile.mkstemp(suffix=".json", prefix="evowatt-profile-")[1])
    write_profile(result.profile, profile_path)
    p = result.profile
    flops = sorted(s.flops for s in result.samples)
    latency = sorted(s.measured["latency"] for s in result.samples)
    print(f"\ndevice: {p.device.describe()}; meter {p.meter}; input {args.input_shape}; batch {p.batch_size}")
    print(
        f"{p.samples} networks ({flops[0]:.3g} to {flops[-1]:.3g} FLOPs, {latency[0] * 1e6:.3g} to "
        f"{latency[-1] * 1e6:.3g} µs per inference) measured and fitted in {seconds:.0f} s; "
        f"{len(result.held_out)} held out; solver {p.solver}; skipped {result.skipped or 'none'}"
    )
    for target, rows in held.items():
        print(f"\nheld-out {target} ({rows['calibrated']['n']} networks):\n")
        print("| predictor | Spearman | median abs. error % | within ±10 % | within ±25 % |")
        print("|---|---|---|---|---|")
        for name in LABELS:
            if name in rows:
                print(_row(name, rows[name]))
    load_after = os.getloadavg()[0]
    print(
        f"\nprofile: {profile_path} ({p.digest[:19]}); "
        f"load average {load_before:.2f} before, {load_after:.2f} after"
    )
    record = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python", "bench/calibrate.py", *sys.argv[1:]]),
        "device": p.device.to_dict(),
        "meter": p.meter,
        "input_shape": list(shape),
        "samples": p.samples,
        "held_out_networks": len(result.held_out),
        "seconds": round(seconds, 1),
        "held_out": held,
        "features": len(p.predictors["latency"].features),
        "digest": p.digest,
        "load_average": [round(load_before, 2), round(load_after, 2)],
    }
    with open(args.report, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    print(f"appended to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
