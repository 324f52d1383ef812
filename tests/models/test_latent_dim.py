"""The latent size given directly: ``--latent-dim K`` / ``latent_dim=K`` / ``model.latent_dim``.

It names the number of kept dimensions, gives the same model as the ``reduce`` that names the same size, and
is refused where it cannot apply: outside 1..D-1, together with ``reduce``, on a family without a funnel, and
on a convolutional funnel whose size its stride sets.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from funnelcli.errors import UserError
from funnelcli.estimator import FunnelDensity
from funnelcli.models import Recipe
from tests.helpers import assert_one_line_error, manifold_table, run, tiny_recipe, write_recipe

FAMILIES = ("f-nsf", "f-glow", "f-mlp", "vae")


def fitted(family: str, **size) -> FunnelDensity:
    recipe = tiny_recipe(family)
    return FunnelDensity(recipe, device="cpu", steps=5, eval_every=5, **size).fit(manifold_table(200))


@pytest.mark.parametrize("family", FAMILIES)
def test_latent_dim_and_the_reduce_that_names_the_same_size_give_identical_models(family):
    by_size, by_fraction = fitted(family, latent_dim=1), fitted(family, reduce=0.75)
    assert by_size.latent_dim_ == by_fraction.latent_dim_ == 1
    left, right = by_size.model_.state_dict(), by_fraction.model_.state_dict()
    assert left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


@pytest.mark.parametrize("family", FAMILIES)
def test_latent_dim_sets_the_number_of_kept_dimensions(family):
    assert fitted(family, latent_dim=3).latent_dim_ == 3


@pytest.mark.parametrize("kept", [4, 9])
def test_a_latent_dim_that_keeps_every_column_or_more_is_refused(kept):
    with pytest.raises(UserError, match=f"latent_dim={kept} does not fit a table of 4 columns.*1 to 3"):
        fitted("f-nsf", latent_dim=kept)


@pytest.mark.parametrize("kept", [0, -1, 2.5, "2"])
def test_a_latent_dim_that_is_not_a_positive_whole_number_is_refused(kept):
    with pytest.raises(UserError, match="latent_dim must be a whole number"):
        fitted("f-nsf", latent_dim=kept)


def test_latent_dim_and_reduce_together_are_refused():
    with pytest.raises(UserError, match="both set the latent size"):
        fitted("f-nsf", latent_dim=2, reduce=0.5)


def test_latent_dim_on_a_family_without_a_funnel_is_refused():
    with pytest.raises(UserError, match="has no funnel"):
        fitted("nsf", latent_dim=2)


def test_a_recipe_that_sets_both_reduce_and_latent_dim_is_refused():
    with pytest.raises(UserError, match="model.reduce and model.latent_dim both"):
        Recipe.from_dict({"family": "f-nsf", "model": {"reduce": 0.5, "latent_dim": 2}})


def test_a_convolutional_funnel_refuses_latent_dim():
    with pytest.raises(UserError, match="stride"):
        Recipe.from_dict({"family": "f-nsf", "model": {"funnel_kind": "conv", "latent_dim": 2}})


def test_latent_dim_overrides_the_recipe_reduce_and_reduce_overrides_its_latent_dim():
    recipe = Recipe.from_dict({"family": "f-nsf", "model": {"reduce": 0.25}})
    assert recipe.with_overrides(latent_dim=1).latent_size(4) == 1
    by_size = Recipe.from_dict({"family": "f-nsf", "model": {"latent_dim": 1}})
    assert by_size.with_overrides(reduce=0.25).latent_size(4) == 3


def test_a_recipe_round_trips_through_its_dictionary_with_latent_dim():
    recipe = Recipe.from_dict({"family": "f-mlp", "model": {"latent_dim": 2}})
    again = Recipe.from_dict(recipe.to_dict())
    assert again == recipe and "reduce" not in recipe.to_dict()["model"]


def test_latent_dim_is_a_parameter_that_clone_and_get_params_carry():
    from sklearn.base import clone

    estimator = FunnelDensity("small-f-nsf", latent_dim=3)
    assert estimator.get_params()["latent_dim"] == 3 and clone(estimator).latent_dim == 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent")
    manifold_table(300).to_csv(root / "data.csv", index=False)
    write_recipe(root)
    return root


def test_train_latent_dim_gives_the_weights_of_the_matching_reduce(folder):
    common = ("train", folder / "data.csv", "--recipe", folder / "tiny.toml", "-q", "--steps", "10")
    assert run(*common, "--latent-dim", "3", "--out", folder / "by-size").exit_code == 0
    assert run(*common, "--reduce", "0.25", "--out", folder / "by-fraction").exit_code == 0
    left, right = (load_file(folder / name / "model.safetensors") for name in ("by-size", "by-fraction"))
    assert left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)
    assert FunnelDensity.load(folder / "by-size", device="cpu").latent_dim_ == 3


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--latent-dim", "4"), "--latent-dim 4 does not fit a table of 4 columns"),
        (("--latent-dim", "0"), "--latent-dim must be a whole number"),
        (("--latent-dim", "2", "--reduce", "0.5"), "both set the latent size"),
        (("--latent-dim", "2", "--recipe", "small-nsf"), "has no funnel"),
    ],
    ids=["all-columns", "zero", "with-reduce", "no-funnel"],
)
def test_a_bad_latent_dim_is_one_line_and_exit_2(folder, args, fragment):
    result = run("train", folder / "data.csv", "--recipe", folder / "tiny.toml", "-q", *args, "--out", folder / "x")
    assert_one_line_error(result, fragment)
    assert not (folder / "x").exists()
