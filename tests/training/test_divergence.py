"""A non-finite step is skipped and counted; a run that keeps diverging stops, keeps its best weights and says
what to change; no NaN weight is ever written.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from funnelcli import artifact
from funnelcli.estimator import FunnelDensity
from funnelcli.models.flow import FunnelFlow
from funnelcli.training import TrainingDiverged
from tests.helpers import RECIPE, assert_one_line_error, manifold_table, run, tiny_estimator

pytestmark = pytest.mark.usefixtures("one_thread")


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
    fitted = tiny_estimator(steps=20).fit(manifold_table(200))
    assert fitted.summary_["skipped_nonfinite_steps"] == 3 and not fitted.summary_["diverged"]
    assert all(torch.isfinite(t).all() for t in fitted.model_.state_dict().values())


def test_a_step_with_a_finite_loss_but_an_infinite_gradient_is_skipped_and_changes_no_weight():
    from funnelcli.models.recipe import TrainingSettings
    from funnelcli.training import fit as train

    table = manifold_table(200)
    fitted = tiny_estimator(steps=1).fit(table)  # builds the model; now train it once more with a poisoned gradient
    model = fitted.model_
    before = {k: v.clone() for k, v in model.state_dict().items()}
    parameter = next(model.parameters())
    parameter.register_hook(lambda grad: grad * float("inf"))
    data = torch.tensor(table.to_numpy(dtype=np.float32))
    # No fallback: the weights after the skipped step must be the ones before it, not a Gaussian that beats them.
    summary = train(model, data, data, TrainingSettings(steps=1, eval_every=1, fallback="none"), max_nonfinite=5)
    assert summary.skipped_nonfinite_steps == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_too_many_non_finite_steps_in_a_row_stop_training_with_the_best_weights_kept(nan_after):
    nan_after(15)
    model = tiny_estimator(steps=100, patience=0, fallback="none")  # the best weights are trained ones
    with pytest.raises(TrainingDiverged, match="--lr.*grad_clip.*tail_bound.*standardised") as stop:
        model.fit(manifold_table(200), max_nonfinite=4)
    assert "4 steps in a row at step 18" in str(stop.value)
    assert model.summary_["diverged"] and model.summary_["best_step"] == 10
    assert all(torch.isfinite(t).all() for t in model.model_.state_dict().values())
    assert np.isfinite(model.score_samples(manifold_table(20, seed=3))).all()


def test_a_diverging_cli_run_exits_1_saying_what_to_change_and_saves_the_best_model(workdir, nan_after):
    nan_after(25)
    out = workdir / "diverged"
    recipe = workdir / "no-fallback.toml"  # the best weights are trained ones, not the Gaussian fallback
    recipe.write_text(RECIPE + 'fallback = "none"\n')
    result = run("train", workdir / "data.csv", "--recipe", recipe, "--out", out, "--max-nonfinite", "3", "-q")
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
