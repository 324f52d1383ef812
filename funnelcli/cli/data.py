"""``funnel data``: the benchmark data sets, made ready for ``funnel train``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from funnelcli.cli._common import OUTPUT_FLAGS, App, ForceOpt, JsonOpt, KeyOpt, print_json, setup_logging
from funnelcli.errors import UserError

app = App(
    help="Data: inspect a table before training, turn the raw MAF benchmark files into Parquet splits, or cut image "
    "patches into a pixel table.",
    no_args_is_help=True,
)

EXAMPLES = """
Examples:

  funnel data prepare power data/ -o prepared/power

  funnel data prepare hepmass data/hepmass --output prepared/hepmass --json
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
        *OUTPUT_FLAGS, help="Folder to write train/validation/test.parquet and manifest.json.", show_default=False
    ),
]
TrustPickleOpt = Annotated[
    bool,
    typer.Option(
        "--trust-pickle",
        help=(
            "gas only: if the safe reader refuses gas/ethylene_CO.pickle, let pandas unpickle it anyway, with a "
            "warning. Unpickling can run any code in the file: only for the archive's own file."
        ),
    ),
]


@app.command("prepare", epilog=EXAMPLES)
def prepare(
    name: NameArg,
    raw: RawArg,
    out: OutOpt,
    force: ForceOpt = False,
    trust_pickle: TrustPickleOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Prepare NAME as the MAF paper did, so test log-likelihoods compare with published ones.

    Same noise, column removals, splits and standardisation as Papamakarios et al. (2017).
    Writes train.parquet, validation.parquet, test.parquet and manifest.json to --output.

    The raw files are in the MAF data archive, Zenodo record 1161203:
    https://zenodo.org/record/1161203 (file data.tar.gz).
    RAW is a data set's file, its folder, or the archive's root; each data set needs:

      power      power/data.npy
      gas        gas/ethylene_CO.pickle (a pandas pickle, see below)
      hepmass    hepmass/1000_train.csv and hepmass/1000_test.csv
      miniboone  miniboone/data.npy
      bsds300    BSDS300/BSDS300.hdf5

    GAS comes only as a pandas pickle, and unpickling a file can run code.
    It is read by a restricted reader that builds numpy arrays and a table
    and refuses anything else the file names. If it refuses the archive's
    own file, --trust-pickle lets pandas unpickle it, with a warning.
    """
    warnings = setup_logging(False, json_output=json_output)
    from funnelcli.data.maf import prepare as prepare_dataset

    manifest = prepare_dataset(name, raw, out, overwrite=force, trust_pickle=trust_pickle)
    if json_output:
        print_json(manifest, warnings)
        return
    for split, shape in manifest["splits"].items():
        typer.echo(f"{split:<10} {shape['rows']:>11,} rows x {shape['dims']} dims")
    typer.echo(f"wrote {manifest['dataset']} to {out}")


INSPECT_EXAMPLES = """
Examples:

  funnel data inspect data.csv

  funnel data inspect data.h5 --key table --json
"""

InspectArg = Annotated[
    Path, typer.Argument(help="Table to inspect: .csv, .tsv, .parquet or .h5/.hdf5.", show_default=False)
]


@app.command("inspect", epilog=INSPECT_EXAMPLES)
def inspect(data: InspectArg, key: KeyOpt = None, json_output: JsonOpt = False) -> None:
    """Describe DATA column by column, and warn about what a density model will meet.

    Reads tables that `funnel train` refuses (NaN, infinities, text) to show why.
    Prints each column's type, missing and non-finite counts, distinct values,
    range and flags (integer, constant, non-numeric), then a `warning:` line on
    stderr for each problem. Exits 0 even when there are warnings.
    """
    warnings = setup_logging(False, json_output=json_output)
    from funnelcli.data.inspect import inspect_table
    from funnelcli.data.messages import plural

    report = inspect_table(data, key=key)
    if json_output:
        print_json(report, warnings)
        return
    typer.echo(_column_table(report["columns"]))
    for warning in report["warnings"]:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(
        f"{plural(report['rows'], 'row')}, {plural(len(report['columns']), 'column')}, "
        f"{plural(len(report['warnings']), 'warning')}"
    )


def _column_table(columns: list[dict[str, Any]]) -> str:
    """Return the columns as plain aligned text, one row per column, easy to read and to grep."""
    header = ("name", "dtype", "missing", "non-finite", "unique", "min", "max", "flags")
    rows = [header] + [
        (
            " ".join(column["name"].splitlines()),  # a name with a line break must not break the table
            column["dtype"],
            str(column["missing"]),
            _cell(column["non_finite"]),
            str(column["unique"]),
            _cell(column["min"]),
            _cell(column["max"]),
            _flags(column),
        )
        for column in columns
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    numeric_cells = range(2, 7)  # counts and range read best right-aligned
    lines = [
        "  ".join(
            cell.rjust(width) if i in numeric_cells else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def _cell(value: object) -> str:
    """Return a count or statistic for the table: "-" where it does not apply, floats to 6 significant digits."""
    if value is None:
        return "-"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _flags(column: dict[str, Any]) -> str:
    """Return the column's flags as comma-separated words ("-" when it has none)."""
    flags = [
        word
        for word, on in (
            ("integer", column["integer_valued"]),
            ("constant", column["constant"]),
            ("non-numeric", not column["numeric"]),
        )
        if on
    ]
    return ",".join(flags) or "-"


PATCHES_EXAMPLES = """
Examples:

  funnel data patches photo.png -o patches.parquet --size 8 --count 20000 --gray

  funnel data patches a.jpg b.jpg --output patches.csv --size 16 --seed 1

  funnel data patches --sklearn-samples -o patches.parquet --size 8 --gray --json
"""


@app.command("patches", epilog=PATCHES_EXAMPLES)
def patches(
    images: Annotated[
        list[Path] | None, typer.Argument(help="Image files (PNG; JPEG and others with Pillow).", show_default=False)
    ] = None,
    out: Annotated[
        Path, typer.Option(*OUTPUT_FLAGS, help="The pixel table to write (.parquet or .csv).", show_default=False)
    ] = ...,
    size: Annotated[int, typer.Option("--size", help="Side of the square patches, in pixels.")] = 8,
    count: Annotated[int, typer.Option("--count", help="Patches to cut.")] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the images and positions drawn.")] = 0,
    gray: Annotated[bool, typer.Option("--gray", help="Grey patches (one channel, ITU-R 601 luma), not RGB.")] = False,
    sklearn_samples: Annotated[
        bool,
        typer.Option("--sklearn-samples", help="Also cut from scikit-learn's two bundled photographs (offline)."),
    ] = False,
    force: ForceOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Cut random SIZE x SIZE patches from IMAGE files into a pixel table, as BSDS300 was made.

    Each patch comes from an image drawn uniformly, at a position drawn uniformly in it; --seed fixes both.
    Columns p0 ... p{D-1} hold 8-bit values 0..255 in row-major order, a pixel's channels adjacent (D = SIZE *
    SIZE, times 3 for RGB), so `funnel train OUT --image-shape 8x8 --bits 8` reads them as images.
    The table is written whole or not at all.
    """
    warnings = setup_logging(False, json_output=json_output)
    from funnelcli.data import check_output_path, write_table
    from funnelcli.data.pixels import cut_patches, patch_table, read_image, shape_text, sklearn_sample_images

    check_output_path(out, overwrite=force)
    if not images and not sklearn_samples:
        raise UserError("give image files, or --sklearn-samples for scikit-learn's two bundled photographs")
    sources = [(str(path), read_image(path, gray=gray)) for path in images or []]
    if sklearn_samples:
        sources += sklearn_sample_images(gray=gray)
    rows = cut_patches(sources, size=size, count=count, seed=seed)
    write_table(patch_table(rows), out, overwrite=force)
    channels = rows.shape[1] // (size * size)
    shape = shape_text([size, size, channels])
    if json_output:
        document = {
            "output": str(out),
            "rows": int(rows.shape[0]),
            "columns": int(rows.shape[1]),
            "image_shape": [size, size, channels],
            "bits": 8,
            "images": [name for name, _ in sources],
            "seed": seed,
        }
        print_json(document, warnings)
        return
    typer.echo(
        f"wrote {out}: {rows.shape[0]:,} patches of {shape} pixels ({rows.shape[1]} columns, 8-bit) from "
        f"{len(sources)} image(s); train with --image-shape {shape} --bits 8"
    )
