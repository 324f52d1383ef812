"""``funnel encode``: the reduced latent features of every row."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from funnelcli.cli._common import (
    DataArg,
    DeviceOpt,
    ForceOpt,
    KeyOpt,
    ModelArg,
    handle_errors,
    out_format_check,
    setup_logging,
    split_names,
)

EXAMPLES = """
Examples:

  funnel encode runs/data data.parquet -o latent.parquet

  funnel encode runs/data data.csv -o latent.csv --keep id,label
"""


@handle_errors
def encode(
    model: ModelArg,
    data: DataArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output table (.parquet/.csv).")],
    keep: Annotated[
        str | None,
        typer.Option(help="Comma-separated columns of DATA to pass through unchanged (ids, labels)."),
    ] = None,
    key: KeyOpt = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Write the latent code z0 ... z{k-1} of every row of DATA (k = the model's latent size)."""
    setup_logging(False)
    import pandas as pd

    from funnelcli.data import read_columns, read_table, write_table
    from funnelcli.data.prepared import split_file
    from funnelcli.estimator import FunnelDensity

    out_format_check(output, force=force)
    estimator = FunnelDensity.load(model, device=device)
    data = split_file(data, "test")
    table = read_table(data, key=key, columns=estimator.columns_)
    latent = estimator.transform(table)
    frame = pd.DataFrame(latent, columns=[f"z{j}" for j in range(latent.shape[1])])
    passed = split_names(keep) if keep else []
    if passed:
        kept = read_columns(data, passed, key=key)
        frame = pd.concat([kept.reset_index(drop=True), frame], axis=1)
    write_table(frame, output, overwrite=force)
    typer.echo(f"wrote {output}: {len(frame):,} rows, {latent.shape[1]} latent columns")
