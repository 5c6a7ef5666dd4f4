"""Verifying an exported file against evowatt's own model, the moment it is written.

A file is loaded back as a deployer would load it (``formats.run_exported``) and run on a batch of real
test images; its logits must equal evowatt's model's within ``TOLERANCE`` x max(1, max |logit|), else the
export fails with the difference and the file is removed. A module of its own so that this one rule, and
the images it is checked on, are stated once for every format and every caller (``evowatt export`` and
``FitResult.export``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from evowatt.errors import EvowattError
from evowatt.handover.formats import run_exported, write_model

TOLERANCE = 1e-4  # max |exported - evowatt| <= TOLERANCE * max(1, max |evowatt logit|)
VERIFY_IMAGES = 256


def verification_images(
    test_x: torch.Tensor, splits, scale: float, n_images: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n_images`` test images as the search trained on them (normalised) and as the dataset's
    files hold them (raw pixel values, what a model with the normalisation baked in takes)."""
    verify_norm = test_x[:n_images]
    mean = torch.tensor(splits.mean).view(1, -1, 1, 1)
    std = torch.tensor(splits.std).view(1, -1, 1, 1)
    raw = (verify_norm.double() * std.double() + mean.double()) * scale
    if scale in (16.0, 255.0):
        raw = raw.round()  # the files hold integers; undo the float round-off of normalising
    return verify_norm, raw.float()


def tolerance(reference: np.ndarray) -> float:
    """The largest difference allowed from evowatt's logits ``reference``."""
    return TOLERANCE * max(1.0, float(np.abs(reference).max()))


def write_verified(
    model: torch.nn.Module,
    x: torch.Tensor,
    reference: np.ndarray,
    bound: float,
    fmt: str,
    path: Path,
    name: str,
) -> float:
    """Write ``model`` as ``fmt`` to ``path``, run the file on ``x`` and return its max |diff| from
    ``reference``; raises (the file removed) when writing fails or the difference exceeds ``bound``.
    ``name`` says which model it is in messages ("evaluation 3 exit 0")."""
    try:
        write_model(model, x[:2].clone(), fmt, path)
    except EvowattError:
        raise
    except Exception as exc:  # noqa: BLE001 - exporters raise many kinds; one message
        path.unlink(missing_ok=True)
        raise EvowattError(
            f"exporting {name} as {fmt} failed "
            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''})"
        ) from None
    got = run_exported(path, fmt, x.numpy())
    diff = float(np.abs(got - reference).max()) if got.shape == reference.shape else math.inf
    if not diff <= bound:
        path.unlink(missing_ok=True)
        raise EvowattError(
            f"verification failed: {fmt} export of {name} "
            f"differs from evowatt's model by max |diff| {diff:.3g} on {len(x)} test images "
            f"(tolerance {bound:.3g}, output shapes {got.shape} vs {reference.shape}); "
            "file removed"
        )
    return diff
