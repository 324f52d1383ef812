"""``funnel evaluate --baselines`` and ``funnel compare --baselines``: classical baselines beside the models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from funnelcli import estimator as estimator_module
from funnelcli.baselines import fit_baselines, gaussian_parameters
from funnelcli.estimator import FunnelDensity
from funnelcli.evaluation import report
from tests.helpers import assert_one_line_error, manifold_table, run, tiny_recipe

BASELINE_KEYS = {"name", "label", "mean_log_prob", "stderr", "parameters", "latent_dim"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("baselines")
    manifold_table(400, seed=0).to_csv(root / "train.csv", index=False)
    manifold_table(150, seed=1).to_csv(root / "test.csv", index=False)
    manifold_table(100, seed=2).drop(columns="c").to_csv(root / "narrow.csv", index=False)
    prepared = root / "prepared"
    prepared.mkdir()
    (prepared / "manifest.json").write_text("{}")
    manifold_table(400, seed=0).to_parquet(prepared / "train.parquet")
    manifold_table(120, seed=3).to_parquet(prepared / "validation.parquet")
    manifold_table(150, seed=1).to_parquet(prepared / "test.parquet")
    return root


@pytest.fixture(scope="module")
def models(workdir) -> dict[str, Path]:
    """A funnel model (latent 2 of 4 columns), a full-dimension flow (latent 4), and a funnel of 3 columns."""
    folders = {}
    for name, family, table in [
        ("funnel", "f-nsf", manifold_table(400)),
        ("flow", "nsf", manifold_table(400)),
        ("narrow", "f-nsf", manifold_table(400).drop(columns="d")),
    ]:
        folders[name] = workdir / "runs" / name
        FunnelDensity(tiny_recipe(family), device="cpu", steps=10).fit(table).save(folders[name])
    return folders


def evaluate_json(*args) -> dict:
    result = run("evaluate", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_evaluate_reports_the_three_baselines_and_the_gain_over_ppca_of_the_model_latent_size(models, workdir):
    document = evaluate_json(models["funnel"], workdir / "test.csv", "--baselines", workdir / "train.csv")
    latent = document["latent_dim"]
    assert 1 <= latent < 4
    baselines = document["baselines"]
    assert [b["name"] for b in baselines] == ["gaussian", "gmm", f"ppca-{latent}"]
    for baseline in baselines:
        assert set(baseline) >= BASELINE_KEYS
        assert math.isfinite(baseline["mean_log_prob"]) and baseline["stderr"] > 0 and baseline["parameters"] > 0
    assert [b["latent_dim"] for b in baselines] == [None, None, latent]
    assert baselines[0]["parameters"] == gaussian_parameters(4)
    assert "held-out training rows" in baselines[1]["label"]
    assert document["gain_over_ppca"] == pytest.approx(document["mean_log_prob"] - baselines[2]["mean_log_prob"])


def test_the_baselines_numbers_are_the_librarys_fitted_on_the_train_table(models, workdir):
    document = evaluate_json(models["funnel"], workdir / "test.csv", "--baselines", workdir / "train.csv")
    latent = document["latent_dim"]
    fitted = fit_baselines(manifold_table(400, seed=0).to_numpy(), latent_dims=[latent], seed=0)
    test = manifold_table(150, seed=1).to_numpy()
    for baseline in document["baselines"]:
        expected = fitted[baseline["name"]].score_samples(test).mean()
        assert baseline["mean_log_prob"] == pytest.approx(expected, rel=1e-9), baseline["name"]


def test_a_model_of_full_latent_size_has_no_ppca_and_no_gain(models, workdir):
    document = evaluate_json(models["flow"], workdir / "test.csv", "--baselines", workdir / "train.csv")
    assert document["latent_dim"] == 4
    assert [b["name"] for b in document["baselines"]] == ["gaussian", "gmm"]
    assert document["gain_over_ppca"] is None


def test_a_prepared_folder_gives_its_train_split_and_chooses_the_mixture_on_its_validation_split(models, workdir):
    prepared = workdir / "prepared"
    document = evaluate_json(models["funnel"], prepared, "--baselines", prepared)
    assert document["rows"] == 150
    assert "chosen on validation" in document["baselines"][1]["label"]


def test_evaluate_prints_the_baselines_for_people(models, workdir):
    result = run("evaluate", models["funnel"], workdir / "test.csv", "--baselines", workdir / "train.csv")
    assert result.exit_code == 0, result.output
    assert "baseline: full-covariance Gaussian" in result.stdout
    assert "baseline: probabilistic PCA, latent" in result.stdout
    assert "gain over PPCA of the same latent size" in result.stdout


def test_evaluate_without_baselines_reports_none(models, workdir):
    document = evaluate_json(models["funnel"], workdir / "test.csv")
    assert "baselines" not in document and "gain_over_ppca" not in document


@pytest.fixture(scope="module")
def compared(models, workdir) -> dict:
    args = ("compare", models["funnel"], models["flow"], "--data", workdir / "test.csv")
    result = run(*args, "--baselines", workdir / "train.csv", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_compare_adds_a_row_per_baseline_and_each_models_gain_over_ppca(compared, models):
    rows = compared["models"]
    model_rows = [row for row in rows if not row.get("baseline")]
    baseline_rows = [row for row in rows if row.get("baseline")]
    assert [row["model"] for row in model_rows] == [str(models["funnel"]), str(models["flow"])]
    latent = model_rows[0]["latent_dim"]
    assert [row["model"] for row in baseline_rows] == ["gaussian", "gmm", f"ppca-{latent}"]
    assert rows[: len(model_rows)] == model_rows, "models come first"
    ppca_mean = baseline_rows[2]["mean_log_prob"]
    assert model_rows[0]["gain_over_ppca"] == pytest.approx(model_rows[0]["mean_log_prob"] - ppca_mean)
    assert model_rows[1]["gain_over_ppca"] is None, "no PPCA at the full latent size"
    for row in baseline_rows:
        assert math.isfinite(row["mean_log_prob"]) and row["parameters"] > 0 and row["label"]
        assert row["ms_per_step"] is None and row["rows"] == 150
    assert compared["best"] == max(rows, key=lambda row: row["mean_log_prob"])["model"]


def test_compare_markdown_with_baselines_has_the_gain_column_and_one_best_row(compared, models, workdir):
    args = ("compare", models["funnel"], models["flow"], "--data", workdir / "test.csv")
    result = run(*args, "--baselines", workdir / "train.csv", "--markdown")
    assert result.exit_code == 0, result.output
    header, _, *rows = result.stdout.strip().splitlines()
    assert header.endswith("| gain over PPCA (nats) |") and len(rows) == 5
    assert any(row.startswith("| gmm | Gaussian mixture (k=") for row in rows)
    bold = [row for row in rows if "**" in row]
    assert len(bold) == 1 and bold[0].startswith(f"| {compared['best']} |")


@pytest.mark.parametrize(
    "args, fragments",
    [
        (("evaluate", "{funnel}", "{workdir}/test.csv", "--baselines", "{workdir}/narrow.csv"), ("narrow.csv", "'c'")),
        (
            ("compare", "{funnel}", "--data", "{workdir}/test.csv", "--baselines", "{workdir}/narrow.csv"),
            ("narrow.csv", "'c'"),
        ),
        (("evaluate", "{funnel}", "{workdir}/test.csv", "--baselines", "{workdir}/none.csv"), ("none.csv",)),
        (
            ("compare", "{funnel}", "{narrow}", "--data", "{workdir}/test.csv", "--baselines", "{workdir}/train.csv"),
            ("--baselines needs models of the same columns",),
        ),
    ],
    ids=["evaluate-missing-column", "compare-missing-column", "missing-file", "models-of-other-columns"],
)
def test_bad_baseline_input_exits_2_with_one_line(args, fragments, models, workdir):
    names = {"workdir": workdir, "funnel": models["funnel"], "narrow": models["narrow"]}
    assert_one_line_error(run(*(str(arg).format(**names) for arg in args)), *fragments)


def test_baselines_score_dequantized_columns_at_the_models_own_noise():
    assert report.SCORE_NOISE_SEED == estimator_module.SCORE_NOISE_SEED

    class Integer:
        columns_ = ["a", "b"]
        dequantized_columns_ = ["b"]

    table = np.array([[0.5, 1.0], [1.5, 2.0], [2.5, 3.0]])
    values = report.baseline_values(Integer(), table)
    noise = np.random.default_rng(estimator_module.SCORE_NOISE_SEED).random(table.shape)
    np.testing.assert_array_equal(values, table + [0.0, 1.0] * noise)
