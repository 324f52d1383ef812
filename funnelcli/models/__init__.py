"""Recipes and the model families they build."""

from funnelcli.models.recipe import Recipe, bundled_recipes, latent_dim, load_recipe

__all__ = ["FAMILIES", "FunnelFlow", "Recipe", "build_model", "bundled_recipes", "latent_dim", "load_recipe"]


def __getattr__(name: str):
    # Lazy, so that reading recipes and model.json (`funnel info`, `funnel recipes`) does not import torch.
    if name in ("FAMILIES", "build_model"):
        from funnelcli.models import families

        return getattr(families, name)
    if name == "FunnelFlow":
        from funnelcli.models.flow import FunnelFlow

        return FunnelFlow
    raise AttributeError(f"module 'funnelcli.models' has no attribute {name!r}")
