"""Choosing a recipe on the validation rows: below ``training.choose_rows`` training rows, the recipe and each of
its ``choose_from`` train on the same rows, and the one with the best validation log-likelihood is kept.

A run stopped by a signal resumes to the bit: the candidates before the interrupted one train again (the same
result), the interrupted one continues from its checkpoint, and the rest train as before.
"""

from __future__ import annotations

import copy
import json
import logging
import signal

import numpy as np
import pytest

from funnelcli.errors import UserError
from funnelcli.estimator import FunnelDensity
from funnelcli.estimator_checks import choice_candidates
from funnelcli.models.recipe import load_recipe
from funnelcli.training import TrainingInterrupted
from tests.helpers import feed_training_to, manifold_table, run, same_weights

pytestmark = pytest.mark.usefixtures("one_thread")


def choosing(**settings) -> FunnelDensity:
    """nsf against small-nsf on any table under 10,000 training rows, for a few steps."""
    options = dict(steps=12, eval_every=6, small_rows=0, choose_rows=10_000, choose_from=["small-nsf"], device="cpu")
    return FunnelDensity("nsf", **{**options, **settings})


@pytest.fixture(scope="module")
def chosen() -> FunnelDensity:
    """The choice on 300 rows, uninterrupted."""
    return choosing().fit(manifold_table(300))


def test_below_choose_rows_the_candidate_with_the_best_validation_log_likelihood_is_kept(chosen):
    scores = {entry["recipe"]: entry["val_log_prob"] for entry in chosen.choice_["candidates"]}
    assert set(scores) == {"nsf", "small-nsf"}
    assert chosen.choice_["chosen"] == max(scores, key=scores.get) == chosen.recipe_.name
    assert chosen.summary_["best_val_log_prob"] == max(scores.values())


def test_the_estimators_settings_apply_to_every_candidate(chosen):
    assert chosen.summary_["steps"] == 12
    assert [entry["best_step"] in (0, 6, 12) for entry in chosen.choice_["candidates"]] == [True, True]


def test_at_or_above_choose_rows_only_the_named_recipe_trains(chosen):
    model = copy.deepcopy(chosen).set_params(choose_rows=100).fit(manifold_table(300))  # an earlier choice goes
    assert not hasattr(model, "choice_") and model.recipe_.name == "nsf"


def test_candidates_that_resolve_alike_train_once():
    model = choosing(choose_from=["nsf"]).fit(manifold_table(300))
    assert not hasattr(model, "choice_")


def test_choose_rows_without_choose_from_is_one_line():
    with pytest.raises(UserError) as error:
        load_recipe("f-nsf").with_overrides(choose_rows=1000)
    assert "\n" not in str(error.value) and "training.choose_rows = 1000 needs training.choose_from" in str(error.value)


def test_nsf_chooses_between_itself_small_nsf_and_nsf_at_5e_4_below_5000_training_rows():
    """The bundled default, measured in benchmarks/RESULTS.md ("Choosing the small or the large recipe")."""
    below = [recipe.name for recipe in choice_candidates(FunnelDensity("nsf"), 4999)]
    assert below == ["nsf", "small-nsf", "nsf-slow"]
    assert load_recipe("nsf-slow").training.lr < load_recipe("nsf").training.lr
    assert choice_candidates(FunnelDensity("nsf"), 5000) == []


def test_choose_from_names_bundled_recipes_only():
    with pytest.raises(UserError, match="choose_from"):
        load_recipe("nsf").with_overrides(choose_rows=1000, choose_from=["my-recipe.toml"])


def test_a_chosen_models_recipe_reads_back_without_the_choice_fields(chosen, tmp_path):
    chosen.save(tmp_path / "model")
    again = FunnelDensity.load(tmp_path / "model", device="cpu")
    assert again.recipe_.training.choose_rows == 0 and again.recipe_.name == chosen.recipe_.name


class SignalOnCandidate:
    """A training callback that sends SIGTERM once candidate ``number`` (from 1) has done ``step`` steps."""

    def __init__(self, number: int, step: int):
        self.number, self.step, self.seen = number, step, 0

    def __call__(self, record: dict) -> None:
        if record["step"] == self.step:
            self.seen += 1
            if self.seen == self.number:
                signal.raise_signal(signal.SIGTERM)


@pytest.mark.parametrize("number", [1, 2], ids=["first", "second"])
def test_a_choice_interrupted_in_a_candidate_resumes_to_the_weights_of_an_uninterrupted_one(chosen, tmp_path, number):
    table, whole = manifold_table(300), chosen
    with pytest.raises(TrainingInterrupted):
        choosing().fit(table, checkpoint_dir=tmp_path, callback=SignalOnCandidate(number, 4))
    resumed = choosing().fit(table, checkpoint_dir=tmp_path, resume=True)
    assert [entry.get("resumed_at_step") for entry in resumed.choice_["candidates"]] == [
        4 if index == number - 1 else None for index in range(2)
    ]
    assert [c["val_log_prob"] for c in resumed.choice_["candidates"]] == [
        c["val_log_prob"] for c in whole.choice_["candidates"]
    ]
    assert resumed.choice_["chosen"] == whole.choice_["chosen"]
    assert same_weights(resumed.model_, whole.model_)


CHOOSING_RECIPE = """
family = "nsf"
[model]
flow_steps = 2
hidden_features = 16
[training]
steps = 12
eval_every = 6
choose_rows = 10000
choose_from = ["small-nsf"]
"""


def test_train_says_which_recipe_it_chose_and_the_scores_it_chose_by(tmp_path):
    manifold_table(300).to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "choosing.toml").write_text(CHOOSING_RECIPE)
    common = ["--recipe", tmp_path / "choosing.toml", "--steps", "12", "--device", "cpu"]
    result = run("train", tmp_path / "data.csv", *common, "--out", tmp_path / "m")
    assert result.exit_code == 0, result.output
    last = result.stdout.strip().splitlines()[-1]
    assert "had the best validation log-likelihood of the recipes compared on this table" in last
    assert f"{tmp_path / 'choosing.toml'} -" in last and "small-nsf -" in last
    report = json.loads(run("train", tmp_path / "data.csv", *common, "--out", tmp_path / "j", "--json").stdout)
    assert {entry["recipe"] for entry in report["choice"]["candidates"]} == {
        str(tmp_path / "choosing.toml"),
        "small-nsf",
    }
    assert report["recipe"] == report["choice"]["chosen"]
    only = json.loads(
        run("train", tmp_path / "data.csv", *common, "--choose-rows", "0", "--out", tmp_path / "o", "--json").stdout
    )
    assert "choice" not in only and only["recipe"] == str(tmp_path / "choosing.toml")


def test_a_warning_the_table_gives_every_candidate_is_said_once_and_a_training_warning_names_its_candidate(caplog):
    table = manifold_table(300).assign(count=np.random.default_rng(0).poisson(4.0, size=300))
    with caplog.at_level(logging.WARNING, logger="funnelcli"):
        choosing(lr=1e-9).fit(table)  # weights that cannot move: every candidate falls back to the Gaussian
    messages = [record.getMessage() for record in caplog.records]
    assert sum("integer-valued column(s) 'count'" in message for message in messages) == 1
    fallbacks = [message for message in messages if "no trained weights beat" in message]
    assert [message.split(":")[0] for message in fallbacks] == ["nsf", "small-nsf"]
    assert not logging.getLogger("funnelcli").filters  # the naming ends with the choice


def test_train_shows_a_progress_bar_per_candidate(tmp_path):
    manifold_table(300).to_csv(tmp_path / "data.csv", index=False)
    result = run("train", tmp_path / "data.csv", "--recipe", "nsf", "--steps", "3", "--out", tmp_path / "m")
    assert result.exit_code == 0, result.output
    bars = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("training ")]
    assert bars == ["nsf", "small-nsf", "nsf-slow"]


def test_train_stopped_in_its_second_candidate_resumes_with_the_printed_command_to_the_same_model(
    tmp_path, monkeypatch
):
    manifold_table(300).to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "choosing.toml").write_text(CHOOSING_RECIPE)
    common = [tmp_path / "data.csv", "--recipe", tmp_path / "choosing.toml", "--steps", "12", "--device", "cpu"]
    assert run("train", *common, "--out", tmp_path / "whole").exit_code == 0
    feed_training_to(monkeypatch, SignalOnCandidate(2, 4))
    stopped = run("train", *common, "--out", tmp_path / "stopped")
    assert stopped.exit_code == 143 and stopped.stderr.strip().endswith("--resume"), stopped.output
    monkeypatch.undo()
    resumed = run("train", *common, "--out", tmp_path / "stopped", "--resume")
    assert resumed.exit_code == 0, resumed.output
    weights = [(tmp_path / name / "model.safetensors").read_bytes() for name in ("whole", "stopped")]
    assert weights[0] == weights[1]
