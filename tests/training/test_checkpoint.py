"""Interrupted training resumes to the bit from its checkpoint, and a checkpoint is believed only once checked.

A checkpoint is safetensors with the Adam moments, the random states and the step in its JSON header; a run
stopped or killed resumes from it to the weights of an uninterrupted run; a missing, damaged, foreign or
mismatched checkpoint is refused in one line that says what to do instead.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from safetensors import safe_open

from funnelcli import artifact
from funnelcli.errors import UserError
from funnelcli.training import TrainingInterrupted
from tests.helpers import (
    SignalAt,
    assert_one_line_error,
    feed_training_to,
    manifold_table,
    run,
    same_weights,
    tiny_estimator,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def table_with_an_integer_column(n: int = 240):
    """The manifold table plus a count column, so that training also draws dequantization noise."""
    table = manifold_table(n)
    table["count"] = np.random.default_rng(5).poisson(3.0, size=n).astype(float)
    return table


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_resuming_restores_weights_adam_schedule_rng_and_batches_exactly(tmp_path, schedule):
    table = table_with_an_integer_column()  # dequantization noise, dropout and batches all draw random numbers
    whole = tiny_estimator(schedule=schedule).fit(table)
    with pytest.raises(TrainingInterrupted) as stop:
        tiny_estimator(schedule=schedule).fit(table, callback=SignalAt(13), checkpoint_dir=tmp_path)
    assert (stop.value.step, stop.value.exit_code) == (13, 130)
    resumed = tiny_estimator(schedule=schedule).fit(table, checkpoint_dir=tmp_path, resume=True)
    assert same_weights(resumed.model_, whole.model_)
    assert resumed.summary_["resumed_at_step"] == 13 and resumed.summary_["best_step"] == whole.summary_["best_step"]
    assert [r["val_log_prob"] for r in resumed.history_] == [r["val_log_prob"] for r in whole.history_]


def test_a_run_killed_without_warning_resumes_from_its_last_periodic_checkpoint(tmp_path):
    table = manifold_table(240)
    whole = tiny_estimator().fit(table)

    def crash(record):
        if record["step"] == 17:
            raise RuntimeError("the machine went away")

    with pytest.raises(RuntimeError):
        tiny_estimator().fit(table, callback=crash, checkpoint_dir=tmp_path, checkpoint_every=7)
    resumed = tiny_estimator().fit(table, checkpoint_dir=tmp_path, resume=True)
    assert resumed.summary_["resumed_at_step"] == 14
    assert same_weights(resumed.model_, whole.model_)


def test_a_checkpoint_is_safetensors_with_adam_moments_rng_states_and_the_step_in_its_json_header(tmp_path):
    with pytest.raises(TrainingInterrupted):
        tiny_estimator().fit(manifold_table(240), callback=SignalAt(5), checkpoint_dir=tmp_path)
    with safe_open(str(tmp_path / artifact.LATEST), framework="pt") as file:
        names = set(file.keys())
        document = json.loads(file.metadata()["funnelcli"])
    assert {"optimizer/0/exp_avg", "optimizer/0/exp_avg_sq", "optimizer/0/step"} <= names
    assert {"rng/torch", "rng/batches", "loop/order"} <= names
    assert any(name.startswith("model/") for name in names) and any(name.startswith("best/") for name in names)
    assert (document["step"], document["steps"], document["interrupted_by"]) == (5, 30, "SIGINT")
    assert document["scheduler"]["last_epoch"] == 5 and document["format"] == "funnelcli-checkpoint"


def test_checkpoint_every_writes_checkpoints_while_training_and_a_finished_run_leaves_only_the_model(
    workdir, monkeypatch
):
    out = workdir / "periodic"
    seen = []
    feed_training_to(monkeypatch, lambda record: seen.append((out / "checkpoints" / artifact.LATEST).exists()))
    result = run(
        "train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--out", out, "--checkpoint-every", 8
    )
    assert result.exit_code == 0, result.output
    assert seen[:9] == [False] * 8 + [True]  # written after step 8, once its record was handed on
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "model.json", "model.safetensors"]


def test_the_folder_of_an_unfinished_run_is_continued_with_resume_or_replaced_with_force(workdir):
    out = workdir / "unfinished"
    with pytest.raises(TrainingInterrupted):
        tiny_estimator().fit(manifold_table(240), callback=SignalAt(3), checkpoint_dir=out / "checkpoints")
    result = run("train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--out", out)
    assert_one_line_error(result, "unfinished run (step 3 of 30)", "--resume", "--force")


def test_resume_without_a_checkpoint_is_one_line_and_exit_code_2(workdir):
    result = run(
        "train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--out", workdir / "none", "--resume"
    )
    assert_one_line_error(result, "no checkpoint to resume", "without --resume")
    assert not (workdir / "none").exists()


@pytest.mark.parametrize(
    "change, fragment",
    [(["--lr", "0.01"], "other settings (lr 0.003 -> 0.01)"), (["--val-fraction", "0.2"], "other data")],
)
def test_resume_refuses_a_checkpoint_made_with_other_settings_or_data(workdir, tmp_path, change, fragment):
    args = ["train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--out", tmp_path / "run"]
    with pytest.MonkeyPatch.context() as patch:
        feed_training_to(patch, SignalAt(2))
        assert run(*args).exit_code == 130
    result = run(*args, *change, "--resume")
    assert_one_line_error(result, fragment, "--force")


@pytest.mark.parametrize("damage", ["truncated", "altered", "pickle", "empty"])
def test_resume_refuses_a_damaged_or_foreign_checkpoint_in_one_line(tmp_path, damage):
    table = manifold_table(240)
    with pytest.raises(TrainingInterrupted):
        tiny_estimator().fit(table, callback=SignalAt(3), checkpoint_dir=tmp_path)
    latest = tmp_path / artifact.LATEST
    data = latest.read_bytes()
    if damage == "truncated":
        latest.write_bytes(data[: len(data) // 2])
    elif damage == "altered":
        latest.write_bytes(data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:])
    elif damage == "pickle":
        latest.write_bytes(pickle.dumps({"step": 3}))
    else:
        latest.write_bytes(b"")
    with pytest.raises(UserError, match="checkpoint") as refused:
        tiny_estimator().fit(table, checkpoint_dir=tmp_path, resume=True)
    assert "\n" not in str(refused.value) and "start over with overwrite=True (without resume)" in str(refused.value)
