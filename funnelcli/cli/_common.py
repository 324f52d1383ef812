"""What every command shares: option types, output modes, and turning errors into one line.

Heavy modules (torch, pandas) are imported inside the commands, so ``funnel --help`` starts fast.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from funnelcli.errors import UserError

ModelArg = Annotated[Path, typer.Argument(help="Model folder written by `funnel train`.", show_default=False)]
DataArg = Annotated[
    Path,
    typer.Argument(
        help="Table (.csv, .tsv, .parquet, .h5/.hdf5), or a folder from `funnel data prepare`.", show_default=False
    ),
]
KeyOpt = Annotated[
    str | None, typer.Option("--key", help="HDF5 key or dataset path (needed when the file holds several).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else.")]
#: The spellings of every output path: --output, -o, and --out kept as an alias (train, sweep and data prepare
#: took --out before every command took --output).
OUTPUT_FLAGS = ("--output", "-o", "--out")
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or warnings on stderr.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (a GPU if there is one), cpu or cuda.")]
# The options of every command that trains (`train`, `sweep`).
RecipeOpt = Annotated[
    str, typer.Option("--recipe", "-r", help="Bundled recipe name (`funnel recipes`) or a .toml path.")
]
StepsOpt = Annotated[int | None, typer.Option(help="Training steps.")]
BatchSizeOpt = Annotated[int | None, typer.Option("--batch-size", help="Rows per step.")]
LrOpt = Annotated[float | None, typer.Option(help="Learning rate.")]
TrainSeedOpt = Annotated[int | None, typer.Option(help="Seed of weights, batches and the validation split.")]
ColumnsOpt = Annotated[
    str | None, typer.Option(help="Comma-separated columns to model (default: every numeric column).")
]
ValidationOpt = Annotated[
    Path | None, typer.Option(help="Validation table (default: a seeded --val-fraction of DATA).")
]
ValFractionOpt = Annotated[float, typer.Option("--val-fraction", help="Share of rows held out.")]
DequantizeOpt = Annotated[
    str, typer.Option(help="Integer-valued columns: uniform (add U[0,1) noise, the default) or none.")
]
DropConstantOpt = Annotated[
    bool, typer.Option("--drop-constant", help="Leave out constant columns instead of refusing them.")
]
StrictOpt = Annotated[
    bool, typer.Option("--strict", help="Refuse DATA with columns the model does not use (default: ignore them).")
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as one line on stderr and return the exit to raise."""
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    return typer.Exit(code)


def handle_errors(command):
    """Run a command so that known failures end as one line and an exit code, never a traceback.

    A :class:`UserError` exits 2, phrased with the flags' names (:func:`funnelcli.cli.errors.cli_message`); a
    training run that diverged exits 1 (on the main process only, with what was kept); a failure that is not the
    user's exits 1 (set FUNNEL_DEBUG=1 to see its traceback); Ctrl-C exits 130. Every command and callback of an
    :class:`App` runs through it.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with _sigterm_unwinds():
                return command(*args, **kwargs)
        except typer.Exit:
            raise
        except UserError as error:
            from funnelcli.cli.errors import cli_message

            raise fail(cli_message(error), error.exit_code) from None
        except _Terminated:
            raise fail("terminated (SIGTERM); no output was written", 143) from None
        except KeyboardInterrupt:
            raise fail("interrupted; no output was written", 130) from None
        except BrokenPipeError:
            # The reader went away (`funnel recipes | head`): stop quietly, as Unix tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None
        except Exception as error:
            if os.environ.get("FUNNEL_DEBUG"):
                raise
            from funnelcli.training import TrainingDiverged

            if isinstance(error, TrainingDiverged):
                raise _diverged(error) from None
            if isinstance(error, MemoryError):
                raise fail("out of memory; use a smaller --batch-size or a smaller recipe", 1) from None
            raise fail(
                f"internal error ({type(error).__name__}: {error}); rerun with FUNNEL_DEBUG=1 for the traceback "
                "and report it",
                1,
            ) from None

    return wrapper


def _diverged(error: Exception) -> typer.Exit:
    """A diverged run: one line from the main process (with the notes on what was kept, which ``train`` adds),
    none from the others under torchrun, which diverged with it."""
    from funnelcli.distributed import from_environment

    if not from_environment().is_main:
        return typer.Exit(1)
    return fail("; ".join([f"training diverged: {error}", *getattr(error, "__notes__", ())]), 1)


class App(typer.Typer):
    """A Typer app whose every command and callback runs through :func:`handle_errors`: the one place where the
    CLI turns exceptions into one line and an exit code."""

    def command(self, *args: Any, **kwargs: Any):
        register = super().command(*args, **kwargs)
        return lambda function: _registered(register, function)

    def callback(self, *args: Any, **kwargs: Any):
        register = super().callback(*args, **kwargs)
        return lambda function: _registered(register, function)


def _registered(register, function):
    register(handle_errors(function))
    return function


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the command is, so that every half-written output is removed as for Ctrl-C."""


@contextlib.contextmanager
def _sigterm_unwinds():
    """While a command runs, SIGTERM unwinds it like Ctrl-C instead of killing the process mid-write.

    (Training installs its own handler while it fits, which stops after a whole step and writes checkpoints.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return

    def unwind(number, frame):
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def setup_logging(quiet: bool, *, json_output: bool = False) -> list[str]:
    """Where the library's warnings go, returning the list that collects them for ``--json``.

    They go to stderr as ``warning: ...`` lines (none with ``quiet``); with ``json_output``, into the returned
    list instead, which the command hands to :func:`print_json` so that they appear in its JSON document.
    """
    logger = logging.getLogger("funnelcli")
    logger.handlers.clear()
    collected: list[str] = []
    if json_output:
        handler: logging.Handler = _Collect(collected)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if json_output or not quiet else logging.ERROR)
    logger.propagate = False
    return collected


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a warning comes, not when the command started: a caller (or a
    test runner) that swaps stderr and closes the old one must not make later warnings fail."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the property decides
        pass


class _Collect(logging.Handler):
    """A logging handler that keeps each message in a list (the ``warnings`` of a ``--json`` document)."""

    def __init__(self, into: list[str]):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(" ".join(self.format(record).split()))


def split_names(text: str | None, flag: str = "--columns") -> list[str] | None:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; ``None`` stays ``None``; ``flag`` is the option that gave ``text``."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UserError(f"{flag} was given but names no column; pass names separated by commas")
    return names


def print_json(document: dict[str, Any], warnings: list[str] | None = None) -> None:
    """Print ``document`` as one JSON object on stdout, the only thing a ``--json`` command prints there.

    ``warnings`` (what the human output would print as ``warning:`` lines) are added to the document's
    ``warnings`` list, which appears only when there is something to warn about.
    """
    if warnings:
        document = {**document, "warnings": [*document.get("warnings", []), *warnings]}
    typer.echo(json.dumps(document, allow_nan=False))


def check_no_extra_columns(
    path: Path, estimator: Any, *, key: str | None = None, keep: list[str] | None = None
) -> None:
    """``--strict``: refuse a table with columns the loaded model does not use (a sign of the wrong file or model).

    The model's input columns (constant ones it left out included), its context columns (conditions, modelled
    categorical columns) and the ``keep`` columns are allowed.
    """
    from funnelcli.data.inspect import inspect_table

    allowed = {str(name) for name in estimator.metadata_.get("input_columns", estimator.columns_)} | set(keep or [])
    allowed |= set(estimator.context_columns_)
    names = [str(column["name"]) for column in inspect_table(path, key=key)["columns"]]
    extra = [name for name in names if name not in allowed]
    if extra:
        shown = ", ".join(repr(name) for name in extra[:10]) + (
            f" and {len(extra) - 10} more" if len(extra) > 10 else ""
        )
        raise UserError(
            f"{path} has column(s) {shown} that the model does not use (--strict); drop them, or leave out --strict "
            "to ignore them"
        )


def out_format_check(path: Path, *, force: bool, inputs: tuple[Path | None, ...] = ()) -> None:
    """Refuse a bad output path before any work is done: an unknown extension, an existing file without
    ``--force``, a parent that is a file or a dangling link, or a path that is or lies inside an input."""
    from funnelcli import outputs
    from funnelcli.data import check_output_path

    check_output_path(path, overwrite=force)
    outputs.check_output_file(path, inputs=[given for given in inputs if given is not None])


def data_stem(path: Path) -> str:
    """The name of a table or prepared folder without its extension: the default output name."""
    name = path.resolve().name if path.is_dir() else path.name
    for suffix in (".csv.gz", ".parquet", ".hdf5", ".csv", ".tsv", ".pq", ".h5", ".hdf"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or "model"
    return path.stem or "model"
