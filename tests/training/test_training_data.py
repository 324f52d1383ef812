"""Where the training rows live (on the device when they fit, else in host memory, a batch copied at a time),
and the compiled training step.

A GPU is not needed to check the host path: with the rows declared too big, the CPU takes the same path
(gather into a staging buffer, copy out), and training must be as good and resume as exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import funnelcli.training.rows
from funnelcli.estimator import FunnelDensity
from funnelcli.training import TrainingInterrupted
from funnelcli.training.rows import HostBatches, fits_on_device
from tests.helpers import manifold_table, tiny_recipe


class SignalAt:
    def __init__(self, step: int):
        self.step = step

    def __call__(self, record: dict) -> None:
        if record["step"] == self.step:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGINT)


def streamed(monkeypatch) -> list[int]:
    """Declare the rows too big for the device; the list returned counts the batches copied from host memory."""
    monkeypatch.setattr(funnelcli.training.rows, "fits_on_device", lambda n_bytes, device: False)
    fetched, fetch = [], HostBatches.fetch

    def counted(self, indices):
        fetched.append(indices.shape[0])
        return fetch(self, indices)

    monkeypatch.setattr(HostBatches, "fetch", counted)
    return fetched


def estimator(tmp_path, **params) -> FunnelDensity:
    return FunnelDensity(tiny_recipe(), steps=60, device="cpu", eval_every=20, **params)


def test_rows_always_fit_on_the_cpu():
    assert fits_on_device(10**15, torch.device("cpu"))


def test_host_batches_are_the_indexed_rows_and_never_alias_the_staging_buffer():
    rows = torch.arange(20.0).reshape(10, 2)
    batches = HostBatches(rows, torch.device("cpu"))
    first = batches.fetch(torch.tensor([3, 1]))
    second = batches.fetch(torch.tensor([0, 9]))
    third = batches.fetch(torch.tensor([5, 5]))  # refills the first batch's buffer
    assert torch.equal(first, rows[[3, 1]]) and torch.equal(second, rows[[0, 9]]) and torch.equal(third, rows[[5, 5]])


def test_a_model_trained_on_streamed_rows_scores_like_one_trained_on_device_rows(tmp_path, monkeypatch):
    table, test = manifold_table(600, seed=0), manifold_table(300, seed=1)
    resident = estimator(tmp_path).fit(table).score_samples(test)
    fetched = streamed(monkeypatch)
    hosted = estimator(tmp_path).fit(table).score_samples(test)
    assert len(fetched) >= 60  # every training step's batch came from host memory
    assert np.isfinite(hosted).all()
    assert abs(hosted.mean() - resident.mean()) < 3 * resident.std() / np.sqrt(len(test))


def test_streamed_training_resumes_to_the_bit(tmp_path, monkeypatch):
    fetched = streamed(monkeypatch)
    table = manifold_table(400)
    whole = estimator(tmp_path).fit(table)
    assert len(fetched) >= 60
    with pytest.raises(TrainingInterrupted):
        estimator(tmp_path).fit(table, callback=SignalAt(23), checkpoint_dir=tmp_path / "run")
    resumed = estimator(tmp_path).fit(table, checkpoint_dir=tmp_path / "run", resume=True)
    assert resumed.summary_["resumed_at_step"] == 23
    for name, value in whole.model_.state_dict().items():
        assert torch.equal(value, resumed.model_.state_dict()[name]), name


def test_compile_runs_the_training_step_through_torch_compile_and_trains_the_same_model(monkeypatch):
    table = manifold_table(300)
    plain = FunnelDensity(tiny_recipe(), steps=20, device="cpu").fit(table)
    compiled = []

    def spy(module):
        compiled.append(module)
        return module  # the compiler itself is measured in benchmarks/, not here: it takes a minute on a CPU

    monkeypatch.setattr(torch, "compile", spy)
    spied = FunnelDensity(tiny_recipe(), steps=20, device="cpu").fit(table, compile=True)
    assert len(compiled) == 1 and isinstance(compiled[0], torch.nn.Module)
    for name, value in plain.model_.state_dict().items():
        assert torch.equal(value, spied.model_.state_dict()[name]), name


def test_the_compile_flag_of_funnel_train_reaches_the_training_step(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from funnelcli.cli import app

    manifold_table(200).to_csv(tmp_path / "data.csv", index=False)
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(module) or module)
    result = CliRunner().invoke(
        app,
        ["train", str(tmp_path / "data.csv"), "--recipe", "small-f-nsf", "--steps", "3", "--compile", "--quiet"]
        + ["--device", "cpu", "--out", str(tmp_path / "model")],
    )
    assert result.exit_code == 0, result.output
    assert len(compiled) == 1
