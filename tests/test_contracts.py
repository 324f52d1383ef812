"""The written contracts: every family is a ``DensityModel``, ``model.json`` is a ``ModelMetadata`` that reads
back to the same bytes, and ``prepare_rows`` returns what training needs of the data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from funnelcli import artifact
from funnelcli.errors import UserError
from funnelcli.estimator import FunnelDensity
from funnelcli.model_metadata import ModelMetadata
from funnelcli.models import FAMILIES, build_model
from funnelcli.models.contract import DensityModel, count_parameters
from funnelcli.models.families import estimate_size
from funnelcli.preparation import PreparedRows, prepare_rows
from tests.helpers import manifold_table, tiny_recipe

DIM = 4


def tiny_model(family: str):
    recipe = tiny_recipe(family)
    return recipe, build_model(recipe, np.linspace(-1, 1, DIM), np.linspace(0.5, 2, DIM)).eval()


# -- DensityModel ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_a_density_model(family):
    _, model = tiny_model(family)
    assert isinstance(model, DensityModel)
    assert model.input_dim == DIM and 1 <= model.latent_dim <= DIM
    assert model.is_bound is (family == "vae"), "only the VAE's scores are bounds"


@pytest.mark.parametrize("family", FAMILIES)
def test_a_density_model_scores_encodes_and_samples_in_the_documented_shapes(family):
    _, model = tiny_model(family)
    x = torch.randn(7, DIM)
    with torch.no_grad():
        assert model.log_prob(x).shape == (7,)
        assert model.encode(x).shape == (7, model.latent_dim)
        assert model.sample(5, temperature=0.5).shape == (5, DIM)
    assert torch.equal(model.scaler.mean, torch.as_tensor(np.linspace(-1, 1, DIM), dtype=torch.float32))


@pytest.mark.parametrize("family", FAMILIES)
def test_count_parameters_counts_what_the_recipe_promises(family):
    recipe, model = tiny_model(family)
    assert count_parameters(model) == estimate_size(recipe, DIM).parameters


def test_an_object_without_the_methods_is_not_a_density_model():
    assert not isinstance(torch.nn.Linear(2, 2), DensityModel)


# -- ModelMetadata -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    table = manifold_table(120).assign(k=np.arange(120) % 3, c0=1.0)
    estimator = FunnelDensity(tiny_recipe("f-nsf"), steps=4, eval_every=2, drop_constant=True, device="cpu")
    return estimator.fit(table).save(tmp_path_factory.mktemp("saved") / "model")


@pytest.mark.parametrize("family", [name for name, family in FAMILIES.items() if not family.image])
def test_a_conditional_model_counts_what_the_recipe_promises_for_its_context(family):
    recipe = tiny_recipe(family)
    model = build_model(recipe, np.zeros(DIM), np.ones(DIM), context_features=3)
    assert count_parameters(model) == estimate_size(recipe, DIM, 3).parameters
    x, c = torch.randn(7, DIM), torch.randn(7, 3)
    with torch.no_grad():
        assert model.eval().log_prob(x, c).shape == (7,)
        assert model.encode(x, c).shape == (7, model.latent_dim)
        assert model.sample(7, context=c).shape == (7, DIM)


def test_model_metadata_reads_back_a_conditional_model_json_to_the_same_bytes(tmp_path):
    table = manifold_table(120).assign(k=np.arange(120) % 3)
    conditions = {"conditional_columns": ["k", "d"], "categorical_columns": ["k"]}
    estimator = FunnelDensity(tiny_recipe("f-nsf"), steps=4, eval_every=2, device="cpu", **conditions)
    text = (estimator.fit(table).save(tmp_path / "model") / artifact.METADATA).read_text(encoding="utf-8")
    metadata = ModelMetadata.from_dict(json.loads(text))
    assert [c["name"] for c in metadata.conditions] == ["k", "d"]
    assert json.dumps(metadata.to_dict(), indent=2) + "\n" == text


def test_model_metadata_reads_back_a_saved_model_json_to_the_same_bytes(saved):
    text = (saved / artifact.METADATA).read_text(encoding="utf-8")
    document = json.loads(text)
    metadata = ModelMetadata.from_dict(document)
    assert metadata.to_dict() == document
    assert json.dumps(metadata.to_dict(), indent=2) + "\n" == text, "same keys, same order, same values"


def test_model_metadata_holds_the_fields_as_typed_values(saved):
    metadata = ModelMetadata.from_dict(artifact.verify_folder(saved))
    assert metadata.columns == ("a", "b", "c", "d", "k") and metadata.input_columns[-1] == "c0"
    assert metadata.dequantized_columns == ("k",) and metadata.dropped_constant_columns == ("c0",)
    assert metadata.input_dim == len(metadata.mean) == len(metadata.std) == 5
    assert metadata.family == "f-nsf" and metadata.weights_sha256 == artifact.sha256(saved / artifact.WEIGHTS)


def test_model_metadata_shares_no_table_with_its_document(saved):
    document = artifact.verify_folder(saved)
    metadata = ModelMetadata.from_dict(document)
    document["recipe"]["family"] = "edited"
    metadata.to_dict()["training"]["steps"] = -1
    assert metadata.family == "f-nsf" and metadata.training["steps"] == 4


def test_a_loaded_estimator_writes_the_model_json_it_read(saved, tmp_path):
    copy = FunnelDensity.load(saved, device="cpu").save(tmp_path / "copy")
    written, read = (json.loads((folder / artifact.METADATA).read_text()) for folder in (copy, saved))
    assert {**written, "created": None} == {**read, "created": None}


# -- prepare_rows ------------------------------------------------------------------------------------------------


def integer_table(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"x": rng.normal(size=n), "k": rng.integers(0, 4, size=n).astype(np.float64)})


def test_prepare_rows_splits_dequantizes_and_measures_the_rows():
    frame = integer_table()
    rows = prepare_rows(frame, None, seed=0, val_fraction=0.25, dequantize="uniform", dtypes={"k": "int64"})
    assert isinstance(rows, PreparedRows)
    assert (len(rows.train), len(rows.held_out)) == (30, 10)
    assert rows.columns == ("x", "k") and rows.dtypes == {"x": "float64", "k": "int64"}
    assert rows.dequantized_columns == ("k",) and rows.mask.tolist() == [False, True]
    assert np.allclose(rows.mean, rows.train.mean().to_numpy() + [0, 0.5])
    assert np.allclose(rows.std, rows.train.std(ddof=0).to_numpy())
    assert (rows.train["k"] % 1 == 0).all(), "training rows get fresh noise every batch, not here"
    noise = rows.held_out["k"] % 1
    assert ((noise > 0) & (noise < 1)).all() and rows.held_out["x"].isin(frame["x"]).all(), "noise on k only"


def test_prepare_rows_trains_on_every_row_when_validation_rows_are_given():
    frame = integer_table()
    rows = prepare_rows(frame, frame.iloc[:5], seed=0, val_fraction=0.1, dequantize="none", dtypes={})
    assert rows.train is frame and len(rows.held_out) == 5
    assert rows.dequantized_columns == () and not rows.mask.any() and rows.dtypes == {"x": "float64", "k": "float64"}


def test_prepare_rows_refuses_a_column_float32_cannot_resolve():
    frame = integer_table().assign(x=lambda t: 1e10 + 1e-3 * t["x"])
    with pytest.raises(UserError, match=r"column\(s\) 'x' vary too little .* float32"):
        prepare_rows(frame, None, seed=0, val_fraction=0.25, dequantize="uniform", dtypes={})


# -- no torch where none is needed -------------------------------------------------------------------------------


def test_the_contracts_metadata_and_preparation_import_no_torch():
    modules = "funnelcli.models.contract, funnelcli.model_metadata, funnelcli.preparation, funnelcli.cli.info"
    code = f"import sys, {modules}, funnelcli.evaluation.report; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
