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
    KeyOpt,
    ModelArg,
    out_format_check,
    print_json,
    setup_logging,
)
from funnelcli.errors import UserError

EXAMPLES = """
Examples:

  funnel sample runs/data -n 10000 -o fake.parquet

  funnel sample runs/data -n 500 -o cool.csv --temperature 0.7 --seed 1

  funnel sample runs/data -n 100 --output few.csv --json

  funnel sample runs/penguins --conditions species.csv -n 100 -o fake-penguins.csv
"""


def sample(
    model: ModelArg,
    output: Annotated[Path, typer.Option(*OUTPUT_FLAGS, help="Output table (.parquet/.csv).")],
    n: Annotated[
        int | None,
        typer.Option(
            "-n", "--n", help="Rows to draw (1 to 10,000,000); with --conditions, rows per condition row (default 1)."
        ),
    ] = None,
    conditions: Annotated[
        Path | None,
        typer.Option(
            "--conditions",
            help="Conditional models: a table of the condition columns; draws -n rows for each of its rows, in order.",
        ),
    ] = None,
    key: KeyOpt = None,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible samples (0 to 2**32 - 1).")] = None,
    temperature: Annotated[
        float,
        typer.Option(help="Scales the base distribution's standard deviation (1: the model itself; 0 < T <= 10)."),
    ] = 1.0,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Draw N rows in the training columns and units.

    A conditional model draws from p(x | c) for each row c of --conditions FILE (-n rows each, in the file's
    order); the output holds the condition columns, then the drawn ones. A model trained with modelled
    --categorical columns draws those first, then the others given them; the output holds both.
    """
    warnings = setup_logging(False, json_output=json_output)
    import pandas as pd

    from funnelcli.data import write_table
    from funnelcli.estimator import FunnelDensity, check_sampling

    check_sampling(1 if n is None else n, temperature, seed)  # before the model is read
    out_format_check(output, force=force, inputs=(model, *([conditions] if conditions is not None else [])))
    estimator = FunnelDensity.load(model, device=device)
    if estimator.conditions_ is not None and conditions is None:
        raise UserError(
            f"this model is conditional on {', '.join(estimator.conditions_.names)}; give --conditions FILE, a table "
            "of those columns (-n K then draws K rows for each of its rows)"
        )
    if conditions is None and n is None:
        raise UserError("give -n N, the number of rows to draw")
    if conditions is None:
        drawn = estimator.sample(n, random_state=seed, temperature=temperature)
        rows = drawn if isinstance(drawn, pd.DataFrame) else pd.DataFrame(drawn, columns=estimator.columns_)
    else:
        from funnelcli.apply import condition_rows

        given = condition_rows(estimator, conditions, per_row=1 if n is None else n, key=key)
        rows = estimator.sample(conditions=given, random_state=seed, temperature=temperature)
    write_table(rows, output, overwrite=force)
    if json_output:
        document = {"output": str(output), "rows": len(rows), "columns": [str(c) for c in rows.columns]}
        print_json(document, warnings)
        return
    given = "" if conditions is None else f" given {', '.join(estimator.conditions_.names)} from {conditions}"
    drawn = "" if estimator.categorical_ is None else f" plus categorical {', '.join(estimator.categorical_.names)}"
    typer.echo(f"wrote {output}: {len(rows):,} samples of {len(estimator.columns_)} columns{drawn}{given}")
