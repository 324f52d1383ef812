"""``funnel info``: what a model folder holds."""

from __future__ import annotations

from funnelcli.cli._common import JsonOpt, ModelArg, print_json

EXAMPLES = """
Examples:

  funnel info runs/data

  funnel info runs/data --json
"""


def info(model: ModelArg, json_output: JsonOpt = False) -> None:
    """Show a model's recipe, dimensions, parameter count, columns, conditions, modelled categorical columns and
    training summary."""
    import typer

    from funnelcli.model_json import verify_folder
    from funnelcli.model_metadata import ModelMetadata

    # model.json checked, and checked against the weights' record of it
    metadata = ModelMetadata.from_dict(verify_folder(model))
    if json_output:
        print_json({key: value for key, value in metadata.to_dict().items() if key != "scaler"})
        return
    training, recipe = metadata.training, metadata.recipe
    lines = [
        f"model        {model}",
        f"recipe       {metadata.recipe_name} (family {metadata.family})",
        f"dimensions   {metadata.input_dim} -> {metadata.latent_dim}",
        f"parameters   {metadata.parameters:,}",
        f"columns      {', '.join(metadata.columns)}",
        *_condition_lines(metadata.conditions),
        *_categorical_lines(metadata.categorical, metadata.conditions),
        f"training     {training.get('steps')} steps, best validation log-likelihood "
        f"{training.get('best_val_log_prob', float('nan')):.4f} nats/row at step {training.get('best_step')}, "
        f"{training.get('seconds')} s ({training.get('ms_per_step')} ms/step) on {training.get('device')}",
        f"rows         {training.get('train_rows')} train, {training.get('validation_rows')} validation",
        "versions     " + ", ".join(f"{k} {v}" for k, v in metadata.versions.items()),
        "model        " + ", ".join(f"{k}={v}" for k, v in recipe.get("model", {}).items()),
        "training     " + ", ".join(f"{k}={v}" for k, v in recipe.get("training", {}).items()),
    ]
    typer.echo("\n".join(lines))


def _categorical_lines(categorical, conditions) -> list[str]:
    """A mixed model's ``categorical`` lines: each modelled categorical column with its categories, then how its
    mass P(k | c) is counted."""
    if not categorical:
        return []
    columns = categorical["columns"]
    lines = [f"{entry['name']} (modelled: {_categories(entry['categories'])})" for entry in columns]
    names = ", ".join(entry["name"] for entry in columns)
    given = f" | {', '.join(entry['name'] for entry in conditions)}" if conditions else ""
    lines.append(
        f"mass P({names}{given}): counts of {categorical['combinations']:,} combination(s) seen in training, "
        f"add-{categorical['alpha']:g} smoothed"
    )
    return [f"{'categorical' if i == 0 else '':<13}{line}" for i, line in enumerate(lines)]


def _categories(categories) -> str:
    return ", ".join(categories[:20]) + (f", ... ({len(categories)} in all)" if len(categories) > 20 else "")


def _condition_lines(conditions) -> list[str]:
    """A conditional model's ``given`` lines: each condition with its categories, or its standardisation."""
    if not conditions:
        return []
    lines = []
    for entry in conditions:
        if entry["kind"] == "categorical":
            lines.append(f"{entry['name']} (categorical: {_categories(entry['categories'])})")
        else:
            lines.append(f"{entry['name']} (numeric, standardised: mean {entry['mean']:.6g}, std {entry['std']:.6g})")
    return [f"{'given' if i == 0 else '':<13}{line}" for i, line in enumerate(lines)]
