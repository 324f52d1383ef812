"""Conditional densities p(x | c): exact for every flow family, the context threaded through every layer, and the
estimator's conditions (numeric and categorical) fitted, checked, sampled, saved and loaded."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from funnelcli.errors import UserError
from funnelcli.estimator import FunnelDensity
from funnelcli.models import build_model
from funnelcli.models.decode import decode
from funnelcli.transforms import Funnel
from tests.helpers import assert_bijection, autograd_logabsdet, perturb, tiny_recipe

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run on one torch thread

#: Every flow family, with and without a funnel, and both ansatzes.
VARIANTS = {
    "nsf": {"family": "nsf"},
    "nsf-autoregressive": {"family": "nsf", "transform": "autoregressive"},
    "f-nsf-gaussian": {"family": "f-nsf", "ansatz": "gaussian"},
    "f-nsf-flow": {"family": "f-nsf", "ansatz": "flow"},
    "f-nsf-conv": {"family": "f-nsf", "funnel_kind": "conv", "ansatz": "gaussian"},
    "glow": {"family": "glow"},
    "f-glow": {"family": "f-glow"},
    "f-mlp": {"family": "f-mlp"},
}
FULL_DIMENSION = ["nsf", "nsf-autoregressive", "glow"]
FUNNELS = [name for name in VARIANTS if name not in FULL_DIMENSION]


def conditional_model(variant: str, dim: int = 2, context: int = 1, *, dtype=torch.float32, scale: float = 0.15):
    """A model of ``variant`` for ``dim`` columns given ``context`` condition columns, its weights moved off their
    identity start (by ``scale`` standard normals) so that every network's output depends on its inputs, c among
    them."""
    settings = dict(VARIANTS[variant])
    recipe = tiny_recipe(settings.pop("family"), **settings)
    model = build_model(recipe, np.zeros(dim), np.ones(dim), context_features=context)
    return perturb(model.to(dtype), scale=scale).eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_conditional_two_dimensional_density_integrates_to_one_for_each_condition(variant):
    # Gently perturbed: steep splines would need a finer grid than a fast test can afford.
    model = conditional_model(variant, scale=0.05)
    # A grid 7 standard deviations wide (the model starts near N(0, I)), 250 x 250 midpoints.
    n = 250
    edges = np.linspace(-7, 7, n + 1)
    mids = (edges[1:] + edges[:-1]) / 2
    cell = (edges[1] - edges[0]) ** 2
    grid = torch.tensor(np.stack(np.meshgrid(mids, mids, indexing="ij"), axis=-1).reshape(-1, 2), dtype=torch.float32)
    totals, densities = [], []
    with torch.no_grad():
        for c in (-1.5, 0.0, 1.5):
            densities.append(torch.exp(model.log_prob(grid, torch.full((grid.shape[0], 1), c)).double()))
            totals.append(float(densities[-1].sum()) * cell)
    assert all(abs(total - 1.0) < 0.01 for total in totals), totals
    assert float((densities[0] - densities[2]).abs().max()) > 1e-3, "the condition must change the density"


@pytest.mark.parametrize("variant", VARIANTS)
def test_sampling_log_probs_equal_scoring_log_probs_for_a_conditional_model(variant):
    model = conditional_model(variant, dim=4, context=3, dtype=torch.float64)
    context = torch.randn(64, 3, dtype=torch.float64)
    with torch.no_grad():
        x, log_p = model.sample_and_log_prob(64, context=context)
        torch.testing.assert_close(log_p, model.log_prob(x, context), atol=1e-8, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_changing_the_condition_changes_the_log_density(variant):
    torch.manual_seed(0)  # the weights and rows, whatever test ran before on this worker
    model = conditional_model(variant, dim=3, context=2)
    x = torch.randn(16, 3)
    with torch.no_grad():
        here, there = model.log_prob(x, torch.zeros(16, 2)), model.log_prob(x, torch.ones(16, 2))
    # Typical rows, not every row: log p(x | c) - log p(x | c') is a smooth function of x, and it may cross 0.
    assert (here - there).abs().median() > 1e-3, here - there


@pytest.mark.parametrize("variant", FULL_DIMENSION)
def test_a_conditional_flow_inverts_its_forward_map_with_the_log_det_of_autograd(variant):
    model = conditional_model(variant, dim=3, context=2, dtype=torch.float64)
    x, context = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    assert_bijection(model.transform, x, context=context)


@pytest.mark.parametrize("variant", FUNNELS)
def test_encoding_a_conditional_funnels_sample_gives_back_its_latent_point(variant):
    model = conditional_model(variant, dim=4, context=2, dtype=torch.float64)
    z = torch.randn(32, model.latent_dim, dtype=torch.float64)
    context = torch.randn(32, 2, dtype=torch.float64)
    with torch.no_grad():
        for mean in (False, True):
            x = decode(model, z, mean=mean, context=context)
            torch.testing.assert_close(model.encode(x, context), z, atol=1e-8, rtol=0)


@pytest.mark.parametrize("variant", ["f-nsf-gaussian", "f-glow", "f-mlp"])
def test_a_conditional_funnels_f_has_the_log_det_of_autograd_given_the_dropped_coordinates_and_c(variant):
    model = conditional_model(variant, dim=4, context=2, dtype=torch.float64)
    funnel = next(m for m in model.modules() if isinstance(m, Funnel))
    x = torch.randn(5, funnel.keep + funnel.drop, dtype=torch.float64)
    c = torch.randn(5, 2, dtype=torch.float64)
    x_keep, x_drop = funnel.split(x)
    # f reads [x_drop, c]; the funnel's contribution is f's log-det plus log q(x_drop | z, c).
    assert_bijection(funnel.transform, x_keep, context=torch.cat([x_drop, c], dim=1))
    z, contribution = funnel(x, context=c)
    f_logabsdet = autograd_logabsdet(lambda v: funnel(torch.cat([v, x_drop[:1]], 1), context=c[:1])[0], x_keep[:1])
    q = funnel.ansatz.log_prob(x_drop, context=torch.cat([z, c], dim=1))
    torch.testing.assert_close(contribution[:1] - q[:1], f_logabsdet, atol=1e-8, rtol=0)


def test_an_unconditional_model_takes_no_context_and_a_conditional_one_needs_its_own():
    plain, conditional = conditional_model("f-nsf-gaussian", context=0), conditional_model("f-nsf-gaussian")
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match="unconditional"):
        plain.log_prob(x, torch.zeros(3, 1))
    with pytest.raises(ValueError, match=r"context of shape \(3, 1\)"):
        conditional.log_prob(x)


# -- the estimator -----------------------------------------------------------------------------------------------


def shifted_table(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """x's location follows the numeric c and the category g; y is a noisy curve of c."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=n)
    g = rng.choice(["adelie", "gentoo", "chinstrap"], size=n)
    offset = pd.Series(g).map({"adelie": -2.0, "gentoo": 0.0, "chinstrap": 2.0}).to_numpy()
    return pd.DataFrame(
        {"x": 2 * c + offset + 0.3 * rng.normal(size=n), "y": np.sin(2 * c) + 0.2 * rng.normal(size=n), "c": c, "g": g}
    )


@pytest.fixture(scope="module")
def fitted():
    table = shifted_table()
    recipe = tiny_recipe("nsf")
    conditional = FunnelDensity(recipe, device="cpu", steps=150, conditional_columns=["c", "g"]).fit(table)
    return table, conditional


def test_a_conditional_model_scores_held_out_rows_higher_than_the_unconditional_one(fitted):
    table, conditional = fitted
    unconditional = FunnelDensity(tiny_recipe("nsf"), device="cpu", steps=150).fit(table[["x", "y"]])
    test = shifted_table(500, seed=1)
    gain = conditional.score(test) - unconditional.score(test[["x", "y"]])
    assert gain > 1.0, gain


def test_changing_a_rows_conditions_changes_its_score(fitted):
    table, conditional = fitted
    rows = table.head(20)
    assert not np.allclose(conditional.score_samples(rows), conditional.score_samples(rows.assign(g="gentoo")))


def test_a_categorical_condition_is_one_hot_encoded_over_the_categories_seen_in_training(fitted):
    _, conditional = fitted
    assert conditional.conditions_.names == ["c", "g"]
    assert conditional.conditions_.width == 1 + 3
    assert conditional.conditions_.columns[1].categories == ("adelie", "chinstrap", "gentoo")
    assert conditional.model_.context_features == 4


def test_an_unseen_category_is_refused_in_one_line_that_names_the_column_and_the_value(fitted):
    table, conditional = fitted
    with pytest.raises(UserError, match=r"condition column 'g' holds 'emperor'") as error:
        conditional.score_samples(table.head(3).assign(g="emperor"))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("method", ["score_samples", "transform"])
def test_scoring_and_encoding_need_the_condition_columns(fitted, method):
    table, conditional = fitted
    with pytest.raises(UserError, match=r"lack the condition column\(s\) 'g'"):
        getattr(conditional, method)(table.drop(columns="g"))


def test_sampling_draws_one_row_per_condition_row_beside_its_conditions(fitted):
    table, conditional = fitted
    conditions = table[["g", "c"]].iloc[[5, 1, 7]]
    drawn = conditional.sample(conditions=conditions, random_state=0)
    assert list(drawn.columns) == ["c", "g", "x", "y"]
    assert list(drawn.index) == [5, 1, 7]
    pd.testing.assert_frame_equal(drawn[["c", "g"]], conditions[["c", "g"]])
    pd.testing.assert_frame_equal(conditional.sample(3, conditions=conditions, random_state=0), drawn)
    # Draws given c follow x | c: the chinstrap rows (offset +2) lie far right of the adelie ones (-2).
    many = pd.DataFrame({"c": 0.0, "g": ["adelie"] * 300 + ["chinstrap"] * 300})
    x = conditional.sample(conditions=many, random_state=1)["x"].to_numpy()
    assert x[300:].mean() - x[:300].mean() > 2.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "conditional on c, g; pass conditions"),
        ({"n_samples": 4, "conditions": "two rows"}, "n_samples must be left out or equal len"),
    ],
)
def test_sampling_a_conditional_model_needs_one_row_of_conditions_per_draw(fitted, kwargs, message):
    table, conditional = fitted
    if kwargs.get("conditions") == "two rows":
        kwargs["conditions"] = table.head(2)
    with pytest.raises(UserError, match=message):
        conditional.sample(**kwargs)


def test_an_unconditional_model_refuses_conditions():
    model = FunnelDensity(tiny_recipe("nsf"), device="cpu", steps=2).fit(shifted_table(100)[["x", "y"]])
    with pytest.raises(UserError, match="conditions applies to conditional models only"):
        model.sample(conditions=pd.DataFrame({"c": [0.0]}))
    assert model.conditions_ is None and model.sample(random_state=0).shape == (1, 2)


def test_inverse_transform_decodes_a_conditional_models_codes_given_their_conditions(fitted):
    table, conditional = fitted
    rows = table.head(10)
    back = conditional.inverse_transform(conditional.transform(rows), conditions=rows)
    np.testing.assert_allclose(back[["x", "y"]].to_numpy(), rows[["x", "y"]].to_numpy(), atol=1e-3)
    with pytest.raises(UserError, match="pass conditions"):
        conditional.inverse_transform(conditional.transform(rows))


def test_a_conditional_model_saves_and_loads_with_its_conditions_and_the_same_scores(fitted, tmp_path):
    table, conditional = fitted
    folder = conditional.save(tmp_path / "model")
    document = json.loads((folder / "model.json").read_text())
    assert [c["name"] for c in document["conditions"]] == ["c", "g"]
    assert document["conditions"][1]["categories"] == ["adelie", "chinstrap", "gentoo"]
    loaded = FunnelDensity.load(folder, device="cpu")
    assert loaded.conditions_ == conditional.conditions_
    assert loaded.conditional_columns == ["c", "g"]
    np.testing.assert_array_equal(loaded.score_samples(table), conditional.score_samples(table))
    with pytest.raises(UserError, match="'emperor'"):
        loaded.score_samples(table.head(2).assign(g="emperor"))


def test_an_edited_conditions_field_is_refused_on_load(fitted, tmp_path):
    _, conditional = fitted
    folder = conditional.save(tmp_path / "model")
    document = json.loads((folder / "model.json").read_text())
    document["conditions"][0]["mean"] += 1.0
    (folder / "model.json").write_text(json.dumps(document))
    with pytest.raises(UserError, match="conditions"):
        FunnelDensity.load(folder, device="cpu")


def test_an_unconditional_model_folder_records_no_conditions(tmp_path):
    model = FunnelDensity(tiny_recipe("nsf"), device="cpu", steps=2).fit(shifted_table(100)[["x", "y"]])
    document = json.loads((model.save(tmp_path / "model") / "model.json").read_text())
    assert "conditions" not in document


def test_integer_codes_named_categorical_are_encoded_by_category_and_booleans_are_categories():
    rng = np.random.default_rng(0)
    table = shifted_table(200).assign(sex=rng.integers(1, 3, 200), adult=rng.random(200) > 0.5)
    model = FunnelDensity(
        tiny_recipe("nsf"), device="cpu", steps=5, conditional_columns=["sex", "adult"], categorical_columns=["sex"]
    ).fit(table[["x", "y", "sex", "adult"]])
    assert [c.categories for c in model.conditions_.columns] == [("1", "2"), ("False", "True")]
    assert np.isfinite(model.score_samples(table.assign(sex=table["sex"].astype(float)))).all()
    with pytest.raises(UserError, match="condition column 'sex' holds '3'"):
        model.score_samples(table.assign(sex=3))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"conditional_columns": ["c"], "categorical_columns": ["g"]}, r"condition\(s\) 'c' are numeric"),
        ({"conditional_columns": ["nope"]}, r"X lacks the condition column\(s\) 'nope'"),
        ({"conditional_columns": ["c"], "latent_dim": "auto"}, "cannot be used with latent_dim='auto'"),
        ({"conditional_columns": ["x", "y", "c", "g"]}, "name every column"),
    ],
)
def test_conditions_the_estimator_cannot_take_are_refused_in_one_line(settings, message):
    settings = {"recipe": tiny_recipe("f-nsf"), "device": "cpu", "steps": 2, **settings}
    with pytest.raises(UserError, match=message) as error:
        FunnelDensity(**settings).fit(shifted_table(100))
    assert "\n" not in str(error.value)


def test_a_condition_with_one_category_or_constant_values_is_refused():
    table = shifted_table(100)
    for column in ("adelie", 0.0):
        with pytest.raises(UserError, match="cannot condition anything"):
            FunnelDensity(tiny_recipe("nsf"), device="cpu", steps=2, conditional_columns=["k"]).fit(
                table[["x", "y"]].assign(k=column)
            )


# -- accuracy against a known conditional density ------------------------------------------------------------------


def gaussian_table(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """x | c ~ N(mu(c), diag(s(c))^2) rotated by an angle of c: location, scale and shape follow c ~ U(-1, 1).
    Returns the table and the exact log p(x | c) of each row."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(-1, 1, n)
    mean = np.stack([2 * c, c**2], axis=1)
    scale = np.stack([np.exp(0.5 * c), 0.3 + 0.2 * (c + 1)], axis=1)
    angle = 0.8 * c
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], 1)
    u = rng.normal(size=(n, 2))
    x = mean + np.einsum("nij,nj->ni", rotation, u * scale)
    log_p = -0.5 * (u**2).sum(1) - np.log(scale).sum(1) - math.log(2 * math.pi)
    return pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "c": c}), log_p


def test_a_conditional_nsf_comes_close_to_a_known_conditional_density():
    train, _ = gaussian_table(4000, seed=0)
    test, truth = gaussian_table(2000, seed=1)
    recipe = tiny_recipe("nsf", hidden_features=32)
    model = FunnelDensity(recipe, device="cpu", steps=400, eval_every=50, lr=5e-3, conditional_columns=["c"])
    gap = float(np.mean(truth) - model.fit(train).score(test))
    # Measured: 0.036 nats per row (0.018 per dimension) at 400 steps, in about 4 s; the bar is the issue's
    # acceptance bar, 0.05 nats per dimension.
    assert gap < 2 * 0.05, gap


@pytest.mark.parametrize("stream_rows", [False, True])
def test_training_pairs_each_row_with_its_conditions_in_batches_and_validation(stream_rows):
    from funnelcli.training import fit

    table, _ = gaussian_table(600, seed=2)
    rows = torch.tensor(table.to_numpy(), dtype=torch.float32)  # [x0, x1, c]: the conditions ride beside x
    model = build_model(tiny_recipe("nsf"), np.zeros(2), np.ones(2), context_features=1)
    settings = tiny_recipe("nsf").with_overrides(steps=20, eval_every=10).training
    summary = fit(model, rows[:500], rows[500:], settings, stream_rows=stream_rows)
    with torch.no_grad():
        expected = model.eval().log_prob(rows[500:, :2], rows[500:, 2:]).double().mean()
    assert summary.best_val_log_prob == pytest.approx(float(expected), abs=1e-5)
