"""Data-parallel training: ``torchrun -m funnelcli train`` with two gloo processes on the CPU.

Two ranks train one model: they end with the same weights (ActNorm's data-dependent start included), only rank
0 writes, the model is as good as a single process's, and an interrupted two-process run resumes to the bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from funnelcli.estimator import FunnelDensity
from tests.helpers import manifold_table, run

ROOT = Path(__file__).resolve().parents[2]
WORKER = str(Path(__file__).with_name("_distributed_worker.py"))
pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="torch has no gloo backend")


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


#: The `funnel train` arguments of the two-process run and of the one-process run it is compared with.
CLI = ["--recipe", "small-f-nsf", "--steps", "80", "--device", "cpu", "--json"]


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    """One torchrun launch of two ranks (each launch costs two processes that import torch), in which every rank:
    fits a 40-step model and resumes a copy of its step-20 checkpoint (``train.csv``); fits tiny models of every
    family; then runs `funnel train` on ``cli.csv`` as `torchrun -m funnelcli train` would."""
    root = tmp_path_factory.mktemp("ddp")
    manifold_table(800, seed=3).to_csv(root / "train.csv", index=False)
    manifold_table(2400, seed=1).to_csv(root / "cli.csv", index=False)
    result = torchrun(WORKER, str(root), "all", "small-f-nsf", "train", "cli.csv", *CLI, "--out", "two", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


@pytest.fixture(scope="module")
def cli_run(launch):
    """`funnel train` under torchrun with two processes, and the same command in this one (no process to start)."""
    root, two = launch
    one = run("train", root / "cli.csv", *CLI, "--out", root / "one")
    return root, two, one


def test_two_processes_train_one_model_and_only_rank_0_reports(cli_run):
    root, two, _ = cli_run
    assert two.returncode == 0, two.stderr
    reports = [json.loads(line) for line in two.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1 and reports[0]["processes"] == 2
    model = FunnelDensity.load(root / "two", device="cpu")
    assert model.summary_["processes"] == 2 and model.summary_["steps"] == 80


def test_a_two_process_model_scores_like_a_one_process_model_within_the_noise(cli_run):
    root, two, one = cli_run
    assert two.returncode == 0 and one.exit_code == 0, two.stderr + one.output
    test = manifold_table(600, seed=2)
    two_scores = FunnelDensity.load(root / "two", device="cpu").score_samples(test)
    one_scores = FunnelDensity.load(root / "one", device="cpu").score_samples(test)
    noise = one_scores.std() / np.sqrt(len(test))
    assert np.isfinite(two_scores).all()
    assert abs(two_scores.mean() - one_scores.mean()) < 3 * noise, (two_scores.mean(), one_scores.mean(), noise)


@pytest.fixture(scope="module")
def worker_run(launch):
    return launch[0]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_rank_ends_with_the_same_weights(worker_run):
    assert same(load_file(worker_run / "rank0.safetensors"), load_file(worker_run / "rank1.safetensors"))


def test_a_resumed_two_process_run_ends_with_the_weights_of_an_uninterrupted_one(worker_run):
    assert (worker_run / "summary.txt").read_text().split() == ["2", "20"]
    for rank in (0, 1):
        whole = load_file(worker_run / f"rank{rank}.safetensors")
        assert same(whole, load_file(worker_run / f"resumed{rank}.safetensors"))


def test_only_rank_0_writes_checkpoints(worker_run):
    files = sorted(p.name for p in (worker_run / "whole").iterdir())
    assert files == ["best.safetensors", "latest.safetensors"]


def test_every_family_trains_data_parallel_to_the_same_weights_on_every_rank(worker_run):
    # Glow's ActNorm starts from its first batch, which differs between ranks: rank 0's start must win.
    same = json.loads((worker_run / "families.json").read_text())
    assert set(same) >= {"glow", "f-glow", "f-mlp", "vae"} and all(same.values()), same


def test_commands_other_than_train_refuse_to_run_under_torchrun(tmp_path):
    from typer.testing import CliRunner

    from funnelcli.cli import app

    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}
    result = CliRunner().invoke(app, ["score", str(tmp_path / "model"), str(tmp_path / "data.csv")], env=env)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: only `funnel train` runs under torchrun; run `funnel score` as one process (without torchrun)"
    )
