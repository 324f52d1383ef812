"""``funnel info``: what a model folder holds."""

from __future__ import annotations

from funnelcli.cli._common import JsonOpt, ModelArg, handle_errors, print_json

EXAMPLES = """
Examples:

  funnel info runs/data

  funnel info runs/data --json
"""


@handle_errors
def info(model: ModelArg, json_output: JsonOpt = False) -> None:
    """Show a model's recipe, dimensions, parameter count and training summary."""
    import typer

    from funnelcli.model_json import verify_folder

    metadata = verify_folder(model)  # model.json checked, and checked against the weights' record of it
    if json_output:
        print_json({key: value for key, value in metadata.items() if key != "scaler"})
        return
    training = metadata.get("training", {})
    recipe = metadata.get("recipe", {})
    lines = [
        f"model        {model}",
        f"recipe       {metadata.get('recipe_name')} (family {recipe.get('family')})",
        f"dimensions   {metadata.get('input_dim')} -> {metadata.get('latent_dim')}",
        f"parameters   {metadata.get('parameters'):,}",
        f"columns      {', '.join(metadata.get('columns', []))}",
        f"training     {training.get('steps')} steps, best validation log-likelihood "
        f"{training.get('best_val_log_prob', float('nan')):.4f} nats/row at step {training.get('best_step')}, "
        f"{training.get('seconds')} s ({training.get('ms_per_step')} ms/step) on {training.get('device')}",
        f"rows         {training.get('train_rows')} train, {training.get('validation_rows')} validation",
        "versions     " + ", ".join(f"{k} {v}" for k, v in metadata.get("versions", {}).items()),
        "model        " + ", ".join(f"{k}={v}" for k, v in recipe.get("model", {}).items()),
        "training     " + ", ".join(f"{k}={v}" for k, v in recipe.get("training", {}).items()),
    ]
    typer.echo("\n".join(lines))
