"""Every bundled recipe trains, saves and loads; the paper's funnel recipes are no bigger than their baselines."""

from __future__ import annotations

import numpy as np
import pytest

from funnelcli.estimator import FunnelDensity
from funnelcli.models import build_model, bundled_recipes, load_recipe

PAPER_SETS = ("power", "gas", "hepmass", "miniboone", "bsds300")
BASELINE = {"f-nsf": "nsf", "f-glow": "glow", "f-mlp": "nsf"}


def parameters(recipe, dim: int) -> int:
    return sum(p.numel() for p in build_model(recipe, np.zeros(dim), np.ones(dim)).parameters())


@pytest.mark.parametrize("name", list(bundled_recipes()))
def test_a_bundled_recipe_trains_a_few_steps_and_round_trips_through_its_model_folder(name, tmp_path):
    recipe = load_recipe(name)
    dim = recipe.input_dim or 5
    rows = np.random.default_rng(0).normal(size=(64, dim))
    estimator = FunnelDensity(recipe, steps=2, batch_size=16, device="cpu").fit(rows)
    estimator.save(tmp_path / "model")
    loaded = FunnelDensity.load(tmp_path / "model", device="cpu")
    np.testing.assert_array_equal(loaded.score_samples(rows[:8]), estimator.score_samples(rows[:8]))
    assert np.isfinite(loaded.score_samples(rows[:8])).all()


def test_there_is_a_recipe_per_paper_data_set_and_family():
    names = set(bundled_recipes())
    for data_set in PAPER_SETS:
        for family in ("nsf", "f-nsf", "glow", "f-glow", "f-mlp", "vae"):
            assert f"{data_set}-{family}" in names


@pytest.mark.parametrize("data_set", PAPER_SETS)
@pytest.mark.parametrize("family", list(BASELINE))
def test_a_paper_funnel_recipe_has_no_more_parameters_than_its_baseline(data_set, family):
    funnel = load_recipe(f"{data_set}-{family}")
    baseline = load_recipe(f"{data_set}-{BASELINE[family]}")
    assert funnel.input_dim == baseline.input_dim
    assert parameters(funnel, funnel.input_dim) <= parameters(baseline, baseline.input_dim)


@pytest.mark.parametrize("data_set", PAPER_SETS)
def test_paper_recipes_keep_the_nsf_settings_and_half_the_dimensions(data_set):
    nsf, funnel = load_recipe(f"{data_set}-nsf"), load_recipe(f"{data_set}-f-nsf")
    for field in ("flow_steps", "hidden_features", "residual_blocks", "bins", "dropout"):
        assert getattr(funnel.model, field) == getattr(nsf.model, field)
    assert funnel.training == nsf.training
    assert funnel.model.reduce == 0.5
    assert funnel.model.ansatz == ("gaussian" if data_set == "bsds300" else "flow")
    assert funnel.model.ansatz_flow_steps == nsf.model.flow_steps // 2
