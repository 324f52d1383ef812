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

The modules: :mod:`.placement` (:func:`fit_rows`: rows from host memory; the device, the process group and
where the rows live), :mod:`.loop` (:func:`fit`: the step, validation and early stopping, decisions across
ranks), :mod:`.checkpoint` (what a checkpoint holds and its safetensors form), :mod:`.rows` (training rows on
the device or in host memory) and :mod:`.signals` (SIGINT and SIGTERM).
"""

from funnelcli.training.loop import (
    MAX_NONFINITE_IN_A_ROW,
    TrainingDiverged,
    TrainingSummary,
    fit,
    mean_log_prob,
    resolve_device,
    total_log_prob,
)
from funnelcli.training.placement import fit_rows
from funnelcli.training.signals import TrainingInterrupted

__all__ = [
    "MAX_NONFINITE_IN_A_ROW",
    "TrainingDiverged",
    "TrainingInterrupted",
    "TrainingSummary",
    "fit",
    "fit_rows",
    "mean_log_prob",
    "resolve_device",
    "total_log_prob",
]
