"""Recipes: bundled ones are valid, user mistakes name the key, and reduce maps to a documented size."""

from __future__ import annotations

import pytest

from funnelcli.errors import UserError
from funnelcli.models import Recipe, bundled_recipes, latent_dim, load_recipe


@pytest.mark.parametrize("name", list(bundled_recipes()))
def test_every_bundled_recipe_loads(name):
    recipe = load_recipe(name)
    assert recipe.name == name


def test_the_bundled_recipes_include_both_families_and_both_transforms():
    recipes = [load_recipe(name) for name in bundled_recipes()]
    assert {(r.family, r.model.transform) for r in recipes} >= {
        ("nsf", "coupling"),
        ("nsf", "autoregressive"),
        ("f-nsf", "coupling"),
        ("f-nsf", "autoregressive"),
    }


def test_a_user_recipe_file_is_read_and_missing_fields_take_defaults(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('family = "nsf"\n[model]\nflow_steps = 3\n[training]\nsteps = 7\n')
    recipe = load_recipe(path)
    assert (recipe.family, recipe.model.flow_steps, recipe.training.steps) == ("nsf", 3, 7)
    assert recipe.model.bins == 8


def test_a_mistyped_key_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("[model]\nflow_stpes = 3\n")
    with pytest.raises(UserError, match=r"unknown key 'flow_stpes'.*did you mean 'flow_steps'"):
        load_recipe(path)


def test_an_unknown_section_is_named():
    with pytest.raises(UserError, match="unknown key 'optimizer'"):
        Recipe.from_dict({"optimizer": {}})


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("model", "bins", 1, "integer >= 2"),
        ("model", "bins", 2.5, "an integer"),
        ("model", "reduce", 1.0, r"\(0, 1\)"),
        ("model", "ansatz", "normal", "'gaussian', 'flow'"),
        ("model", "transform", "affine", "'coupling', 'autoregressive'"),
        ("training", "lr", -1.0, "a number"),
        ("training", "steps", 0, "integer >= 1"),
    ],
)
def test_a_bad_value_is_named_with_what_it_must_be(section, key, value, expected):
    with pytest.raises(UserError, match=rf"{section}\.{key} = .* must be .*{expected}"):
        Recipe.from_dict({section: {key: value}})


def test_a_funnel_level_past_the_last_step_is_refused():
    with pytest.raises(UserError, match="funnel_level 4 must be below flow_steps 4"):
        Recipe.from_dict({"model": {"flow_steps": 4, "funnel_level": 4}})


def test_a_funnel_field_in_a_recipe_without_a_funnel_is_refused():
    with pytest.raises(UserError, match="no funnel"):
        Recipe.from_dict({"family": "nsf", "model": {"reduce": 0.5}})


@pytest.mark.parametrize("flag", ["reduce", "ansatz"])
def test_overriding_a_funnel_field_of_nsf_is_refused(flag):
    value = 0.5 if flag == "reduce" else "gaussian"
    with pytest.raises(UserError, match=f"--{flag} does not apply"):
        load_recipe("nsf").with_overrides(**{flag: value})


def test_overrides_replace_fields_and_are_validated():
    recipe = load_recipe("f-nsf").with_overrides(reduce=0.25, steps=10, lr=1e-3, ansatz="gaussian", seed=3)
    assert (recipe.model.reduce, recipe.training.steps, recipe.model.ansatz, recipe.training.seed) == (
        0.25,
        10,
        "gaussian",
        3,
    )
    with pytest.raises(UserError, match="batch_size"):
        recipe.with_overrides(batch_size=0)


def test_a_recipe_round_trips_through_its_dict():
    recipe = load_recipe("f-nsf-ar")
    assert Recipe.from_dict(recipe.to_dict(), name=recipe.name) == recipe


def test_an_unknown_recipe_name_suggests_a_bundled_one():
    with pytest.raises(UserError, match="did you mean 'f-nsf'"):
        load_recipe("fnsf")


@pytest.mark.parametrize(
    ("dim", "reduce", "expected"),
    [(6, 0.5, 3), (7, 0.5, 3), (8, 0.25, 6), (2, 0.5, 1), (10, 0.01, 9), (10, 0.99, 1), (21, 0.5, 10)],
)
def test_latent_dim_drops_reduce_times_d_rounded_half_up_keeping_at_least_one(dim, reduce, expected):
    assert latent_dim(dim, reduce) == expected


def test_a_funnel_on_one_column_is_refused():
    with pytest.raises(UserError, match="at least 2 columns"):
        latent_dim(1, 0.5)


def test_every_recipe_field_has_a_stated_range_that_its_check_enforces():
    from funnelcli.models.recipe import field_names, field_ranges

    ranges = field_ranges()
    assert {name.split(".", 1)[1] for name in ranges if "." in name} == set(field_names())
    assert (ranges["model.flow_steps"], ranges["model.tail_bound"], ranges["training.seed"]) == (
        "1..1000",
        "(0, 1000]",
        "0..4294967295",
    )
    with pytest.raises(UserError, match=r"model\.flow_steps = 1001 .* must be an integer <= 1000"):
        Recipe.from_dict({"model": {"flow_steps": 1001}})


def test_a_recipe_nested_too_deeply_is_a_user_error(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(UserError, match="nested too deeply"):
        load_recipe(path)
