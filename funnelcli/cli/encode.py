"""``funnel encode``: the reduced latent features of every row."""

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

  funnel encode runs/data data.parquet -o latent.parquet

  funnel encode runs/data data.csv -o latent.csv --keep id,label

  funnel encode runs/data data.csv --output latent.parquet --json
"""


def encode(
    model: ModelArg,
    data: DataArg,
    output: Annotated[Path, typer.Option(*OUTPUT_FLAGS, help="Output table (.parquet/.csv).")],
    keep: Annotated[
        str | None,
        typer.Option(help="Comma-separated columns of DATA to pass through unchanged (ids, labels)."),
    ] = None,
    key: KeyOpt = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    strict: StrictOpt = False,
    prefix: Annotated[str, typer.Option("--prefix", help="Names of the latent columns: PREFIX0, PREFIX1, ...")] = "z",
    json_output: JsonOpt = False,
) -> None:
    """Write the latent code z0 ... z{k-1} of every row of DATA (k = the model's latent size).

    A kept column named like a latent column is refused; --prefix names the latent columns otherwise. A
    conditional model's code is z = T(x; c): DATA must hold its condition columns, which the output carries (after
    the --keep columns) so that the code can be decoded with its c. A model trained with modelled --categorical
    columns reads and carries those the same way (its code is T(x; k, c)).
    """
    warnings = setup_logging(False, json_output=json_output)
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
    if json_output:
        latent = [f"{prefix}{j}" for j in range(estimator.latent_dim_)]
        context = estimator.context_columns_
        written = [*(passed or []), *(name for name in context if name not in (passed or []))]
        document = {"output": str(output), "rows": rows, "columns": [*written, *latent]}
        print_json({**document, "latent_dim": estimator.latent_dim_}, warnings)
        return
    typer.echo(f"wrote {output}: {rows:,} rows, {estimator.latent_dim_} latent columns")
