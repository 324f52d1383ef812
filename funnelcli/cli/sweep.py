"""``funnel sweep``: how many dimensions does a table need? One model per latent size, and a stated choice."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from funnelcli.cli._common import (
    OUTPUT_FLAGS,
    BatchSizeOpt,
    ColumnsOpt,
    DataArg,
    DequantizeOpt,
    DeviceOpt,
    DropConstantOpt,
    ForceOpt,
    JsonOpt,
    KeyOpt,
    LrOpt,
    QuietOpt,
    RecipeOpt,
    StepsOpt,
    TrainSeedOpt,
    ValFractionOpt,
    ValidationOpt,
    data_stem,
    print_json,
    setup_logging,
    split_names,
)
from funnelcli.errors import ConstantColumns, UserError

EXAMPLES = """
Examples:

  funnel sweep data.parquet --output runs/sweep

  funnel sweep data.csv --latent-dims 1,2,3,4,6 --steps 3000 --jobs 2

  funnel sweep data.csv --reduce 0.25,0.5,0.75 --test test.csv --json

  funnel sweep data.csv --recipe small-f-nsf --ansatz flow --tolerance 2

  funnel sweep data.csv --recipe probe        # measure the intrinsic dimension (thousands of rows)

  funnel sweep data.csv --recipe probe --start surface   # the same near a strongly curved surface (slower)
"""


def sweep(
    data: DataArg,
    out: Annotated[
        Path | None, typer.Option(*OUTPUT_FLAGS, help="Sweep folder (default: runs/<DATA name>-sweep).")
    ] = None,
    latent_dims: Annotated[
        str | None, typer.Option("--latent-dims", help="Latent sizes to try, comma-separated (1,2,4,8).")
    ] = None,
    reduce: Annotated[
        str | None, typer.Option("--reduce", help="Or fractions to remove, comma-separated (0.25,0.5,0.75).")
    ] = None,
    recipe: RecipeOpt = "f-nsf",
    ansatz: Annotated[
        str | None,
        typer.Option(
            help="q(x_drop | z): gaussian (the default: a dropped direction along the data's surface then costs "
            "likelihood, so the choice estimates the intrinsic dimension) or flow."
        ),
    ] = None,
    funnel_level: Annotated[
        int | None,
        typer.Option(
            "--funnel-level",
            help="Flow step each level's funnel replaces (default: the recipe's). 0, the first, keeps flow steps "
            "from straightening a curved surface before the funnel (measured: a clearer knee on synthetic surfaces, "
            "lower likelihoods on a real table; see the README).",
        ),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="How each level's weights start (default: the recipe's, random): principal, where each funnel first "
            "keeps the top principal components of the rows reaching it (measured: exact on gently curved "
            "surfaces, further off on strongly curved ones; see the README); surface, where it keeps the directions "
            "over which those rows are most nearly a function graph (searched from the principal ones: slower to "
            "start, right on strongly curved surfaces too); random or gaussian."
        ),
    ] = None,
    tolerance: Annotated[
        float,
        typer.Option(help="Standard errors by which a larger size may beat the chosen one (see the choice below)."),
    ] = 1.0,
    min_gain: Annotated[
        float,
        typer.Option(
            "--min-gain",
            help="Nats per row each further kept dimension must add beyond --tolerance (0: the one-standard-error "
            "rule; 0.5 resists the creep of under-trained levels, see the README).",
        ),
    ] = 0.0,
    steps: StepsOpt = None,
    batch_size: BatchSizeOpt = None,
    lr: LrOpt = None,
    seed: TrainSeedOpt = None,
    columns: ColumnsOpt = None,
    key: KeyOpt = None,
    validation: ValidationOpt = None,
    val_fraction: ValFractionOpt = 0.1,
    test: Annotated[
        Path | None, typer.Option("--test", help="Test table, scored by every level (a prepared DATA's test split).")
    ] = None,
    full: Annotated[
        bool, typer.Option("--full/--no-full", help="Also train the full-dimension flow as a reference.")
    ] = True,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Levels trained at a time, in separate processes.")] = 1,
    dequantize: DequantizeOpt = "uniform",
    drop_constant: DropConstantOpt = False,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train one funnel per latent size on DATA and choose how many dimensions the table needs.

    Every level is an ordinary model folder under OUTPUT (latent-1, latent-2, ..., and `full` for the
    full-dimension flow), trained on the same rows; OUTPUT also gets sweep.json, sweep.csv and sweep.png
    (validation log-likelihood against latent size, with the full-dimension flow, a full Gaussian, a Gaussian
    mixture and probabilistic PCA of the same size as references).

    The choice: the smallest latent size that no larger size beats, on validation log-likelihood, by more than
    --tolerance standard errors plus --min-gain nats per row for each dimension it adds (--min-gain 0 is the
    one-standard-error rule; the gain per dimension keeps unfinished training from creeping the choice up).

    The default ansatz is gaussian because a Gaussian q(x_drop | z) cannot model a dropped direction along the
    data's surface, so the likelihood falls below the intrinsic dimension and the choice estimates it; a flow
    ansatz can, and its curve may show no knee. Flow steps before the funnel can do the same (they can straighten
    a curved surface until its dropped directions are Gaussian); --funnel-level 0 puts the funnel first.

    The default sizes are every one from 1 to 8 (at most D - 1), then about 1.5 times larger, up to D - 1.
    Running the same command again reuses every finished level (Ctrl-C keeps them); --force starts over.
    """
    warnings = setup_logging(quiet, json_output=json_output)
    from funnelcli import sweep as sweeping
    from funnelcli.data.columns import constant_columns

    out = out or Path("runs") / f"{data_stem(data)}-sweep"
    level_options = {"device": device, "dequantize": dequantize, "max_parameters": None}
    resolved = _sweepable_recipe(
        recipe, ansatz, start, funnel_level, steps=steps, batch_size=batch_size, lr=lr, seed=seed
    )
    _check_options(dequantize=dequantize, tolerance=tolerance, min_gain=min_gain, jobs=jobs)
    dims = _numbers(latent_dims, int, "--latent-dims")
    fractions = _numbers(reduce, float, "--reduce")
    if dims and fractions:
        raise UserError("--latent-dims and --reduce both give the sizes to try; pass one of them")
    inputs = [data, *(p for p in (validation, test) if p is not None), *([recipe] if Path(recipe).exists() else [])]
    train, held_out, test_rows = _read_rows(
        data, validation, test, key=key, columns=columns, val_fraction=val_fraction, seed=resolved.training.seed
    )
    if drop_constant:
        train, held_out, test_rows = _drop_constant(train, held_out, test_rows)
    elif constant := constant_columns(train):
        # Said before anything starts: otherwise each level refuses them in turn, after the baselines.
        raise ConstantColumns(constant, "in the training rows")
    sizes = sweeping.parse_sizes(train.shape[1], dims, fractions)
    # Every level trains what `funnel train` would on these rows: a small table, the small-table recipe.
    resolved = _sweepable_recipe(
        recipe, ansatz, start, funnel_level, len(train), steps=steps, batch_size=batch_size, lr=lr, seed=seed
    )

    # The rows the levels learn from; a test table may change between runs (every level is scored again).
    settings = sweeping.settings_record(resolved, level_options, sweeping.fingerprint(train, held_out))
    sweeping.prepare_folder(out, settings, overwrite=force, inputs=inputs)
    say = (lambda message: None) if (quiet or json_output) else (lambda message: typer.echo(message, err=True))
    say(
        f"sweeping {len(sizes)} latent size(s) {', '.join(map(str, sizes))} of {train.shape[1]} columns"
        + (" and the full-dimension flow" if full else "")
        + f" ({resolved.name}, {_ansatz(resolved)}, {resolved.training.steps} steps each) into {out}"
    )
    started, finished = _progress(say, input_dim=train.shape[1])
    try:
        result = sweeping.run_sweep(
            train,
            held_out,
            test_rows,
            recipe=resolved,
            sizes=sizes,
            options=level_options,
            out=out,
            tolerance=tolerance,
            min_gain=min_gain,
            full=full,
            jobs=jobs,
            on_start=started if jobs == 1 else None,
            on_level=finished,
            settings=settings,
        )
    except KeyboardInterrupt as stop:
        _interrupted(out, stop)
    sweeping.write_outputs(out, result, settings)
    if json_output:
        print_json({**result.to_dict(), "folder": str(out)}, warnings)
        return
    typer.echo(format_sweep(result))
    written = [str(out / name) for name in (sweeping.JSON, sweeping.CSV, sweeping.PNG) if (out / name).is_file()]
    typer.echo("wrote " + ", ".join(written))


def _sweepable_recipe(
    recipe: str, ansatz: str | None, start: str | None, funnel_level: int | None, rows: int | None = None, **training
):
    """The resolved recipe (for ``rows`` training rows: below its ``small_rows``, its small-table recipe), refused
    unless it has a latent size; the sweep's default ansatz and funnel level where it has them, and ``start``
    where given."""
    from funnelcli import sweep as sweeping
    from funnelcli.estimator import FunnelDensity

    resolved = FunnelDensity(recipe, **training).resolved_recipe(rows)
    if not resolved.has_funnel and resolved.family != "vae":
        raise UserError(f"recipe {resolved.name!r} (family {resolved.family}) has no latent size to sweep; use f-nsf")
    return sweeping.with_sweep_defaults(resolved, ansatz, start, funnel_level)


def _check_options(*, dequantize: str, tolerance: float, min_gain: float, jobs: int) -> None:
    """Refuse the sweep's own options out of range, before any data is read."""
    if dequantize not in ("uniform", "none"):
        raise UserError(f"--dequantize {dequantize!r} is unknown; use uniform or none")
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise UserError(f"--tolerance must be a number of standard errors, 0 or more, got {tolerance}")
    if not (min_gain >= 0 and math.isfinite(min_gain)):
        raise UserError(f"--min-gain must be a number of nats per row, 0 or more, got {min_gain}")
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")


def _read_rows(data: Path, validation: Path | None, test: Path | None, *, key, columns, val_fraction: float, seed):
    """The training, validation and test rows (test None without one), read once: every level and baseline
    sees the same rows. A prepared DATA gives its validation and test splits unless they are passed."""
    from funnelcli.data import read_table
    from funnelcli.data.prepared import is_prepared, split_file
    from funnelcli.data.tables import split_validation

    table = read_table(split_file(data, "train"), key=key, columns=split_names(columns))
    if validation is None and is_prepared(data):
        validation = split_file(data, "validation")
    if test is None and is_prepared(data) and split_file(data, "test").exists():
        test = split_file(data, "test")
    if validation is not None:
        train, held_out = table, read_table(validation, key=key, columns=list(table.columns))
    else:
        train, held_out = split_validation(table, val_fraction, seed)
    test_rows = read_table(test, key=key, columns=list(table.columns)) if test is not None else None
    return train, held_out, test_rows


def _drop_constant(train, held_out, test_rows):
    """The three tables without the columns that are constant in the training rows."""
    from funnelcli.data.columns import constant_columns

    constant = constant_columns(train)
    train, held_out = train.drop(columns=constant), held_out.drop(columns=constant)
    test_rows = test_rows.drop(columns=constant) if test_rows is not None else None
    return train, held_out, test_rows


def _progress(say, *, input_dim: int):
    """The callbacks that say when a level starts training and when it is done, with its score."""

    def started(latent: int, reused: bool) -> None:
        name = "full dimension" if latent == input_dim else f"latent {latent}"
        if not reused:
            say(f"  training {name} ...")

    def finished(level) -> None:
        name = "full dimension" if level.full else f"latent {level.latent_dim}"
        state = "reused" if level.reused else f"{level.seconds:.0f} s"
        say(f"  {name}: validation {level.val_log_prob:.4f} ± {level.val_stderr:.4f} nats/row ({state})")

    return started, finished


def _interrupted(out: Path, stop: KeyboardInterrupt) -> NoReturn:
    """Say which levels were kept, and exit as a signal would: 130 for Ctrl-C, 143 for SIGTERM."""
    kept = sorted(p.name for p in out.glob("*") if p.is_dir() and not p.name.startswith("."))
    typer.echo(
        f"interrupted: {len(kept)} finished level(s) kept in {out}"
        + (f" ({', '.join(kept)})" if kept else "")
        + "; run the same command again to continue",
        err=True,
    )
    raise typer.Exit(143 if type(stop).__name__ == "_Terminated" else 130) from None


def format_sweep(result) -> str:
    """The sweep as a plain-text table, the baselines under it, and the choice with its rule."""
    ppca = {entry["latent_dim"]: entry for entry in result.baselines.get("ppca", [])}
    has_test = result.test_rows is not None
    header = ["latent", "reduce", "validation (nats/row)"]
    header += ["test"] if has_test else []
    header += ["PPCA same size", "gain", "parameters", "ms/step", ""]
    rows = []
    for level in result.candidates:
        linear = ppca.get(level.latent_dim)
        notes = []
        if level.latent_dim == result.chosen_latent_dim:
            notes.append("<- chosen")
        if level.full:
            notes.append(f"full-dimension {level.family}")
        if level.still_improving:
            notes.append("still improving")
        if level.latent_dim in result.gaussian_kept:
            notes.append("Gaussian kept")
        if level.reused:
            notes.append("reused")
        row = [str(level.latent_dim), f"{level.reduce:.2f}", f"{level.val_log_prob:.4f} ± {level.val_stderr:.4f}"]
        if has_test:
            row.append(_pm(level.test_log_prob, level.test_stderr))
        row += [
            f"{linear['val_log_prob']:.4f}" if linear else "-",
            f"{level.val_log_prob - linear['val_log_prob']:+.4f}" if linear else "-",
            f"{level.parameters:,}",
            f"{level.ms_per_step:.1f}",
            ", ".join(notes),
        ]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    for name in ("gaussian", "gmm"):
        entry = result.baselines.get(name)
        if entry:
            test_part = f", test {_pm(entry['test_log_prob'], entry['test_stderr'])}" if has_test else ""
            lines.append(
                f"baseline {entry['label']}: validation {_pm(entry['val_log_prob'], entry['val_stderr'])}{test_part}"
            )
    lines.append(f"chosen latent size: {result.chosen_latent_dim} of {result.input_dim}; rule: {result.rule}")
    if result.under_trained:
        lines.append(
            "note: level(s) " + ", ".join(map(str, result.under_trained)) + " were still improving when training "
            "ended; the choice may move with more --steps"
        )
    if result.gaussian_kept:
        every = len(result.gaussian_kept) == len(result.candidates)
        lines.append(
            "note: "
            + ("every level" if every else "level(s) " + ", ".join(map(str, result.gaussian_kept)))
            + " kept the Gaussian (or Gaussian-mixture) fit of the training rows: no trained weights beat it on "
            + "the validation rows, so "
            + (
                "a flow gains nothing on these rows at this budget, the levels score alike, and the choice says "
                "nothing about how many dimensions the table needs"
                if every
                else "they score alike and say nothing about how many dimensions the table needs"
            )
        )
    return "\n".join(lines)


def _ansatz(recipe) -> str:
    return f"{recipe.model.ansatz} ansatz" if "ansatz" in recipe.fields else recipe.family


def _pm(mean, stderr) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f} ± {stderr:.4f}"


def _numbers(text: str | None, kind, flag: str) -> list | None:
    if text is None:
        return None
    values = []
    for word in (w.strip() for w in text.split(",")):
        if not word:
            continue
        try:
            values.append(kind(word))
        except ValueError:
            raise UserError(f"{flag}: {word!r} is not a {'whole number' if kind is int else 'number'}") from None
    if not values:
        raise UserError(f"{flag} was given but holds no value; pass numbers separated by commas")
    return values
