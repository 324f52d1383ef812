"""The ``funnel`` command line: a thin skin over :class:`funnelcli.FunnelDensity`."""

from __future__ import annotations

import typer

from funnelcli import __version__
from funnelcli.cli import data, encode, evaluate, info, recipes, sample, score, sweep, train
from funnelcli.cli._common import App

app = App(
    name="funnel",
    help="Exact-likelihood density estimation for tables with funnel flows: train, score, encode, sample.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # --show-completion prints the completion script of the shell it runs in (found by shellingham) and installs
    # nothing; --install-completion writes it to the shell's startup files.
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"funnelcli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    context: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Exact-likelihood density estimation for tables with funnel flows."""
    from funnelcli.distributed import from_environment

    if context.invoked_subcommand not in (None, "train") and from_environment().active:
        # N copies of score or sample would each do the whole job and race to write the same output.
        typer.echo(
            f"error: only `funnel train` runs under torchrun; run `funnel {context.invoked_subcommand}` as one "
            "process (without torchrun)",
            err=True,
        )
        raise typer.Exit(2)


for module in (train, sweep, score, encode, sample, info):
    name = module.__name__.rsplit(".", 1)[1]
    function = getattr(module, name)
    app.command(name, epilog=module.EXAMPLES)(function)
app.command("evaluate", epilog=evaluate.EVALUATE_EXAMPLES)(evaluate.evaluate)
app.command("report", epilog=evaluate.REPORT_EXAMPLES)(evaluate.report)
app.command("compare", epilog=evaluate.COMPARE_EXAMPLES)(evaluate.compare)
app.add_typer(recipes.app, name="recipes")
app.add_typer(data.app, name="data")


def main() -> None:
    try:
        # One program name however it is started (`funnel`, `python -m funnelcli`, torchrun): the completion script
        # and the usage lines name the `funnel` command, and the completion variable is always _FUNNEL_COMPLETE.
        app(prog_name="funnel")
    finally:
        from funnelcli.distributed import leave

        leave()
