"""Mixed likelihoods log P(k | c) + log p(x | k, c): modelled categorical columns get an exact probability mass, the
other columns the conditional flow given them, and the estimator scores, samples, saves and loads the sum."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch

from funnelcli.conditions import Condition
from funnelcli.errors import UserError
from funnelcli.estimator import FunnelDensity
from funnelcli.models.categorical import CategoricalModel
from tests.helpers import tiny_recipe

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run on one torch thread

SPECIES = ("adelie", "chinstrap", "gentoo")


def species_table(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """x's location follows the species (P = 0.5, 0.2, 0.3); y is a noisy curve of x; sex is an integer code."""
    rng = np.random.default_rng(seed)
    species = rng.choice(["adelie", "gentoo", "chinstrap"], size=n, p=[0.5, 0.3, 0.2])
    offset = pd.Series(species).map({"adelie": -2.0, "gentoo": 0.0, "chinstrap": 2.0}).to_numpy()
    x = offset + 0.6 * rng.normal(size=n)
    sex = np.where(rng.random(n) < np.where(species == "gentoo", 0.8, 0.4), 1, 2)
    return pd.DataFrame({"x": x, "y": np.sin(x) + 0.3 * rng.normal(size=n), "species": species, "sex": sex})


def categorical(name: str, categories, dtype: str = "object") -> Condition:
    return Condition(name, dtype, "categorical", categories=tuple(categories))


# -- the mass P(k | c) -------------------------------------------------------------------------------------------


def test_the_mass_of_one_column_is_its_add_one_smoothed_frequency_and_sums_to_one():
    frame = pd.DataFrame({"k": ["a"] * 6 + ["b"] * 3})  # "c" is a category never seen in these rows
    model = CategoricalModel.fit(frame, (categorical("k", "abc"),))
    mass = np.exp(model.log_prob(pd.DataFrame({"k": list("abc")})))
    np.testing.assert_allclose(mass, [(6 + 1) / (9 + 3), (3 + 1) / (9 + 3), (0 + 1) / (9 + 3)], rtol=1e-12)
    assert mass.sum() == pytest.approx(1.0, abs=1e-12)


def test_the_mass_of_two_columns_sums_to_one_over_every_combination_and_within_each_condition():
    table = species_table(300)
    island = categorical("island", ("biscoe", "dream", "torgersen"))
    rows = table.assign(island=np.random.default_rng(1).choice(["biscoe", "dream"], size=len(table)))
    columns = (categorical("species", SPECIES), categorical("sex", ("1", "2"), "int64"))
    combinations = pd.DataFrame(list(itertools.product(SPECIES, (1, 2))), columns=["species", "sex"])
    plain = CategoricalModel.fit(rows, columns)
    assert np.exp(plain.log_prob(combinations)).sum() == pytest.approx(1.0, abs=1e-12)
    given = CategoricalModel.fit(rows, columns, given=(island,))
    # Torgersen was never seen: its combinations get the uniform mass, and still sum to 1.
    for place in island.categories:
        assert np.exp(given.log_prob(combinations.assign(island=place))).sum() == pytest.approx(1.0, abs=1e-12)
    torgersen = np.exp(given.log_prob(combinations.assign(island="torgersen")))
    np.testing.assert_allclose(torgersen, 1 / 6, rtol=1e-12)


def test_drawn_categories_follow_the_mass():
    table = species_table(600)
    columns = (categorical("species", SPECIES), categorical("sex", ("1", "2"), "int64"))
    model = CategoricalModel.fit(table, columns)
    drawn = model.frame(model.draw(np.random.default_rng(2).random((20_000, 2))))
    frequency = drawn.value_counts(normalize=True)
    combinations = pd.DataFrame(list(itertools.product(SPECIES, (1, 2))), columns=["species", "sex"])
    mass = np.exp(model.log_prob(combinations))
    observed = [frequency.get(tuple(row), 0.0) for row in combinations.itertuples(index=False)]
    np.testing.assert_allclose(observed, mass, atol=0.015)
    assert drawn["sex"].dtype == np.int64


# -- the estimator -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed():
    table = species_table()
    model = FunnelDensity(tiny_recipe("nsf"), device="cpu", steps=150, categorical_columns=["species"])
    return table, model.fit(table[["x", "y", "species"]])


def test_a_mixed_model_says_its_scores_mix_a_mass_and_a_density(mixed):
    table, model = mixed
    assert model.mixed_likelihood_ and not model.is_bound_
    assert model.conditions_ is None and model.categorical_.names == ["species"]
    assert model.model_.context_features == 3 and model.columns_ == ["x", "y"]
    plain = FunnelDensity(tiny_recipe("nsf"), device="cpu", steps=2).fit(table[["x", "y"]])
    assert not plain.mixed_likelihood_


def test_within_each_category_the_density_of_x_integrates_to_one(mixed):
    table, model = mixed
    # A grid 6 standard deviations wide around the data, 300 x 300 midpoints: exp(score) / P(k) is p(x | k).
    mean, std = table[["x", "y"]].mean().to_numpy(), table[["x", "y"]].std().to_numpy()
    n = 300
    axes = [np.linspace(m - 6 * s, m + 6 * s, n + 1) for m, s in zip(mean, std, strict=True)]
    mids = [(a[1:] + a[:-1]) / 2 for a in axes]
    cell = np.prod([a[1] - a[0] for a in axes])
    grid = pd.DataFrame(np.stack(np.meshgrid(*mids, indexing="ij"), axis=-1).reshape(-1, 2), columns=["x", "y"])
    masses = {}
    for species in SPECIES:
        rows = grid.assign(species=species)
        masses[species] = float(np.exp(model.categorical_.log_prob(rows.head(1)))[0])
        total = np.exp(model.score_samples(rows)).sum() * cell / masses[species]
        assert abs(total - 1.0) < 0.01, (species, total)
    assert sum(masses.values()) == pytest.approx(1.0, abs=1e-12)


def test_a_score_is_the_mass_plus_the_flows_density_and_sampling_log_probs_equal_it(mixed):
    _, model = mixed
    categories = model.categorical_
    picked = categories.draw(np.random.default_rng(3).random((64, 1)))
    context = torch.tensor(categories.one_hot(picked), dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        x, log_p = model.model_.sample_and_log_prob(64, context=context)
    rows = pd.concat([pd.DataFrame(x.double().numpy(), columns=["x", "y"]), categories.frame(picked)], axis=1)
    expected = (
        log_p.double().numpy() + np.log(categories.probabilities(np.zeros((1, 0), dtype=np.int64))[0])[picked[:, 0]]
    )
    np.testing.assert_allclose(model.score_samples(rows), expected, atol=2e-4, rtol=0)


def test_sample_draws_the_categories_then_x_given_them(mixed):
    table, model = mixed
    drawn = model.sample(3000, random_state=0)
    assert list(drawn.columns) == ["species", "x", "y"]
    assert set(drawn["species"]) == set(SPECIES)
    mass = np.exp(model.categorical_.log_prob(pd.DataFrame({"species": list(SPECIES)})))
    frequency = drawn["species"].value_counts(normalize=True).reindex(SPECIES).to_numpy()
    np.testing.assert_allclose(frequency, mass, atol=0.03)
    by_species = drawn.groupby("species")["x"].mean()
    assert by_species["chinstrap"] - by_species["adelie"] > 3.0  # x follows the drawn species (+2 against -2)
    pd.testing.assert_frame_equal(model.sample(3000, random_state=0), drawn)
    assert np.isfinite(model.score_samples(drawn)).all()


def test_save_and_load_give_identical_scores_and_record_the_categories(mixed, tmp_path):
    table, model = mixed
    folder = model.save(tmp_path / "model")
    document = json.loads((folder / "model.json").read_text())
    assert document["categorical"]["columns"][0]["categories"] == list(SPECIES)
    assert document["categorical"]["alpha"] == 1.0 and "conditions" not in document
    loaded = FunnelDensity.load(folder, device="cpu")
    assert loaded.mixed_likelihood_ and loaded.categorical_columns == ["species"]
    np.testing.assert_array_equal(loaded.categorical_.counts, model.categorical_.counts)
    np.testing.assert_array_equal(loaded.score_samples(table), model.score_samples(table))
    pd.testing.assert_frame_equal(loaded.sample(50, random_state=1), model.sample(50, random_state=1))


def test_an_edited_categorical_field_is_refused_on_load(mixed, tmp_path):
    _, model = mixed
    folder = model.save(tmp_path / "model")
    document = json.loads((folder / "model.json").read_text())
    document["categorical"]["alpha"] = 0.5
    (folder / "model.json").write_text(json.dumps(document))
    with pytest.raises(UserError, match="categorical"):
        FunnelDensity.load(folder, device="cpu")


def test_an_unseen_category_is_refused_in_one_line_naming_the_column_and_the_value(mixed):
    table, model = mixed
    for method in ("score_samples", "transform"):
        with pytest.raises(UserError, match=r"categorical column 'species' holds 'emperor' \(row 2\)") as error:
            getattr(model, method)(table.head(3).assign(species=["adelie", "emperor", "gentoo"]))
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("method", ["score_samples", "transform"])
def test_scoring_and_encoding_need_the_categorical_columns(mixed, method):
    table, model = mixed
    with pytest.raises(UserError, match=r"lack the column\(s\) 'species'"):
        getattr(model, method)(table[["x", "y"]])


def test_inverse_transform_takes_the_categorical_columns_as_conditions(mixed):
    table, model = mixed
    rows = table.head(8)
    back = model.inverse_transform(model.transform(rows), conditions=rows[["species"]])
    np.testing.assert_allclose(back.to_numpy(), rows[["x", "y"]].to_numpy(), atol=1e-3)


def test_a_column_named_both_condition_and_categorical_is_a_condition_not_modelled():
    table = species_table(300)[["x", "y", "species"]]
    model = FunnelDensity(
        tiny_recipe("nsf"), device="cpu", steps=5, conditional_columns=["species"], categorical_columns=["species"]
    ).fit(table)
    assert not model.mixed_likelihood_ and model.conditions_.categorical == ["species"]
    with pytest.raises(UserError, match="pass conditions"):
        model.sample(4)


def test_a_mixed_model_with_categorical_conditions_gives_p_of_x_and_k_given_c():
    table = species_table(600)
    model = FunnelDensity(
        tiny_recipe("nsf"),
        device="cpu",
        steps=20,
        conditional_columns=["species"],
        categorical_columns=["species", "sex"],
    ).fit(table)
    assert model.conditions_.names == ["species"] and model.categorical_.names == ["sex"]
    assert model.model_.context_features == 3 + 2
    # P(sex | species) sums to 1 for each species; gentoo rows are mostly sex 1 (0.8), the others not (0.4).
    for species in SPECIES:
        both = pd.DataFrame({"species": species, "sex": [1, 2]})
        assert np.exp(model.categorical_.log_prob(both)).sum() == pytest.approx(1.0, abs=1e-12)
    conditions = pd.DataFrame({"species": ["gentoo"] * 500 + ["adelie"] * 500})
    drawn = model.sample(conditions=conditions, random_state=0)
    assert list(drawn.columns) == ["species", "sex", "x", "y"]
    assert (drawn["sex"][:500] == 1).mean() - (drawn["sex"][500:] == 1).mean() > 0.25
    assert np.isfinite(model.score_samples(drawn)).all()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"conditional_columns": ["y"], "categorical_columns": ["species"]},
            r"condition\(s\) 'y' are numeric, but the mass P\(k \| c\)",
        ),
        ({"categorical_columns": ["island"]}, r"X lacks the categorical column\(s\) 'island'"),
        ({"categorical_columns": ["species"], "latent_dim": "auto"}, "categorical_columns cannot be used with"),
    ],
)
def test_what_a_mixed_model_cannot_take_is_refused_in_one_line(settings, message):
    recipe = tiny_recipe("f-nsf")
    with pytest.raises(UserError, match=message) as error:
        FunnelDensity(recipe, device="cpu", steps=2, **settings).fit(species_table(100)[["x", "y", "species"]])
    assert "\n" not in str(error.value)


def test_a_categorical_column_with_one_value_is_refused():
    table = species_table(100)[["x", "y"]].assign(k="only")
    with pytest.raises(UserError, match="categorical column 'k' has one value.*categorical_columns"):
        FunnelDensity(tiny_recipe("nsf"), device="cpu", steps=2, categorical_columns=["k"]).fit(table)


def test_a_mixed_vae_scores_a_labelled_bound_on_the_mixed_likelihood():
    table = species_table(300)[["x", "y", "species"]]
    model = FunnelDensity(tiny_recipe("vae"), device="cpu", steps=10, categorical_columns=["species"]).fit(table)
    assert model.mixed_likelihood_ and model.is_bound_
    assert model.model_.context_features == 3
    elbo, mass = model.score_samples(table), model.categorical_.log_prob(table)
    assert np.isfinite(elbo).all() and not np.allclose(elbo, mass)
    assert list(model.sample(5, random_state=0).columns) == ["species", "x", "y"]
