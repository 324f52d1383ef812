"""``funnel train``: fit a model to a table and write its model folder."""

from __future__ import annotations

import functools
import inspect
import shlex
from pathlib import Path
from typing import Annotated

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
from funnelcli.distributed import Ranks, from_environment
from funnelcli.errors import UserError

EXAMPLES = """
Examples:

  funnel train data.parquet --reduce 0.5

  funnel train data.parquet --latent-dim 3

  funnel train data.csv --recipe nsf --steps 5000 --output runs/nsf

  funnel train data.h5 --key table --columns a,b,c --validation val.h5 --ansatz gaussian

  funnel train data.csv --output runs/long --checkpoint-every 500

  funnel train data.csv --output runs/long --checkpoint-every 500 --resume

  funnel train penguins.csv --condition species,sex

  funnel train survey.csv --condition region,age --categorical region

  funnel train penguins.csv --categorical species

  funnel train digits.csv --image-shape 8x8 --bits 5 --recipe f-image

  funnel train patches.parquet --image-shape 8x8 --bits 5 --source-bits 8
"""


def train(
    data: DataArg,
    recipe: RecipeOpt = "f-nsf",
    reduce: Annotated[
        float | None, typer.Option(help="Fraction of the dimensions the funnel removes (0 < reduce < 1).")
    ] = None,
    latent_dim: Annotated[
        int | None,
        typer.Option("--latent-dim", help="Dimensions the funnel keeps, 1 to D - 1 (instead of --reduce)."),
    ] = None,
    ansatz: Annotated[str | None, typer.Option(help="q(x_drop | z): gaussian or flow.")] = None,
    base: Annotated[
        str | None,
        typer.Option(
            help="Latent distribution: normal, or mixture (a Gaussian mixture, for rows that fall into groups)."
        ),
    ] = None,
    small_rows: Annotated[
        int | None,
        typer.Option(
            "--small-rows",
            help="A table with fewer training rows (after the validation split) trains with the recipe's "
            "small-table recipe (f-nsf: 600, see `funnel recipes show`); 0 keeps the recipe at any size.",
        ),
    ] = None,
    choose_rows: Annotated[
        int | None,
        typer.Option(
            "--choose-rows",
            help="A table with fewer training rows trains the recipe and each of its choose_from recipes, and keeps "
            "the best on the validation rows (a recipe's training.choose_rows); 0 trains only the recipe named.",
        ),
    ] = None,
    steps: StepsOpt = None,
    batch_size: BatchSizeOpt = None,
    lr: LrOpt = None,
    seed: TrainSeedOpt = None,
    columns: ColumnsOpt = None,
    condition: Annotated[
        str | None,
        typer.Option(
            "--condition",
            help="Comma-separated columns to condition on: fits p(x | c) for the other columns. Text, booleans and "
            "--categorical columns are categories; numbers are standardised.",
        ),
    ] = None,
    categorical: Annotated[
        str | None,
        typer.Option(
            "--categorical",
            help="Comma-separated categorical columns: a --condition one is a category (integer codes too, e.g. "
            "sex = 1, 2); any other is modelled, with the exact mixed log P(k) + log p(x | k).",
        ),
    ] = None,
    image_shape: Annotated[
        str | None,
        typer.Option(
            "--image-shape",
            help="HxW or HxWxC: the columns are the pixels of an image, in row-major order, a pixel's channels "
            "adjacent (image recipes read it; H * W * C must be the column count, or one more for f-image: an "
            "image less its last pixel, as BSDS300's 63 columns).",
        ),
    ] = None,
    bits: Annotated[
        int | None,
        typer.Option(
            "--bits",
            help="The columns are pixels of this bit depth (1-16), whole numbers 0..2^bits - 1: every one is "
            "dequantized, and score, evaluate and compare report bits per dimension in these units.",
        ),
    ] = None,
    source_bits: Annotated[
        int | None,
        typer.Option(
            "--source-bits",
            help="With --bits: DATA's pixels have this depth (e.g. 8) and are reduced to --bits (e.g. 5) by "
            "x // 2^(source - bits), the Glow and funnel papers' n-bit images; scoring reduces them alike.",
        ),
    ] = None,
    key: KeyOpt = None,
    validation: ValidationOpt = None,
    val_fraction: ValFractionOpt = 0.1,
    dequantize: DequantizeOpt = "uniform",
    drop_constant: DropConstantOpt = False,
    device: DeviceOpt = "auto",
    out: Annotated[Path | None, typer.Option(*OUTPUT_FLAGS, help="Model folder (default: runs/<DATA name>).")] = None,
    force: ForceOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    checkpoint_every: Annotated[
        int,
        typer.Option(
            "--checkpoint-every",
            help="Also write checkpoints to OUTPUT/checkpoints every N steps (0: only on Ctrl-C).",
        ),
    ] = 0,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue the interrupted run in --output from its latest checkpoint, exactly."),
    ] = False,
    max_nonfinite: Annotated[
        int,
        typer.Option(
            "--max-nonfinite", help="Steps with a non-finite loss (each skipped) in a row before training gives up."
        ),
    ] = 20,
    compile: Annotated[
        bool,
        typer.Option(
            "--compile", help="Compile the training step with torch.compile: slower start, faster steps on long runs."
        ),
    ] = False,
    max_parameters: Annotated[
        int | None,
        typer.Option(
            "--max-parameters",
            help="Refuse, before building it, a model with more parameters than this (default 100,000,000).",
        ),
    ] = None,
) -> None:
    """Fit a density model to DATA and write a model folder.

    DATA is a table, or a folder from `funnel data prepare`, whose train and validation splits are then used.

    Ctrl-C or SIGTERM stops training after the current step and writes the latest and the best checkpoint to
    OUTPUT/checkpoints; the same command with --resume then continues exactly where it stopped.

    Started by torchrun (torchrun --nproc_per_node=N -m funnelcli train ...), the N processes train one model
    data-parallel, each on every N-th row (NCCL between GPUs, gloo between CPU processes); rank 0 alone
    prints progress and writes OUTPUT.
    """
    given = dict(locals())  # first: the arguments as given, for the command that resumes this run
    ranks = from_environment()  # under torchrun; the process group itself is joined when training starts
    main = ranks.is_main
    warnings = setup_logging(quiet or not main, json_output=json_output)
    from funnelcli import artifact
    from funnelcli.data.pixels import parse_image_shape
    from funnelcli.estimator import FunnelDensity
    from funnelcli.estimator_checks import training_rows
    from funnelcli.preparation import check_bits
    from funnelcli.training import TrainingDiverged, TrainingInterrupted

    out = out or Path("runs") / data_stem(data)
    conditions, categories = _condition_names(condition, categorical)
    shape = None if image_shape is None else parse_image_shape(image_shape)
    estimator = FunnelDensity(
        recipe,
        reduce=reduce,
        latent_dim=latent_dim,
        ansatz=ansatz,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        val_fraction=val_fraction,
        dequantize=dequantize,
        drop_constant=drop_constant,
        max_parameters=max_parameters,
        conditional_columns=conditions or None,
        categorical_columns=categories or None,
        bits=bits,
        source_bits=source_bits,
        **({} if base is None else {"base": base}),
        **({} if small_rows is None else {"small_rows": small_rows}),
        **({} if choose_rows is None else {"choose_rows": choose_rows}),
        **({} if shape is None else {"image_shape": shape}),
    )
    resolved = estimator.resolved_recipe()  # a bad recipe or flag fails here, before any data is read
    check_bits(bits, source_bits)
    _check_counts(checkpoint_every=checkpoint_every, max_nonfinite=max_nonfinite)
    inputs = (data, *([validation] if validation is not None else []), *([recipe] if Path(recipe).exists() else []))
    artifact.check_writable(out, overwrite=force, resume=resume, inputs=inputs)
    before = _checkpoint_files(out)  # a run that diverges takes away only the checkpoints it wrote itself
    table, held_out = _read_rows(
        data, validation, key=key, columns=columns, conditions=conditions, categories=categories
    )
    if shape is not None:
        columns = table.shape[1] - len({*conditions, *categories})
        _check_pixel_count(image_shape, shape, columns, data, funnel=resolved.has_funnel)
    trained = training_rows(estimator, len(table), held_out is not None)
    asked, resolved = resolved, estimator.resolved_recipe(rows=trained)
    try:
        with _progress(enabled=main and not (quiet or json_output)) as callback:
            estimator.fit(
                table,
                validation=held_out,
                callback=callback,
                checkpoint_dir=out / artifact.CHECKPOINTS,
                resume=resume,
                checkpoint_every=checkpoint_every,
                max_nonfinite=max_nonfinite,
                compile=compile,
            )
    except TrainingInterrupted as interrupted:
        if main:
            typer.echo(f"interrupted: {interrupted}; resume with: {_resume_command(given, out, ranks)}", err=True)
        raise typer.Exit(interrupted.exit_code) from None
    except TrainingDiverged as diverged:
        if main:  # keep what can be kept; the error line (handle_errors) says what that was
            diverged.add_note(_keep_best(estimator, diverged, out, force, before))
        raise
    if not main:
        return
    # The folder may hold this run's checkpoints, which its model replaces.
    estimator.save(out, overwrite=force or artifact.holds_only_checkpoints(out))
    choice = getattr(estimator, "choice_", None)
    resolved = estimator.recipe_ if choice is not None else resolved  # the candidate that won
    report = _report(estimator, resolved, out, rows=len(table))
    if choice is not None:
        report["choice"] = {**choice, "choose_rows": asked.training.choose_rows, "rows": trained}
    elif resolved.name != asked.name:
        report["small_table"] = {"recipe": asked.name, "small_rows": asked.training.small_rows, "rows": trained}
    if json_output:
        print_json(report, warnings)
        return
    typer.echo(_saved_line(report, resolved))


def _check_pixel_count(text: str, shape: list[int], columns: int, data: Path, *, funnel: bool) -> None:
    """Refuse an --image-shape whose pixel count is not DATA's number of modelled columns, before training; a funnel
    family also takes an image less its last value (BSDS300's 63 columns)."""
    from funnelcli.models.image_plan import holds

    pixels = shape[0] * shape[1] * shape[2]
    if holds(pixels, columns, funnel):
        return
    hint = (
        " (one value short, as BSDS300's 63 columns are 8x8 patches less their last pixel: the funnel family "
        "f-nsf-image takes such images, --recipe f-image, its first squeeze dropping the missing pixel)"
        if pixels - columns == 1
        else ""
    )
    raise UserError(
        f"--image-shape {text} is {pixels:,} pixels; {data} has {columns:,} columns to model{hint}: give the rows' "
        "shape, or choose the pixel columns with --columns"
    )


def _check_counts(*, checkpoint_every: int, max_nonfinite: int) -> None:
    """Refuse the checkpoint interval and the non-finite step limit out of range, before any data is read."""
    if checkpoint_every < 0:
        raise UserError(f"--checkpoint-every must be 0 (only on Ctrl-C) or a number of steps, got {checkpoint_every}")
    if max_nonfinite < 1:
        raise UserError(f"--max-nonfinite must be at least 1, got {max_nonfinite}")


def _condition_names(condition: str | None, categorical: str | None) -> tuple[list[str], list[str]]:
    """(--condition's names, --categorical's names), checked as the estimator checks them, before any data is
    read."""
    from funnelcli.conditions import check_names

    names = split_names(condition, "--condition") or []
    categories = split_names(categorical, "--categorical") or []
    check_names(names, categories)
    return names, categories


def _read_rows(
    data: Path,
    validation: Path | None,
    *,
    key: str | None,
    columns: str | None,
    conditions: list[str] = (),
    categories: list[str] = (),
):
    """The training rows and the validation rows (None: split off by the estimator); a prepared DATA gives its
    validation split unless one is passed. The ``conditions`` and ``categories`` columns are read as they are
    (any type), beside the numeric columns."""
    from funnelcli.data import read_table
    from funnelcli.data.prepared import is_prepared, split_file

    raw = {**{name: "--categorical" for name in categories}, **{name: "--condition" for name in conditions}}
    read = functools.partial(_read_with_raw, raw=raw) if raw else read_table
    table = read(split_file(data, "train"), key=key, columns=split_names(columns))
    if validation is None and is_prepared(data):
        validation = split_file(data, "validation")
    held_out = None
    if validation is not None:
        held_out = read(validation, key=key, columns=[name for name in table.columns if name not in raw])
    return table, held_out


def _read_with_raw(path: Path, *, key: str | None, columns: list[str] | None, raw: dict[str, str]):
    """The numeric ``columns`` of ``path`` (every numeric column but the ``raw`` ones when None, text ones skipped
    with the usual warning; NaN, infinities and stray text refused as ``read_table`` refuses them), then its
    ``raw`` columns as they are (any type). ``raw`` maps each to the flag that named it."""
    import pandas as pd

    from funnelcli.apply import column_names
    from funnelcli.data import read_columns
    from funnelcli.data.tables import numeric_frame

    names = column_names(path, key=key)
    missing = [name for name in raw if name not in names]
    if missing:
        raise UserError(
            f"{raw[missing[0]]} names {missing[0]!r}, which {path} lacks; its columns are "
            + ", ".join(names[:20])
            + (", ..." if len(names) > 20 else "")
        )
    both = [name for name in columns or [] if name in raw]
    if both:
        raise UserError(
            f"--columns and {raw[both[0]]} both name {both[0]!r}; a column is modelled or a condition, not both: "
            "leave it out of one of them"
        )
    everything = read_columns(path, names, key=key)
    numeric = numeric_frame(everything.drop(columns=list(raw)), str(path), columns)
    return pd.concat([numeric, everything[list(raw)].reset_index(drop=True)], axis=1)


def _report(estimator, resolved, out: Path, *, rows: int) -> dict:
    """The saved model and its training run, as the --json object (and the human line's figures)."""
    from funnelcli.models.contract import count_parameters

    summary = estimator.summary_
    report = {
        "model": str(out),
        "recipe": resolved.name,
        "family": resolved.family,
        "rows": rows,
        "input_dim": estimator.n_features_in_,
        "latent_dim": estimator.latent_dim_,
        "parameters": count_parameters(estimator.model_),
        "best_val_log_prob": summary["best_val_log_prob"],
        "best_step": summary["best_step"],
        "steps": summary["steps"],
        "seconds": summary["seconds"],
        "ms_per_step": summary["ms_per_step"],
        "processes": summary["processes"],
    }
    if summary.get("resumed_at_step") is not None:
        report["resumed_at_step"] = summary["resumed_at_step"]
    report["dequantized_columns"] = [str(column) for column in estimator.dequantized_columns_]
    if estimator.bits is not None:
        report["bits"] = estimator.bits
        if estimator.source_bits is not None:
            report["source_bits"] = estimator.source_bits
    shape = getattr(resolved.model, "image_shape", None)
    if shape:
        report["image_shape"] = list(shape)
    if estimator.conditions_ is not None:
        report["conditions"] = estimator.conditions_.names
    if estimator.categorical_ is not None:
        report["categorical"] = estimator.categorical_.names
    return report


def _saved_line(report: dict, resolved) -> str:
    return (
        f"saved {report['model']}: {resolved.family} ({resolved.name}), {report['input_dim']} -> "
        f"{report['latent_dim']} dims"
        + (f" plus categorical {', '.join(report['categorical'])}" if "categorical" in report else "")
        + (f" given {', '.join(report['conditions'])}" if "conditions" in report else "")
        + f", {report['parameters']:,} parameters; best validation log-likelihood "
        f"{report['best_val_log_prob']:.4f} nats/row at step {report['best_step']} of {report['steps']} "
        f"({report['seconds']:.1f} s, {report['ms_per_step']:.1f} ms/step)"
        + (f"; resumed at step {report['resumed_at_step']}" if "resumed_at_step" in report else "")
        + _small_table_note(report)
        + _choice_note(report)
    )


def _choice_note(report: dict) -> str:
    if "choice" not in report:
        return ""
    choice = report["choice"]
    scores = ", ".join(f"{entry['recipe']} {entry['val_log_prob']:.4f}" for entry in choice["candidates"])
    return (
        f"\n{choice['chosen']} had the best validation log-likelihood of the recipes compared on this table "
        f"({choice['rows']:,} training rows, fewer than choose_rows {choice['choose_rows']:,}): {scores}"
    )


def _small_table_note(report: dict) -> str:
    if "small_table" not in report:
        return ""
    asked = report["small_table"]
    return (
        f"\n{report['recipe']} is recipe {asked['recipe']}'s small-table recipe: this table has "
        f"{asked['rows']:,} training rows, fewer than its small_rows ({asked['small_rows']:,}); --small-rows 0 "
        f"keeps {asked['recipe']}"
    )


#: Flags whose spelling is not ``--`` + the parameter's name with dashes.
_FLAGS = {"json_output": "--json"}


def _resume_command(given: dict, out: Path, ranks: Ranks) -> str:
    """The command that continues this run: the options that were given, ``--output`` and ``--resume``; under
    torchrun, with as many processes."""
    launcher = ["torchrun", f"--nproc_per_node={ranks.world_size}", "-m", "funnelcli"] if ranks.active else ["funnel"]
    words = [*launcher, "train", str(given["data"])]
    for name, parameter in inspect.signature(train).parameters.items():
        value = given[name]
        if name in ("data", "out", "resume") or value == parameter.default:
            continue
        flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
        words += [flag] if isinstance(value, bool) else [flag, str(value)]
    return shlex.join([*words, "--output", str(out), "--resume"])


def _checkpoint_files(out: Path) -> dict[Path, tuple[int, int]]:
    """``out``, its checkpoint folder and the files in it as they are now, each with its inode and mtime."""
    from funnelcli import artifact

    folder = out / artifact.CHECKPOINTS
    paths = [out, folder, *(folder.iterdir() if folder.is_dir() else ())]
    return {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in paths if path.exists()}


def _keep_best(estimator, diverged, out: Path, force: bool, before: dict[Path, tuple[int, int]]) -> str:
    """Save the best model of a diverged run (nothing is lost); say what was kept.

    With no model to keep, the checkpoints this run wrote are removed (a diverged run resumes into the same
    divergence), and so are the folders it made; whatever was there before it started stays.
    """
    from funnelcli import artifact

    summary = diverged.summary
    if summary is not None and summary.best_step > 0:
        estimator.save(out, overwrite=force or artifact.holds_only_checkpoints(out))
        return (
            f"the best model so far (step {summary.best_step}, validation log-likelihood "
            f"{summary.best_val_log_prob:.4f} nats/row) was saved to {out}; pass --force to train it again"
        )
    folder = out / artifact.CHECKPOINTS
    for path, identity in _checkpoint_files(out).items():
        if path.parent == folder and path.name in (artifact.LATEST, artifact.BEST) and before.get(path) != identity:
            path.unlink(missing_ok=True)
    for made in (folder, out):
        if made not in before and made.is_dir() and not any(made.iterdir()):
            made.rmdir()
    return "no validation pass had finished, so there was no model to keep and nothing was written"


class _progress:
    """A rich progress bar on stderr fed by the training callback.

    The bar appears with the first step, so a mistake found before training starts prints only its line. When
    recipes compete (``training.choose_rows``), each candidate's records name it, and each gets its own bar.
    """

    def __init__(self, *, enabled: bool):
        self.enabled = enabled
        self.progress = self.task = self.recipe = None

    def _start(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("training{task.fields[recipe]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[scores]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.progress.start()

    def _update(self, record: dict) -> None:
        if self.progress is None:
            self._start()
        if self.task is None or record.get("recipe") != self.recipe:
            self.recipe = record.get("recipe")
            named = "" if self.recipe is None else f" {self.recipe}"
            self.task = self.progress.add_task("train", total=record["steps"], scores="", recipe=named)
        update = {"completed": record["step"]}
        if "val_log_prob" in record:
            update["scores"] = f"train {record['train_log_prob']:.3f}  val {record['val_log_prob']:.3f} nats/row"
        self.progress.update(self.task, **update)

    def __enter__(self):
        return self._update if self.enabled else None

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
        return False
