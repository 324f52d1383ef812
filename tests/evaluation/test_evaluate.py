"""Evaluation: metrics agree with independent computations, reports are complete for every family, and
``funnel evaluate``, ``report`` and ``compare`` print what they promise."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from scipy.integrate import quad
from sklearn.metrics import average_precision_score, roc_auc_score

from funnelcli.errors import UserError
from funnelcli.estimator import FunnelDensity
from funnelcli.evaluation import (
    anomaly_detection,
    bits_per_dim,
    classifier_two_sample_auc,
    compare_row,
    evaluate,
    format_comparison,
    likelihood_ratio_summary,
    mean_and_stderr,
    sliced_wasserstein,
    wasserstein_1d,
    wasserstein_to_standard_normal,
    write_report,
)
from funnelcli.evaluation.report import FIGURES, GENERATOR, IMAGE_FIGURES, INDEX, metric_rows
from funnelcli.models import FAMILIES
from tests.helpers import assert_one_line_error, manifold_table, run, tiny_recipe

#: The figures of a tabular model's report: all but the image grids.
TABULAR_FIGURES = [name for key, name in FIGURES.items() if key not in IMAGE_FIGURES]
LOG_PROB_IN = np.array([-1.2, -0.7, -2.5, -0.9, -1.8, -3.1, -1.1, -0.4])
LOG_PROB_OUT = np.array([-2.6, -4.0, -1.0, -5.5, -3.2, -2.5])


# ---------------------------------------------------------------------------------------------------- metrics


def test_auroc_is_scikit_learns_with_minus_log_p_as_score_and_ood_rows_positive():
    labels = np.r_[np.zeros(LOG_PROB_IN.size), np.ones(LOG_PROB_OUT.size)]
    expected = roc_auc_score(labels, -np.r_[LOG_PROB_IN, LOG_PROB_OUT])
    assert anomaly_detection(LOG_PROB_IN, LOG_PROB_OUT)["auroc"] == pytest.approx(expected, abs=1e-12)


def test_auroc_is_the_share_of_ood_in_pairs_where_the_ood_row_is_less_likely_ties_counting_half():
    pairs = LOG_PROB_OUT[:, None] - LOG_PROB_IN[None, :]
    expected = (np.sum(pairs < 0) + 0.5 * np.sum(pairs == 0)) / pairs.size
    assert anomaly_detection(LOG_PROB_IN, LOG_PROB_OUT)["auroc"] == pytest.approx(expected, abs=1e-12)


def test_average_precision_is_scikit_learns_with_ood_rows_positive():
    labels = np.r_[np.zeros(LOG_PROB_IN.size), np.ones(LOG_PROB_OUT.size)]
    expected = average_precision_score(labels, -np.r_[LOG_PROB_IN, LOG_PROB_OUT])
    result = anomaly_detection(LOG_PROB_IN, LOG_PROB_OUT)
    assert result["average_precision"] == pytest.approx(expected, abs=1e-12)
    assert result["positive_share"] == pytest.approx(6 / 14)


def test_a_row_of_zero_likelihood_ranks_as_the_most_anomalous():
    result = anomaly_detection(np.array([-1.0, -2.0, -np.inf]), np.array([-50.0, -3.0]))
    # The -inf in-distribution row outranks both OOD rows: 4 of 6 pairs are ordered right.
    assert result["auroc"] == pytest.approx(4 / 6)


def test_standard_error_is_scipys_sem():
    mean, stderr = mean_and_stderr(LOG_PROB_IN)
    assert mean == pytest.approx(LOG_PROB_IN.mean())
    assert stderr == pytest.approx(scipy.stats.sem(LOG_PROB_IN), rel=1e-12)


def test_bits_per_dim_converts_nats_to_bits_and_divides_by_the_dimension():
    # 16 bits per row over 8 columns is 2 bits per dimension; 16 bits are 16 ln 2 = 11.0904 nats.
    assert bits_per_dim(-16 * math.log(2), 8) == pytest.approx(2.0)
    assert bits_per_dim(-11.090354888959125, 8) == pytest.approx(2.0)
    assert bits_per_dim(3.0, 2) == pytest.approx(-3.0 / (2 * 0.6931471805599453))


def test_table4_ratio_is_the_ood_mean_over_the_test_mean():
    summary = likelihood_ratio_summary(np.array([-2.0, -4.0]), np.array([-6.0, -12.0]))
    assert (summary["mean_log_prob_in"], summary["mean_log_prob_out"], summary["ratio"]) == (-3.0, -9.0, 3.0)


def test_table4_ratio_is_undefined_when_the_means_differ_in_sign():
    assert likelihood_ratio_summary(np.array([1.0, 2.0]), np.array([-6.0, -12.0]))["ratio"] is None


def test_sliced_wasserstein_of_a_sample_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(300, 5))
    assert sliced_wasserstein(x, x) == pytest.approx(0.0, abs=1e-12)


def test_sliced_wasserstein_of_shifted_gaussians_in_one_dimension_is_the_shift():
    x = np.random.default_rng(0).normal(size=(2000, 1))
    y = np.random.default_rng(1).normal(size=(2000, 1)) + 1.5
    assert sliced_wasserstein(x, y) == pytest.approx(1.5, abs=0.08)
    assert sliced_wasserstein(x, x + 1.5) == pytest.approx(1.5, abs=1e-12)


def test_one_dimensional_wasserstein_is_scipys_for_samples_of_different_sizes():
    rng = np.random.default_rng(3)
    u, v = rng.normal(size=37), rng.gamma(2.0, size=53)
    assert wasserstein_1d(u, v) == pytest.approx(scipy.stats.wasserstein_distance(u, v), rel=1e-10)


def test_latent_wasserstein_to_normal_is_the_integral_of_the_cdf_gap():
    z = np.random.default_rng(4).normal(0.4, 1.3, size=(40, 2))
    for j, distance in enumerate(wasserstein_to_standard_normal(z)):
        values = np.sort(z[:, j])
        gap = lambda x, v=values: abs(np.searchsorted(v, x, side="right") / v.size - scipy.stats.norm.cdf(x))
        expected = quad(gap, -12, 12, points=list(values), limit=500)[0]
        assert distance == pytest.approx(expected, abs=1e-6)


def test_classifier_two_sample_auc_is_near_half_for_one_distribution_and_near_one_for_two():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(300, 2)), rng.normal(size=(300, 2))
    assert classifier_two_sample_auc(a, b) == pytest.approx(0.5, abs=0.1)
    assert classifier_two_sample_auc(a, b + 5.0) > 0.95


def test_classifier_two_sample_auc_is_reproducible_with_a_seed():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(120, 3)), rng.normal(0.3, size=(90, 3))
    assert classifier_two_sample_auc(a, b, random_state=2) == classifier_two_sample_auc(a, b, random_state=2)


# ------------------------------------------------------------------------------------------- trained models


def held_out_rows():
    return manifold_table(150, seed=1)


def ood_rows():
    """Rows of the same table with column a moved 10 of its standard deviations away."""
    rows = manifold_table(150, seed=2)
    rows["a"] += 20.0
    return rows


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evaluate")
    held_out_rows().to_csv(root / "test.csv", index=False)
    ood_rows().to_csv(root / "ood.csv", index=False)
    return root


@pytest.fixture(scope="module")
def models(workdir) -> dict[str, Path]:
    """A tiny model of every registered family, trained for a few steps through FunnelDensity and saved."""
    folders = {}
    for family in FAMILIES:
        folder = workdir / "runs" / family
        FunnelDensity(tiny_recipe(family), device="cpu", steps=10).fit(manifold_table(400)).save(folder)
        folders[family] = folder
    return folders


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def evaluated(request, models):
    """Each family's model evaluated on the test rows with OOD rows, through the library."""
    estimator = FunnelDensity.load(models[request.param], device="cpu")
    return estimator, evaluate(estimator, held_out_rows(), ood_rows(), name=request.param)


# A report's pages differ only between image and tabular families, funnels and full-dimension models, and
# likelihoods and bounds; drawing its figures takes seconds, so one family of each kind draws one.
REPORTED = ["f-nsf", "nsf-image", "f-nsf-image", "vae"]


@pytest.fixture(scope="module", params=REPORTED)
def report(request, models, workdir) -> tuple[Path, dict]:
    """The report of a family's model on the test rows with OOD rows, written through the library."""
    estimator = FunnelDensity.load(models[request.param], device="cpu")
    evaluation = evaluate(estimator, held_out_rows(), ood_rows(), name=request.param)
    folder = workdir / "reports" / request.param
    folder.mkdir(parents=True)  # an empty folder is used as it is
    write_report(folder, estimator, evaluation)
    return folder, evaluation.to_json()


def _figures_of(metrics: dict) -> list[str]:
    """The figures of a report on a model of ``metrics["family"]``: an image family's add the image grids."""
    return list(FIGURES.values()) if FAMILIES[metrics["family"]].image else TABULAR_FIGURES


def test_a_report_writes_every_figure_and_index_html_non_empty(report):
    folder, metrics = report
    for name in [*_figures_of(metrics), INDEX]:
        assert (folder / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], "temporary files were left behind"


def test_index_html_shows_every_figure_and_the_metrics(report):
    folder, metrics = report
    page = (folder / INDEX).read_text(encoding="utf-8")
    for name in FIGURES.values():
        assert (f'src="{name}"' in page) == (name in _figures_of(metrics))
    assert f"{metrics['ood']['auroc']:.3f}" in page
    assert f"{metrics['mean_log_prob']:.4f}" in page
    assert ("lower bound" in page) == metrics.get("bound", False)


def test_an_earlier_report_is_refused_without_overwrite_and_an_empty_folder_is_used(report, models):
    folder, metrics = report
    estimator = FunnelDensity.load(models[metrics["family"]], device="cpu")
    evaluation = evaluate(estimator, manifold_table(20, seed=3), two_sample=False)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(UserError, match="already holds a report folder"):
        write_report(folder, estimator, evaluation)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_evaluation_metrics_describe_the_model(evaluated):
    metrics = evaluated[1].to_json()
    assert metrics["rows"] == 150 and metrics["input_dim"] == 4
    assert 1 <= metrics["latent_dim"] <= 4
    assert metrics["bits_per_dim"] == pytest.approx(-metrics["mean_log_prob"] / (4 * math.log(2)))
    assert 0 <= metrics["two_sample"]["classifier_auc"] <= 1 and metrics["two_sample"]["sliced_wasserstein"] >= 0
    assert len(metrics["latent_wasserstein"]["per_coordinate"]) == metrics["latent_dim"]
    assert metrics["ood"]["auroc"] > 0.9, "rows shifted 10 standard deviations away should be easy to flag"


class ReportsABound(FunnelDensity):
    """Stands for a model whose score is a lower bound (a VAE's ELBO), whatever families exist."""

    is_bound_ = True


def test_a_model_that_reports_a_bound_is_labelled_as_one(models):
    estimator = ReportsABound.load(models["nsf"], device="cpu")
    metrics = evaluate(estimator, manifold_table(30, seed=3), two_sample=False).metrics
    assert metrics["bound"] is True
    assert "ELBO (lower bound)" in metric_rows(metrics)[0][0]
    row = compare_row("vae", estimator, manifold_table(30, seed=3))
    assert row["bound"] is True and "bound" in format_comparison([row])


# ---------------------------------------------------------------------------------------------- the commands


def test_evaluate_json_is_one_json_object_with_the_ood_scores(models, workdir):
    result = run("evaluate", models["f-nsf"], workdir / "test.csv", "--ood", workdir / "ood.csv", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    for key in ("mean_log_prob", "stderr", "bits_per_dim", "latent_dim", "parameters", "two_sample"):
        assert key in document
    assert set(document["ood"]) >= {"auroc", "average_precision", "mean_log_prob_in", "mean_log_prob_out", "ratio"}


def test_evaluate_prints_the_metrics_for_people(models, workdir):
    result = run("evaluate", models["nsf"], workdir / "test.csv")
    assert result.exit_code == 0, result.output
    assert "log-likelihood" in result.stdout and "bits per dimension" in result.stdout
    assert "AUROC" not in result.stdout


def test_evaluate_with_report_writes_it_and_names_index_html_in_the_json(models, workdir):
    folder = workdir / "cli-report"
    args = ("evaluate", models["nsf"], workdir / "test.csv", "--report", folder, "--json")
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["report"] == str(folder / INDEX)
    assert (folder / INDEX).stat().st_size > 0 and not (folder / FIGURES["roc"]).exists()
    assert_one_line_error(run(*args), "already holds a report folder", "--force")


def test_report_replaces_an_existing_report_only_with_force_and_prints_the_path_of_index_html(models, workdir):
    folder = workdir / "report-command"
    folder.mkdir()
    (folder / INDEX).write_text(f'<html><head><meta name="generator" content="{GENERATOR}"></head></html>')
    (folder / FIGURES["roc"]).write_bytes(b"an older report's figure")
    args = ("report", models["f-nsf"], workdir / "test.csv", "-o", folder, "--ood", workdir / "ood.csv")
    assert_one_line_error(run(*args), "already holds a report folder", "--force")
    result = run(*args, "--force")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(folder / INDEX)
    assert all((folder / name).read_bytes()[:4] == b"\x89PNG" for name in TABULAR_FIGURES)


def test_evaluate_reads_the_test_split_of_a_prepared_folder(models, workdir):
    prepared = workdir / "prepared"
    prepared.mkdir()
    (prepared / "manifest.json").write_text("{}")
    manifold_table(60, seed=7).to_parquet(prepared / "test.parquet")
    result = run("evaluate", models["nsf"], prepared, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == 60


@pytest.fixture(scope="module")
def compared(models, workdir) -> dict:
    result = run("compare", *models.values(), "--data", workdir / "test.csv", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_compare_json_is_one_object_with_a_row_per_model(compared, models):
    assert [row["model"] for row in compared["models"]] == [str(folder) for folder in models.values()]
    best = max(compared["models"], key=lambda row: row["mean_log_prob"])
    assert compared["best"] == best["model"]
    assert all(row["ms_per_step"] > 0 and row["parameters"] > 0 for row in compared["models"])


def test_compare_markdown_is_a_table_with_the_best_log_likelihood_in_bold(compared, models, workdir):
    result = run("compare", *models.values(), "--data", workdir / "test.csv", "--markdown")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    header, separator, rows = lines[0], lines[1], lines[2:]
    assert header.startswith("| model |") and header.count("|") == separator.count("|")
    assert re.fullmatch(r"\|(-{3,}\|)+", separator)
    assert len(rows) == len(models) and all(row.startswith("| ") and row.endswith(" |") for row in rows)
    bold = [row for row in rows if "**" in row]
    assert len(bold) == 1 and bold[0].startswith(f"| {compared['best']} |")


@pytest.mark.parametrize(
    "args, fragments",
    [
        (("evaluate", "{workdir}/no-such-model", "{workdir}/test.csv"), ("no such model folder",)),
        (("evaluate", "{nsf}", "{workdir}/missing.csv"), ("missing.csv",)),
        (("evaluate", "{nsf}", "{workdir}/test.csv", "--ood", "{workdir}/missing.csv"), ("missing.csv",)),
        (("evaluate", "{nsf}", "{workdir}/narrow.csv"), ("'d'",)),
        (("report", "{nsf}", "{workdir}/test.csv", "-o", "{workdir}/ood.csv"), ("is a file",)),
        (("compare", "{nsf}", "--data", "{workdir}/test.csv", "--json", "--markdown"), ("--json", "--markdown")),
        (("compare", "{nsf}", "{workdir}", "--data", "{workdir}/test.csv"), ("not a model folder",)),
    ],
    ids=["no-model", "no-test", "no-ood", "missing-column", "report-onto-a-file", "two-formats", "not-a-model"],
)
def test_user_mistakes_exit_2_with_one_line(args, fragments, models, workdir):
    manifold_table(20, seed=8).drop(columns="d").to_csv(workdir / "narrow.csv", index=False)
    names = {"workdir": workdir, "nsf": models["nsf"]}
    result = run(*(arg.format(**names) for arg in args))
    assert_one_line_error(result, *fragments)


def test_a_report_that_fails_part_way_leaves_the_earlier_report_as_it_was(models, tmp_path, monkeypatch):
    from funnelcli.evaluation import plots

    estimator = FunnelDensity.load(models["nsf"], device="cpu")
    evaluation = evaluate(estimator, manifold_table(40, seed=3), two_sample=False)
    folder = tmp_path / "report"
    write_report(folder, estimator, evaluation)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("the plot failed")

    monkeypatch.setattr(plots, "corner_plot", broken)  # the third figure of five
    other = evaluate(estimator, manifold_table(40, seed=4), two_sample=False)  # figures that would differ
    with pytest.raises(RuntimeError, match="the plot failed"):
        write_report(folder, estimator, other, overwrite=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["report"], "the staging folder was left behind"
