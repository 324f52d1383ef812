"""One rank of the data-parallel tests (started by torchrun from tests/training/test_distributed.py).

_distributed_worker.py OUT resume RECIPE
    Every rank fits RECIPE to OUT/train.csv and writes its final weights to ``OUT/rank{r}.safetensors``, then
    resumes a copy of the run's step-20 checkpoint and writes those weights to ``OUT/resumed{r}.safetensors``.
_distributed_worker.py OUT families
    Every rank fits a tiny model of every family; rank 0 writes ``OUT/families.json``: for each, whether the
    ranks ended with the same weights.
_distributed_worker.py OUT cli ARGS...
    Every rank runs ``funnel ARGS...`` in this process, as ``torchrun -m funnelcli ARGS...`` would.
_distributed_worker.py OUT all RECIPE ARGS...
    resume, families, then cli, in one launch (each launch starts three Python processes that import torch,
    and the command ends by leaving the process group, so it comes last).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
from safetensors.torch import save_file

from funnelcli.distributed import leave
from funnelcli.estimator import FunnelDensity
from tests.helpers import manifold_table, tiny_recipe

FAMILIES = {
    "nsf": {},
    "f-nsf": {},
    "f-nsf-ar": {"transform": "autoregressive"},
    "f-nsf-conv": {"funnel_kind": "conv"},
    "glow": {},
    "f-glow": {},
    "f-mlp": {},
    "vae": {},
}


def resume(out: Path, recipe: str) -> None:
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


def command(args: list[str]) -> None:
    from funnelcli.cli import main

    sys.argv = ["funnel", *args]
    try:
        main()
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise


def families(out: Path) -> None:
    table, same = manifold_table(400), {}
    for name, fields in FAMILIES.items():
        recipe = tiny_recipe("f-nsf" if name.startswith("f-nsf") else name, **fields)
        model = FunnelDensity(recipe, steps=12, device="cpu", eval_every=6).fit(table).model_
        weights = torch.cat([v.flatten().double() for v in model.state_dict().values() if v.is_floating_point()])
        gathered = [torch.zeros_like(weights) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, weights)
        same[name] = all(torch.equal(gathered[0], w) for w in gathered)
    if dist.get_rank() == 0:
        (out / "families.json").write_text(json.dumps(same))


if __name__ == "__main__":
    folder, mode = Path(sys.argv[1]), sys.argv[2]
    if mode in ("resume", "all"):
        resume(folder, sys.argv[3])
    if mode in ("families", "all"):
        families(folder)
    if mode in ("cli", "all"):
        command(sys.argv[4 if mode == "all" else 3 :])
    leave()
