"""Budgeted training on in-memory tensors, with early stopping on validation loss.

The budget is seconds (the clock is read every batch, so an individual ends within about one batch of
its budget) or optimiser steps (deterministic: same seed, same weights). Data is already normalised and
on the device; a batch is an index into those tensors, so no per-sample Python work runs in the loop.
Nothing in a step waits for an accelerator: the NaN check reads the device every few steps there
(``_NanWatch``; on the CPU, where reading a loss costs nothing, at every step).
``bench/throughput.py`` measures this loop against a hand-written one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from evowatt.nn.optimiser_state import optimiser_tensors, restore_optimiser
from evowatt.nn.seeding import seeded
from evowatt.records import Budget

OPTIMISERS = ("gradient_descent", "adam", "rmsprop", "lars")
NAN_CHECK_EVERY = 32  # at most this many steps between NaN checks on an accelerator (each one waits for it)
NAN_CHECK_SECONDS = 0.05  # about this long between them: the wait is short against it, the budget kept
_FUSED_DEVICES = ("cpu", "cuda")  # where torch's fused Adam and SGD kernels run


@dataclass(frozen=True)
class Recipe:
    """How a long training uses its budget (the final training): none of it applies during the search.

    ``schedule`` scales the learning rate over the whole budget (steps, or seconds on the clock):
    ``cosine`` from the evolved rate down to 0, ``one_cycle`` up from 1/25 of it over the first quarter,
    then down. ``shift`` moves each training image by up to that many pixels (zero-filled, a random crop
    of the padded image), ``flip`` mirrors half of them left-right: both on tensors, seeded.
    ``early_stopping`` False trains for the whole budget; either way the weights of the best validation
    loss are kept, the final weights validated once more after the budget to compete with them.
    ``hold_out`` False: the caller trains on the validation split too (``train`` is given none), so no
    epoch is validated and the last weights are kept: under a decaying schedule they are the settled ones.
    ``label_smoothing`` softens the training targets (torch's cross-entropy option); validation scores the
    plain loss, so that weights are compared by what they predict.
    """

    schedule: str = "none"  # none | cosine | one_cycle
    shift: int = 0
    flip: bool = False
    early_stopping: bool = True
    hold_out: bool = True
    label_smoothing: float = 0.0

    def factor(self, progress: float) -> float:
        """The learning-rate multiplier at ``progress`` (0 .. 1) of the budget."""
        p = min(max(progress, 0.0), 1.0)
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * p))
        if self.schedule == "one_cycle":
            warm = 0.25
            if p < warm:
                return 0.04 + 0.96 * 0.5 * (1 - math.cos(math.pi * p / warm))
            return 0.5 * (1 + math.cos(math.pi * (p - warm) / (1 - warm)))
        if self.schedule != "none":
            raise ValueError(f"unknown schedule '{self.schedule}'; expected none, cosine or one_cycle")
        return 1.0


def augment(x: torch.Tensor, shift: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random shifts (pad by ``shift``, crop back at a random offset per image) and left-right flips."""
    if x.dim() != 4 or (shift <= 0 and not flip):
        return x
    b, _, h, w = x.shape
    if shift > 0:
        padded = F.pad(x, (shift, shift, shift, shift))
        dy = torch.randint(0, 2 * shift + 1, (b,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * shift + 1, (b,), generator=generator).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # B,1,H,1
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # B,1,1,W
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, channel, rows, cols]
    if flip:
        mirrored = (torch.rand(b, generator=generator) < 0.5).to(x.device)[:, None, None, None]
        x = torch.where(mirrored, x.flip(3), x)
    return x


@dataclass
class TrainOutcome:
    steps: int
    seconds: float
    epochs: int
    stop_reason: str  # budget | early_stop | max_epochs | diverged
    best_validation_loss: float | None
    budget: Budget  # what it was allowed; the JSON keeps it as budget_seconds and budget_steps
    optimiser_resumed: int | None = None  # parameters whose optimiser state was restored (None: none given)
    # the optimiser's state at the end (with ``keep_optimiser``): named tensors, never part of the JSON
    optimiser: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    @property
    def diverged(self) -> bool:
        return self.stop_reason == "diverged"

    @property
    def budget_seconds(self) -> float | None:
        return self.budget.seconds

    @property
    def budget_steps(self) -> int | None:
        return self.budget.steps

    def to_json(self) -> dict[str, Any]:
        """The stored form: flat, the budget as ``budget_seconds`` and ``budget_steps`` (old runs' rows)."""
        data: dict[str, Any] = {}
        for item in fields(self):
            if item.name == "budget":
                data["budget_seconds"], data["budget_steps"] = self.budget.seconds, self.budget.steps
            elif item.name != "optimiser":  # tensors, never JSON
                data[item.name] = getattr(self, item.name)
        return data


def make_optimiser(model: nn.Module, learning: dict[str, Any]) -> torch.optim.Optimizer:
    """The evolved optimiser.

    LARS (layer-wise adaptive rate scaling) has no implementation in torch.optim; it maps to SGD with
    momentum and two parameter groups: weights at ``lr_weights`` with ``weight_decay``, biases and
    normalisation parameters at ``lr_biases`` without decay, as LARS treats them. The trust-ratio
    scaling itself is not applied.
    """
    kind = str(learning.get("learning", "adam"))
    params = [p for p in model.parameters() if p.requires_grad]
    wd = float(learning.get("weight_decay", 0.0))
    # torch's fused kernels update every tensor in one pass instead of one kernel per operation: the
    # optimiser step was 3-5x faster on 2 CPU cores, whole training 1.07-1.14x (bench/throughput.py)
    fused = {"fused": True} if params and all(p.device.type in _FUSED_DEVICES for p in params) else {}
    if kind == "gradient_descent":
        return torch.optim.SGD(
            params,
            lr=float(learning["lr"]),
            momentum=float(learning.get("momentum", 0.0)),
            weight_decay=wd,
            nesterov=bool(learning.get("nesterov", False)) and float(learning.get("momentum", 0.0)) > 0,
            **fused,
        )
    if kind == "adam":
        betas = (float(learning.get("beta1", 0.9)), float(learning.get("beta2", 0.999)))
        return torch.optim.Adam(params, lr=float(learning["lr"]), betas=betas, weight_decay=wd, **fused)
    if kind == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=float(learning["lr"]), alpha=float(learning.get("alpha", 0.99)), weight_decay=wd
        )
    if kind == "lars":
        weights = [p for p in params if p.dim() > 1]
        others = [p for p in params if p.dim() <= 1]
        groups = [{"params": weights, "lr": float(learning["lr_weights"]), "weight_decay": wd}]
        if others:
            groups.append({"params": others, "lr": float(learning["lr_biases"]), "weight_decay": 0.0})
        return torch.optim.SGD(
            groups, lr=float(learning["lr_weights"]), momentum=float(learning.get("momentum", 0.9)), **fused
        )
    raise ValueError(f"unknown optimiser '{kind}'; expected one of {', '.join(OPTIMISERS)}")


def has_two_heads(model: nn.Module) -> bool:
    return getattr(model, "exit_head", None) is not None


def batch_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean", smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy on logits; with a partition point, the sum of both heads' losses (one step for both)."""
    if has_two_heads(model):
        main, early = model.forward_both(x)
        return F.cross_entropy(main, y, reduction=reduction, label_smoothing=smoothing) + F.cross_entropy(
            early, y, reduction=reduction, label_smoothing=smoothing
        )
    return F.cross_entropy(model(x), y, reduction=reduction, label_smoothing=smoothing)


@torch.inference_mode()
def evaluate_split(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1024,
    deadline: float = math.inf,
    both_heads: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a split in one pass; both NaN if ``deadline`` passes first.

    With ``both_heads`` the loss is the two heads' sum (what training minimises); accuracy is model 0's.
    """
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    try:
        for start in range(0, x.shape[0], batch_size):
            if time.perf_counter() >= deadline:
                return math.nan, math.nan
            batch, target = x[start : start + batch_size], y[start : start + batch_size]
            if both_heads:
                logits, early = model.forward_both(batch)
                total_loss += F.cross_entropy(early, target, reduction="sum").double()
            else:
                logits = model(batch)
            total_loss += F.cross_entropy(logits, target, reduction="sum").double()
            correct += (logits.argmax(1) == target).sum()
    finally:
        model.train(was_training)
    n = max(x.shape[0], 1)
    return float(total_loss) / n, int(correct) / n


class _NanWatch:
    """Finds the first non-finite loss without making an accelerator wait at every step.

    On the CPU each loss is read as it comes (a read costs nothing there) and a non-finite one stops
    training before its step. On an accelerator a read waits for the device to drain its queue, so each
    step's finiteness stays on the device and is read every few steps: about every ``NAN_CHECK_SECONDS``
    (which also bounds how far the host runs ahead of the budget's clock), at most every
    ``NAN_CHECK_EVERY`` steps, and at every epoch's end. Steps from the first non-finite loss on are then
    taken back from the count, so that the reason and the step count are the CPU's.
    """

    def __init__(self, device: torch.device):
        self.eager = device.type == "cpu"
        self.pending: list[torch.Tensor] = []
        self.every = 1
        self.since = time.perf_counter()

    def bad_now(self, loss: torch.Tensor) -> bool:
        """Before the step: True if this loss is known to be non-finite (always False on an accelerator)."""
        if self.eager:
            return not math.isfinite(loss.item())
        self.pending.append(torch.isfinite(loss.detach()))
        return False

    def steps_to_undo(self, force: bool = False) -> int | None:
        """After a step: how many of the unread steps ran from the first non-finite loss on; None if none."""
        if not self.pending or (len(self.pending) < self.every and not force):
            return None
        flags = torch.stack(self.pending).cpu()  # the one wait for the device
        now = time.perf_counter()
        per_step = (now - self.since) / len(self.pending)
        self.every = max(1, min(NAN_CHECK_EVERY, int(NAN_CHECK_SECONDS / max(per_step, 1e-9))))
        self.since, self.pending = now, []
        if bool(flags.all()):
            return None
        return len(flags) - int(flags.logical_not().nonzero()[0])


def train(
    model: nn.Module,
    train_xy: tuple[torch.Tensor, torch.Tensor],
    validation_xy: tuple[torch.Tensor, torch.Tensor] | None,
    learning: dict[str, Any],
    budget: Budget,
    seed: int,
    max_epochs: int = 10_000,
    eval_batch_size: int = 1024,
    recipe: Recipe | None = None,
    optimiser_state: dict[str, torch.Tensor] | None = None,
    optimiser_sources: dict[str, str] | None = None,
    keep_optimiser: bool = False,
) -> TrainOutcome:
    """Train in place until the budget, early stopping, or divergence.

    Validation runs at each epoch's end and counts against the budget (it stops when the budget does).
    Early stopping restores the weights of the best validation loss; a budget end keeps the latest ones,
    so that no validation pass runs after the budget is spent. With a ``recipe`` (the final training),
    see ``Recipe``: the final weights are validated after the budget and the best ones kept.
    ``validation_xy`` None (a recipe without a hold-out): no validation at all, the last weights kept.
    ``optimiser_state`` (from an earlier ``keep_optimiser`` outcome) resumes the optimiser where it
    matches (nn/optimiser_state.py; ``optimiser_sources`` names each parameter's source for an
    inheriting child); ``keep_optimiser`` returns the optimiser's final state in the outcome.
    """
    if validation_xy is None and (recipe is None or recipe.early_stopping):
        raise ValueError("early stopping needs a validation split")
    x, y = train_xy
    n = x.shape[0]
    batch_size = max(1, min(int(learning.get("batch_size", 64)), n))
    patience = int(learning.get("early_stop", 5))
    epoch_limit = min(max_epochs, int(learning.get("epochs", max_epochs)))
    optimiser = make_optimiser(model, learning)
    kind = str(learning.get("learning", "adam"))
    resumed = None
    if optimiser_state is not None:
        resumed = len(restore_optimiser(optimiser, model, kind, optimiser_state, optimiser_sources))
    base_lrs = [group["lr"] for group in optimiser.param_groups]
    scheduled = recipe is not None and recipe.schedule != "none"
    augmenting = recipe is not None and (recipe.shift > 0 or recipe.flip)
    stopping = recipe is None or recipe.early_stopping
    smoothing = recipe.label_smoothing if recipe is not None else 0.0
    augment_generator = torch.Generator(device="cpu").manual_seed(seed + 1)
    two_heads = has_two_heads(model)  # early stopping then watches the summed validation loss
    generator = torch.Generator(device="cpu").manual_seed(seed)
    watch = _NanWatch(x.device)
    best_loss, best_state, stale = math.inf, None, 0
    steps, epochs, reason = 0, 0, "max_epochs"
    start = time.perf_counter()
    deadline = start + budget.seconds if budget.seconds is not None else math.inf
    step_limit = budget.steps if budget.steps is not None else math.inf
    model.train()
    with seeded(seed):
        # dropout draws from the global generator: seeded here, restored afterwards
        while epochs < epoch_limit:
            order = torch.randperm(n, generator=generator).to(x.device)
            for begin in range(0, n, batch_size):
                if steps >= step_limit or time.perf_counter() >= deadline:
                    reason = "budget"
                    break
                index = order[begin : begin + batch_size]
                if index.shape[0] == 1 < batch_size:
                    continue  # batch norm cannot train on one sample: drop a trailing batch of one
                if scheduled:
                    progress = steps / step_limit if budget.steps is not None else 0.0
                    if budget.seconds is not None:
                        progress = max(progress, (time.perf_counter() - start) / budget.seconds)
                    factor = recipe.factor(progress)  # type: ignore[union-attr]
                    for group, lr in zip(optimiser.param_groups, base_lrs, strict=True):
                        group["lr"] = lr * factor
                inputs = x[index]
                if augmenting:
                    inputs = augment(inputs, recipe.shift, recipe.flip, augment_generator)  # type: ignore[union-attr]
                loss = batch_loss(model, inputs, y[index], smoothing=smoothing)
                if watch.bad_now(loss):
                    reason = "diverged"
                    break
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                steps += 1
                if (undo := watch.steps_to_undo()) is not None:
                    steps, reason = steps - undo, "diverged"
                    break
            else:
                if (undo := watch.steps_to_undo(force=True)) is not None:
                    steps, reason = steps - undo, "diverged"
                    break
                epochs += 1
                if validation_xy is None:
                    continue
                val_loss, val_accuracy = evaluate_split(
                    model, *validation_xy, eval_batch_size, deadline, both_heads=two_heads
                )
                if math.isnan(val_accuracy):  # the budget ran out during validation
                    reason = "budget"
                    break
                if not math.isfinite(val_loss):
                    reason = "diverged"
                    break
                if val_loss < best_loss:
                    best_loss, stale = val_loss, 0
                    best_state = _keep(model, best_state)
                else:
                    stale += 1
                    if stopping and stale >= patience:
                        reason = "early_stop"
                        break
                continue
            break
    if reason == "budget" and (undo := watch.steps_to_undo(force=True)) is not None:
        steps, reason = steps - undo, "diverged"  # a non-finite loss among the last, unread steps
    if reason == "early_stop" and best_state is not None:
        model.load_state_dict(best_state)  # when the budget ends training, the latest weights are kept
    elif (
        recipe is not None
        and validation_xy is not None
        and reason in ("budget", "max_epochs")
        and best_state is not None
    ):
        # the final training: the latest weights compete with the best validated ones
        last_loss, _ = evaluate_split(model, *validation_xy, eval_batch_size, both_heads=two_heads)
        if not last_loss < best_loss:
            model.load_state_dict(best_state)
        else:
            best_loss = last_loss
    seconds = time.perf_counter() - start
    return TrainOutcome(
        steps=steps,
        seconds=seconds,
        epochs=epochs,
        stop_reason=reason,
        best_validation_loss=None if math.isinf(best_loss) else best_loss,
        budget=budget,
        optimiser_resumed=resumed,
        optimiser=optimiser_tensors(optimiser, model, kind) if keep_optimiser else None,
    )


def _keep(model: nn.Module, kept: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """A copy of the weights, written into the previous copy's memory when there is one: a fresh copy of a
    large network costs an allocation and a page fault per 4 KiB at every improving epoch."""
    state = model.state_dict()
    if kept is None:
        return {k: v.detach().clone() for k, v in state.items()}
    for k, v in state.items():
        kept[k].copy_(v)
    return kept
