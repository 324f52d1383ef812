"""Maximum-likelihood training: Adam, cosine annealing, gradient clipping, early stopping on validation.

Nothing is lost and nothing is silent:

- **Determinism.** Batches, dequantization noise and every draw a model makes while training (dropout, a
  VAE's reparameterisation) come from generators seeded with ``settings.seed``; the caller's global RNG is
  left as it was. The same seed, data, device and library versions give the same weights, bit for bit (on a
  GPU, as far as its kernels are deterministic).
- **Checkpoints.** With a ``checkpoint_dir``, ``latest.safetensors`` holds the whole state of training (the
  weights, the best weights, Adam's moments and step counts, the schedule, every RNG state, the batch order
  and the step) and ``best.safetensors`` the best weights; both are written every ``checkpoint_every`` steps
  and when SIGINT or SIGTERM arrives, which then raises :class:`TrainingInterrupted`. ``resume=True`` picks up
  from ``latest.safetensors`` and ends with the weights an uninterrupted run would have given.
- **Divergence.** A step whose loss or gradient is not finite is skipped and counted; ``max_nonfinite`` of them
  in a row raise :class:`TrainingDiverged` with the best weights loaded into the model.
- **Data parallel.** In a process group (``torchrun``, see :mod:`funnelcli.distributed`) each of the W ranks
  trains on every W-th training row with ``batch_size // W`` rows a step, so that a step still sees
  ``batch_size`` rows; DistributedDataParallel averages the gradients, the validation score is summed over the
  ranks' shares of the validation rows, and every decision (skip a step, stop early, stop on a signal) is
  taken by all ranks together. Only rank 0 writes checkpoints; they hold every rank's RNG and batch order.
"""

from __future__ import annotations

import copy
import hashlib
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from funnelcli import artifact
from funnelcli.distributed import Ranks, current
from funnelcli.errors import UserError
from funnelcli.models.flow import FunnelFlow
from funnelcli.models.recipe import TrainingSettings
from funnelcli.rows import HostBatches

#: Non-finite steps in a row after which training gives up (the default of ``max_nonfinite``).
MAX_NONFINITE_IN_A_ROW = 20
_EVAL_BATCH = 8192
_SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class TrainingDiverged(RuntimeError):
    """The loss stayed non-finite; the best weights so far are loaded into the model.

    ``summary`` is the :class:`TrainingSummary` up to the step where training gave up.
    """

    def __init__(self, message: str, summary: TrainingSummary | None = None):
        super().__init__(message)
        self.summary = summary


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after a complete step; the latest and best checkpoints are written.

    ``exit_code`` is the shell's convention for the signal: 130 for SIGINT, 143 for SIGTERM.
    """

    def __init__(self, signal_number: int, step: int, steps: int, checkpoint_dir: Path):
        self.signal_number = int(signal_number)
        self.signal_name = _SIGNAL_NAMES.get(signal_number, f"signal {int(signal_number)}")
        self.step, self.steps, self.checkpoint_dir = step, steps, Path(checkpoint_dir)
        self.exit_code = 128 + self.signal_number
        super().__init__(
            f"{self.signal_name} at step {step} of {steps}; the latest and best checkpoints are in {checkpoint_dir}"
        )


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
        raise UserError("--device cuda was asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"--device {device!r} is unknown; use auto, cpu or cuda")
    return torch.device(device)


@torch.no_grad()
def total_log_prob(model: FunnelFlow, data: torch.Tensor, batch_size: int = _EVAL_BATCH) -> torch.Tensor:
    """The sum of log p(x) over the rows of ``data`` (a float64 scalar on its device), in eval mode, in batches."""
    was_training = model.training
    model.eval()
    device = _model_device(model)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, data.shape[0], batch_size):
        total += model.log_prob(data[start : start + batch_size].to(device, non_blocking=True)).double().sum()
    model.train(was_training)
    return total


def mean_log_prob(model: FunnelFlow, data: torch.Tensor, batch_size: int = _EVAL_BATCH) -> float:
    """Mean log p(x) over the rows of ``data``, in eval mode, in batches."""
    return float(total_log_prob(model, data, batch_size)) / data.shape[0]


class _LogProb(torch.nn.Module):
    """log p(x) as a module's forward, which is what DistributedDataParallel wraps and hooks."""

    def __init__(self, model: FunnelFlow):
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.log_prob(batch)


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

    ``train`` and ``validation`` are (N, D) tensors on the model's device or, with ``stream_rows`` (for rows that
    do not fit there, see :mod:`funnelcli.rows`), in host memory: each batch is then
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
        loop = _Loop(model, train, validation, settings, dequantize, checkpoint_dir, max_nonfinite, ranks, stream_rows)
        if compile:
            loop.objective = torch.compile(loop.objective)
        if resume:
            loop.restore()
        with _Signals(enabled=checkpoint_dir is not None) as signals:
            return loop.run(callback, checkpoint_every, signals)


# -- the loop ------------------------------------------------------------------------------------------------


class _Loop:
    """The state of one training run, which a checkpoint captures whole, and the steps that advance it."""

    def __init__(
        self, model, train, validation, settings, dequantize, checkpoint_dir, max_nonfinite, ranks: Ranks, stream_rows
    ):
        self.model, self.settings, self.ranks = model, settings, ranks
        self.full_train, self.full_validation = train, validation  # what the checkpoint's fingerprint covers
        # Each rank takes every W-th row: shards differ in size by at most one row.
        self.train = train[ranks.rank :: ranks.world_size]
        self.validation = validation[ranks.rank :: ranks.world_size]
        if self.train.shape[0] == 0:
            raise UserError(
                f"{train.shape[0]} training rows cannot be shared among {ranks.world_size} processes; "
                "start fewer processes or give more rows"
            )
        self.dequantize = dequantize
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.max_nonfinite = max_nonfinite
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
        if settings.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=settings.steps, eta_min=0.0
            )
        else:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        self.n = self.train.shape[0]
        self.batch_size = min(max(1, settings.batch_size // ranks.world_size), self.n)
        self.objective = self._objective()

        self.step = 0
        self.order = torch.randperm(self.n, generator=self.order_generator, device=self.train.device)
        self.cursor = 0
        self.best_val, self.best_step = -math.inf, 0
        self.best_state = copy.deepcopy(model.state_dict())
        self.evaluations_without_gain = 0
        # [skipped steps, non-finite steps in a row, rows trained on since the last validation], on the device.
        self._counters = torch.zeros(3, dtype=torch.long, device=self.device)
        self._divergence_check_every = 1 if self.device.type == "cpu" else max(1, min(max_nonfinite // 2, 10))
        self.train_sum = torch.zeros((), device=self.device)
        self.history: list[dict] = []
        self.last_train = math.nan
        self.stopped_early = False
        self.previous_seconds = 0.0  # of earlier sessions of a resumed run
        self.step_seconds = 0.0
        self.resumed_at: int | None = None
        self.best_written = -1  # best_step of the best checkpoint on disk

    # Counters kept on the device; reading one synchronises with it, so the loop reads them rarely.
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

    # -- training ----------------------------------------------------------------------------------------------
    def run(self, callback, checkpoint_every: int, signals: _Signals) -> TrainingSummary:
        self.started = time.perf_counter()
        self.model.train()
        while self.step < self.settings.steps and not self.stopped_early:
            self.step += 1
            self._one_step()
            record = {"step": self.step, "steps": self.settings.steps}
            if self.step % self.settings.eval_every == 0 or self.step == self.settings.steps:
                record.update(self._evaluate())
            if callback is not None:
                callback(record)
            received = self._agreed_signal(signals)
            if received is not None:
                self.write_checkpoints(interrupted=received)
                raise TrainingInterrupted(received, self.step, self.settings.steps, self.checkpoint_dir)
            if checkpoint_every and self.step % checkpoint_every == 0 and self.step < self.settings.steps:
                self.write_checkpoints()
        self.model.load_state_dict(self.best_state)
        self.model.eval()
        return self.summary()

    def _objective(self) -> torch.nn.Module:
        """log p(x) of a batch, wrapped in DistributedDataParallel when there are several ranks."""
        objective = _LogProb(self.model)
        if not self.ranks.active:
            return objective
        # Layers that initialise themselves from their first batch (ActNorm) do so here, on each rank's own rows;
        # DDP then copies rank 0's weights and buffers to every rank, so that all ranks start equal.
        with torch.no_grad():
            self.model.log_prob(self.train[: self.batch_size].to(self.device))
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(objective, device_ids=device_ids)

    def _all_reduce(self, tensor: torch.Tensor, op: str) -> torch.Tensor:
        import torch.distributed as dist

        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return tensor

    def _agreed_signal(self, signals: _Signals) -> int | None:
        """The signal to stop on, taken by all ranks at the same step (as often as divergence is checked)."""
        if not self.ranks.active:
            return signals.received
        if self.step % self._divergence_check_every and self.step < self.settings.steps:
            return None
        flag = torch.tensor([signals.received or 0], dtype=torch.int64, device=self.device)
        received = int(self._all_reduce(flag, "max"))
        return received or None

    def _one_step(self) -> None:
        tick = time.perf_counter()
        if self.cursor + self.batch_size > self.n:
            self.order = torch.randperm(self.n, generator=self.order_generator, device=self.train.device)
            self.cursor = 0
        rows = self.order[self.cursor : self.cursor + self.batch_size]
        batch = self.host_batches.fetch(rows) if self.streamed else self.train[rows]
        self.cursor += self.batch_size
        if self.dequantize is not None:
            noise = torch.rand(batch.shape, generator=self.generator, device=self.device, dtype=batch.dtype)
            batch = batch + noise * self.dequantize

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
            bad = self._all_reduce(bad.to(torch.int32), "max").bool()
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
        self.step_seconds += time.perf_counter() - tick
        # On a GPU, reading the counter is a sync: look every few steps. On the CPU it costs nothing.
        if self.step % self._divergence_check_every == 0 and self.nonfinite_in_a_row >= self.max_nonfinite:
            self._diverged()

    def _evaluate(self) -> dict:
        sums = torch.stack(
            [
                self.train_sum.double(),
                self._counters[2].double(),
                total_log_prob(self.model, self.validation),
                torch.tensor(float(self.validation.shape[0]), dtype=torch.float64, device=self.device),
            ]
        )
        if self.ranks.active:
            sums = self._all_reduce(sums, "sum")
        train_sum, train_rows, val_sum, val_rows = sums.tolist()
        self.last_train = train_sum / max(train_rows, 1)
        val = val_sum / val_rows
        self.train_sum.zero_()
        self.train_rows = 0
        scores = {
            "train_log_prob": self.last_train,
            "val_log_prob": val,
            "lr": self.optimizer.param_groups[0]["lr"],
            "elapsed_s": round(self._seconds(), 3),
        }
        self.history.append({"step": self.step, **scores})
        if math.isfinite(val) and val > self.best_val and _finite_state(self.model):
            self.best_val, self.best_step = val, self.step
            self.best_state = copy.deepcopy(self.model.state_dict())
            self.evaluations_without_gain = 0
        else:
            self.evaluations_without_gain += 1
        if self.settings.patience and self.evaluations_without_gain >= self.settings.patience:
            self.stopped_early = True
        return scores

    def _diverged(self) -> None:
        self.model.load_state_dict(self.best_state)
        self.model.eval()
        summary = self.summary(diverged=True)
        raise TrainingDiverged(
            f"the loss or its gradient was not finite for {self.nonfinite_in_a_row} steps in a row at step "
            f"{self.step} ({self.skipped} skipped in all); try a lower --lr, a smaller training.grad_clip, a larger "
            "model.tail_bound, or look for columns with extreme values or outliers (each column is standardised "
            "by its mean and std, which outliers distort)",
            summary,
        )

    def _seconds(self) -> float:
        return self.previous_seconds + time.perf_counter() - self.started

    def summary(self, *, diverged: bool = False) -> TrainingSummary:
        return TrainingSummary(
            steps=self.step,
            best_step=self.best_step,
            best_val_log_prob=self.best_val,
            final_train_log_prob=self.last_train,
            seconds=round(self._seconds(), 3),
            ms_per_step=round(1000 * self.step_seconds / max(self.step - (self.resumed_at or 0), 1), 3),
            stopped_early=self.stopped_early,
            skipped_nonfinite_steps=self.skipped,
            device=str(self.device),
            history=self.history,
            resumed_at_step=self.resumed_at,
            diverged=diverged,
            processes=self.ranks.world_size,
        )

    # -- checkpoints -------------------------------------------------------------------------------------------
    def write_checkpoints(self, *, interrupted: int | None = None) -> None:
        """Write the best checkpoint (when it changed), then the latest; each atomically.

        With several ranks, every rank must call this at the same step (it gathers their states); rank 0 writes.
        """
        folder = self.checkpoint_dir
        tensors, document = self._state()
        if not self.ranks.is_main:
            return
        if self.best_written != self.best_step:
            artifact.write_checkpoint(
                folder / artifact.BEST,
                dict(self.best_state),
                {
                    "kind": "best",
                    "step": self.best_step,
                    "steps": self.settings.steps,
                    "val_log_prob": _json(self.best_val),
                },
            )
            self.best_written = self.best_step
        document["interrupted_by"] = _SIGNAL_NAMES.get(interrupted) if interrupted is not None else None
        artifact.write_checkpoint(folder / artifact.LATEST, tensors, document)

    def _state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors: dict[str, torch.Tensor] = {}
        for name, value in self.model.state_dict().items():
            tensors[f"model/{name}"] = value
        for name, value in self.best_state.items():
            tensors[f"best/{name}"] = value
        optimizer = self.optimizer.state_dict()
        scalars: dict[str, dict] = {}
        for index, state in optimizer["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer/{index}/{key}"] = value
                else:
                    scalars.setdefault(str(index), {})[key] = value
        own = self._rank_state()
        if self.ranks.active:
            import torch.distributed as dist

            gathered: list = [None] * self.ranks.world_size
            dist.all_gather_object(gathered, {name: value.cpu() for name, value in own.items()})
            for rank, state in enumerate(gathered):
                tensors.update({f"rank{rank}/{name}": value for name, value in state.items()})
        else:
            tensors.update(own)
        document = {
            "kind": "latest",
            "step": self.step,
            "steps": self.settings.steps,
            "settings": asdict(self.settings),
            "data_sha256": self._fingerprint(),
            "device": self.device.type,
            "world_size": self.ranks.world_size,
            "cursor": self.cursor,
            "best_val": _json(self.best_val),
            "best_step": self.best_step,
            "evaluations_without_gain": self.evaluations_without_gain,
            "skipped": self.skipped,
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "train_rows": self.train_rows,
            "history": _strict(self.history),
            "last_train": _json(self.last_train),
            "stopped_early": self.stopped_early,
            "seconds": self._seconds(),
            "step_seconds": self.step_seconds,
            "steps_timed": self.step - (self.resumed_at or 0),
            "optimizer": {"param_groups": optimizer["param_groups"], "scalars": scalars},
            "scheduler": self.scheduler.state_dict(),
        }
        return tensors, document

    def _rank_state(self) -> dict[str, torch.Tensor]:
        """What differs between ranks: the RNGs, the batch order over the rank's shard and its running sums."""
        state = {
            "rng/torch": torch.get_rng_state(),
            "rng/batches": self.generator.get_state(),
            "loop/order": self.order,
            "loop/train_sum": self.train_sum,
            "loop/cursor": torch.tensor(self.cursor, dtype=torch.int64),
        }
        if self.device.type == "cuda":
            state["rng/cuda"] = torch.cuda.get_rng_state(self.device)
        if self.streamed:
            state["rng/order"] = self.order_generator.get_state()
        return state

    def _fingerprint(self) -> str:
        """A SHA-256 of the training rows, the validation rows and the dequantization mask."""
        if not hasattr(self, "_data_sha256"):
            digest = hashlib.sha256()
            for tensor in (self.full_train, self.full_validation, self.dequantize):
                if tensor is None:
                    digest.update(b"none")
                    continue
                tensor = tensor.detach().to("cpu").contiguous()
                digest.update(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._data_sha256 = digest.hexdigest()
        return self._data_sha256

    def restore(self) -> None:
        """Continue from ``latest.safetensors``, after checking it belongs to this data, settings and device."""
        path = self.checkpoint_dir / artifact.LATEST
        tensors, document = artifact.read_checkpoint(path)
        if document.get("kind") != "latest":
            raise UserError(f"{path} is not a resumable checkpoint; start over with --force (without --resume)")
        _check_latest(path, document, self.full_train.shape[0])
        start_over = "resume with the command that started the run, or start over with --force (without --resume)"
        saved = document.get("settings", {})
        changed = [key for key, value in asdict(self.settings).items() if saved.get(key) != value]
        if changed:
            shown = ", ".join(f"{key} {saved.get(key)!r} -> {getattr(self.settings, key)!r}" for key in changed)
            raise UserError(
                f"the checkpoint in {self.checkpoint_dir} was made with other settings ({shown}); {start_over}"
            )
        if document.get("data_sha256") != self._fingerprint():
            raise UserError(f"the checkpoint in {self.checkpoint_dir} was made with other data; {start_over}")
        if document.get("world_size", 1) != self.ranks.world_size:
            raise UserError(
                f"the checkpoint in {self.checkpoint_dir} was made by {document.get('world_size', 1)} process(es) and "
                f"this run has {self.ranks.world_size}; resume it with as many (torchrun --nproc_per_node) so that "
                "the run continues exactly"
            )
        if document.get("device") != self.device.type:
            raise UserError(
                f"the checkpoint in {self.checkpoint_dir} was made on {document.get('device')}; resume it there "
                f"(--device {document.get('device')}) so that the run continues exactly"
            )
        try:
            self._load(tensors, document)
        except (KeyError, RuntimeError, TypeError, ValueError) as error:
            raise UserError(
                f"the checkpoint in {self.checkpoint_dir} does not fit this model ({type(error).__name__}); "
                "start over with --force (without --resume)"
            ) from None

    def _load(self, tensors: dict[str, torch.Tensor], document: dict) -> None:
        def group(prefix: str) -> dict[str, torch.Tensor]:
            return {name[len(prefix) :]: value for name, value in tensors.items() if name.startswith(prefix)}

        self.model.load_state_dict(group("model/"), strict=True)
        self.best_state = copy.deepcopy(self.model.state_dict())
        for name, value in group("best/").items():
            self.best_state[name] = value.to(self.best_state[name].device)
        if set(group("best/")) != set(self.best_state):
            raise KeyError("best")
        state: dict[int, dict] = {}
        for name, value in group("optimizer/").items():
            index, key = name.split("/", 1)
            state.setdefault(int(index), {})[key] = value
        for index, values in document["optimizer"]["scalars"].items():
            state.setdefault(int(index), {}).update(values)
        groups = document["optimizer"]["param_groups"]
        for saved in groups:
            if isinstance(saved.get("betas"), list):
                saved["betas"] = tuple(saved["betas"])
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        self.scheduler.load_state_dict(document["scheduler"])
        own = group(f"rank{self.ranks.rank}/") if self.ranks.active else tensors
        torch.set_rng_state(own["rng/torch"])
        self.generator.set_state(own["rng/batches"])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(own["rng/cuda"], self.device)
        if self.streamed:
            self.order_generator.set_state(own["rng/order"])
        self.order = own["loop/order"].to(self.train.device)
        self.train_sum = own["loop/train_sum"].to(self.device)
        self.step = int(document["step"])
        self.cursor = int(own["loop/cursor"]) if "loop/cursor" in own else int(document["cursor"])
        self.best_val = _float(document["best_val"], -math.inf)
        self.best_step = int(document["best_step"])
        self.best_written = -1
        self.evaluations_without_gain = int(document["evaluations_without_gain"])
        self.skipped = int(document["skipped"])
        self.nonfinite_in_a_row = int(document["nonfinite_in_a_row"])
        self.train_rows = int(document["train_rows"])
        self.history = list(document["history"])
        self.last_train = _float(document["last_train"], math.nan)
        self.stopped_early = bool(document["stopped_early"])
        self.previous_seconds = float(document["seconds"])
        self.resumed_at = self.step
        self.step_seconds = 0.0


def _whole(value, low: int = 0, high: int = 2**63 - 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _number(value, low: float = -math.inf) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= low


#: The fields of a latest checkpoint's header beyond those every checkpoint has: (test, what it must be).
_LATEST_FIELDS = {
    "settings": (lambda v: isinstance(v, dict), "a table"),
    "data_sha256": (lambda v: isinstance(v, str), "a string"),
    "device": (lambda v: isinstance(v, str), "a string"),
    "world_size": (lambda v: _whole(v, 1, 1_000_000), "a whole number >= 1"),
    "cursor": (_whole, "a whole number"),
    "best_val": (lambda v: v is None or _number(v), "null or a finite number"),
    "best_step": (_whole, "a whole number"),
    "evaluations_without_gain": (_whole, "a whole number"),
    "skipped": (_whole, "a whole number"),
    "nonfinite_in_a_row": (_whole, "a whole number"),
    "train_rows": (_whole, "a whole number"),
    "history": (lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v), "a list of records"),
    "last_train": (lambda v: v is None or _number(v), "null or a finite number"),
    "stopped_early": (lambda v: isinstance(v, bool), "true or false"),
    "seconds": (lambda v: _number(v, 0), "a number >= 0"),
    "step_seconds": (lambda v: _number(v, 0), "a number >= 0"),
    "steps_timed": (_whole, "a whole number"),
    "optimizer": (
        lambda v: (
            isinstance(v, dict) and isinstance(v.get("param_groups"), list) and isinstance(v.get("scalars"), dict)
        ),
        "a table with param_groups and scalars",
    ),
    "scheduler": (lambda v: isinstance(v, dict), "a table"),
    "interrupted_by": (lambda v: v is None or isinstance(v, str), "null or a signal name"),
}


def _check_latest(path: Path, document: dict, rows: int) -> None:
    """Refuse, in one line naming the field, a latest checkpoint whose header fields have the wrong type or lie
    out of range (``step`` and ``steps`` are checked by :func:`artifact.read_checkpoint`)."""
    way_out = "start over with --force (without --resume)"
    for name, (test, expected) in _LATEST_FIELDS.items():
        if name not in document or not test(document[name]):
            raise UserError(f"checkpoint {path} is damaged (header field {name} is not {expected}); {way_out}")
    step = document["step"]
    for name, value, high in (
        ("best_step", document["best_step"], step),
        ("skipped", document["skipped"], step),
        ("nonfinite_in_a_row", document["nonfinite_in_a_row"], step),
        ("steps_timed", document["steps_timed"], step),
        ("cursor", document["cursor"], rows),
    ):
        if value > high:
            raise UserError(f"checkpoint {path} is damaged (header field {name} = {value} exceeds {high}); {way_out}")


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _finite_state(model: torch.nn.Module) -> bool:
    """Whether every floating-point weight and buffer is finite (a best model must never hold a NaN)."""
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def _json(value: float) -> float | None:
    """A float for JSON, which has no NaN or infinity: those become null."""
    return value if math.isfinite(value) else None


def _strict(value):
    """``value`` (nested lists and dicts) with every NaN or infinity replaced by null, for strict JSON."""
    if isinstance(value, float):
        return _json(value)
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(item) for item in value]
    return value


def _float(value: float | None, default: float) -> float:
    return default if value is None else float(value)


# -- signals -------------------------------------------------------------------------------------------------


class _Signals:
    """While training, SIGINT and SIGTERM ask the loop to stop after the current step instead of killing it.

    A second signal stops at once (KeyboardInterrupt). Signal handlers can only be set in the main thread;
    elsewhere, and when not ``enabled``, nothing changes.
    """

    def __init__(self, *, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def _handle(self, number: int, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = number

    def __enter__(self) -> _Signals:
        if self.enabled:
            for number in _SIGNAL_NAMES:
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for number, handler in self.previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        return False
