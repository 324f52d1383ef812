"""``funnel score``: the exact log-likelihood of every row."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from funnelcli.cli._common import (
    OUTPUT_FLAGS,
    DataArg,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    KeyOpt,
    ModelArg,
    StrictOpt,
    check_no_extra_columns,
    out_format_check,
    print_json,
    setup_logging,
    split_names,
)

EXAMPLES = """
Examples:

  funnel score runs/data test.parquet -o scores.parquet

  funnel score runs/data test.csv --json

  funnel score runs/data test.csv -o scores.csv --keep id,label

  funnel score runs/penguins penguins.csv -o scores.csv --keep id
"""


def score(
    model: ModelArg,
    data: DataArg,
    output: Annotated[
        Path | None,
        typer.Option(*OUTPUT_FLAGS, help="Write the rows with a log_prob column (.parquet/.csv)."),
    ] = None,
    key: KeyOpt = None,
    iw_samples: Annotated[
        int | None,
        typer.Option("--iw-samples", help="VAE only: the importance-weighted bound with K samples (default: ELBO)."),
    ] = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    json_output: JsonOpt = False,
    strict: StrictOpt = False,
    score_column: Annotated[
        str, typer.Option("--score-column", help="Name of the scores' column in the -o table.")
    ] = "log_prob",
    keep: Annotated[
        str | None,
        typer.Option("--keep", help="Columns of DATA to pass through to the -o table first (an id, a label)."),
    ] = None,
) -> None:
    """Score DATA: log p(x) per row in nats, in the data's units (standardisation included).

    A conditional model gives log p(x | c): DATA must hold its condition columns, which -o writes (as they are)
    before the model's columns. A model trained with modelled --categorical columns k gives the mixed
    log P(k) + log p(x | k), a probability mass times a density: DATA must hold k too, and -o writes the sum.

    For integer columns that training dequantized, the score is log p(x + u) with u ~ U[0, 1) drawn with a
    fixed seed: a density of the dequantized data, which lower-bounds the integers' log-probability.

    A pixel model (trained with --bits) also prints bits per dimension, -log2 p(x) / D in its pixel units: the
    image papers' figure (docs/evaluation.md); --json then holds bits_per_dim and bits.
    """
    warnings = setup_logging(False, json_output=json_output)
    from funnelcli.apply import likelihood_formula, score_file
    from funnelcli.data.prepared import split_file
    from funnelcli.estimator import FunnelDensity

    if output is not None:
        out_format_check(output, force=force, inputs=(model, data))
    estimator = FunnelDensity.load(model, device=device)
    data = split_file(data, "test")
    passed = split_names(keep) if keep else None
    if strict:
        check_no_extra_columns(data, estimator, key=key, keep=passed)
    summary = score_file(
        estimator,
        data,
        output=output,
        key=key,
        overwrite=force,
        iw_samples=iw_samples,
        column=score_column,
        keep=passed,
    )
    bound = estimator.is_bound_
    what = ("ELBO" if iw_samples is None else f"importance-weighted bound (K={iw_samples})") if bound else ""
    underflow = (
        f"{summary.nonfinite:,} row(s) have a density that underflows to zero (log p = -inf), far from the training "
        "data; the mean is over the other rows"
    )
    formula = likelihood_formula(estimator)
    if json_output:
        report = _report(estimator, summary, bound_kind=what, output=output, formula=formula)
        print_json(report, [*warnings, *([underflow] if summary.nonfinite else [])])
        return
    _print_scores(estimator, summary, bound_kind=what, output=output, formula=formula)
    if summary.nonfinite:
        typer.echo(f"warning: {underflow}", err=True)
    _print_dequantized(estimator.dequantized_columns_)


def _report(estimator, summary, *, bound_kind: str, output: Path | None, formula: str) -> dict:
    """The --json object: the mean score over the finite rows, and what qualifies it (``formula``: what a score
    is, :func:`funnelcli.apply.likelihood_formula`)."""
    report = {
        "rows": summary.count + summary.nonfinite,
        "mean_log_prob": summary.mean if summary.count else None,
        "stderr": summary.stderr if summary.count else None,
        "input_dim": len(estimator.columns_),
        "latent_dim": estimator.latent_dim_,
    }
    if estimator.bits is not None:  # a pixel model: the image papers' figure, in its pixel units
        report["bits_per_dim"] = _bits_per_dim(estimator, summary)
        report["bits"] = estimator.bits
        if estimator.source_bits is not None:
            report["source_bits"] = estimator.source_bits
    if summary.nonfinite:
        report["nonfinite_rows"] = summary.nonfinite
    if estimator.dequantized_columns_:
        report["dequantized_columns"] = estimator.dequantized_columns_
    if estimator.conditions_ is not None:
        report["conditions"] = estimator.conditions_.names
    if estimator.mixed_likelihood_:
        report.update(mixed=True, categorical=estimator.categorical_.names, likelihood=formula)
    if estimator.is_bound_:
        report.update(bound=True, bound_kind=bound_kind)
    if output is not None:
        report["output"] = str(output)
    return report


def _bits_per_dim(estimator, summary) -> float | None:
    """The mean score in bits per dimension, -mean / (D ln 2) (None when no row has a finite score)."""
    from funnelcli.evaluation.metrics import bits_per_dim

    return bits_per_dim(summary.mean, len(estimator.columns_)) if summary.count else None


def _print_scores(estimator, summary, *, bound_kind: str, output: Path | None, formula: str) -> None:
    """The human summary on stdout: the mean score, and first, for a VAE, that it is a bound, and for a mixed
    model, that it adds a log-mass to a log-density."""
    bound = estimator.is_bound_
    if bound:
        typer.echo(f"lower bound: a VAE's {bound_kind} on log p(x), not an exact log-likelihood")
    if estimator.mixed_likelihood_:
        typer.echo(
            f"{formula}: a mass times a density (the categorical column(s) {', '.join(estimator.categorical_.names)} "
            "get a probability, the others a density); compare it only with models of the same columns"
        )
    rows = summary.count + summary.nonfinite
    mean = summary.mean if summary.count else None
    label = "log-likelihood bound" if bound else "log-likelihood"
    figure = f"{mean:.4f} ± {summary.stderr:.4f} nats/row (mean ± standard error)" if mean is not None else "undefined"
    given = "" if estimator.conditions_ is None else f" given {', '.join(estimator.conditions_.names)}"
    typer.echo(
        f"{label} {figure} over {rows:,} rows; model {len(estimator.columns_)} -> {estimator.latent_dim_} dims{given}"
        + (
            f"; {_bits_per_dim(estimator, summary):.4f} bits/dim ({estimator.bits}-bit pixels)"
            if estimator.bits is not None and mean is not None
            else ""
        )
        + (f"; wrote {output}" if output is not None else "")
    )


def _print_dequantized(dequantized) -> None:
    if dequantized:
        typer.echo(
            f"note: integer column(s) {', '.join(dequantized)} were dequantized: this is the density of x + u, "
            "u ~ U[0, 1) on them (a lower bound on their log-probability)"
        )
