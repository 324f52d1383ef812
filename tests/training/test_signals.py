"""SIGINT and SIGTERM stop training after the current step: exit 130 or 143, checkpoints kept, and one line
that gives the command which resumes the run.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from funnelcli import artifact
from tests.helpers import SignalAt, feed_training_to, manifold_table, run, write_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


# -- a real SIGINT to a real `funnel train` process, then --resume -----------------------------------------------------


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """An uninterrupted run, and the same run stopped by SIGINT after its first checkpoint, then resumed.

    The two runs start together as `python -m funnelcli train` processes (one thread each, so that both do the
    same arithmetic); the interrupted one is sent SIGINT as soon as its first periodic checkpoint appears.
    """
    root = tmp_path_factory.mktemp("sigint")
    write_recipe(root)
    manifold_table(400).to_csv(root / "data.csv", index=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    common = ["data.csv", "--recipe", "tiny.toml", "--steps", "120", "--device", "cpu", "--quiet"]
    command = [sys.executable, "-m", "funnelcli", "train"]

    def start(*extra):
        return subprocess.Popen(
            [*command, *common, *extra], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    whole = start("--out", "whole")
    stopped = start("--out", "stopped", "--checkpoint-every", "5")
    latest = root / "stopped" / "checkpoints" / artifact.LATEST
    deadline = time.monotonic() + 90
    while not latest.exists() and stopped.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    stopped.send_signal(signal.SIGINT)
    stopped_out, stopped_err = stopped.communicate(timeout=90)
    whole_out, whole_err = whole.communicate(timeout=120)
    assert whole.returncode == 0, whole_err
    files_after_interrupt = sorted(str(p.relative_to(root / "stopped")) for p in (root / "stopped").rglob("*"))

    line = stopped_err.strip().splitlines()[-1] if stopped_err.strip() else ""
    resume_words = shlex.split(line.split("resume with: ", 1)[1]) if "resume with: " in line else []
    resumed = None
    if resume_words[:2] == ["funnel", "train"]:
        resumed = subprocess.run(
            [*command, *resume_words[2:]], cwd=root, env=env, capture_output=True, text=True, timeout=120
        )
    return {
        "root": root,
        "code": stopped.returncode,
        "stdout": stopped_out,
        "stderr": stopped_err,
        "files": files_after_interrupt,
        "resume": resume_words,
        "resumed": resumed,
    }


def test_sigint_during_training_exits_130_with_one_line_that_gives_the_resume_command(interrupted):
    assert interrupted["code"] == 130, interrupted["stderr"]
    lines = [line for line in interrupted["stderr"].splitlines() if line.strip()]
    assert len(lines) == 1 and "SIGINT" in lines[0] and "resume with: funnel train data.csv" in lines[0], lines
    assert interrupted["resume"][-3:] == ["--output", "stopped", "--resume"]
    assert interrupted["stdout"] == ""


def test_sigint_leaves_the_latest_and_best_checkpoints_and_no_half_written_model(interrupted):
    assert interrupted["files"] == ["checkpoints", "checkpoints/best.safetensors", "checkpoints/latest.safetensors"]


def test_the_printed_resume_command_finishes_the_run(interrupted):
    resumed = interrupted["resumed"]
    assert resumed is not None and resumed.returncode == 0, resumed and resumed.stderr
    assert "resumed at step" in resumed.stdout
    assert sorted(p.name for p in (interrupted["root"] / "stopped").iterdir()) == [
        "metrics.jsonl",
        "model.json",
        "model.safetensors",
    ]


def test_an_interrupted_and_resumed_run_ends_with_the_bytes_of_an_uninterrupted_one(interrupted):
    assert interrupted["resumed"] is not None and interrupted["resumed"].returncode == 0
    root = interrupted["root"]
    assert (root / "stopped" / "model.safetensors").read_bytes() == (root / "whole" / "model.safetensors").read_bytes()


# -- SIGTERM to `funnel train` in this process -------------------------------------------------------------------------


def test_sigterm_exits_143_with_the_resume_command(workdir, monkeypatch):
    feed_training_to(monkeypatch, SignalAt(4, signal.SIGTERM))
    out = workdir / "terminated"
    result = run("train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--out", out, "--seed", "2")
    assert result.exit_code == 143, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted: SIGTERM at step 4 of 30"), lines
    assert lines[0].endswith(f"--seed 2 --output {out} --resume")
    assert (out / "checkpoints" / artifact.LATEST).is_file() and not (out / artifact.METADATA).exists()
