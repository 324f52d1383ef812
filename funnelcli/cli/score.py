"""``funnel score``: the exact log-likelihood of every row."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from funnelcli.cli._common import (
    DataArg,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    KeyOpt,
    ModelArg,
    handle_errors,
    out_format_check,
    print_json,
    setup_logging,
)

EXAMPLES = """
Examples:

  funnel score runs/data test.parquet -o scores.parquet

  funnel score runs/data test.csv --json
"""


@handle_errors
def score(
    model: ModelArg,
    data: DataArg,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the rows with a log_prob column (.parquet/.csv)."),
    ] = None,
    key: KeyOpt = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Score DATA: log p(x) per row in nats, in the data's units (standardisation included).

    For integer columns that training dequantized, the score is log p(x + u) with u ~ U[0, 1) drawn with a
    fixed seed: a density of the dequantized data, which lower-bounds the integers' log-probability.
    """
    setup_logging(json_output)
    from funnelcli.data import read_table, write_table
    from funnelcli.data.prepared import split_file
    from funnelcli.estimator import FunnelDensity
    from funnelcli.stats import mean_and_stderr

    if output is not None:
        out_format_check(output, force=force)
    estimator = FunnelDensity.load(model, device=device)
    data = split_file(data, "test")
    table = read_table(data, key=key, columns=estimator.columns_)
    log_prob = estimator.score_samples(table)
    if output is not None:
        table["log_prob"] = log_prob
        write_table(table, output, overwrite=force)
    mean, stderr = mean_and_stderr(log_prob)
    dequantized = estimator.dequantized_columns_
    if json_output:
        report = {
            "rows": len(log_prob),
            "mean_log_prob": mean,
            "stderr": stderr,
            "input_dim": len(estimator.columns_),
            "latent_dim": estimator.latent_dim_,
        }
        if dequantized:
            report["dequantized_columns"] = dequantized
        print_json(report)
        return
    typer.echo(
        f"log-likelihood {mean:.4f} ± {stderr:.4f} nats/row (mean ± standard error) over {len(log_prob):,} rows; "
        f"model {len(estimator.columns_)} -> {estimator.latent_dim_} dims"
        + (f"; wrote {output}" if output is not None else "")
    )
    if dequantized:
        typer.echo(
            f"note: integer column(s) {', '.join(dequantized)} were dequantized: this is the density of x + u, "
            "u ~ U[0, 1) on them (a lower bound on their log-probability)"
        )
