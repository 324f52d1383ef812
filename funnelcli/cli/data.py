"""``funnel data``: the benchmark data sets, made ready for ``funnel train``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from funnelcli.cli._common import ForceOpt, JsonOpt, handle_errors, print_json, setup_logging

app = typer.Typer(
    help="Benchmark data: turn the raw MAF files (POWER, GAS, HEPMASS, MINIBOONE, BSDS300) into Parquet splits.",
    no_args_is_help=True,
)

EXAMPLES = """
Examples:

  funnel data prepare power data/ -o prepared/power

  funnel data prepare hepmass data/hepmass -o prepared/hepmass --json
"""

NameArg = Annotated[
    str, typer.Argument(help="Data set: power, gas, hepmass, miniboone or bsds300.", show_default=False)
]
RawArg = Annotated[
    Path,
    typer.Argument(
        help="The raw file, the data set's folder (e.g. data/power), or the archive's root folder (data).",
        show_default=False,
    ),
]
OutOpt = Annotated[
    Path,
    typer.Option(
        "--out", "-o", help="Folder to write train/validation/test.parquet and manifest.json.", show_default=False
    ),
]


@app.command("prepare", epilog=EXAMPLES)
@handle_errors
def prepare(name: NameArg, raw: RawArg, out: OutOpt, force: ForceOpt = False, json_output: JsonOpt = False) -> None:
    """Prepare NAME as the MAF paper did, so test log-likelihoods compare with published ones.

    Same noise, column removals, splits and standardisation as Papamakarios et al. (2017).
    Writes train.parquet, validation.parquet, test.parquet and manifest.json to --out.

    The raw files are in the MAF data archive, Zenodo record 1161203:
    https://zenodo.org/record/1161203 (file data.tar.gz).
    RAW is a data set's file, its folder, or the archive's root; each data set needs:

      power      power/data.npy
      gas        gas/ethylene_CO.pickle (unpickled: use only the archive's own file)
      hepmass    hepmass/1000_train.csv and hepmass/1000_test.csv
      miniboone  miniboone/data.npy
      bsds300    BSDS300/BSDS300.hdf5
    """
    setup_logging(json_output)
    from funnelcli.data.maf import prepare as prepare_dataset

    manifest = prepare_dataset(name, raw, out, overwrite=force)
    if json_output:
        print_json(manifest)
        return
    for split, shape in manifest["splits"].items():
        typer.echo(f"{split:<10} {shape['rows']:>11,} rows x {shape['dims']} dims")
    typer.echo(f"wrote {manifest['dataset']} to {out}")
