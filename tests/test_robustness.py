"""Nothing lost, nothing run, nothing silent.

Interrupted training writes checkpoints and resumes to the bit; a diverging run keeps its best model; a model
folder or checkpoint that is missing, damaged, foreign or hostile is refused in one line and never runs code;
outputs appear whole or not at all; and the same seed gives the same bytes.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from funnelcli import artifact
from funnelcli.cli import app
from funnelcli.errors import UserError
from funnelcli.estimator import FunnelDensity
from funnelcli.models.flow import FunnelFlow
from funnelcli.training import TrainingDiverged, TrainingInterrupted
from tests.conftest import manifold_table, tiny_recipe

ROOT = Path(__file__).resolve().parents[1]

#: A recipe that trains in milliseconds per step: every test here is about behaviour, not about fit quality.
RECIPE = """
family = "f-nsf"
description = "tiny, for robustness tests"
[model]
flow_steps = 2
hidden_features = 16
residual_blocks = 1
bins = 4
funnel_level = 0
ansatz = "gaussian"
ansatz_hidden_features = 8
ansatz_layers = 1
[training]
batch_size = 64
steps = 30
eval_every = 10
lr = 3e-3
"""

runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine threads that wait for each other lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str, code: int = 2) -> str:
    """Exit ``code``, one ``error:`` line on stderr holding every fragment, no traceback, nothing on stdout."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def write_recipe(folder: Path, text: str = RECIPE) -> Path:
    path = folder / "tiny.toml"
    path.write_text(text)
    return path


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def estimator(**params) -> FunnelDensity:
    recipe = tiny_recipe("f-nsf", ansatz="gaussian", dropout=0.1)
    params = {"steps": 30, "eval_every": 10, **params}
    return FunnelDensity(recipe, device="cpu", **params)


def table_with_an_integer_column(n: int = 240):
    """The manifold table plus a count column, so that training also draws dequantization noise."""
    table = manifold_table(n)
    table["count"] = np.random.default_rng(5).poisson(3.0, size=n).astype(float)
    return table


def feed_training_to(monkeypatch, callback) -> None:
    """Make `funnel train` (in this process) hand every training record to ``callback``."""
    from funnelcli.cli import train as train_module

    class Progress:
        def __init__(self, **kwargs):
            pass

        def __enter__(self):
            return callback

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(train_module, "_progress", Progress)


class SignalAt:
    """A training callback that sends ``signum`` to this process once step ``step`` is done."""

    def __init__(self, step: int, signum: int = signal.SIGINT):
        self.step, self.signum = step, signum

    def __call__(self, record: dict) -> None:
        if record["step"] == self.step:
            # Only into training's own handler: a signal that reached pytest would stop the whole session.
            assert signal.getsignal(self.signum) not in (signal.SIG_DFL, signal.default_int_handler), "no handler"
            os.kill(os.getpid(), self.signum)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("robust")
    write_recipe(root)
    manifold_table(300).to_csv(root / "data.csv", index=False)
    return root


@pytest.fixture(scope="module")
def model(workdir) -> Path:
    result = run("train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--out", workdir / "model", "-q")
    assert result.exit_code == 0, result.output
    return workdir / "model"


def copy_model(model: Path, to: Path) -> Path:
    to.mkdir()
    for file in model.iterdir():
        (to / file.name).write_bytes(file.read_bytes())
    return to


# -- a real SIGINT to a real `funnel train` process, then --resume ----------------------------------------------


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
    common = ["data.csv", "--recipe", "tiny.toml", "--steps", "500", "--device", "cpu", "--quiet"]
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


# -- interruption and resume in process ------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_resuming_restores_weights_adam_schedule_rng_and_batches_exactly(tmp_path, schedule):
    table = table_with_an_integer_column()  # dequantization noise, dropout and batches all draw random numbers
    whole = estimator(schedule=schedule).fit(table)
    with pytest.raises(TrainingInterrupted) as stop:
        estimator(schedule=schedule).fit(table, callback=SignalAt(13), checkpoint_dir=tmp_path)
    assert (stop.value.step, stop.value.exit_code) == (13, 130)
    resumed = estimator(schedule=schedule).fit(table, checkpoint_dir=tmp_path, resume=True)
    assert same_weights(resumed.model_, whole.model_)
    assert resumed.summary_["resumed_at_step"] == 13 and resumed.summary_["best_step"] == whole.summary_["best_step"]
    assert [r["val_log_prob"] for r in resumed.history_] == [r["val_log_prob"] for r in whole.history_]


def test_a_run_killed_without_warning_resumes_from_its_last_periodic_checkpoint(tmp_path):
    table = manifold_table(240)
    whole = estimator().fit(table)

    def crash(record):
        if record["step"] == 17:
            raise RuntimeError("the machine went away")

    with pytest.raises(RuntimeError):
        estimator().fit(table, callback=crash, checkpoint_dir=tmp_path, checkpoint_every=7)
    resumed = estimator().fit(table, checkpoint_dir=tmp_path, resume=True)
    assert resumed.summary_["resumed_at_step"] == 14
    assert same_weights(resumed.model_, whole.model_)


def test_a_checkpoint_is_safetensors_with_adam_moments_rng_states_and_the_step_in_its_json_header(tmp_path):
    with pytest.raises(TrainingInterrupted):
        estimator().fit(manifold_table(240), callback=SignalAt(5), checkpoint_dir=tmp_path)
    with safe_open(str(tmp_path / artifact.LATEST), framework="pt") as file:
        names = set(file.keys())
        document = json.loads(file.metadata()["funnelcli"])
    assert {"optimizer/0/exp_avg", "optimizer/0/exp_avg_sq", "optimizer/0/step"} <= names
    assert {"rng/torch", "rng/batches", "loop/order"} <= names
    assert any(name.startswith("model/") for name in names) and any(name.startswith("best/") for name in names)
    assert (document["step"], document["steps"], document["interrupted_by"]) == (5, 30, "SIGINT")
    assert document["scheduler"]["last_epoch"] == 5 and document["format"] == "funnelcli-checkpoint"


def test_sigterm_exits_143_with_the_resume_command(workdir, monkeypatch):
    feed_training_to(monkeypatch, SignalAt(4, signal.SIGTERM))
    out = workdir / "terminated"
    result = run("train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--out", out, "--seed", "2")
    assert result.exit_code == 143, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted: SIGTERM at step 4 of 30"), lines
    assert lines[0].endswith(f"--seed 2 --output {out} --resume")
    assert (out / "checkpoints" / artifact.LATEST).is_file() and not (out / artifact.METADATA).exists()


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
        estimator().fit(manifold_table(240), callback=SignalAt(3), checkpoint_dir=out / "checkpoints")
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
        estimator().fit(table, callback=SignalAt(3), checkpoint_dir=tmp_path)
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
        estimator().fit(table, checkpoint_dir=tmp_path, resume=True)
    assert "\n" not in str(refused.value) and "--force" in str(refused.value)


def test_training_leaves_the_callers_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    estimator(steps=3).fit(manifold_table(100))
    assert torch.equal(torch.rand(3), expected)


# -- divergence ------------------------------------------------------------------------------------------------


@pytest.fixture
def nan_after(monkeypatch):
    """Make every training-mode log-likelihood NaN from the given training step on (validation stays sane)."""

    def install(first_bad_step: int):
        original = FunnelFlow.log_prob
        calls = {"train": 0}

        def log_prob(self, x):
            value = original(self, x)
            if self.training:
                calls["train"] += 1
                if calls["train"] >= first_bad_step:
                    return value * float("nan")
            return value

        monkeypatch.setattr(FunnelFlow, "log_prob", log_prob)

    return install


def test_a_non_finite_loss_skips_the_step_and_is_counted(monkeypatch):
    original = FunnelFlow.log_prob
    calls = {"n": 0}

    def log_prob(self, x):
        value = original(self, x)
        if self.training:
            calls["n"] += 1
            if calls["n"] in (4, 9, 10):
                return value * float("inf")
        return value

    monkeypatch.setattr(FunnelFlow, "log_prob", log_prob)
    fitted = estimator(steps=20).fit(manifold_table(200))
    assert fitted.summary_["skipped_nonfinite_steps"] == 3 and not fitted.summary_["diverged"]
    assert all(torch.isfinite(t).all() for t in fitted.model_.state_dict().values())


def test_a_step_with_a_finite_loss_but_an_infinite_gradient_is_skipped_and_changes_no_weight():
    from funnelcli.models.recipe import TrainingSettings
    from funnelcli.training import fit as train

    table = manifold_table(200)
    fitted = estimator(steps=1).fit(table)  # builds the model; now train it once more with a poisoned gradient
    model = fitted.model_
    before = {k: v.clone() for k, v in model.state_dict().items()}
    parameter = next(model.parameters())
    parameter.register_hook(lambda grad: grad * float("inf"))
    data = torch.tensor(table.to_numpy(dtype=np.float32))
    summary = train(model, data, data, TrainingSettings(steps=1, eval_every=1), max_nonfinite=5)
    assert summary.skipped_nonfinite_steps == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_too_many_non_finite_steps_in_a_row_stop_training_with_the_best_weights_kept(nan_after):
    nan_after(15)
    model = estimator(steps=100, patience=0)
    with pytest.raises(TrainingDiverged, match="--lr.*grad_clip.*tail_bound.*standardised") as stop:
        model.fit(manifold_table(200), max_nonfinite=4)
    assert "4 steps in a row at step 18" in str(stop.value)
    assert model.summary_["diverged"] and model.summary_["best_step"] == 10
    assert all(torch.isfinite(t).all() for t in model.model_.state_dict().values())
    assert np.isfinite(model.score_samples(manifold_table(20, seed=3))).all()


def test_a_diverging_cli_run_exits_1_saying_what_to_change_and_saves_the_best_model(workdir, nan_after):
    nan_after(25)
    out = workdir / "diverged"
    result = run(
        "train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--out", out, "--max-nonfinite", "3", "-q"
    )
    line = assert_one_line_error(result, "training diverged", "3 steps in a row at step 27", code=1)
    assert all(word in line for word in ("--lr", "grad_clip", "tail_bound", "standardised", f"saved to {out}"))
    saved = FunnelDensity.load(out, device="cpu")
    assert saved.summary_["diverged"] and saved.summary_["best_step"] in (10, 20)
    assert not (out / "checkpoints").exists()


def test_a_run_that_diverges_before_any_validation_writes_nothing(workdir, nan_after):
    nan_after(1)
    out = workdir / "diverged-early"
    result = run(
        "train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--out", out, "--max-nonfinite", "2", "-q"
    )
    assert_one_line_error(result, "training diverged", "nothing was written", code=1)
    assert not out.exists()


def test_no_nan_weight_is_ever_written_to_a_model_folder_or_a_checkpoint(tmp_path):
    weights = {"w": torch.tensor([1.0, float("nan")])}
    with pytest.raises(ValueError, match="NaN"):
        artifact.write_folder(tmp_path / "model", weights, {})
    with pytest.raises(ValueError, match="NaN"):
        artifact.write_checkpoint(tmp_path / "ck" / artifact.LATEST, weights, {})
    assert not (tmp_path / "model").exists() and not list(tmp_path.rglob("*.safetensors"))


# -- model folder integrity, and files that would run code ------------------------------------------------------


class Payload:
    """Unpickling this creates ``marker``: what a hostile model file would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


def test_the_hostile_payload_really_runs_code_when_unpickled(tmp_path):
    pickle.loads(hostile(tmp_path / "proof"))  # the test below is only meaningful if this creates the file
    assert (tmp_path / "proof").exists()


@pytest.mark.parametrize("checksum", ["kept", "updated to the pickle's"])
def test_a_pickle_in_place_of_the_weights_is_refused_and_never_run(model, tmp_path, checksum):
    folder = copy_model(model, tmp_path / "model")
    marker = tmp_path / "pwned"
    (folder / artifact.WEIGHTS).write_bytes(hostile(marker))
    if checksum != "kept":
        metadata = json.loads((folder / artifact.METADATA).read_text())
        metadata["weights_sha256"] = artifact.sha256(folder / artifact.WEIGHTS)
        (folder / artifact.METADATA).write_text(json.dumps(metadata))
    result = run("score", folder, model.parent / "data.csv")
    assert_one_line_error(result, str(folder / artifact.WEIGHTS))
    with pytest.raises(UserError):
        FunnelDensity.load(folder)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["model.pt", "model.pkl", "weights.pth", "estimator.joblib"])
def test_a_pickle_beside_the_weights_is_never_opened(model, tmp_path, name):
    folder = copy_model(model, tmp_path / "model")
    marker = tmp_path / "pwned"
    (folder / name).write_bytes(hostile(marker))
    result = run("score", folder, model.parent / "data.csv", "--json")
    assert result.exit_code == 0, result.output
    assert run("info", folder).exit_code == 0
    assert not marker.exists()


def test_a_pickle_in_place_of_a_checkpoint_is_refused_and_never_run(workdir, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    marker = tmp_path / "pwned"
    (out / "checkpoints" / artifact.LATEST).write_bytes(hostile(marker))
    result = run("train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--out", out, "--resume")
    assert_one_line_error(result, "checkpoints/latest.safetensors", "did not write")
    assert not marker.exists()


def test_loading_models_and_resuming_runs_never_unpickle(model, tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("something unpickled")

    with pytest.raises(TrainingInterrupted):
        estimator().fit(manifold_table(240), callback=SignalAt(3), checkpoint_dir=tmp_path)
    for target, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(target, name, forbidden)
    FunnelDensity.load(model, device="cpu")
    estimator().fit(manifold_table(240), checkpoint_dir=tmp_path, resume=True)


def test_no_module_of_funnelcli_unpickles_or_uses_torch_save_and_load():
    # Two exceptions. data/safe_pickle.py holds the restricted unpickler, whose find_class refuses every global
    # not on an explicit list; it must never call pickle's own loaders. data/maf.py may let pandas unpickle the
    # GAS archive (raw data that exists only as a pandas pickle), in one function, only under --trust-pickle.
    allowed = {
        ("data/maf.py", "read_pickle"),
        ("data/safe_pickle.py", "import pickle"),
        ("data/safe_pickle.py", "pickle"),
    }
    pattern = re.compile(r"\b(import pickle|from pickle|pickle\.|torch\.load|torch\.save|read_pickle|joblib|dill)\b")
    found = set()
    texts = {}
    for path in (ROOT / "funnelcli").rglob("*.py"):
        relative = str(path.relative_to(ROOT / "funnelcli"))
        texts[relative] = path.read_text(encoding="utf-8")
        for match in pattern.finditer(texts[relative]):
            found.add((relative, match.group(1).rstrip(".")))
    assert found <= allowed, found - allowed
    restricted = texts["data/safe_pickle.py"]
    assert "class RestrictedUnpickler(pickle.Unpickler)" in restricted and "def find_class" in restricted
    assert not re.search(r"pickle\.(?:loads?\b|_Unpickler\b|Unpickler\()", restricted), "it uses pickle's own loader"
    maf = texts["data/maf.py"]
    assert maf.count("read_pickle") == 1
    function = maf[maf.index("def _unpickle_trusted") :].split("\ndef ", 1)[0]
    assert "read_pickle" in function
    assert maf.count("_unpickle_trusted(") == 2, "defined once, called once"
    assert "_unpickle_trusted(" in maf[maf.index("if not trust_pickle:") :][:600], "read only under --trust-pickle"


def _set_json(folder: Path, **changes):
    metadata = json.loads((folder / artifact.METADATA).read_text())
    metadata.update(changes)
    (folder / artifact.METADATA).write_text(json.dumps(metadata))


def _rewrite_weights(folder: Path, tensors: dict):
    """Replace the weights, keeping the record of model.json their header carries, and update their checksum."""
    with safe_open(str(folder / artifact.WEIGHTS), framework="pt") as file:
        record = file.metadata()
    save_file(tensors, str(folder / artifact.WEIGHTS), metadata=record)
    _set_json(folder, weights_sha256=artifact.sha256(folder / artifact.WEIGHTS))


def _other_recipes_weights(folder: Path, workdir: Path):
    other = workdir / "other-recipe"
    if not other.exists():
        (workdir / "other").mkdir()
        recipe = write_recipe(workdir / "other", RECIPE.replace("hidden_features = 16", "hidden_features = 24"))
        args = ["train", workdir / "data.csv", "--recipe", recipe, "--out", other, "--steps", "2", "-q"]
        assert run(*args).exit_code == 0
    (folder / artifact.WEIGHTS).write_bytes((other / artifact.WEIGHTS).read_bytes())


def _nan_weights(folder: Path, workdir: Path):
    tensors = load_file(str(folder / artifact.WEIGHTS))
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
    tensors[name][0] = float("nan")
    _rewrite_weights(folder, tensors)


DAMAGE = {
    "weights missing": (lambda f, w: (f / artifact.WEIGHTS).unlink(), ["model.safetensors is missing"]),
    "weights truncated": (
        lambda f, w: (f / artifact.WEIGHTS).write_bytes((f / artifact.WEIGHTS).read_bytes()[:100]),
        ["does not match the checksum", "truncated"],
    ),
    "one byte of the weights altered": (
        lambda f, w: (f / artifact.WEIGHTS).write_bytes(
            (lambda b: b[:-1] + bytes([b[-1] ^ 1]))((f / artifact.WEIGHTS).read_bytes())
        ),
        ["does not match the checksum", "altered"],
    ),
    "weights of another recipe": (_other_recipes_weights, ["does not match the checksum", "replaced"]),
    "weights of another recipe with their checksum": (
        lambda f, w: (_other_recipes_weights(f, w), _set_json(f, weights_sha256=artifact.sha256(f / artifact.WEIGHTS))),
        ["do not fit the recipe", "retrain"],
    ),
    "NaN weights with their checksum": (_nan_weights, ["NaN", "retrain"]),
    "wrong format version": (lambda f, w: _set_json(f, format_version=99), ["format version 99", "retrain"]),
    "model.json missing": (lambda f, w: (f / artifact.METADATA).unlink(), ["not a model folder"]),
    "model.json not JSON": (lambda f, w: (f / artifact.METADATA).write_text("{oops"), ["not valid JSON", "retrain"]),
    "no checksum recorded": (lambda f, w: _set_json(f, weights_sha256=None), ["no weights_sha256", "retrain"]),
    "scaler of another width": (
        lambda f, w: _set_json(f, scaler={"mean": [0.0], "std": [1.0]}),
        ["scaler", "does not fit", "retrain"],
    ),
    "metrics.jsonl damaged": (lambda f, w: (f / artifact.METRICS).write_text("{oops\n"), ["metrics.jsonl", "retrain"]),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_model_folder_is_refused_in_one_line_with_exit_code_2(model, workdir, tmp_path, damage):
    folder = copy_model(model, tmp_path / "model")
    make, fragments = DAMAGE[damage]
    make(folder, workdir)
    out = tmp_path / "scores.csv"
    result = run("score", folder, workdir / "data.csv", "-o", out)
    assert_one_line_error(result, *fragments)
    assert not out.exists()


# -- outputs ---------------------------------------------------------------------------------------------------


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


def test_a_model_folder_is_as_readable_as_any_folder_the_user_makes(model):
    mask = os.umask(0o022)
    os.umask(mask)
    assert model.stat().st_mode & 0o777 == 0o777 & ~mask


# -- determinism -----------------------------------------------------------------------------------------------


def test_the_same_seed_data_and_device_give_byte_identical_weights(workdir, tmp_path):
    recipe = write_recipe(tmp_path, RECIPE.replace('ansatz = "gaussian"', 'ansatz = "gaussian"\ndropout = 0.1'))
    outputs = []
    for name in ("first", "second"):
        torch.rand(7)  # whatever the process did before must not matter
        out = tmp_path / name
        result = run("train", workdir / "data.csv", "--recipe", recipe, "--out", out, "--device", "cpu", "-q")
        assert result.exit_code == 0, result.output
        outputs.append((out / artifact.WEIGHTS).read_bytes())
    assert outputs[0] == outputs[1]


def test_another_seed_gives_other_weights(workdir, tmp_path):
    weights = []
    for seed in ("0", "1"):
        out = tmp_path / seed
        args = ["train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--out", out, "--steps", "3"]
        assert run(*args, "--seed", seed, "-q").exit_code == 0
        weights.append((out / artifact.WEIGHTS).read_bytes())
    assert weights[0] != weights[1]
