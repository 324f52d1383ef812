"""How many dimensions each funnel drops: a fixed ``drop``, and several funnels in one recipe (``funnels``).

A recipe with several funnels is as exact as one with one: the density of a 3-D -> 2-D -> 1-D model integrates
to 1, and sampling reports the log-probabilities that scoring gives.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from funnelcli.errors import UserError
from funnelcli.models import Recipe, build_model, load_recipe
from funnelcli.models.families import estimate_size
from funnelcli.models.recipe import FAMILY_FIELDS
from tests.helpers import TINY_MODEL, TINY_TRAINING, perturb, tiny_recipe

TWO_FUNNELS = [{"level": 0, "latent_dim": 2}, {"level": 2, "drop": 1}]


def several(family: str = "f-nsf", funnels=TWO_FUNNELS, **model) -> Recipe:
    """A tiny recipe with the funnels listed (and no single funnel's level)."""
    settings = {k: v for k, v in TINY_MODEL.items() if k in FAMILY_FIELDS[family] and k != "funnel_level"}
    settings.update(model, funnels=funnels)
    return Recipe.from_dict({"family": family, "model": settings, "training": dict(TINY_TRAINING)}, name="tiny")


def two_funnel_model(family: str, ansatz: str = "gaussian", scale: float = 0.1):
    recipe = several(family, ansatz=ansatz)
    return perturb(build_model(recipe, np.zeros(3), np.ones(3)).double(), scale=scale).eval()


# -- drop ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dim", "drop", "kept"), [(8, 4, 4), (5, 4, 1), (2, 1, 1)])
def test_drop_removes_that_many_dimensions_whatever_the_width(dim, drop, kept):
    assert tiny_recipe("f-nsf", drop=drop).latent_size(dim) == kept


def test_a_drop_that_leaves_nothing_is_refused_naming_the_field():
    with pytest.raises(UserError, match=r"model\.drop = 4 does not fit a table of 4 columns"):
        tiny_recipe("f-nsf", drop=4).latent_size(4)


@pytest.mark.parametrize("other", [{"reduce": 0.5}, {"latent_dim": 2}])
def test_drop_with_another_size_field_is_refused(other):
    with pytest.raises(UserError, match="both set the latent size"):
        Recipe.from_dict({"family": "f-nsf", "model": {"drop": 2, **other}})


def test_an_override_of_the_size_replaces_drop():
    recipe = tiny_recipe("f-nsf", drop=3).with_overrides(latent_dim=2)
    assert recipe.latent_size(8) == 2 and recipe.model.drop == 0


# -- several funnels -------------------------------------------------------------------------------------------


def test_each_funnel_sizes_the_dimensions_that_reach_it():
    recipe = several(flow_steps=6, funnels=[{"level": 1, "reduce": 0.25}, {"level": 4, "drop": 2}])
    assert recipe.funnel_plan(8) == [(1, 6), (4, 4)]
    assert recipe.latent_size(8) == 4
    assert estimate_size(recipe, 8).latent_dim == 4


@pytest.mark.parametrize("family", ["f-nsf", "f-glow"])
def test_a_two_funnel_model_counts_its_parameters_exactly_and_round_trips_its_recipe(family):
    recipe = several(family)
    model = build_model(recipe, np.zeros(3), np.ones(3))
    assert sum(p.numel() for p in model.parameters()) == estimate_size(recipe, 3).parameters
    assert Recipe.from_dict(recipe.to_dict(), name=recipe.name) == recipe
    assert model.latent_dim == 1


@pytest.mark.parametrize(
    "funnels",
    [
        [{"level": 2, "reduce": 0.5}, {"level": 1, "reduce": 0.5}],  # levels must increase
        [{"level": 1}],  # no size
        [{"level": 1, "reduce": 0.5, "drop": 1}],  # two sizes
        [{"level": 1, "keep": 2}],  # unknown key
    ],
)
def test_a_malformed_funnels_list_is_refused_saying_what_it_must_be(funnels):
    with pytest.raises(UserError, match=r"model\.funnels = .* must be a list of tables"):
        Recipe.from_dict({"family": "f-nsf", "model": {"funnels": funnels}})


def test_funnels_beside_a_single_funnels_level_or_size_is_refused():
    with pytest.raises(UserError, match=r"model\.funnels gives every funnel's level and size, so model\.reduce"):
        Recipe.from_dict({"family": "f-nsf", "model": {"funnels": TWO_FUNNELS, "reduce": 0.5}})


def test_a_funnel_past_the_last_step_is_refused():
    with pytest.raises(UserError, match="funnel at level 3, which must be below flow_steps 3"):
        several(funnels=[{"level": 3, "drop": 1}])


def test_a_later_funnel_that_receives_too_few_dimensions_is_refused_naming_its_level():
    recipe = several(funnels=[{"level": 0, "latent_dim": 2}, {"level": 1, "latent_dim": 2}])
    with pytest.raises(UserError, match="the funnel at level 1 .* receives 2 dimension"):
        recipe.latent_size(6)


def test_the_command_line_size_flags_do_not_apply_to_several_funnels():
    with pytest.raises(UserError, match="has several funnels"):
        several().with_overrides(reduce=0.25)


@pytest.mark.parametrize("family", ["f-nsf", "f-glow"])
@pytest.mark.parametrize("ansatz", ["gaussian", "flow"])
def test_a_two_funnel_model_samples_with_the_log_probabilities_it_scores(family, ansatz):
    torch.manual_seed(0)
    model = two_funnel_model(family, ansatz)
    with torch.no_grad():
        x, log_prob = model.sample_and_log_prob(32)
        torch.testing.assert_close(log_prob, model.log_prob(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", ["f-nsf", "f-glow"])
def test_a_three_to_two_to_one_dimensional_density_integrates_to_one(family):
    # Weights moved off the identity start, little enough that the tails fit a grid of +-8 in each of the 3
    # (standardised) directions, 80^3 midpoints.
    model = two_funnel_model(family, "flow", scale=0.05)
    n = 80
    edges = np.linspace(-8, 8, n + 1)
    mids = torch.tensor((edges[1:] + edges[:-1]) / 2)
    grid = torch.stack(torch.meshgrid(mids, mids, mids, indexing="ij"), dim=-1).reshape(-1, 3)
    with torch.no_grad():
        density = torch.cat([model.log_prob(chunk).exp() for chunk in grid.split(200_000)])
    total = float(density.sum()) * (edges[1] - edges[0]) ** 3
    assert abs(total - 1.0) < 0.01, total


def test_a_recipe_that_leaves_the_newer_fields_at_their_defaults_writes_what_earlier_versions_wrote():
    # So that model and sweep folders written before these fields existed still match their recipes.
    model = load_recipe("f-nsf").to_dict()["model"]
    assert not {"drop", "funnels", "ansatz_layer", "ansatz_lu", "ansatz_spline"} & set(model)
