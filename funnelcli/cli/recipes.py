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


def _listing_order(family: str, name: str) -> tuple[int, str]:
    """Within a family: the recipe named after it first, then the small-* ones, then the rest, by name."""
    if name == family:
        return 0, name
    return (1 if name.startswith("small-") else 2), name


@app.callback()
@handle_errors
def list_recipes(ctx: typer.Context) -> None:
    """List the bundled recipes by family: the family's general recipe, its small-table ones, then the rest."""
    if ctx.invoked_subcommand is not None:
        return
    import tomllib

    from funnelcli.models.recipe import FAMILIES, bundled_recipes

    groups: dict[str, list[tuple[str, str]]] = {family: [] for family in FAMILIES}
    for name, path in bundled_recipes().items():
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        groups.setdefault(str(data.get("family", "")), []).append((name, str(data.get("description", ""))))
    shown = [(family, recipes) for family, recipes in groups.items() if recipes]
    for index, (family, recipes) in enumerate(shown):
        typer.echo(("\n" if index else "") + f"{family}:")
        for name, description in sorted(recipes, key=lambda recipe: _listing_order(family, recipe[0])):
            typer.echo(f"  {name:<20} {description}")


@app.command("show")
@handle_errors
def show(
    name: Annotated[str, typer.Argument(help="Recipe name or .toml path.")],
    dim: Annotated[
        int | None,
        typer.Option("--dim", help="Count parameters for this many columns, 1 to 100,000 (default: the recipe's)."),
    ] = None,
) -> None:
    """Print a recipe's TOML text (after checking that it is valid) and its parameter count for an input size.

    The count is worked out from the recipe, without building the model, so it costs nothing at any size.
    """
    from funnelcli.errors import UserError
    from funnelcli.models.recipe import MAX_COLUMNS, load_recipe, recipe_path

    if dim is not None and not 1 <= dim <= MAX_COLUMNS:
        raise UserError(f"--dim must be a number of columns in 1..{MAX_COLUMNS:,}, got {dim}")
    recipe = load_recipe(name)
    dim = recipe.input_dim if dim is None else dim
    if dim is None:
        typer.echo(recipe_path(name).read_text(encoding="utf-8").rstrip())
        typer.echo("# pass --dim D to count the parameters for D columns")
        return
    from funnelcli.models.families import DEFAULT_MAX_PARAMETERS, estimate_size

    estimate = estimate_size(recipe, dim)  # before any output: a funnel on one column is refused here
    typer.echo(recipe_path(name).read_text(encoding="utf-8").rstrip())
    note = (
        f"; above the default limit of {DEFAULT_MAX_PARAMETERS:,}, so training needs --max-parameters"
        if estimate.parameters > DEFAULT_MAX_PARAMETERS
        else ""
    )
    typer.echo(
        f"# {estimate.parameters:,} parameters for {dim} columns, latent size {estimate.latent_dim} "
        f"(about {estimate.training_memory} of weights, gradients and Adam moments to train){note}"
    )
