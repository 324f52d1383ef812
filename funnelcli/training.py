"""Maximum-likelihood training: Adam, cosine annealing, gradient clipping, early stopping on validation."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from funnelcli.errors import UserError
from funnelcli.models.flow import FunnelFlow
from funnelcli.models.recipe import TrainingSettings

#: Non-finite losses in a row after which training gives up.
MAX_NONFINITE_IN_A_ROW = 20
_EVAL_BATCH = 8192


class TrainingDiverged(RuntimeError):
    """The loss stayed non-finite; the best weights so far are kept."""


@dataclass
class TrainingSummary:
    steps: int
    best_step: int
    best_val_log_prob: float
    final_train_log_prob: float
    seconds: float
    ms_per_step: float
    stopped_early: bool
    skipped_nonfinite_steps: int
    device: str
    history: list[dict] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        summary = asdict(self)
        summary.pop("history")
        return summary


def resolve_device(device: str) -> torch.device:
    """``auto`` takes a CUDA GPU where there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"--device {device!r} is unknown; use auto, cpu or cuda")
    return torch.device(device)


@torch.no_grad()
def mean_log_prob(model: FunnelFlow, data: torch.Tensor, batch_size: int = _EVAL_BATCH) -> float:
    """Mean log p(x) over the rows of ``data``, in eval mode, in batches."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=data.device)
    for start in range(0, data.shape[0], batch_size):
        total += model.log_prob(data[start : start + batch_size]).double().sum()
    model.train(was_training)
    return float(total) / data.shape[0]


def fit(
    model: FunnelFlow,
    train: torch.Tensor,
    validation: torch.Tensor,
    settings: TrainingSettings,
    *,
    callback: Callable[[dict], None] | None = None,
    dequantize: torch.Tensor | None = None,
) -> TrainingSummary:
    """Maximise the mean log-likelihood of ``train``; keep the weights with the best ``validation`` score.

    ``train`` and ``validation`` are (N, D) tensors already on the model's device. ``callback`` receives a dict
    after every step (``step``, ``steps``) and, at each validation pass, ``train_log_prob`` and
    ``val_log_prob`` too. Random batches come from a generator seeded with ``settings.seed``. ``dequantize``,
    a (D,) boolean mask, adds fresh uniform noise in [0, 1) to those columns of every batch.
    """
    device = train.device
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    if settings.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.steps, eta_min=0.0)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    batch_size = min(settings.batch_size, train.shape[0])
    n = train.shape[0]

    best_val, best_step, best_state = -math.inf, 0, copy.deepcopy(model.state_dict())
    evaluations_without_gain, skipped, nonfinite_in_a_row = 0, 0, 0
    train_sum = torch.zeros((), device=device)
    train_rows = 0
    history: list[dict] = []
    order = torch.randperm(n, generator=generator, device=device)
    cursor = 0
    step_seconds = 0.0
    started = time.perf_counter()
    stopped_early = False
    last_train = math.nan
    step = 0

    model.train()
    for step in range(1, settings.steps + 1):
        tick = time.perf_counter()
        if cursor + batch_size > n:
            order = torch.randperm(n, generator=generator, device=device)
            cursor = 0
        batch = train[order[cursor : cursor + batch_size]]
        cursor += batch_size
        if dequantize is not None:
            noise = torch.rand(batch.shape, generator=generator, device=device, dtype=batch.dtype)
            batch = batch + noise * dequantize

        log_prob = model.log_prob(batch)
        loss = -log_prob.mean()
        # One host sync per step is the price of never stepping on a NaN; it also makes timings honest.
        if not torch.isfinite(loss):
            skipped += 1
            nonfinite_in_a_row += 1
            optimizer.zero_grad(set_to_none=True)
            if nonfinite_in_a_row >= MAX_NONFINITE_IN_A_ROW:
                model.load_state_dict(best_state)
                raise TrainingDiverged(
                    f"the loss was not finite for {nonfinite_in_a_row} steps in a row at step {step}; "
                    "try a lower --lr, a smaller grad_clip or a larger tail_bound in the recipe"
                )
        else:
            nonfinite_in_a_row = 0
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            train_sum += log_prob.detach().sum()
            train_rows += batch.shape[0]
        scheduler.step()
        step_seconds += time.perf_counter() - tick

        record = {"step": step, "steps": settings.steps}
        if step % settings.eval_every == 0 or step == settings.steps:
            last_train = float(train_sum) / max(train_rows, 1)
            val = mean_log_prob(model, validation)
            train_sum.zero_()
            train_rows = 0
            record.update(
                train_log_prob=last_train,
                val_log_prob=val,
                lr=optimizer.param_groups[0]["lr"],
                elapsed_s=round(time.perf_counter() - started, 3),
            )
            history.append({k: v for k, v in record.items() if k != "steps"})
            if val > best_val:
                best_val, best_step = val, step
                best_state = copy.deepcopy(model.state_dict())
                evaluations_without_gain = 0
            else:
                evaluations_without_gain += 1
            if settings.patience and evaluations_without_gain >= settings.patience:
                stopped_early = True
        if callback is not None:
            callback(record)
        if stopped_early:
            break

    model.load_state_dict(best_state)
    model.eval()
    return TrainingSummary(
        steps=step,
        best_step=best_step,
        best_val_log_prob=best_val,
        final_train_log_prob=last_train,
        seconds=round(time.perf_counter() - started, 3),
        ms_per_step=round(1000 * step_seconds / max(step, 1), 3),
        stopped_early=stopped_early,
        skipped_nonfinite_steps=skipped,
        device=str(device),
        history=history,
    )
