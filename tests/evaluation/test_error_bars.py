"""``--error 1se|2se``: ``funnel evaluate`` and ``funnel compare`` print mean ± one or two standard errors (the
MAF, NSF and funnel papers print two), say which, and keep the raw standard error in their JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from funnelcli.estimator import FunnelDensity
from funnelcli.evaluation import format_comparison
from funnelcli.evaluation.report import INDEX, error_bar_label, error_bars, metric_rows
from tests.helpers import assert_one_line_error, manifold_table, run, tiny_recipe

#: A log-likelihood printed for people: the mean, "±", the error bar and, in evaluate's rows, what it is.
PLUS_MINUS = re.compile(r"(-?\d[\d,]*\.\d+) ± (\d[\d,]*\.\d+)")


def ok(*args) -> str:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A tiny model trained once for a few steps, and 60 held-out rows."""
    root = tmp_path_factory.mktemp("error-bars")
    FunnelDensity(tiny_recipe("f-nsf"), device="cpu", steps=10).fit(manifold_table(300)).save(root / "model")
    manifold_table(60, seed=1).to_csv(root / "test.csv", index=False)
    return root


@pytest.fixture(scope="module")
def stderr(workdir) -> float:
    """The model's raw standard error on the held-out rows, as ``funnel compare --json`` reports it."""
    document = json.loads(ok("compare", workdir / "model", "--data", workdir / "test.csv", "--json"))
    return document["models"][0]["stderr"]


def evaluate_error_bar(stdout: str) -> str:
    """The number after "±" in evaluate's log-likelihood row."""
    row = next(line for line in stdout.splitlines() if "log-likelihood, nats/row" in line)
    return PLUS_MINUS.search(row).group(2)


def compare_error_bar(stdout: str) -> str:
    """The number after "±" in the comparison's one model row (the line below the header)."""
    return PLUS_MINUS.search(stdout.strip().splitlines()[1]).group(2)


# --------------------------------------------------------------------------------------------- printed numbers


def test_evaluate_with_2se_prints_twice_the_standard_error_that_1se_prints(workdir, stderr):
    args = ("evaluate", workdir / "model", workdir / "test.csv")
    assert evaluate_error_bar(ok(*args, "--error", "1se")) == f"{stderr:.4f}"
    assert evaluate_error_bar(ok(*args, "--error", "2se")) == f"{2 * stderr:.4f}"


def test_evaluate_prints_one_standard_error_by_default(workdir, stderr):
    assert evaluate_error_bar(ok("evaluate", workdir / "model", workdir / "test.csv")) == f"{stderr:.4f}"


def test_compare_with_2se_prints_twice_the_standard_error_that_1se_prints(workdir, stderr):
    args = ("compare", workdir / "model", "--data", workdir / "test.csv")
    assert compare_error_bar(ok(*args, "--error", "1se")) == f"{stderr:.2f}"
    assert compare_error_bar(ok(*args, "--error", "2se")) == f"{2 * stderr:.2f}"


def test_evaluate_html_report_shows_the_chosen_error_bars(workdir, stderr):
    folder = workdir / "report"
    ok("evaluate", workdir / "model", workdir / "test.csv", "--report", folder, "--error", "2se")
    page = (folder / INDEX).read_text()
    assert f"± {2 * stderr:.4f} (± 2 standard errors)" in page


# --------------------------------------------------------------------------------------- saying which error


@pytest.mark.parametrize("error, label", [("1se", "± 1 standard error"), ("2se", "± 2 standard errors")])
def test_evaluate_terminal_output_names_the_error_bars(workdir, error, label):
    stdout = ok("evaluate", workdir / "model", workdir / "test.csv", "--error", error)
    row = next(line for line in stdout.splitlines() if "log-likelihood, nats/row" in line)
    assert row.endswith(f"({label})")


@pytest.mark.parametrize("error, label", [("1se", "± 1 standard error"), ("2se", "± 2 standard errors")])
def test_compare_markdown_header_names_the_error_bars(workdir, error, label):
    stdout = ok("compare", workdir / "model", "--data", workdir / "test.csv", "--markdown", "--error", error)
    header = stdout.strip().splitlines()[0]
    assert f"| test log-likelihood (nats, {label}) |" in header


def test_compare_terminal_header_names_the_error_bars(workdir):
    stdout = ok("compare", workdir / "model", "--data", workdir / "test.csv", "--error", "2se")
    assert "test log-likelihood (nats, ± 2 standard errors)" in stdout.splitlines()[0]


# ------------------------------------------------------------------------------------------------------- JSON


def test_evaluate_json_names_the_error_bars_and_keeps_the_raw_standard_error(workdir, stderr):
    document = json.loads(ok("evaluate", workdir / "model", workdir / "test.csv", "--json", "--error", "2se"))
    assert document["error"] == {"name": "2se", "multiple": 2}
    assert document["stderr"] == pytest.approx(stderr, rel=1e-12)


def test_compare_json_names_the_error_bars_and_keeps_the_raw_standard_error(workdir, stderr):
    args = ("compare", workdir / "model", "--data", workdir / "test.csv", "--json")
    document = json.loads(ok(*args, "--error", "2se"))
    assert document["error"] == {"name": "2se", "multiple": 2}
    assert document["models"][0]["stderr"] == pytest.approx(stderr, rel=1e-12)


def test_json_names_one_standard_error_by_default(workdir):
    evaluated = json.loads(ok("evaluate", workdir / "model", workdir / "test.csv", "--json"))
    compared = json.loads(ok("compare", workdir / "model", "--data", workdir / "test.csv", "--json"))
    assert evaluated["error"] == compared["error"] == {"name": "1se", "multiple": 1}


# ----------------------------------------------------------------------------------------------- user mistakes


@pytest.mark.parametrize("command", ["evaluate", "compare"])
@pytest.mark.parametrize("value", ["3se", "2", "SE"])
def test_an_unknown_error_value_is_a_one_line_exit_2_error_naming_the_accepted_values(workdir, command, value):
    data = [workdir / "test.csv"] if command == "evaluate" else ["--data", workdir / "test.csv"]
    result = run(command, workdir / "model", *data, "--error", value)
    assert_one_line_error(result, "--error", repr(value), "1se", "2se")


# ------------------------------------------------------------------------------------------------ the library


ROW = {"model": "m", "recipe": "r", "mean_log_prob": -3.0, "stderr": 0.25, "latent_dim": 2, "parameters": 10}
METRICS = {
    **ROW,
    "bits_per_dim": 1.0,
    "rows": 60,
    "input_dim": 4,
    "latent_wasserstein": {"mean": 0.1, "max": 0.2},
    "baselines": [{"label": "PPCA, K = 2", "mean_log_prob": -4.0, "stderr": 0.125, "parameters": 12}],
}


def test_format_comparison_shows_stderr_multiple_standard_errors_and_defaults_to_one():
    assert format_comparison([ROW]) == format_comparison([ROW], stderr_multiple=1)
    assert "-3.00 ± 0.25" in format_comparison([ROW])
    assert "-3.00 ± 0.50" in format_comparison([ROW], stderr_multiple=2, markdown=True)


def test_metric_rows_multiply_every_error_bar_the_baselines_too():
    shown = dict(metric_rows(METRICS, stderr_multiple=2))
    assert shown["test log-likelihood, nats/row"] == "-3.0000 ± 0.5000 (± 2 standard errors)"
    assert shown["baseline: PPCA, K = 2, nats/row"].startswith("-4.0000 ± 0.2500 ")


def test_error_bars_name_the_multiple_for_json_and_for_people():
    assert error_bars(2) == {"name": "2se", "multiple": 2} and error_bars() == {"name": "1se", "multiple": 1}
    assert error_bar_label(1) == "± 1 standard error" and error_bar_label(2) == "± 2 standard errors"


@pytest.mark.parametrize("multiple", [0, -1, float("nan"), float("inf")])
def test_a_multiple_that_is_not_a_positive_number_is_refused(multiple):
    with pytest.raises(ValueError, match="stderr_multiple"):
        format_comparison([ROW], stderr_multiple=multiple)
