"""``funnel evaluate``, ``funnel report`` and ``funnel compare``: the numbers and pictures of a paper."""

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
    print_json,
    setup_logging,
)
from funnelcli.errors import UserError

EVALUATE_EXAMPLES = """
Examples:

  funnel evaluate runs/digits test.csv

  funnel evaluate runs/digits test.csv --ood other.csv --json

  funnel evaluate runs/digits test.csv --ood other.csv --report report/ --force

  funnel evaluate runs/digits test.csv --baselines train.csv

  funnel evaluate runs/digits test.csv --error 2se
"""

REPORT_EXAMPLES = """
Examples:

  funnel report runs/digits test.csv -o report/

  funnel report runs/digits test.csv --ood other.csv --output report/ --force

  funnel report runs/digits test.csv -o report/ --json
"""

COMPARE_EXAMPLES = """
Examples:

  funnel compare runs/nsf runs/f-nsf --data test.csv

  funnel compare runs/* --data test.csv --markdown

  funnel compare runs/nsf runs/f-nsf --data test.csv --json

  funnel compare runs/nsf runs/f-nsf --data prepared/ --baselines prepared/

  funnel compare runs/* --data test.csv --markdown --error 2se
"""

OodOpt = Annotated[
    Path | None,
    typer.Option(
        "--ood", help="Out-of-distribution rows (a table or prepared folder) for anomaly detection: -log p scores."
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the model samples and the two-sample test.")]
BaselinesOpt = Annotated[
    Path | None,
    typer.Option(
        "--baselines",
        help="Training rows (a table, or a prepared folder: its train split, and its validation split to choose "
        "the mixture's size) to fit classical baselines on, in the model's columns: a full-covariance Gaussian, a "
        "Gaussian mixture and probabilistic PCA at the model's latent size. They are scored on the same rows, and "
        "the model's gain over PPCA is reported.",
        show_default=False,
    ),
]

#: The error bars ``--error`` may ask for: the name on the command line and the standard errors it prints.
ERROR_BARS = {"1se": 1, "2se": 2}
ErrorOpt = Annotated[
    str,
    typer.Option(
        "--error",
        help="Error bars printed after ±: 1se (one standard error) or 2se (two, as the MAF, NSF and funnel papers "
        "print). --json keeps the raw standard error and names the choice in its error field.",
    ),
]


def _stderr_multiple(error: str) -> int:
    """The standard errors that ``--error`` asks to print."""
    if error not in ERROR_BARS:
        raise UserError(f"--error {error!r} is unknown; use {' or '.join(ERROR_BARS)}")
    return ERROR_BARS[error]


def _load(model: Path, device: str):
    """The model of a folder; a conditional or mixed one is refused (its test rows, samples and baselines would need
    the conditions or the categorical columns, which evaluate, report and compare do not read yet)."""
    from funnelcli.estimator import FunnelDensity

    estimator = FunnelDensity.load(model, device=device)
    if estimator.conditions_ is not None:
        raise UserError(
            f"{model} is conditional on {', '.join(estimator.conditions_.names)}; evaluate, report and compare take "
            "unconditional models only for now: score it with `funnel score MODEL TEST` (log p(x | c) per row)"
        )
    if estimator.categorical_ is not None:
        names = ", ".join(estimator.categorical_.names)
        raise UserError(
            f"{model} models the categorical column(s) {names} (a mixed likelihood, log P({names}) + log p(x | "
            f"{names})); evaluate, report and compare take models of numeric columns only for now: score it with "
            "`funnel score MODEL TEST`"
        )
    return estimator


def _read(path: Path, estimator, key: str | None):
    """The test split of a prepared folder, or the table itself, with the columns the model was trained on."""
    from funnelcli.data import read_table
    from funnelcli.data.prepared import split_file
    from funnelcli.evaluation.report import input_columns

    return read_table(split_file(path, "test"), key=key, columns=input_columns(estimator))


def _baselines(path: Path, estimator, key: str | None, latent_dims=None, progress: bool = False):
    """The baselines fitted on the train split of ``path`` (or the table itself) in the model's columns, the
    mixture's size chosen on the prepared folder's validation split when it has one."""
    from funnelcli.data import read_table
    from funnelcli.data.prepared import is_prepared, split_file
    from funnelcli.evaluation.report import fit_model_baselines

    columns = [str(c) for c in estimator.columns_]
    train = read_table(split_file(path, "train"), key=key, columns=columns)
    validation = None
    if is_prepared(path) and (Path(path) / "validation.parquet").is_file():
        validation = read_table(Path(path) / "validation.parquet", columns=columns)
    if progress:
        typer.echo(f"fitting the baselines on {len(train):,} rows of {path}", err=True)
    try:
        return fit_model_baselines(estimator, train, validation, latent_dims=latent_dims)
    except UserError as error:
        raise UserError(f"--baselines {path}: {error}") from None


def _run(
    model: Path,
    data: Path,
    ood: Path | None,
    key: str | None,
    device: str,
    seed: int,
    progress: bool,
    baselines: Path | None = None,
):
    from funnelcli.evaluation import evaluate as evaluate_model

    def say(message: str) -> None:
        if progress:
            typer.echo(message, err=True)

    estimator = _load(model, device)
    test = _read(data, estimator, key)
    other = _read(ood, estimator, key) if ood is not None else None
    fitted = _baselines(baselines, estimator, key, progress=progress) if baselines is not None else None
    say(f"evaluating {model} on {len(test):,} rows" + (f" and {len(other):,} OOD rows" if other is not None else ""))
    evaluation = evaluate_model(estimator, test, other, random_state=seed, name=str(model), baselines=fitted)
    return estimator, evaluation


def _report(
    folder: Path,
    estimator,
    evaluation,
    data: Path,
    ood: Path | None,
    force: bool,
    seed: int,
    stderr_multiple: int = 1,
) -> Path:
    from funnelcli.evaluation import write_report

    return write_report(
        folder,
        estimator,
        evaluation,
        overwrite=force,
        random_state=seed,
        test_name=data.name,
        ood_name=ood.name if ood is not None else "OOD",
        stderr_multiple=stderr_multiple,
    )


def evaluate(
    model: ModelArg,
    data: DataArg,
    ood: OodOpt = None,
    report_dir: Annotated[
        Path | None, typer.Option("--report", help="Also write the figures and index.html into this folder.")
    ] = None,
    baselines: BaselinesOpt = None,
    key: KeyOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    error: ErrorOpt = "1se",
    json_output: JsonOpt = False,
) -> None:
    """Evaluate a model on held-out DATA: likelihood, sample quality and, with --ood, anomaly detection.

    Prints the test log-likelihood ± standard error, bits per dimension, latent size and parameter count.

    --error 2se prints ± two standard errors, as the MAF, NSF and funnel papers do.

    Model samples are compared with DATA by a classifier two-sample AUC and a sliced Wasserstein distance.

    With --ood OTHER: anomaly detection by -log p (AUROC, average precision) and the paper's Table 4 ratio.

    With --baselines TRAIN: a full Gaussian, a Gaussian mixture and PPCA at the model's latent size, fitted on TRAIN.

    They are scored on DATA beside the model, with the model's gain over that PPCA (nats/row).

    A model that reports a lower bound (a VAE's ELBO) has its likelihoods labelled as a bound.
    """
    warnings = setup_logging(False, json_output=json_output)
    from funnelcli.evaluation.report import check_report_folder, error_bars, metric_rows

    stderr_multiple = _stderr_multiple(error)
    if report_dir is not None:
        check_report_folder(report_dir, overwrite=force, inputs=(model, data, *([ood] if ood else [])))
    estimator, evaluation = _run(model, data, ood, key, device, seed, progress=not json_output, baselines=baselines)
    document = evaluation.to_json()
    document["error"] = error_bars(stderr_multiple)
    if report_dir is not None:
        index = _report(report_dir, estimator, evaluation, data, ood, force, seed, stderr_multiple)
        document["report"] = str(index)
    if json_output:
        print_json(document, warnings)
        return
    rows = metric_rows(evaluation.metrics, stderr_multiple=stderr_multiple)
    width = max(len(name) for name, _ in rows)
    typer.echo(f"model {model} (recipe {document['recipe']}, family {document['family']}) on {data}")
    typer.echo("\n".join(f"  {name.ljust(width)}  {value}" for name, value in rows))
    if report_dir is not None:
        typer.echo(f"report: {document['report']}")


def report(
    model: ModelArg,
    data: DataArg,
    output: Annotated[Path, typer.Option(*OUTPUT_FLAGS, help="Folder for the figures and index.html.")],
    ood: OodOpt = None,
    key: KeyOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Write a model's evaluation report: PNG figures and an index.html that shows them with the metrics.

    Training curves; per-column histograms and a corner plot of DATA against model samples.

    Latent codes of DATA against N(0, 1); samples at temperatures 0.5, 0.75 and 1.

    A model of image pixels (--image-shape): a grid of samples and held-out rows beside decode(encode(row)).

    With --ood OTHER: the two log-likelihood histograms and the ROC curve. Prints the path of index.html.
    """
    warnings = setup_logging(False, json_output=json_output)
    from funnelcli.evaluation.report import check_report_folder

    check_report_folder(output, overwrite=force, inputs=(model, data, *([ood] if ood else [])))
    estimator, evaluation = _run(model, data, ood, key, device, seed, progress=not json_output)
    index = _report(output, estimator, evaluation, data, ood, force, seed)
    if json_output:
        print_json({"output": str(output), "report": str(index)}, warnings)
        return
    typer.echo(str(index))


def compare(
    runs: Annotated[list[Path], typer.Argument(help="Model folders to compare.", show_default=False)],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="Held-out table, or a folder from `funnel data prepare` (its test split).",
            show_default=False,
        ),
    ],
    baselines: BaselinesOpt = None,
    key: KeyOpt = None,
    device: DeviceOpt = "auto",
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table, best in bold.")] = False,
    error: ErrorOpt = "1se",
    json_output: JsonOpt = False,
) -> None:
    """Compare models on the same held-out DATA in one table (the funnel paper's Table 1).

    A row per model: test log-likelihood ± standard error, latent size, parameters, training ms per step.

    --error 2se prints ± two standard errors, as the MAF, NSF and funnel papers do; the header says which.

    With --baselines TRAIN: a row per baseline fitted on TRAIN (full Gaussian, Gaussian mixture, PPCA).

    PPCA is fitted at each model's latent size below D; each model gets its gain over PPCA of its size.

    --markdown sets the best log-likelihood in bold; --json prints one object with a row per model.
    """
    warnings = setup_logging(False, json_output=json_output)
    from funnelcli.evaluation.report import (
        baseline_summaries,
        best_index,
        compare_row,
        error_bars,
        format_comparison,
        json_safe,
        with_baselines,
    )

    stderr_multiple = _stderr_multiple(error)
    if json_output and markdown:
        raise UserError("--json and --markdown both ask for the output format; pass one of them")
    # Every folder is opened before any is scored, so a mistyped one fails at once.
    estimators = [(run, _load(run, device)) for run in runs]
    fitted = None
    if baselines is not None:
        reference = estimators[0][1]
        _check_same_columns(estimators)
        dims = sorted({int(estimator.latent_dim_) for _, estimator in estimators})
        fitted = _baselines(baselines, reference, key, latent_dims=dims, progress=not json_output)
    rows = []
    for run, estimator in estimators:
        if not json_output:
            typer.echo(f"scoring {data} with {run}", err=True)
        rows.append(compare_row(str(run), estimator, _read(data, estimator, key)))
    if fitted is not None:
        if not json_output:
            typer.echo(f"scoring {data} with the baselines", err=True)
        rows = with_baselines(rows, baseline_summaries(fitted, reference, _read(data, reference, key)))
    if json_output:
        best = best_index(rows)
        best_model = None if best is None else rows[best]["model"]
        document = {"data": str(data), "models": rows, "best": best_model, "error": error_bars(stderr_multiple)}
        print_json(json_safe(document), warnings)
        return
    typer.echo(format_comparison(rows, markdown=markdown, stderr_multiple=stderr_multiple))


def _check_same_columns(estimators) -> None:
    """Baselines are fitted once for all models: refuse models of other columns or other dequantized columns."""
    (first, reference), *others = estimators
    for run, estimator in others:
        for what, attribute in (("columns", "columns_"), ("dequantized columns", "dequantized_columns_")):
            mine = [str(c) for c in getattr(reference, attribute, []) or []]
            theirs = [str(c) for c in getattr(estimator, attribute, []) or []]
            if mine != theirs:
                raise UserError(
                    f"--baselines needs models of the same {what}, but {run} models {len(theirs)} "
                    f"({', '.join(theirs[:4])}{', ...' if len(theirs) > 4 else ''}) and {first} models {len(mine)} "
                    f"({', '.join(mine[:4])}{', ...' if len(mine) > 4 else ''})"
                )
