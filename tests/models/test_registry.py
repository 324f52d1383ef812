"""The family registry: every family declared once, read by the recipe validator and the model builder."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from funnelcli.errors import UserError
from funnelcli.models.contract import count_parameters
from funnelcli.models.families import build_model
from funnelcli.models.recipe import ModelSettings, Recipe, bundled_recipes, load_recipe
from funnelcli.models.registry import FAMILIES
from tests.helpers import tiny_recipe

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run on one torch thread

MODEL_FIELDS = [f.name for f in dataclasses.fields(ModelSettings)]
#: Families that model p(x | c); the image families are unconditional and refuse a context.
CONDITIONAL = [name for name, family in FAMILIES.items() if not family.image]
IMAGE = [name for name, family in FAMILIES.items() if family.image]


@pytest.mark.parametrize("name", list(bundled_recipes()))
def test_every_bundled_recipe_names_a_registered_family(name):
    assert load_recipe(name).family in FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_every_registered_family_builds_a_tiny_model_of_the_size_it_counts(family):
    recipe = tiny_recipe(family)
    model = build_model(recipe, np.zeros(4), np.ones(4))
    assert model.input_dim == 4
    assert FAMILIES[family].count(recipe, 4).parameters == count_parameters(model)


@pytest.mark.parametrize("family", IMAGE)
def test_every_image_family_builds_a_model_of_the_size_it_counts_on_an_image_with_two_levels(family):
    # tiny_recipe's 4 columns are a 2x2 image, one level and no transition; 4x4x3 has both levels.
    recipe = tiny_recipe(family, image_shape=[4, 4, 3])
    model = build_model(recipe, np.zeros(48), np.ones(48))
    estimate = FAMILIES[family].count(recipe, 48)
    assert estimate.parameters == count_parameters(model) and estimate.latent_dim == model.latent_dim


@pytest.mark.parametrize("family", IMAGE)
def test_every_image_family_refuses_a_context(family):
    with pytest.raises(UserError, match="unconditionally"):
        build_model(tiny_recipe(family), np.zeros(4), np.ones(4), context_features=1)


@pytest.mark.parametrize("family", CONDITIONAL)
@pytest.mark.parametrize("context", [1, 5])
def test_every_family_builds_a_conditional_model_of_the_size_it_counts(family, context):
    recipe = tiny_recipe(family)
    model = build_model(recipe, np.zeros(4), np.ones(4), context_features=context)
    assert model.context_features == context
    assert FAMILIES[family].count(recipe, 4, context).parameters == count_parameters(model)
    assert FAMILIES[family].count(recipe, 4, context).parameters > FAMILIES[family].count(recipe, 4).parameters


@pytest.mark.parametrize("family", FAMILIES)
def test_an_entry_lists_only_model_fields_and_its_name_is_its_key(family):
    entry = FAMILIES[family]
    assert entry.name == family and entry.summary
    assert set(entry.fields) <= set(MODEL_FIELDS) and len(set(entry.fields)) == len(entry.fields)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_validator_refuses_a_model_field_the_registry_does_not_list_for_the_family(family):
    unlisted = next(key for key in MODEL_FIELDS if key not in FAMILIES[family].fields)
    value = getattr(ModelSettings(), unlisted)
    value = list(value) if isinstance(value, tuple) else value
    with pytest.raises(UserError, match=f"family {family}.*model.{unlisted}"):
        Recipe.from_dict({"family": family, "model": {unlisted: value}})


@pytest.mark.parametrize("family", FAMILIES)
def test_a_recipe_reads_its_fields_and_funnel_from_the_registry(family):
    recipe = Recipe.from_dict({"family": family})
    assert recipe.fields == FAMILIES[family].fields
    assert recipe.has_funnel == FAMILIES[family].has_funnel


@pytest.mark.parametrize("module", ["funnelcli.models.registry", "funnelcli.models.recipe", "funnelcli.models"])
def test_importing_the_registry_and_recipes_does_not_import_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
