"""Mixed models on the command line: `train --categorical species` (species not a condition) models the column, and
`score`, `encode`, `sample`, `info` read, write and describe it; `evaluate` and `compare` refuse it in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from funnelcli.estimator import FunnelDensity
from tests.helpers import assert_one_line_error, run, write_recipe

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run on one torch thread

SPECIES = ["adelie", "chinstrap", "gentoo"]
MEASUREMENTS = ["x", "y"]
MIXED = "log P(species) + log p(x | species)"


def species_table(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """An identifier (text, neither modelled nor a condition), a species (text, P = 0.5, 0.2, 0.3) and two
    measurements whose location follows the species."""
    rng = np.random.default_rng(seed)
    species = rng.choice(SPECIES, size=n, p=[0.5, 0.2, 0.3])
    x = pd.Series(species).map({"adelie": -2.0, "chinstrap": 0.0, "gentoo": 2.0}).to_numpy() + rng.normal(size=n)
    return pd.DataFrame(
        {"id": [f"r{i:03d}" for i in range(n)], "species": species, "x": x, "y": np.sin(x) + 0.3 * rng.normal(size=n)}
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    write_recipe(root)
    species_table().to_csv(root / "train.csv", index=False)
    species_table(30, seed=1).to_csv(root / "test.csv", index=False)
    return root


@pytest.fixture(scope="module")
def model(workdir) -> Path:
    """`funnel train train.csv --categorical species`: a mixed model of x, y and species."""
    out = workdir / "model"
    result = run("train", workdir / "train.csv", "--categorical", "species", "--recipe", workdir / "tiny.toml",
                 "--steps", "10", "--output", out, "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "plus categorical species" in result.stdout
    return out


def test_train_with_categorical_alone_models_the_column_and_records_its_categories(model):
    document = json.loads((model / "model.json").read_text())
    assert document["columns"] == MEASUREMENTS and "conditions" not in document
    (entry,) = document["categorical"]["columns"]
    assert (entry["name"], entry["categories"]) == ("species", SPECIES)


def test_score_writes_the_mixed_sum_after_the_categorical_column_and_says_it_mixes(model, workdir):
    out = workdir / "scores.csv"
    result = run("score", model, workdir / "test.csv", "-o", out, "--keep", "id")
    assert result.exit_code == 0, result.output
    assert f"{MIXED}: a mass times a density" in result.stdout
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["id", "species", *MEASUREMENTS, "log_prob"]
    test = pd.read_csv(workdir / "test.csv")
    estimator = FunnelDensity.load(model, device="cpu")
    np.testing.assert_allclose(scores["log_prob"], estimator.score_samples(test), rtol=1e-5)
    density = estimator.score_samples(test) - estimator.categorical_.log_prob(test)
    assert not np.allclose(scores["log_prob"], density)  # the mass is in the sum
    assert scores["species"].tolist() == test["species"].tolist()


def test_score_json_says_the_scores_mix_a_mass_and_a_density(model, workdir):
    result = run("score", model, workdir / "test.csv", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mixed"] is True and report["categorical"] == ["species"] and report["likelihood"] == MIXED
    assert "conditions" not in report


def test_encode_reads_the_categorical_column_and_carries_it_before_the_code(model, workdir):
    out = workdir / "latent.csv"
    result = run("encode", model, workdir / "test.csv", "-o", out, "--keep", "id", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["columns"] == ["id", "species", "z0"]
    latent = pd.read_csv(out)
    assert list(latent.columns) == ["id", "species", "z0"] and np.isfinite(latent["z0"]).all()


def test_sample_writes_the_drawn_categorical_column_with_seen_categories_only(model, workdir):
    out = workdir / "samples.csv"
    result = run("sample", model, "-n", "300", "-o", out, "--seed", "0")
    assert result.exit_code == 0, result.output
    samples = pd.read_csv(out)
    assert list(samples.columns) == ["species", *MEASUREMENTS]
    assert set(samples["species"]) == set(SPECIES)  # each has P >= 0.2: 300 draws see them all
    assert np.isfinite(samples[MEASUREMENTS].to_numpy()).all()


@pytest.mark.parametrize("command", ["score", "encode"])
def test_an_unseen_category_is_exit_2_naming_the_column_the_value_and_the_row(command, model, tmp_path):
    species_table(20).assign(species=lambda t: t["species"].where(t.index != 11, "emperor")).to_csv(
        tmp_path / "emperor.csv", index=False
    )
    result = run(command, model, tmp_path / "emperor.csv", "-o", tmp_path / "never.csv")
    assert_one_line_error(result, "categorical column 'species'", "'emperor'", "row 12 of")
    assert not (tmp_path / "never.csv").exists()


def test_score_refuses_data_without_the_categorical_column_in_one_line(model, tmp_path):
    species_table(20).drop(columns="species").to_csv(tmp_path / "nospecies.csv", index=False)
    result = run("score", model, tmp_path / "nospecies.csv")
    assert_one_line_error(result, "lacks the categorical column(s) 'species'", MIXED)


def test_info_lists_the_modelled_categorical_columns_and_their_categories(model):
    result = run("info", model)
    assert result.exit_code == 0, result.output
    assert "species (modelled: adelie, chinstrap, gentoo)" in result.stdout
    assert "mass P(species)" in result.stdout
    assert json.loads(run("info", model, "--json").stdout)["categorical"]["columns"][0]["name"] == "species"


@pytest.mark.parametrize("command", ["evaluate", "compare"])
def test_evaluate_and_compare_refuse_a_mixed_model_in_one_line(command, model, workdir):
    args = [model, workdir / "test.csv"] if command == "evaluate" else [model, "--data", workdir / "test.csv"]
    assert_one_line_error(run(command, *args), "categorical column(s) species", "funnel score")
