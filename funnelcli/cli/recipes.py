"""``funnel recipes``: the bundled recipes."""

from __future__ import annotations

from typing import Annotated

import typer

from funnelcli.cli._common import handle_errors

app = typer.Typer(
    help="List the bundled recipes, or print one (`funnel recipes show f-nsf`).",
    invoke_without_command=True,
    no_args_is_help=False,
)


@app.callback()
@handle_errors
def list_recipes(ctx: typer.Context) -> None:
    """List the bundled recipes with their family and description."""
    if ctx.invoked_subcommand is not None:
        return
    import tomllib

    from funnelcli.models.recipe import bundled_recipes

    for name, path in bundled_recipes().items():
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        typer.echo(f"{name:<16} {data.get('family', ''):<8} {data.get('description', '')}")


@app.command("show")
@handle_errors
def show(name: Annotated[str, typer.Argument(help="Recipe name or .toml path.")]) -> None:
    """Print a recipe's TOML text (after checking that it is valid)."""
    from funnelcli.models.recipe import load_recipe, recipe_path

    load_recipe(name)
    typer.echo(recipe_path(name).read_text(encoding="utf-8").rstrip())
