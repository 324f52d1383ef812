"""Where the training rows live: on the device when they fit, else in host memory, a batch copied at a time.

On a GPU, rows on the device make a batch one indexing kernel. Rows that would crowd out the model stay in
pinned host memory, and :class:`HostBatches` gathers each batch there and copies it over without making the
host wait. On the CPU the rows are always "on the device".
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("funnelcli")
#: The share of a GPU's free memory the training and validation rows may take; the rest is for the model.
DEVICE_DATA_SHARE = 0.5


def fits_on_device(n_bytes: int, device: torch.device) -> bool:
    """Whether ``n_bytes`` of rows should live on ``device`` (always on the CPU; on a GPU, when they take at most
    :data:`DEVICE_DATA_SHARE` of its free memory), rather than in host memory, streamed a batch at a time."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return n_bytes <= DEVICE_DATA_SHARE * free


def place_rows(rows: torch.Tensor, device: torch.device, *, on_device: bool) -> torch.Tensor:
    """The rows on ``device``, or in host memory (pinned when the device is a GPU, for asynchronous copies)."""
    if on_device:
        return rows.to(device)
    return rows.pin_memory() if device.type == "cuda" else rows


def placed(
    train: torch.Tensor, validation: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(training rows, validation rows, whether they are on ``device``), from rows in host memory: both on
    ``device`` when they fit there together, else both in host memory, each batch copied over as training needs
    it."""
    n_bytes = train.nbytes + validation.nbytes
    on_device = fits_on_device(n_bytes, device)
    if not on_device:
        log.warning(
            "the %.2f GB of training and validation rows do not fit in %s's free memory: each batch is copied "
            "from pinned host memory instead",
            n_bytes / 1e9,
            device,
        )
    train, validation = (place_rows(t, device, on_device=on_device) for t in (train, validation))
    return train, validation, on_device


class HostBatches:
    """Batches gathered from rows in host memory and copied to the device without waiting for the copy.

    Two staging buffers (pinned on a GPU) take turns; a buffer is refilled only once the copy made from it two
    batches ago has finished, so the gather of one batch overlaps the device's work on the one before.
    """

    def __init__(self, rows: torch.Tensor, device: torch.device):
        self.rows, self.device = rows, device
        self.cuda = device.type == "cuda"
        self.buffers: list[torch.Tensor | None] = [None, None]
        self.copied: list = [None, None]
        self.turn = 0

    def fetch(self, indices: torch.Tensor) -> torch.Tensor:
        turn, self.turn = self.turn, 1 - self.turn
        shape = (indices.shape[0], self.rows.shape[1])
        buffer = self.buffers[turn]
        if buffer is None or buffer.shape != shape:
            buffer = torch.empty(shape, dtype=self.rows.dtype, pin_memory=self.cuda)
            self.buffers[turn] = buffer
        elif self.copied[turn] is not None:
            self.copied[turn].synchronize()
        torch.index_select(self.rows, 0, indices, out=buffer)
        if not self.cuda:
            return buffer.clone()
        batch = buffer.to(self.device, non_blocking=True)
        self.copied[turn] = torch.cuda.Event()
        self.copied[turn].record()
        return batch
