"""FunnelDensity with DataFrames, as a scikit-learn user expects: latent names, set_output, DataFrame samples, and
inverse_transform, which decodes latent codes back to rows."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks

from funnelcli.apply import encode_file
from funnelcli.errors import UserError
from funnelcli.estimator import LATENT_PREFIX, FunnelDensity
from tests.helpers import manifold_table, tiny_recipe

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run on one torch thread


def trained(family: str = "f-nsf", steps: int = 30, **model) -> FunnelDensity:
    """A tiny estimator that keeps its trained weights: the Gaussian fallback would make every layer near the
    identity, and a round trip through the identity proves little."""
    return FunnelDensity(tiny_recipe(family, **model), steps=steps, fallback="none", device="cpu")


def indexed(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with an index that is not 0..n-1, so that a lost index shows."""
    return table.set_axis([f"row{i}" for i in range(len(table))], axis=0)


@pytest.fixture(scope="module", params=["gaussian", "flow"])
def funnel(request) -> FunnelDensity:
    """F-NSF with 2 of the 4 manifold columns kept, fitted on a DataFrame, with each kind of ansatz."""
    return trained(ansatz=request.param).fit(manifold_table(200))


@pytest.fixture(scope="module")
def counts() -> pd.DataFrame:
    """The manifold table and an integer column, which is dequantized."""
    table = manifold_table(200, seed=3)
    return table.assign(count=np.random.default_rng(3).poisson(4.0, size=len(table)))


@pytest.fixture(scope="module")
def flow(counts) -> FunnelDensity:
    """A full-dimension NSF (no funnel) fitted on ``counts``."""
    return trained("nsf", steps=20).fit(counts)


@pytest.fixture(scope="module")
def on_array() -> FunnelDensity:
    return trained(steps=3).fit(manifold_table(100).to_numpy())


def codes(rows: int = 50, width: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, width))


# -- latent names and set_output ----------------------------------------------------------------------------------


def test_latent_columns_are_named_as_funnel_encode_names_them(funnel):
    assert list(funnel.get_feature_names_out()) == ["z0", "z1"]
    assert inspect.signature(encode_file).parameters["prefix"].default == LATENT_PREFIX


def test_feature_names_out_accept_the_fitted_columns_and_refuse_others(funnel):
    assert list(funnel.get_feature_names_out(["a", "b", "c", "d"])) == ["z0", "z1"]
    with pytest.raises(UserError, match="input_features is not equal"):
        funnel.get_feature_names_out(["d", "c", "b", "a"])
    with pytest.raises(UserError, match="length equal to the number of features \\(4\\), got 2"):
        funnel.get_feature_names_out(["a", "b"])


def test_transform_gives_an_array_for_a_frame_unless_set_output_asks_for_pandas(funnel):
    assert isinstance(funnel.transform(manifold_table(10)), np.ndarray)


def test_set_output_pandas_gives_the_latent_columns_with_the_rows_index(funnel):
    table = indexed(manifold_table(30, seed=4))
    expected = funnel.transform(table)
    latent = funnel.set_output(transform="pandas").transform(table)
    funnel.set_output(transform="default")
    assert isinstance(latent, pd.DataFrame)
    assert list(latent.columns) == ["z0", "z1"] and list(latent.index) == list(table.index)
    np.testing.assert_array_equal(latent.to_numpy(), expected)


def test_a_pipeline_with_set_output_pandas_ends_in_the_latent_frame():
    table = indexed(manifold_table(200))
    pipeline = make_pipeline(StandardScaler(), trained(steps=3)).set_output(transform="pandas")
    latent = pipeline.fit_transform(table)
    assert isinstance(latent, pd.DataFrame)
    assert list(latent.columns) == ["z0", "z1"] and list(latent.index) == list(table.index)
    assert np.isfinite(pipeline.score(table))


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")  # the checks transform arrays on purpose
@pytest.mark.parametrize(
    "check",
    [
        "check_transformer_get_feature_names_out",
        "check_transformer_get_feature_names_out_pandas",
        "check_set_output_transform_pandas",
        "check_global_output_transform_pandas",
    ],
)
def test_scikit_learn_feature_name_and_set_output_checks(check):
    getattr(estimator_checks, check)("FunnelDensity", trained(steps=3))


# -- sample --------------------------------------------------------------------------------------------------------


def test_a_model_fitted_on_a_frame_samples_a_frame_in_its_columns(funnel):
    rows = funnel.sample(7, random_state=0)
    assert isinstance(rows, pd.DataFrame)
    assert list(rows.columns) == ["a", "b", "c", "d"] and rows.shape == (7, 4)


def test_unseeded_samples_differ_from_call_to_call(funnel):
    assert not np.allclose(funnel.sample(5), funnel.sample(5))


def test_a_model_fitted_on_an_array_samples_an_array(on_array):
    rows = on_array.sample(7, random_state=0)
    assert isinstance(rows, np.ndarray) and rows.shape == (7, 4)


def test_a_loaded_model_samples_the_same_frame_as_the_fitted_one(funnel, tmp_path):
    funnel.save(tmp_path / "model")
    loaded = FunnelDensity.load(tmp_path / "model", device="cpu")
    pd.testing.assert_frame_equal(loaded.sample(5, random_state=1), funnel.sample(5, random_state=1))


def test_samples_leave_out_the_constant_columns_the_model_does_not_model():
    table = manifold_table(100).assign(k=2.0)
    estimator = FunnelDensity(tiny_recipe("f-nsf"), steps=3, drop_constant=True, device="cpu").fit(table)
    assert list(estimator.sample(3, random_state=0).columns) == estimator.columns_ == ["a", "b", "c", "d"]


# -- inverse_transform ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mean", [False, True])
def test_a_funnels_inverse_transform_is_a_right_inverse_of_transform(funnel, mean):
    z = codes()
    rows = funnel.inverse_transform(z, mean=mean, random_state=0)
    assert rows.shape == (50, 4)
    np.testing.assert_allclose(funnel.transform(rows), z, atol=1e-4, rtol=1e-4)


def test_a_full_dimension_flow_decodes_the_codes_of_rows_back_to_those_rows(flow, counts):
    rows = flow.inverse_transform(flow.transform(counts))
    np.testing.assert_allclose(rows.to_numpy(), counts.to_numpy(), atol=1e-4, rtol=1e-4)


def test_dequantized_columns_decode_to_the_integers_they_were_encoded_from(flow, counts):
    # transform feeds an integer x at x + 0.5 and inverse_transform rounds down, so the integers come back exactly.
    rows = flow.inverse_transform(flow.transform(counts))
    assert flow.dequantized_columns_ == ["count"]
    np.testing.assert_array_equal(rows["count"].to_numpy(), counts["count"].to_numpy())


def test_inverse_transform_with_mean_is_deterministic(funnel):
    z = codes()
    np.testing.assert_array_equal(funnel.inverse_transform(z, mean=True), funnel.inverse_transform(z, mean=True))


def test_inverse_transform_without_mean_or_a_random_state_draws_anew_each_call(funnel):
    z = codes()
    assert not np.allclose(funnel.inverse_transform(z), funnel.inverse_transform(z))


def test_inverse_transform_with_a_random_state_is_reproducible_and_leaves_the_global_rng_alone(funnel):
    z = codes()
    before = torch.random.get_rng_state()
    first = funnel.inverse_transform(z, random_state=5)
    assert torch.equal(torch.random.get_rng_state(), before)
    pd.testing.assert_frame_equal(funnel.inverse_transform(z, random_state=5), first)
    assert not np.allclose(funnel.inverse_transform(z, random_state=6), first)


def test_inverse_transform_keeps_the_codes_index_and_takes_latent_columns_by_name(funnel):
    z = indexed(pd.DataFrame(codes(), columns=["z0", "z1"]))
    rows = funnel.inverse_transform(z[["z1", "z0"]].assign(id=1), mean=True)
    assert list(rows.index) == list(z.index) and list(rows.columns) == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(rows.to_numpy(), funnel.inverse_transform(z.to_numpy(), mean=True).to_numpy())


def test_a_model_fitted_on_an_array_decodes_to_an_array(on_array):
    rows = on_array.inverse_transform(codes(), mean=True)
    assert isinstance(rows, np.ndarray) and rows.shape == (50, 4)


@pytest.mark.parametrize(
    ("z", "message"),
    [
        (codes(width=3), r"Z has shape \(50, 3\); this model's latent codes have shape \(n, 2\)"),
        (codes()[0], r"Z has shape \(2,\)"),
        (np.array([[0.0, np.nan]]), "not finite float32 numbers, first z1 of row 1: nan"),
        (np.array([["a", "b"]]), "Z must be numbers of shape"),
    ],
    ids=["wrong width", "one row as a vector", "nan", "text"],
)
def test_inverse_transform_refuses_codes_it_cannot_decode_in_one_line(funnel, z, message):
    with pytest.raises(UserError, match=message) as error:
        funnel.inverse_transform(z)
    assert "\n" not in str(error.value)


def test_a_vae_decodes_with_mean_to_its_decoders_mean():
    vae = trained("vae", steps=5).fit(manifold_table(100))
    z = codes()
    centre = vae.inverse_transform(z, mean=True)
    expected = vae.model_.scaler.inverse(vae.model_._likelihood(torch.tensor(z, dtype=torch.float32))[0])[0]
    np.testing.assert_allclose(centre.to_numpy(), expected.detach().numpy(), rtol=1e-6)
    assert not np.allclose(vae.inverse_transform(z, random_state=0), centre)
