"""training.small_rows: a recipe gives way to its small-table recipe below a number of rows, decided once, for the
table as given, and said."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from funnelcli.errors import UserError
from funnelcli.estimator import FunnelDensity
from funnelcli.models import Recipe, load_recipe
from tests.helpers import run

pytestmark = pytest.mark.usefixtures("one_thread")


def _table(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 0] + 0.3 * x[:, 1], "c": x[:, 2]})


def test_the_default_recipe_names_a_small_table_recipe_of_its_family():
    recipe = load_recipe("f-nsf")
    small = load_recipe(recipe.training.small_recipe)
    assert recipe.training.small_rows > 0
    assert small.family == recipe.family
    assert small.training.small_rows == 0


def test_a_table_below_small_rows_is_trained_with_the_small_recipe():
    recipe = FunnelDensity().resolved_recipe(rows=499)
    assert recipe.name == load_recipe("f-nsf").training.small_recipe


def test_a_table_of_small_rows_or_more_keeps_the_recipe():
    threshold = load_recipe("f-nsf").training.small_rows
    assert FunnelDensity().resolved_recipe(rows=threshold).name == "f-nsf"


def test_without_a_row_count_the_recipe_is_the_one_named():
    assert FunnelDensity().resolved_recipe().name == "f-nsf"


def test_small_rows_zero_keeps_the_recipe_on_any_table():
    assert FunnelDensity(small_rows=0).resolved_recipe(rows=10).name == "f-nsf"


def test_the_callers_settings_apply_to_the_small_recipe():
    recipe = FunnelDensity(hidden_features=24, steps=7).resolved_recipe(rows=100)
    assert recipe.name == "small-f-nsf"
    assert (recipe.model.hidden_features, recipe.training.steps) == (24, 7)


def test_the_decision_is_made_once_for_the_table_as_given():
    """A sweep's levels and a validation split see fewer rows than the table: they must not change recipe."""
    large = FunnelDensity(small_rows=1000).resolved_recipe(rows=1000)
    assert large.name == "f-nsf"
    assert FunnelDensity(recipe=large).resolved_recipe(rows=900).name == "f-nsf"


def test_fit_trains_the_small_recipe_on_a_small_table():
    estimator = FunnelDensity(steps=2, eval_every=1).fit(_table(200))
    assert estimator.recipe_.name == "small-f-nsf"


def test_a_recipe_with_small_rows_and_no_small_recipe_is_refused():
    with pytest.raises(UserError, match="small_recipe"):
        Recipe.from_dict({"family": "nsf", "training": {"small_rows": 100}})


def test_a_small_recipe_must_be_a_bundled_recipe():
    with pytest.raises(UserError, match="bundled recipe"):
        Recipe.from_dict({"family": "nsf", "training": {"small_rows": 100, "small_recipe": "/tmp/mine.toml"}})


def test_train_says_which_recipe_it_chose_and_saves_it(tmp_path):
    _table(300).to_csv(tmp_path / "small.csv", index=False)
    result = run("train", tmp_path / "small.csv", "--steps", "2", "--output", tmp_path / "model")
    assert result.exit_code == 0, result.output
    assert "small-f-nsf is recipe f-nsf's small-table recipe: this table has 270 training rows" in result.output
    assert json.loads((tmp_path / "model" / "model.json").read_text())["recipe_name"] == "small-f-nsf"


def test_train_small_rows_zero_keeps_the_named_recipe(tmp_path):
    _table(300).to_csv(tmp_path / "small.csv", index=False)
    result = run(
        "train", tmp_path / "small.csv", "--steps", "2", "--small-rows", "0", "--output", tmp_path / "model", "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["recipe"] == "f-nsf"
    assert "small_table" not in report


def test_the_rule_counts_the_rows_left_for_training():
    """660 rows less a 10% validation split are 594 training rows, below 600; beside a validation table, 660."""
    table = _table(660)
    assert FunnelDensity(steps=1, small_rows=600).fit(table).recipe_.name == "small-f-nsf"
    given = FunnelDensity(steps=1, small_rows=600).fit(table, validation=_table(50, seed=1))
    assert given.recipe_.name == "f-nsf"
