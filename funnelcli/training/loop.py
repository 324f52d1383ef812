"""The training loop: Adam steps, validation passes with early stopping, and what every rank decides together.

:func:`fit` drives three pieces: :class:`_Steps` (the step: batches, dequantization noise, Adam, skipping
non-finite steps), :class:`_Validation` (validation passes, the best weights, patience) and :class:`_Loop`
(their order, divergence, signals, and the state a checkpoint captures, see :mod:`.checkpoint`).
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from funnelcli.distributed import Ranks, current
from funnelcli.errors import Misused, Refused, UnknownChoice, UserError
from funnelcli.models.base import GaussianMixture
from funnelcli.models.flow import FunnelFlow, split_context
from funnelcli.models.funnel_start import principal_start, surface_start
from funnelcli.models.recipe import TrainingSettings
from funnelcli.models.start import fit_base, gaussian_start, mixture_fallback
from funnelcli.training import checkpoint
from funnelcli.training.checkpoint import RankState, RunIdentity, TrainState
from funnelcli.training.rows import HostBatches
from funnelcli.training.signals import SIGNAL_NAMES, Signals, TrainingInterrupted

#: Non-finite steps in a row after which training gives up (the default of ``max_nonfinite``).
MAX_NONFINITE_IN_A_ROW = 20
_EVAL_BATCH = 8192
log = logging.getLogger("funnelcli")
_START_ROWS = 100_000  # enough for a covariance; the whole table may be far larger


class TrainingDiverged(RuntimeError):
    """The loss stayed non-finite; the best weights so far are loaded into the model.

    ``summary`` is the :class:`TrainingSummary` up to the step where training gave up.
    """

    def __init__(self, message: str, summary: TrainingSummary | None = None):
        super().__init__(message)
        self.summary = summary


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
    resumed_at_step: int | None = None
    diverged: bool = False
    processes: int = 1

    def to_dict(self) -> dict:
        summary = asdict(self)
        summary.pop("history")
        return summary


def resolve_device(device: str) -> torch.device:
    """``auto`` takes a CUDA GPU where there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise Misused(["device"], "cuda was asked for, but torch sees no CUDA GPU; use {device=cpu} or auto")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UnknownChoice("device", device, ("auto", "cpu", "cuda"))
    return torch.device(device)


def log_prob_of_rows(model: torch.nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """log p(x) of training rows, shape (N,); a conditional model's rows are [x, c] and give log p(x | c)."""
    x, context = split_context(model, rows)
    return model.log_prob(x) if context is None else model.log_prob(x, context)


@torch.no_grad()
def total_log_prob(model: FunnelFlow, data: torch.Tensor, batch_size: int = _EVAL_BATCH) -> torch.Tensor:
    """The sum of log p(x) over the rows of ``data`` (a float64 scalar on its device), in eval mode, in batches."""
    was_training = model.training
    model.eval()
    device = _model_device(model)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, data.shape[0], batch_size):
        total += log_prob_of_rows(model, data[start : start + batch_size].to(device, non_blocking=True)).double().sum()
    model.train(was_training)
    return total


def mean_log_prob(model: FunnelFlow, data: torch.Tensor, batch_size: int = _EVAL_BATCH) -> float:
    """Mean log p(x) over the rows of ``data``, in eval mode, in batches."""
    return float(total_log_prob(model, data, batch_size)) / data.shape[0]


def fit(
    model: FunnelFlow,
    train: torch.Tensor,
    validation: torch.Tensor,
    settings: TrainingSettings,
    *,
    callback: Callable[[dict], None] | None = None,
    dequantize: torch.Tensor | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 0,
    max_nonfinite: int = MAX_NONFINITE_IN_A_ROW,
    stream_rows: bool = False,
    compile: bool = False,
) -> TrainingSummary:
    """Maximise the mean log-likelihood of ``train``; keep the weights with the best ``validation`` score.

    ``train`` and ``validation`` are (N, D) tensors (for a conditional model, (N, D + C): each row's conditions
    ride beside it, see :func:`~funnelcli.models.flow.split_context`) on the model's device or, with
    ``stream_rows`` (for rows that do not fit there, see :mod:`funnelcli.training.rows`), in host memory: each
    batch is then
    gathered on the host and copied to the device while the previous step runs. ``callback`` receives a dict
    after every step (``step``, ``steps``) and, at each validation pass, ``train_log_prob`` and
    ``val_log_prob`` too. ``dequantize``, a (D,) boolean mask, adds fresh uniform noise in [0, 1) to those
    columns of every batch.

    ``checkpoint_dir`` turns on checkpoints (every ``checkpoint_every`` steps, 0 for only on a signal) and the
    handling of SIGINT and SIGTERM (in the main thread); ``resume`` continues from its latest checkpoint, which
    must come from the same data, settings and device. ``max_nonfinite`` non-finite steps in a row raise
    :class:`TrainingDiverged`. ``compile`` runs the training step's log-likelihood through :func:`torch.compile`,
    which costs a compilation at the start (about a minute on a CPU) and pays back on long runs.
    """
    if checkpoint_every < 0 or max_nonfinite < 1:
        raise UserError(
            f"checkpoint_every must be >= 0 and max_nonfinite >= 1, got {checkpoint_every} and {max_nonfinite}"
        )
    if resume and checkpoint_dir is None:
        raise UserError("resume needs the checkpoint folder of the run to continue")
    device = _model_device(model)
    cuda = [device] if device.type == "cuda" else []
    ranks = current()
    # Every draw training makes comes from the seed (and the rank); the caller's global RNG is restored afterwards.
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(settings.seed + ranks.rank)
        fallback = None
        rows = None if resume else _start_rows(train, dequantize, device)
        if rows is not None:
            start_funnels = {"principal": principal_start, "surface": surface_start}.get(settings.start)
            if start_funnels is not None and not start_funnels(model, rows):
                raise Refused(
                    f"training.start = '{settings.start}' needs a funnel behind an LU map (f-nsf with its spline "
                    "funnel, or f-glow); this model has none",
                    "set training.start = 'random'",
                )
            fit_base(model, rows, settings.seed)
        if rows is not None and "gaussian" in (settings.start, settings.fallback):
            gaussian = copy.deepcopy(model)
            if gaussian_start(gaussian, rows):
                mixture_fallback(gaussian, rows, _start_rows(validation, dequantize, device), settings.seed)
            else:
                gaussian = None
            if settings.start == "gaussian":
                if gaussian is None:
                    raise Refused(
                        "training.start = 'gaussian' needs a spline flow (nsf or f-nsf); this model cannot start as "
                        "the Gaussian of its rows",
                        "set training.start = 'random'",
                    )
                model.load_state_dict(gaussian.state_dict())
            else:
                fallback = gaussian
        loop = _Loop(model, train, validation, settings, dequantize, checkpoint_dir, max_nonfinite, ranks, stream_rows)
        loop.fallback = fallback
        if compile:
            loop.steps.objective = torch.compile(loop.steps.objective)
        if resume:
            loop.restore()
        with Signals(enabled=checkpoint_dir is not None) as signals:
            return loop.run(callback, checkpoint_every, signals)


def _start_rows(train: torch.Tensor, dequantize: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """Up to ``_START_ROWS`` evenly spaced training rows, on the device, with the dequantization noise's mean."""
    rows = train[:: max(1, -(-train.shape[0] // _START_ROWS))].to(device)
    return rows if dequantize is None else rows + 0.5 * dequantize


# -- the step ------------------------------------------------------------------------------------------------


class _LogProb(torch.nn.Module):
    """log p(x) as a module's forward, which is what DistributedDataParallel wraps and hooks."""

    def __init__(self, model: FunnelFlow):
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return log_prob_of_rows(self.model, batch)


class _Steps:
    """Adam steps on this rank's shard of the training rows, and the running sums the next validation pass reports.

    A step whose loss or gradient is not finite is skipped and counted on the device: finding out on the host
    would make every step wait for the GPU.
    """

    def __init__(self, model, train, settings: TrainingSettings, dequantize, ranks: Ranks, stream_rows: bool):
        self.model, self.settings, self.ranks = model, settings, ranks
        # Each rank takes every W-th row: shards differ in size by at most one row.
        self.train = train[ranks.rank :: ranks.world_size]
        if self.train.shape[0] == 0:
            raise UserError(
                f"{train.shape[0]} training rows cannot be shared among {ranks.world_size} processes; "
                "start fewer processes or give more rows"
            )
        self.dequantize = dequantize
        self.device = _model_device(model)
        self.generator = torch.Generator(device=self.device).manual_seed(settings.seed + ranks.rank)
        # Rows kept in host memory are gathered there, in an order drawn there; on the device, one generator
        # serves both the order and the dequantization noise.
        self.streamed = stream_rows
        self.host_batches = HostBatches(self.train, self.device) if self.streamed else None
        self.order_generator = (
            torch.Generator().manual_seed(settings.seed + ranks.rank) if self.streamed else self.generator
        )
        # fused: one kernel per step, and it can skip a non-finite step on the device (``found_inf``).
        self.optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, fused=True)
        self.scheduler = _schedule(self.optimizer, settings)
        self.n = self.train.shape[0]
        self.batch_size = min(max(1, settings.batch_size // ranks.world_size), self.n)
        self.objective = self._objective()
        self.order = torch.randperm(self.n, generator=self.order_generator, device=self.train.device)
        self.cursor = 0
        # [skipped steps, non-finite steps in a row, rows trained on since the last validation], on the device.
        self._counters = torch.zeros(3, dtype=torch.long, device=self.device)
        self.train_sum = torch.zeros((), device=self.device)

    # Reading a counter synchronises with the device, so the loop reads them rarely.
    @property
    def skipped(self) -> int:
        return int(self._counters[0])

    @skipped.setter
    def skipped(self, value: int) -> None:
        self._counters[0] = value

    @property
    def nonfinite_in_a_row(self) -> int:
        return int(self._counters[1])

    @nonfinite_in_a_row.setter
    def nonfinite_in_a_row(self, value: int) -> None:
        self._counters[1] = value

    @property
    def train_rows(self) -> int:
        return int(self._counters[2])

    @train_rows.setter
    def train_rows(self, value: int) -> None:
        self._counters[2] = value

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _objective(self) -> torch.nn.Module:
        """log p(x) of a batch, wrapped in DistributedDataParallel when there are several ranks."""
        objective = _LogProb(self.model)
        if not self.ranks.active:
            return objective
        # Layers that initialise themselves from their first batch (ActNorm) do so here, on each rank's own rows;
        # DDP then copies rank 0's weights and buffers to every rank, so that all ranks start equal.
        with torch.no_grad():
            log_prob_of_rows(self.model, self.train[: self.batch_size].to(self.device))
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(objective, device_ids=device_ids)

    def _next_batch(self) -> torch.Tensor:
        if self.cursor + self.batch_size > self.n:
            self.order = torch.randperm(self.n, generator=self.order_generator, device=self.train.device)
            self.cursor = 0
        rows = self.order[self.cursor : self.cursor + self.batch_size]
        batch = self.host_batches.fetch(rows) if self.streamed else self.train[rows]
        self.cursor += self.batch_size
        if self.dequantize is not None:
            noise = torch.rand(batch.shape, generator=self.generator, device=self.device, dtype=batch.dtype)
            batch = batch + noise * self.dequantize
        return batch

    def take(self) -> None:
        """One step on the next batch (skipped when not finite)."""
        batch = self._next_batch()
        log_prob = self.objective(batch)
        loss = -log_prob.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # The norm is needed even without clipping: a finite loss can still have an infinite gradient.
        clip = self.settings.grad_clip if self.settings.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        # No host sync: whether the step is finite stays on the device, the fused Adam kernel skips the update
        # (moments included) when ``found_inf`` is set, and the counters are read only when needed.
        bad = ~(torch.isfinite(loss) & torch.isfinite(norm))
        if self.ranks.active:  # a step is skipped by every rank or by none, so that the weights stay equal
            bad = _all_reduce(bad.to(torch.int32), "max").bool()
        self.optimizer.found_inf = bad.to(torch.float32)
        self.optimizer.step()
        self.train_sum += torch.where(bad, 0.0, log_prob.detach().sum())
        self._counters[0] += bad
        self._counters[1] = (self._counters[1] + 1) * bad
        self._counters[2] += (~bad) * batch.shape[0]
        with warnings.catch_warnings():
            # A skipped step is still a step of the schedule; torch warns when that happens before any update.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`", category=UserWarning)
            self.scheduler.step()

    def running_sums(self) -> list[torch.Tensor]:
        """[sum of log p(x), rows] trained on since the last validation pass, as float64 scalars on the device."""
        return [self.train_sum.double(), self._counters[2].double()]

    def reset_running_sums(self) -> None:
        self.train_sum.zero_()
        self.train_rows = 0

    def rank_state(self) -> RankState:
        return RankState(
            torch_rng=torch.get_rng_state(),
            batches_rng=self.generator.get_state(),
            order=self.order,
            train_sum=self.train_sum,
            cursor=self.cursor,
            cuda_rng=torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            order_rng=self.order_generator.get_state() if self.streamed else None,
        )

    def load(self, state: TrainState) -> None:
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        own = state.per_rank[self.ranks.rank]
        torch.set_rng_state(own.torch_rng)
        self.generator.set_state(own.batches_rng)
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(own.cuda_rng, self.device)
        if self.streamed:
            self.order_generator.set_state(own.order_rng)
        self.order = own.order.to(self.train.device)
        self.train_sum = own.train_sum.to(self.device)
        self.cursor = own.cursor
        self.skipped = state.skipped
        self.nonfinite_in_a_row = state.nonfinite_in_a_row
        self.train_rows = state.train_rows


def _schedule(optimizer: torch.optim.Optimizer, settings: TrainingSettings) -> torch.optim.lr_scheduler.LRScheduler:
    if settings.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.steps, eta_min=0.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


# -- validation and early stopping ---------------------------------------------------------------------------


class _Validation:
    """Validation passes, the best weights they find, and the patience that stops training early."""

    def __init__(self, model, validation, ranks: Ranks, patience: int):
        self.model, self.ranks, self.patience = model, ranks, patience
        self.rows = validation[ranks.rank :: ranks.world_size]  # the score is summed over the ranks' shares
        self.device = _model_device(model)
        self.best_val, self.best_step = -math.inf, 0
        self.best_trained_val = -math.inf
        self.best_state = copy.deepcopy(model.state_dict())
        self.evaluations_without_gain = 0
        self.history: list[dict] = []
        self.last_train = math.nan
        self.stopped_early = False

    def evaluate(self, step: int, steps: _Steps, seconds: Callable[[], float]) -> dict:
        """Score the rows trained on since the last pass and the validation rows; keep the weights if best."""
        train_sum, train_rows, val_sum, val_rows = self._summed([*steps.running_sums(), *self._scored(self.model)])
        self.last_train = train_sum / train_rows if train_rows else math.nan
        val = val_sum / val_rows
        steps.reset_running_sums()
        scores = {
            "train_log_prob": self.last_train,
            "val_log_prob": val,
            "lr": steps.lr,
            "elapsed_s": round(seconds(), 3),
        }
        self.history.append({"step": step, **scores})
        self._judge(step, val)
        return scores

    def offer(self, candidate: torch.nn.Module) -> None:
        """Score other weights of the same model (the Gaussian fallback) on the validation rows, as the best of
        step 0: trained weights replace them only by beating them. They do not count for patience."""
        val_sum, val_rows = self._summed(self._scored(candidate))
        if math.isfinite(val_sum / val_rows):
            self.best_val, self.best_step = val_sum / val_rows, 0
            self.best_state = copy.deepcopy(candidate.state_dict())

    def _scored(self, model) -> list[torch.Tensor]:
        """[sum of log p(x), rows] of this rank's validation rows under ``model``, float64 on the device."""
        rows = torch.tensor(float(self.rows.shape[0]), dtype=torch.float64, device=self.device)
        return [total_log_prob(model, self.rows), rows]

    def _summed(self, sums: list[torch.Tensor]) -> list[float]:
        """The sums over every rank, read to the host once."""
        stacked = torch.stack(sums)
        return (_all_reduce(stacked, "sum") if self.ranks.active else stacked).tolist()

    def _judge(self, step: int, val: float) -> None:
        usable = math.isfinite(val) and _finite_state(self.model)
        # Patience counts passes without a gain over the best trained weights, not over the fallback.
        if usable and val > self.best_trained_val:
            self.best_trained_val = val
            self.evaluations_without_gain = 0
        else:
            self.evaluations_without_gain += 1
        if usable and val > self.best_val:
            self.best_val, self.best_step = val, step
            self.best_state = copy.deepcopy(self.model.state_dict())
        if self.patience and self.evaluations_without_gain >= self.patience:
            self.stopped_early = True

    def load(self, state: TrainState) -> None:
        """Take a checkpoint's scores and best weights; the model must hold the checkpoint's weights already."""
        self.best_state = copy.deepcopy(self.model.state_dict())
        for name, value in state.best.items():
            self.best_state[name] = value.to(self.best_state[name].device)
        if set(state.best) != set(self.best_state):
            raise KeyError("best")
        self.best_val, self.best_step = state.best_val, state.best_step
        self.evaluations_without_gain = state.evaluations_without_gain
        self.history = state.history
        scores = [h.get("val_log_prob") for h in self.history]  # NaN is written as null
        self.best_trained_val = max((v for v in scores if isinstance(v, float) and math.isfinite(v)), default=-math.inf)
        self.last_train = state.last_train
        self.stopped_early = state.stopped_early


# -- the loop ------------------------------------------------------------------------------------------------


class _Loop:
    """One training run: steps and validation passes in turn, the checks between them, and its checkpoints."""

    def __init__(
        self, model, train, validation, settings, dequantize, checkpoint_dir, max_nonfinite, ranks: Ranks, stream_rows
    ):
        self.model, self.settings, self.ranks = model, settings, ranks
        self.full_train, self.full_validation = train, validation  # what a checkpoint's fingerprint covers
        self.dequantize = dequantize
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.max_nonfinite = max_nonfinite
        self.steps = _Steps(model, train, settings, dequantize, ranks, stream_rows)
        self.validation = _Validation(model, validation, ranks, settings.patience)
        self.device = self.steps.device
        # On a GPU, reading a counter is a sync: look every few steps. On the CPU it costs nothing.
        self.check_every = 1 if self.device.type == "cpu" else max(1, min(max_nonfinite // 2, 10))
        self.step = 0
        self.previous_seconds = 0.0  # of earlier sessions of a resumed run
        self.step_seconds = 0.0
        self.resumed_at: int | None = None
        self.best_written = -1  # best_step of the best checkpoint on disk
        self.fallback: torch.nn.Module | None = None  # weights offered as the best of step 0

    def run(self, callback, checkpoint_every: int, signals: Signals) -> TrainingSummary:
        self.started = time.perf_counter()
        if self.step == 0 and self.settings.start == "gaussian":
            # The starting weights are the training rows' Gaussian: a candidate that training must beat.
            self.validation.evaluate(0, self.steps, self._seconds)
        elif self.step == 0 and self.fallback is not None:
            self.validation.offer(self.fallback)
        self.fallback = None
        self.model.train()
        while self.step < self.settings.steps and not self.validation.stopped_early:
            self.step += 1
            tick = time.perf_counter()
            self.steps.take()
            self.step_seconds += time.perf_counter() - tick
            if self.step % self.check_every == 0 and self.steps.nonfinite_in_a_row >= self.max_nonfinite:
                self._diverged()
            record = {"step": self.step, "steps": self.settings.steps}
            if self.step % self.settings.eval_every == 0 or self.step == self.settings.steps:
                record.update(self.validation.evaluate(self.step, self.steps, self._seconds))
            if callback is not None:
                callback(record)
            received = self._agreed_signal(signals)
            if received is not None:
                self.write_checkpoints(interrupted=received)
                raise TrainingInterrupted(received, self.step, self.settings.steps, self.checkpoint_dir)
            if checkpoint_every and self.step % checkpoint_every == 0 and self.step < self.settings.steps:
                self.write_checkpoints()
        self.model.load_state_dict(self.validation.best_state)
        self.model.eval()
        if self.validation.best_step == 0 and math.isfinite(self.validation.best_val) and self.ranks.rank == 0:
            fit = "Gaussian mixture" if isinstance(getattr(self.model, "base", None), GaussianMixture) else "Gaussian"
            log.warning(
                "no trained weights beat the %s fit of the training rows on the validation rows (%.4f "
                "nats/row), so the model is that %s: on this table a flow gains nothing at this budget "
                '(training.fallback = "none" keeps the trained weights instead)',
                fit,
                self.validation.best_val,
                fit,
            )
        return self.summary()

    def _agreed_signal(self, signals: Signals) -> int | None:
        """The signal to stop on, taken by all ranks at the same step (as often as divergence is checked)."""
        if not self.ranks.active:
            return signals.received
        if self.step % self.check_every and self.step < self.settings.steps:
            return None
        flag = torch.tensor([signals.received or 0], dtype=torch.int64, device=self.device)
        received = int(_all_reduce(flag, "max"))
        return received or None

    def _diverged(self) -> None:
        self.model.load_state_dict(self.validation.best_state)
        self.model.eval()
        summary = self.summary(diverged=True)
        raise TrainingDiverged(
            f"the loss or its gradient was not finite for {self.steps.nonfinite_in_a_row} steps in a row at step "
            f"{self.step} ({self.steps.skipped} skipped in all); try a lower --lr, a smaller training.grad_clip, a "
            "larger model.tail_bound, or look for columns with extreme values or outliers (each column is "
            "standardised by its mean and std, which outliers distort)",
            summary,
        )

    def _seconds(self) -> float:
        return self.previous_seconds + time.perf_counter() - self.started

    def summary(self, *, diverged: bool = False) -> TrainingSummary:
        return TrainingSummary(
            steps=self.step,
            best_step=self.validation.best_step,
            best_val_log_prob=self.validation.best_val,
            final_train_log_prob=self.validation.last_train,
            seconds=round(self._seconds(), 3),
            ms_per_step=round(1000 * self.step_seconds / max(self.step - (self.resumed_at or 0), 1), 3),
            stopped_early=self.validation.stopped_early,
            skipped_nonfinite_steps=self.steps.skipped,
            device=str(self.device),
            history=self.validation.history,
            resumed_at_step=self.resumed_at,
            diverged=diverged,
            processes=self.ranks.world_size,
        )

    # -- checkpoints -------------------------------------------------------------------------------------------
    @functools.cached_property
    def _run(self) -> RunIdentity:
        # Taken once, and only when a checkpoint is written or read: the fingerprint hashes every row.
        data_sha256 = checkpoint.fingerprint(self.full_train, self.full_validation, self.dequantize)
        return RunIdentity(self.settings, data_sha256, self.device.type, self.ranks.world_size)

    def write_checkpoints(self, *, interrupted: int | None = None) -> None:
        """Write the best checkpoint (when it changed), then the latest; each atomically.

        With several ranks, every rank must call this at the same step (it gathers their states); rank 0 writes.
        """
        state = self._state(interrupted)
        if not self.ranks.is_main:
            return
        validation = self.validation
        if self.best_written != validation.best_step:
            checkpoint.write_best(
                self.checkpoint_dir,
                validation.best_state,
                step=validation.best_step,
                steps=self.settings.steps,
                val_log_prob=validation.best_val,
            )
            self.best_written = validation.best_step
        checkpoint.write_latest(self.checkpoint_dir, state, self._run)

    def _state(self, interrupted: int | None) -> TrainState:
        steps, validation = self.steps, self.validation
        return TrainState(
            step=self.step,
            cursor=steps.cursor,
            best_val=validation.best_val,
            best_step=validation.best_step,
            evaluations_without_gain=validation.evaluations_without_gain,
            skipped=steps.skipped,
            nonfinite_in_a_row=steps.nonfinite_in_a_row,
            train_rows=steps.train_rows,
            history=validation.history,
            last_train=validation.last_train,
            stopped_early=validation.stopped_early,
            seconds=self._seconds(),
            step_seconds=self.step_seconds,
            steps_timed=self.step - (self.resumed_at or 0),
            model=self.model.state_dict(),
            best=validation.best_state,
            optimizer=steps.optimizer.state_dict(),
            scheduler=steps.scheduler.state_dict(),
            per_rank=self._rank_states(),
            interrupted_by=SIGNAL_NAMES.get(interrupted) if interrupted is not None else None,
        )

    def _rank_states(self) -> dict[int, RankState]:
        """Every rank's :class:`RankState`: rank 0 writes them all, so that each rank resumes its own."""
        own = self.steps.rank_state()
        if not self.ranks.active:
            return {0: own}
        import torch.distributed as dist

        gathered: list = [None] * self.ranks.world_size
        dist.all_gather_object(gathered, own.cpu())
        return dict(enumerate(gathered))

    def restore(self) -> None:
        """Continue from ``latest.safetensors``, after checking it belongs to this data, settings and device."""
        tensors, document = checkpoint.read_latest(self.checkpoint_dir, self._run, self.full_train.shape[0])
        try:
            cuda, streamed = self.device.type == "cuda", self.steps.streamed
            self._load(TrainState.from_safetensors(tensors, document, self.ranks, cuda=cuda, streamed=streamed))
        except (KeyError, RuntimeError, TypeError, ValueError) as error:
            raise Refused(
                f"the checkpoint in {self.checkpoint_dir} does not fit this model ({type(error).__name__})",
                checkpoint.START_OVER,
            ) from None

    def _load(self, state: TrainState) -> None:
        self.model.load_state_dict(state.model, strict=True)
        self.validation.load(state)
        self.steps.load(state)
        self.step = state.step
        self.best_written = -1
        self.previous_seconds = state.seconds
        self.resumed_at = self.step
        self.step_seconds = 0.0


def _all_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
    import torch.distributed as dist

    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _finite_state(model: torch.nn.Module) -> bool:
    """Whether every floating-point weight and buffer is finite (a best model must never hold a NaN)."""
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())
