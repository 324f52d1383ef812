"""``funnel recipes``: the bundled recipes."""

from __future__ import annotations

from typing import Annotated

import typer

from funnelcli.cli._common import App, JsonOpt, print_json

app = App(
    help="List the bundled recipes (`funnel recipes` or `funnel recipes list`), or print one "
    "(`funnel recipes show f-nsf`).",
    invoke_without_command=True,
    no_args_is_help=False,
)


def _listing_order(family: str, name: str) -> tuple[int, str]:
    """Within a family: the recipe named after it first, then the small-* ones, then the rest, by name."""
    if name == family:
        return 0, name
    return (1 if name.startswith("small-") else 2), name


@app.callback()
def list_recipes(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """List the bundled recipes by family: the family's general recipe, its small-table ones, then the rest."""
    if ctx.invoked_subcommand is not None:
        # `funnel recipes --json show NAME` asks the subcommand for JSON.
        ctx.obj = {"json": json_output}
        return
    _list(json_output)


@app.command("list")
def list_command(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """List the bundled recipes by family, as `funnel recipes` does."""
    _list(json_output or _json_asked(ctx))


def _json_asked(ctx: typer.Context) -> bool:
    """Whether --json was given before the subcommand (`funnel recipes --json show NAME`)."""
    return bool((ctx.obj or {}).get("json"))


def _list(json_output: bool) -> None:
    import tomllib

    from funnelcli.models.recipe import FAMILIES, bundled_recipes

    groups: dict[str, list[tuple[str, str]]] = {family: [] for family in FAMILIES}
    for name, path in bundled_recipes().items():
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        groups.setdefault(str(data.get("family", "")), []).append((name, str(data.get("description", ""))))
    shown = [
        (family, sorted(recipes, key=lambda recipe, family=family: _listing_order(family, recipe[0])))
        for family, recipes in groups.items()
        if recipes
    ]
    if json_output:
        listing = [
            {"name": name, "family": family, "description": description}
            for family, recipes in shown
            for name, description in recipes
        ]
        print_json({"recipes": listing})
        return
    for index, (family, recipes) in enumerate(shown):
        typer.echo(("\n" if index else "") + f"{family}:")
        for name, description in recipes:
            typer.echo(f"  {name:<20} {description}")


@app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Recipe name or .toml path.")],
    dim: Annotated[
        int | None,
        typer.Option("--dim", help="Count parameters for this many columns, 1 to 100,000 (default: the recipe's)."),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Print a recipe's TOML text (after checking that it is valid) and its parameter count for an input size.

    The count is worked out from the recipe, without building the model, so it costs nothing at any size.

    --json prints the recipe's settings as a model folder records them and, given a size, its count.
    """
    from funnelcli.errors import UserError
    from funnelcli.models.recipe import MAX_COLUMNS, load_recipe, recipe_path

    json_output = json_output or _json_asked(ctx)
    if dim is not None and not 1 <= dim <= MAX_COLUMNS:
        raise UserError(f"--dim must be a number of columns in 1..{MAX_COLUMNS:,}, got {dim}")
    recipe = load_recipe(name)
    dim = recipe.input_dim if dim is None else dim
    document = {"name": recipe.name, "path": str(recipe_path(name)), **recipe.to_dict(), "size": None}
    if dim is None:
        if json_output:
            print_json(document)
            return
        typer.echo(recipe_path(name).read_text(encoding="utf-8").rstrip())
        typer.echo("# pass --dim D to count the parameters for D columns")
        return
    from funnelcli.models.families import DEFAULT_MAX_PARAMETERS, estimate_size

    estimate = estimate_size(recipe, dim)  # before any output: a funnel on one column is refused here
    above = estimate.parameters > DEFAULT_MAX_PARAMETERS
    if json_output:
        document["size"] = {
            "columns": dim,
            "parameters": estimate.parameters,
            "latent_dim": estimate.latent_dim,
            "training_bytes": estimate.training_bytes,
            "needs_max_parameters": above,
        }
        print_json(document)
        return
    typer.echo(recipe_path(name).read_text(encoding="utf-8").rstrip())
    note = (
        f"; above the default limit of {DEFAULT_MAX_PARAMETERS:,}, so training needs --max-parameters" if above else ""
    )
    typer.echo(
        f"# {estimate.parameters:,} parameters for {dim} columns, latent size {estimate.latent_dim} "
        f"(about {estimate.training_memory} of weights, gradients and Adam moments to train){note}"
    )
