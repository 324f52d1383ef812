"""The authors' configuration as recipes: the defaults of the funnels paper's published tabular code."""

from __future__ import annotations

import numpy as np
import pytest

from funnelcli.estimator import FunnelDensity
from funnelcli.models import load_recipe

AUTHORS = ("authors-nsf", "authors-f-nsf", "authors-f-glow", "authors-f-mlp", "authors-vae")


@pytest.mark.parametrize("name", AUTHORS)
def test_the_authors_train_batch_512_at_5e_4_cosine_clipped_at_5_for_40000_steps_without_early_stop(name):
    training = load_recipe(name).training
    assert (training.batch_size, training.lr, training.schedule, training.grad_clip) == (512, 5e-4, "cosine", 5.0)
    assert (training.steps, training.patience) == (40_000, 0)


@pytest.mark.parametrize("name", ["authors-nsf", "authors-f-nsf"])
def test_the_authors_spline_flow_has_10_steps_of_width_256_two_blocks_8_bins_tail_3_dropout_a_quarter(name):
    m = load_recipe(name).model
    assert (m.flow_steps, m.hidden_features, m.residual_blocks, m.bins, m.tail_bound, m.dropout) == (
        10, 256, 2, 8, 3.0, 0.25,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["authors-f-nsf", "authors-f-glow"])
def test_the_authors_funnel_drops_4_at_step_2_into_a_splined_gaussian_ansatz_of_3_layers_of_128(name):
    recipe = load_recipe(name)
    m = recipe.model
    assert (m.drop, m.funnel_level, m.ansatz, m.ansatz_layers, m.ansatz_hidden_features) == (4, 2, "gaussian", 3, 128)
    assert m.ansatz_spline and m.ansatz_lu and m.ansatz_flow_steps == m.flow_steps // 2
    assert recipe.latent_size(21) == 17


def test_the_authors_f_glow_flow_ansatz_is_affine_as_the_main_flow():
    assert load_recipe("authors-f-glow").model.ansatz_layer == "affine"
    assert load_recipe("authors-f-nsf").model.ansatz_layer == "spline"


def test_the_authors_f_mlp_keeps_d_minus_2_with_a_gaussian_ansatz_and_10_bin_splines_of_tail_4():
    recipe = load_recipe("authors-f-mlp")
    assert (recipe.model.ansatz, recipe.model.bins, recipe.model.tail_bound) == ("gaussian", 10, 4.0)
    assert recipe.latent_size(8) == 6


def test_the_authors_vae_is_512_wide_and_2_deep():
    m = load_recipe("authors-vae").model
    assert (m.hidden_features, m.vae_layers) == (512, 2)


@pytest.mark.parametrize("name", AUTHORS)
def test_every_authors_recipe_trains_and_scores_a_table_of_8_columns(name):
    rows = np.random.default_rng(0).normal(size=(80, 8))
    estimator = FunnelDensity(name, steps=3, batch_size=32, device="cpu").fit(rows)
    assert np.isfinite(estimator.score_samples(rows)).all()
