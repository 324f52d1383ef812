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
    StrictOpt,
    check_no_extra_columns,
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
    strict: StrictOpt = False,
    prefix: Annotated[str, typer.Option("--prefix", help="Names of the latent columns: PREFIX0, PREFIX1, ...")] = "z",
) -> None:
    """Write the latent code z0 ... z{k-1} of every row of DATA (k = the model's latent size).

    A kept column named like a latent column is refused; --prefix names the latent columns otherwise.
    """
    setup_logging(False)
    from funnelcli.apply import encode_file
    from funnelcli.data.prepared import split_file
    from funnelcli.estimator import FunnelDensity

    out_format_check(output, force=force, inputs=(model, data))
    estimator = FunnelDensity.load(model, device=device)
    data = split_file(data, "test")
    passed = split_names(keep) if keep else None
    if strict:
        check_no_extra_columns(data, estimator, key=key, keep=passed)
    rows = encode_file(estimator, data, output, keep=passed, key=key, overwrite=force, prefix=prefix)
    typer.echo(f"wrote {output}: {rows:,} rows, {estimator.latent_dim_} latent columns")
