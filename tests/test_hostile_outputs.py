"""Hostile outputs: funnelcli removes only what it wrote, checks every output path before it works, replaces an
output only with --force, leaves the previous file or nothing when a write fails or a signal arrives, and never
lets an output column take the name of another.

Each case sets up a folder, runs the real command, and checks the exit code, the one-line message and the file
system afterwards: nothing of the user's deleted or renamed, no output and no temporary file left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from funnelcli import artifact
from funnelcli.errors import UserError
from funnelcli.estimator import FunnelDensity
from tests.helpers import assert_one_line_error, copy_model, manifold_table, run

# From conftest.py: workdir (data and the tiny recipe), model (trained from them once for this module), and
# nan_after (losses that turn NaN after a given step).
pytestmark = pytest.mark.usefixtures("one_thread")


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a folder): what "the file system as it was" means."""
    return {
        str(path.relative_to(folder)): (path.read_bytes() if path.is_file() else None)
        for path in sorted(folder.rglob("*"))
    }


@pytest.fixture
def place(tmp_path, workdir) -> Path:
    """A fresh folder holding a copy of the data and the recipe; the case's own changes go in it."""
    for name in ("data.csv", "tiny.toml"):
        (tmp_path / name).write_bytes((workdir / name).read_bytes())
    return tmp_path


def train(place: Path, *args) -> object:
    return run("train", place / "data.csv", "--recipe", place / "tiny.toml", "-q", *args)


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if training starts: a bad output must be found before the hours of work."""

    def fit(*args, **kwargs):
        raise AssertionError("training started before the output was checked")

    monkeypatch.setattr(FunnelDensity, "fit", fit)


# -- the deletion rule: --force replaces only what funnelcli wrote -------------------------------------------


def test_force_refuses_a_folder_holding_the_training_data_and_deletes_nothing(place):
    folder = place / "p"
    folder.mkdir()
    (folder / "d.csv").write_bytes((place / "data.csv").read_bytes())
    (folder / "notes.txt").write_text("keep")
    before = snapshot(place)
    line = assert_one_line_error(
        run("train", folder / "d.csv", "--recipe", place / "tiny.toml", "-q", "--out", folder, "--force")
    )
    assert "input" in line
    assert snapshot(place) == before


@pytest.mark.parametrize("force", [False, True], ids=["without-force", "with-force"])
def test_a_folder_with_a_file_funnelcli_did_not_write_is_refused_naming_it(place, force, no_training):
    folder = place / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    before = snapshot(place)
    line = assert_one_line_error(train(place, "--out", folder, *(["--force"] if force else [])))
    assert "notes.txt" in line and "did not write" in line
    assert snapshot(place) == before


def test_a_model_folder_with_a_foreign_file_in_its_checkpoints_is_refused_even_with_force(place, model, no_training):
    folder = copy_model(model, place / "m")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "notes").write_text("keep")
    before = snapshot(place)
    line = assert_one_line_error(train(place, "--out", folder, "--force"))
    assert "checkpoints/notes" in line
    assert snapshot(place) == before


def test_a_model_folder_with_a_foreign_subfolder_is_refused_even_with_force(place, model, no_training):
    folder = copy_model(model, place / "m")
    (folder / "plots").mkdir()
    before = snapshot(place)
    assert "plots" in assert_one_line_error(train(place, "--out", folder, "--force"))
    assert snapshot(place) == before


def test_a_file_named_like_a_model_file_but_without_the_marker_is_not_replaced(place, no_training):
    folder = place / "lookalike"
    folder.mkdir()
    (folder / "model.json").write_text('{"my": "own file"}')
    before = snapshot(place)
    assert "model.json (without funnelcli's marker)" in assert_one_line_error(train(place, "--out", folder, "--force"))
    assert snapshot(place) == before


@pytest.mark.parametrize("out", [".", ".."])
def test_force_on_the_current_or_parent_folder_is_refused_and_renames_nothing(place, out, monkeypatch, no_training):
    inner = place / "inner"
    inner.mkdir()
    (inner / "data.csv").write_bytes((place / "data.csv").read_bytes())
    monkeypatch.chdir(inner)
    before = snapshot(place)
    assert_one_line_error(run("train", "data.csv", "--recipe", place / "tiny.toml", "-q", "--out", out, "--force"))
    assert snapshot(place) == before


def test_force_replaces_a_model_folder_that_funnelcli_wrote(place, model):
    folder = copy_model(model, place / "m")
    old = (folder / artifact.WEIGHTS).read_bytes()
    result = train(place, "--out", folder, "--force", "--seed", "7")
    assert result.exit_code == 0, result.output
    assert (folder / artifact.WEIGHTS).read_bytes() != old
    assert sorted(path.name for path in place.iterdir() if path.name.startswith(".")) == []


def test_an_existing_empty_folder_is_used_without_force(place):
    folder = place / "empty"
    folder.mkdir()
    result = train(place, "--out", folder)
    assert result.exit_code == 0, result.output
    assert (folder / artifact.METADATA).is_file()


def test_writing_a_model_refuses_a_folder_that_gained_a_foreign_file_while_it_trained(place, model):
    folder = copy_model(model, place / "m")
    weights, metadata = artifact.read_folder(folder)
    (folder / "added-while-training.txt").write_text("keep")
    before = snapshot(place)
    metadata = {key: value for key, value in metadata.items() if key != "weights_sha256"}
    with pytest.raises(UserError, match="added-while-training.txt"):
        artifact.write_folder(folder, weights, metadata, overwrite=True)
    assert snapshot(place) == before


def test_resume_with_a_foreign_file_in_the_run_folder_is_refused_before_training(place, no_training):
    folder = place / "run"
    artifact.write_checkpoint(folder / "checkpoints" / artifact.LATEST, {"w": torch.zeros(2)}, {"step": 5})
    (folder / "extra.txt").write_text("keep")
    before = snapshot(place)
    assert "extra.txt" in assert_one_line_error(train(place, "--out", folder, "--resume"))
    assert snapshot(place) == before


def _raw_power(folder: Path) -> Path:
    raw = folder / "raw"
    raw.mkdir()
    np.save(raw / "data.npy", np.random.default_rng(0).normal(size=(3000, 7)))
    return raw


@pytest.mark.parametrize("where", ["raw-folder", "raw-file", "parent", "inside"])
def test_prepare_never_writes_onto_into_or_around_its_raw_files(place, where):
    raw = _raw_power(place)
    out = {"raw-folder": raw, "raw-file": raw / "data.npy", "parent": place, "inside": raw / "prepared"}[where]
    before = snapshot(place)
    line = assert_one_line_error(run("data", "prepare", "power", raw, "-o", out, "--force"))
    assert "input" in line
    assert snapshot(place) == before


def test_prepare_refuses_a_folder_holding_foreign_files_even_with_force(place):
    raw = _raw_power(place)
    out = place / "prepared"
    out.mkdir()
    (out / "train.parquet").write_text("not ours")
    before = snapshot(place)
    assert_one_line_error(run("data", "prepare", "power", raw, "-o", out, "--force"), "marker")
    assert snapshot(place) == before


def test_a_report_folder_with_a_foreign_file_is_refused_even_with_force(place, model):
    folder = place / "report"
    folder.mkdir()
    (folder / "index.html").write_text("<html>my own page</html>")
    before = snapshot(place)
    assert_one_line_error(run("report", model, place / "data.csv", "-o", folder, "--force"), "marker")
    assert snapshot(place) == before


@pytest.mark.parametrize(
    ("output", "relation"), [("m", "is the input"), ("m/report", "lies inside the input"), (".", "contains the input")]
)
def test_a_report_never_goes_onto_into_or_around_an_input(place, model, output, relation):
    folder = copy_model(model, place / "m")
    before = snapshot(place)
    assert_one_line_error(run("report", folder, place / "data.csv", "-o", place / output, "--force"), relation)
    assert snapshot(place) == before


# -- a diverged run removes only what it wrote ---------------------------------------------------------------


def test_a_run_that_diverges_early_leaves_the_checkpoints_of_an_earlier_run_alone(place, nan_after):
    earlier = place / "run"
    artifact.write_checkpoint(earlier / "checkpoints" / artifact.LATEST, {"w": torch.zeros(2)}, {"step": 5})
    before = snapshot(earlier)
    nan_after(1)
    result = train(place, "--out", earlier, "--force", "--max-nonfinite", "2")
    assert_one_line_error(result, "training diverged", "nothing was written", code=1)
    assert snapshot(earlier) == before


def test_a_run_that_diverges_early_takes_away_the_checkpoints_it_wrote_and_the_folder_it_made(place, nan_after):
    nan_after(3)
    out = place / "new"
    result = train(place, "--out", out, "--max-nonfinite", "2", "--checkpoint-every", "1")
    assert_one_line_error(result, "training diverged", "nothing was written", code=1)
    assert not out.exists()


# -- output paths are checked before any work ----------------------------------------------------------------


def test_an_out_folder_under_a_file_is_refused_before_training(place, no_training):
    before = snapshot(place)
    assert "is a file" in assert_one_line_error(train(place, "--out", place / "data.csv" / "sub"))
    assert snapshot(place) == before


def test_an_out_that_is_a_dangling_symlink_is_refused_before_training(place, no_training):
    (place / "link").symlink_to(place / "nowhere")
    before = snapshot(place)
    assert "dangling" in assert_one_line_error(train(place, "--out", place / "link"))
    assert snapshot(place) == before


def test_an_out_under_a_dangling_symlink_is_refused_before_training(place, no_training):
    (place / "link").symlink_to(place / "nowhere")
    assert "dangling" in assert_one_line_error(train(place, "--out", place / "link" / "model"))


@pytest.mark.parametrize("command", ["score", "encode"])
def test_an_output_under_a_file_is_refused_before_the_model_is_loaded(place, model, command, monkeypatch):
    monkeypatch.setattr(FunnelDensity, "load", lambda *a, **k: pytest.fail("loaded before the output was checked"))
    before = snapshot(place)
    result = run(command, model, place / "data.csv", "-o", place / "data.csv" / "x.csv")
    assert "is a file" in assert_one_line_error(result)
    assert snapshot(place) == before


@pytest.mark.parametrize("command", ["score", "encode"])
def test_an_output_that_is_the_input_table_is_refused_even_with_force(place, model, command):
    before = snapshot(place)
    line = assert_one_line_error(run(command, model, place / "data.csv", "-o", place / "data.csv", "--force"))
    assert "is the input" in line
    assert snapshot(place) == before


@pytest.mark.parametrize("command", ["score", "encode", "sample"])
def test_an_output_inside_the_model_folder_is_refused(place, model, command):
    folder = copy_model(model, place / "m")
    args = ["-n", "5"] if command == "sample" else [place / "data.csv"]
    before = snapshot(place)
    line = assert_one_line_error(run(command, folder, *args, "-o", folder / "out.csv"))
    assert "lies inside the input" in line
    assert snapshot(place) == before


# -- output columns never collide ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def log_prob_model(workdir) -> tuple[Path, Path]:
    """A model of a table one of whose columns is named ``log_prob``."""
    data = workdir / "named.csv"
    manifold_table(300).rename(columns={"d": "log_prob"}).to_csv(data, index=False)
    out = workdir / "named-model"
    result = run("train", data, "--recipe", workdir / "tiny.toml", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    return out, data


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_score_column_named_like_a_model_column_is_refused(log_prob_model, tmp_path, suffix):
    folder, data = log_prob_model
    output = tmp_path / f"s{suffix}"
    line = assert_one_line_error(run("score", folder, data, "-o", output))
    assert "'log_prob'" in line and "--score-column" in line
    assert list(tmp_path.iterdir()) == []


def test_score_column_names_the_scores_and_keeps_the_data_column(log_prob_model, tmp_path):
    folder, data = log_prob_model
    result = run("score", folder, data, "-o", tmp_path / "s.parquet", "--score-column", "score")
    assert result.exit_code == 0, result.output
    written = pd.read_parquet(tmp_path / "s.parquet")
    np.testing.assert_array_equal(written["log_prob"], pd.read_csv(data)["log_prob"])
    assert np.isfinite(written["score"]).all()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_kept_column_named_like_a_latent_column_is_refused(place, model, suffix):
    manifold_table(50).rename(columns={"d": "z0"}).assign(d=1.0).to_csv(place / "z.csv", index=False)
    line = assert_one_line_error(run("encode", model, place / "z.csv", "-o", place / f"out{suffix}", "--keep", "z0"))
    assert "'z0'" in line and "--prefix" in line
    assert not (place / f"out{suffix}").exists()


def test_prefix_names_the_latent_columns_beside_a_kept_z0(place, model):
    manifold_table(50).assign(z0=np.arange(50)).to_csv(place / "z.csv", index=False)
    result = run("encode", model, place / "z.csv", "-o", place / "out.parquet", "--keep", "z0", "--prefix", "u")
    assert result.exit_code == 0, result.output
    assert list(pd.read_parquet(place / "out.parquet").columns)[:2] == ["z0", "u0"]


def test_a_column_kept_twice_is_refused(place, model):
    assert_one_line_error(run("encode", model, place / "data.csv", "-o", place / "o.csv", "--keep", "a,a"), "'a'")
    assert not (place / "o.csv").exists()


# -- an output is replaced only with --force, and a write that fails leaves the previous file or nothing -----


@pytest.mark.parametrize(
    "command",
    [
        lambda model, data, out: ["score", model, data, "-o", out],
        lambda model, data, out: ["encode", model, data, "-o", out],
        lambda model, data, out: ["sample", model, "-n", "5", "-o", out],
    ],
    ids=["score", "encode", "sample"],
)
def test_an_existing_output_is_replaced_only_with_force(model, workdir, tmp_path, command):
    out = tmp_path / "out.csv"
    out.write_text("precious\n")
    result = run(*command(model, workdir / "data.csv", out))
    assert_one_line_error(result, str(out), "--force")
    assert out.read_text() == "precious\n"
    assert run(*command(model, workdir / "data.csv", out), "--force").exit_code == 0
    assert out.read_text() != "precious\n"


def test_an_output_whose_write_fails_midway_leaves_no_file_behind(model, workdir, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    def half_then_fail(self, table, *args, **kwargs):
        Path(self.where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", half_then_fail)
    result = run("score", model, workdir / "data.csv", "-o", tmp_path / "scores.parquet")
    assert_one_line_error(result, "disk full")
    assert list(tmp_path.iterdir()) == []


def test_a_model_whose_save_fails_midway_leaves_no_folder_behind(workdir, tmp_path, monkeypatch):
    def half_then_fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(artifact, "save_file", half_then_fail)
    out = tmp_path / "runs" / "model"
    result = run("train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--out", out, "--steps", "2")
    assert result.exit_code == 1 and "disk full" in result.stderr
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_checkpoint_whose_write_fails_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    path = tmp_path / artifact.LATEST
    artifact.write_checkpoint(path, {"w": torch.ones(3)}, {"step": 1})
    before = path.read_bytes()
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        artifact.write_checkpoint(path, {"w": torch.zeros(3)}, {"step": 2})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [artifact.LATEST]


# -- signals leave the previous file or nothing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "signum", "code"),
    [("score", signal.SIGTERM, 143), ("encode", signal.SIGTERM, 143)],
    ids=["score-sigterm", "encode-sigterm"],
)
def test_a_signal_while_writing_leaves_no_temporary_and_no_output(workdir, model, tmp_path, command, signum, code):
    big = workdir / "big.parquet"  # written and read in a fraction of a CSV's time
    if not big.exists():
        pd.DataFrame(np.random.default_rng(0).normal(size=(400_000, 4)), columns=list("abcd")).to_parquet(big)
    output = tmp_path / "out.parquet"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "funnelcli", command, str(model), str(big), "-o", str(output)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while process.poll() is None and not any(tmp_path.glob(".out.parquet.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the command ended before its output was being written"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert "no output was written" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


# -- smaller ones -------------------------------------------------------------------------------------------


def test_the_weights_file_is_as_readable_as_the_rest_of_the_model_folder(model):
    modes = {path.name: path.stat().st_mode & 0o777 for path in model.iterdir()}
    assert len(set(modes.values())) == 1, modes


def test_a_model_folder_is_as_readable_as_any_folder_the_user_makes(model):
    mask = os.umask(0o022)
    os.umask(mask)
    assert model.stat().st_mode & 0o777 == 0o777 & ~mask
