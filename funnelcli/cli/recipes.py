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
        typer.echo(f"{name:<20} {data.get('family', ''):<7} {data.get('description', '')}")


@app.command("show")
@handle_errors
def show(
    name: Annotated[str, typer.Argument(help="Recipe name or .toml path.")],
    dim: Annotated[
        int | None, typer.Option("--dim", help="Count parameters for this many columns (default: the recipe's).")
    ] = None,
) -> None:
    """Print a recipe's TOML text (after checking that it is valid) and its parameter count for an input size."""
    from funnelcli.models.recipe import load_recipe, recipe_path

    recipe = load_recipe(name)
    typer.echo(recipe_path(name).read_text(encoding="utf-8").rstrip())
    dim = dim or recipe.input_dim
    if dim is None:
        typer.echo("# pass --dim D to count the parameters for D columns")
        return
    if dim < 1:
        from funnelcli.errors import UserError

        raise UserError(f"--dim must be at least 1, got {dim}")
    import numpy as np

    from funnelcli.models import build_model

    model = build_model(recipe, np.zeros(dim), np.ones(dim))
    parameters = sum(p.numel() for p in model.parameters())
    typer.echo(f"# {parameters:,} parameters for {dim} columns, latent size {model.latent_dim}")
