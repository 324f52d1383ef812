"""One rank of the data-parallel tests (started by torchrun from tests/test_distributed.py).

Every rank fits the same estimator to the same table, writes its final weights to ``OUT/rank{r}.safetensors``,
then resumes a copy of the run's step-20 checkpoint and writes those weights to ``OUT/resumed{r}.safetensors``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import torch.distributed as dist
from safetensors.torch import save_file

from funnelcli.estimator import FunnelDensity

out, recipe = Path(sys.argv[1]), sys.argv[2]
table = pd.read_csv(out / "train.csv")


def fit(checkpoints: Path, resume: bool) -> FunnelDensity:
    estimator = FunnelDensity(recipe, steps=40, batch_size=64, device="cpu", eval_every=10, dequantize="none")
    return estimator.fit(table, checkpoint_dir=checkpoints, checkpoint_every=20, resume=resume)


whole = fit(out / "whole", resume=False)
rank = dist.get_rank()
save_file({k: v.contiguous() for k, v in whole.model_.state_dict().items()}, out / f"rank{rank}.safetensors")
if rank == 0:
    shutil.copytree(out / "whole", out / "again")  # its latest checkpoint is from step 20 of 40
dist.barrier()
again = fit(out / "again", resume=True)
save_file({k: v.contiguous() for k, v in again.model_.state_dict().items()}, out / f"resumed{rank}.safetensors")
if rank == 0:
    (out / "summary.txt").write_text(f"{whole.summary_['processes']} {again.summary_['resumed_at_step']}\n")
dist.destroy_process_group()
