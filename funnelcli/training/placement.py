"""Where training runs: the device, the process group, and where the rows live, decided from rows in host memory.

:func:`fit_rows` is what a caller that holds its rows on the CPU (the estimator) trains with: it resolves the
device, joins a ``torchrun`` launch's process group (:mod:`funnelcli.distributed`), moves the model there, keeps
the rows on the device when they fit (else in host memory, see :mod:`.rows`) and hands over to :func:`.loop.fit`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from funnelcli import distributed
from funnelcli.models.recipe import TrainingSettings
from funnelcli.training.loop import TrainingSummary, fit, resolve_device
from funnelcli.training.rows import placed


def fit_rows(
    model: torch.nn.Module,
    train: torch.Tensor,
    validation: torch.Tensor,
    settings: TrainingSettings,
    *,
    device: str = "auto",
    dequantize: np.ndarray | None = None,
    **options: Any,
) -> TrainingSummary:
    """:func:`~funnelcli.training.fit` ``model`` to ``train`` and ``validation``, (N, D) float32 tensors in host
    memory, on ``device`` (``auto``, ``cpu``, ``cuda`` or ``cuda:K``).

    Under ``torchrun`` this process joins the group here and takes its rank's GPU; the rows go to the device
    when they fit there, else each batch is copied from host memory. ``dequantize``, a (D,) boolean array, marks
    the columns that get uniform noise; ``options`` are :func:`~funnelcli.training.fit`'s keyword arguments.
    """
    device, _ = distributed.join(resolve_device(device))
    model.to(device)
    train, validation, on_device = placed(train, validation, device)
    mask = torch.as_tensor(dequantize, device=device) if dequantize is not None and dequantize.any() else None
    return fit(model, train, validation, settings, dequantize=mask, stream_rows=not on_device, **options)
