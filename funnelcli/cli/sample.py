"""``funnel sample``: new rows from a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from funnelcli.cli._common import (
    OUTPUT_FLAGS,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    ModelArg,
    out_format_check,
    print_json,
    setup_logging,
)

EXAMPLES = """
Examples:

  funnel sample runs/data -n 10000 -o fake.parquet

  funnel sample runs/data -n 500 -o cool.csv --temperature 0.7 --seed 1

  funnel sample runs/data -n 100 --output few.csv --json
"""


def sample(
    model: ModelArg,
    n: Annotated[int, typer.Option("-n", "--n", help="Number of rows to draw (1 to 10,000,000).")],
    output: Annotated[Path, typer.Option(*OUTPUT_FLAGS, help="Output table (.parquet/.csv).")],
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible samples (0 to 2**32 - 1).")] = None,
    temperature: Annotated[
        float,
        typer.Option(help="Scales the base distribution's standard deviation (1: the model itself; 0 < T <= 10)."),
    ] = 1.0,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Draw N rows in the training columns and units."""
    warnings = setup_logging(False, json_output=json_output)
    import pandas as pd

    from funnelcli.data import write_table
    from funnelcli.estimator import FunnelDensity, check_sampling

    check_sampling(n, temperature, seed)  # before the model is read
    out_format_check(output, force=force, inputs=(model,))
    estimator = FunnelDensity.load(model, device=device)
    rows = estimator.sample(n, random_state=seed, temperature=temperature)
    write_table(pd.DataFrame(rows, columns=estimator.columns_), output, overwrite=force)
    if json_output:
        print_json({"output": str(output), "rows": n, "columns": [str(c) for c in estimator.columns_]}, warnings)
        return
    typer.echo(f"wrote {output}: {n:,} samples of {len(estimator.columns_)} columns")
