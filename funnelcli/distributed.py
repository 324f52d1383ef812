"""Data-parallel training across processes: where this process stands in a ``torchrun`` launch.

``torchrun --nproc_per_node=N -m funnelcli train ...`` starts N copies of the command with ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` (and the rendezvous address) in their environment. :func:`join` turns those
into a process group (NCCL between GPUs, gloo between CPU processes) and gives each rank its device; the
training loop (:mod:`funnelcli.training`) then shards the rows, averages gradients with
:class:`torch.nn.parallel.DistributedDataParallel`, and only rank 0 writes files. Without those variables
everything here is a no-op and training runs in one process, as before.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from funnelcli.errors import UserError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Ranks:
    """This process's ``rank`` among ``world_size`` processes, and its ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """Whether training is spread over more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and progress (rank 0)."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"the environment variable {name}={value!r} is not an integer; launch with torchrun") from None


def from_environment() -> Ranks:
    """The ranks ``torchrun`` announced in the environment, without starting anything (cheap: for the CLI)."""
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return Ranks()
    return Ranks(_env_int("RANK", 0), world_size, _env_int("LOCAL_RANK", 0))


def current() -> Ranks:
    """The ranks of the initialised process group, or a single process when there is none."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return Ranks()
    return Ranks(dist.get_rank(), dist.get_world_size(), from_environment().local_rank)


def join(device: torch.device) -> tuple[torch.device, Ranks]:
    """Join the launch's process group (once) and return this rank's device and ranks.

    A process group the caller already initialised is used as it is. On CUDA, each rank takes the GPU of its
    ``LOCAL_RANK`` and the group talks NCCL; on the CPU it talks gloo.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        announced = from_environment()
        if not announced.active:
            return device, Ranks()
        if not dist.is_available():
            raise UserError("this torch build has no torch.distributed; train in one process (without torchrun)")
        if device.type == "cuda":
            if announced.local_rank >= torch.cuda.device_count():
                raise UserError(
                    f"LOCAL_RANK {announced.local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                    "start at most that many processes per node (--nproc_per_node)"
                )
            torch.cuda.set_device(announced.local_rank)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    ranks = current()
    if ranks.active and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ranks.local_rank)
    return device, ranks


def leave() -> None:
    """Tear the process group down (at the end of a command), if one was joined; never imports torch."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        # Every rank calls this at the end of the command, whatever happened: wait for all of them (rank 0 may
        # still be writing the model) before tearing the group down, or gloo can abort a rank that leaves early.
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()
