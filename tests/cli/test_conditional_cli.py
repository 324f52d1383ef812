"""Conditional models on the command line: `train --condition`, the conditions read by `score` and `encode`,
`sample --conditions`, and one line (exit 2) for every mistake about them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from funnelcli.apply import score_file
from funnelcli.estimator import FunnelDensity
from tests.helpers import assert_one_line_error, run, write_recipe

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run on one torch thread

MEASUREMENTS = ["bill", "depth", "flipper"]


def penguins_like(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """A penguins-like table: an identifier and an island (text, neither modelled nor conditioned on), a species
    and a sex (text conditions), an integer-coded sex, and three measurements whose location depends on both."""
    rng = np.random.default_rng(seed)
    species = rng.choice(["Adelie", "Chinstrap", "Gentoo"], n)
    sex = rng.choice(["female", "male"], n)
    shift = pd.Series(species).map({"Adelie": 0.0, "Chinstrap": 1.5, "Gentoo": 3.0}).to_numpy() + (sex == "male")
    return pd.DataFrame(
        {
            "id": [f"p{i:03d}" for i in range(n)],
            "species": species,
            "island": rng.choice(["Biscoe", "Dream"], n),
            "bill": 40 + 2 * shift + rng.normal(size=n),
            "depth": 17 - shift + rng.normal(size=n),
            "flipper": 190 + 5 * shift + 3 * rng.normal(size=n),
            "sex": sex,
        }
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("conditional")
    write_recipe(root)
    penguins_like().to_csv(root / "penguins.csv", index=False)
    penguins_like(40, seed=1).to_parquet(root / "test.parquet")
    pd.DataFrame({"species": ["Gentoo", "Adelie", "Chinstrap"], "sex": ["male", "female", "male"]}).to_csv(
        root / "conditions.csv", index=False
    )
    return root


@pytest.fixture(scope="module")
def trained(workdir):
    """(the model folder, the result of `funnel train penguins.csv --condition species,sex`)."""
    out = workdir / "model"
    result = run("train", workdir / "penguins.csv", "--condition", "species,sex", "--recipe", workdir / "tiny.toml",
                 "--output", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, result


@pytest.fixture(scope="module")
def model(trained) -> Path:
    return trained[0]


def test_train_with_condition_records_the_conditions_in_model_json(model):
    document = json.loads((model / "model.json").read_text())
    assert document["columns"] == MEASUREMENTS
    conditions = {entry["name"]: entry for entry in document["conditions"]}
    assert list(conditions) == ["species", "sex"]
    assert conditions["species"]["kind"] == "categorical"
    assert conditions["species"]["categories"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert conditions["sex"]["categories"] == ["female", "male"]


def test_train_skips_a_text_column_that_is_neither_modelled_nor_a_condition_with_the_usual_warning(trained):
    out, result = trained
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: skipping")]
    assert len(warnings) == 1 and "'id', 'island'" in warnings[0] and "species" not in warnings[0]
    assert "given species, sex" in result.stdout


def test_train_json_names_the_conditions(workdir):
    result = run("train", workdir / "penguins.csv", "--condition", "species", "--recipe", workdir / "tiny.toml",
                 "--steps", "2", "--output", workdir / "json-model", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["conditions"] == ["species"]


def test_train_with_categorical_encodes_integer_codes_as_categories(workdir, tmp_path):
    table = penguins_like(120).assign(sex=lambda t: np.where(t["sex"] == "male", 1, 2))
    table.to_csv(tmp_path / "coded.csv", index=False)
    result = run("train", tmp_path / "coded.csv", "--condition", "species,sex", "--categorical", "sex",
                 "--recipe", workdir / "tiny.toml", "--steps", "2", "--output", tmp_path / "m", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    sex = json.loads((tmp_path / "m" / "model.json").read_text())["conditions"][1]
    assert (sex["name"], sex["kind"], sex["categories"]) == ("sex", "categorical", ["1", "2"])


def test_train_with_a_condition_the_table_lacks_is_exit_2_naming_it(workdir):
    result = run("train", workdir / "penguins.csv", "--condition", "species,colour", "--recipe", workdir / "tiny.toml",
                 "--output", workdir / "never")  # fmt: skip
    assert_one_line_error(result, "--condition", "'colour'", "penguins.csv")
    assert not (workdir / "never").exists()


def test_train_refuses_a_column_that_is_both_modelled_and_a_condition(workdir):
    result = run("train", workdir / "penguins.csv", "--condition", "species", "--columns", "bill,species",
                 "--recipe", workdir / "tiny.toml", "--output", workdir / "never")  # fmt: skip
    assert_one_line_error(result, "--columns and --condition both name 'species'")


def test_train_refuses_a_missing_condition_value_in_one_line(workdir, tmp_path):
    table = penguins_like(60)
    table.loc[7, "sex"] = None
    table.to_csv(tmp_path / "holes.csv", index=False)
    result = run("train", tmp_path / "holes.csv", "--condition", "species,sex", "--recipe", workdir / "tiny.toml",
                 "--output", tmp_path / "never", "--quiet")  # fmt: skip
    assert_one_line_error(result, "'sex'", "missing value", "row 8")


def test_score_reads_the_conditions_and_writes_them_after_the_kept_columns(model, workdir):
    out = workdir / "scores.csv"
    result = run("score", model, workdir / "test.parquet", "-o", out, "--keep", "id", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["conditions"] == ["species", "sex"]
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["id", "species", "sex", *MEASUREMENTS, "log_prob"]
    test = pd.read_parquet(workdir / "test.parquet")
    expected = FunnelDensity.load(model, device="cpu").score_samples(test)
    np.testing.assert_allclose(scores["log_prob"], expected, rtol=1e-5)
    assert scores["id"].tolist() == test["id"].tolist() and scores["species"].tolist() == test["species"].tolist()


def test_encode_writes_the_kept_and_condition_columns_then_the_latent_code(model, workdir):
    out = workdir / "latent.csv"
    result = run("encode", model, workdir / "test.parquet", "-o", out, "--keep", "id,sex")
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(out).columns) == ["id", "sex", "species", "z0"]


@pytest.mark.parametrize("command", ["score", "encode"])
def test_score_and_encode_refuse_data_without_a_condition_column_in_one_line(command, model, workdir, tmp_path):
    penguins_like(20).drop(columns="sex").to_csv(tmp_path / "nosex.csv", index=False)
    result = run(command, model, tmp_path / "nosex.csv", "-o", tmp_path / "out.csv")
    assert_one_line_error(result, "lacks the condition column(s) 'sex'", "add the column")
    assert not (tmp_path / "out.csv").exists()


def test_the_score_column_never_takes_a_condition_columns_name(model, workdir, tmp_path):
    result = run("score", model, workdir / "test.parquet", "-o", tmp_path / "out.csv", "--score-column", "species")
    assert_one_line_error(result, "two columns named 'species'", "--score-column")


def test_the_latent_columns_never_take_a_condition_columns_name(workdir, tmp_path):
    penguins_like(60).rename(columns={"species": "z0"}).to_csv(tmp_path / "z.csv", index=False)
    trained = run("train", tmp_path / "z.csv", "--condition", "z0", "--recipe", workdir / "tiny.toml", "--steps", "2",
                  "--output", tmp_path / "m", "--quiet")  # fmt: skip
    assert trained.exit_code == 0, trained.output
    result = run("encode", tmp_path / "m", tmp_path / "z.csv", "-o", tmp_path / "out.csv")
    assert_one_line_error(result, "two columns named 'z0'", "--prefix")
    assert run("encode", tmp_path / "m", tmp_path / "z.csv", "-o", tmp_path / "out.csv", "--prefix", "u").exit_code == 0


def test_sample_with_conditions_draws_n_rows_per_condition_row_in_order(model, workdir):
    out = workdir / "samples.csv"
    result = run("sample", model, "--conditions", workdir / "conditions.csv", "-n", "4", "-o", out, "--seed", "0")
    assert result.exit_code == 0, result.output
    samples = pd.read_csv(out)
    assert list(samples.columns) == ["species", "sex", *MEASUREMENTS]
    assert samples["species"].tolist() == ["Gentoo"] * 4 + ["Adelie"] * 4 + ["Chinstrap"] * 4
    assert samples["sex"].tolist() == ["male"] * 4 + ["female"] * 4 + ["male"] * 4
    assert np.isfinite(samples[MEASUREMENTS].to_numpy()).all()


def test_sample_with_conditions_draws_one_row_per_condition_row_by_default(model, workdir):
    out = workdir / "one-each.parquet"
    result = run("sample", model, "--conditions", workdir / "conditions.csv", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == 3
    assert pd.read_parquet(out)["species"].tolist() == ["Gentoo", "Adelie", "Chinstrap"]


def test_sample_of_a_conditional_model_without_conditions_is_exit_2(model, tmp_path):
    result = run("sample", model, "-n", "5", "-o", tmp_path / "never.csv")
    assert_one_line_error(result, "conditional on species, sex", "--conditions FILE")


def test_an_unseen_category_is_exit_2_naming_the_column_and_the_value(model, tmp_path):
    pd.DataFrame({"species": ["Adelie", "Emperor"], "sex": ["male", "female"]}).to_csv(tmp_path / "c.csv", index=False)
    for command in (["sample", model, "--conditions", tmp_path / "c.csv"], ["score", model, tmp_path / "c.csv"]):
        if command[0] == "score":
            penguins_like(2).assign(species=["Adelie", "Emperor"]).to_csv(tmp_path / "c.csv", index=False)
        result = run(*command, "-o", tmp_path / "never.csv")
        assert_one_line_error(result, "'species'", "'Emperor'", "row 2")


def test_an_unseen_category_beyond_the_first_chunk_is_named_by_its_row_of_the_file(model, tmp_path):
    table = penguins_like(50)
    table.loc[37, "species"] = "Emperor"
    table.to_csv(tmp_path / "late.csv", index=False)
    estimator = FunnelDensity.load(model, device="cpu")
    with pytest.raises(ValueError, match=r"'Emperor' at row 38 of"):
        score_file(estimator, tmp_path / "late.csv", batch_rows=16)


def test_sample_conditions_on_an_unconditional_model_is_exit_2(workdir, tmp_path):
    penguins_like(60).to_csv(tmp_path / "plain.csv", index=False)
    trained = run("train", tmp_path / "plain.csv", "--recipe", workdir / "tiny.toml", "--steps", "2", "--output",
                  tmp_path / "plain", "--quiet")  # fmt: skip
    assert trained.exit_code == 0, trained.output
    result = run("sample", tmp_path / "plain", "--conditions", workdir / "conditions.csv", "-o", tmp_path / "x.csv")
    assert_one_line_error(result, "--conditions applies to conditional models only")
    assert_one_line_error(run("sample", tmp_path / "plain", "-o", tmp_path / "x.csv"), "give -n N")


def test_info_shows_the_conditions_and_their_categories(model):
    result = run("info", model)
    assert result.exit_code == 0, result.output
    assert "species (categorical: Adelie, Chinstrap, Gentoo)" in result.stdout
    assert "sex (categorical: female, male)" in result.stdout
    assert json.loads(run("info", model, "--json").stdout)["conditions"][0]["name"] == "species"


@pytest.mark.parametrize("command", ["evaluate", "compare"])
def test_evaluate_and_compare_refuse_a_conditional_model_in_one_line(command, model, workdir):
    args = [model, workdir / "test.parquet"] if command == "evaluate" else [model, "--data", workdir / "test.parquet"]
    result = run(command, *args)
    assert_one_line_error(result, "conditional on species, sex", "funnel score")
