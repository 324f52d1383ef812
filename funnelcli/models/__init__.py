"""Recipes and the model families they build."""

from funnelcli.models.recipe import Recipe, bundled_recipes, latent_dim, load_recipe
from funnelcli.models.registry import FAMILIES

__all__ = ["FAMILIES", "FunnelFlow", "Recipe", "build_model", "bundled_recipes", "latent_dim", "load_recipe"]


def __getattr__(name: str):
    # Lazy, so that reading recipes and model.json (`funnel info`, `funnel recipes`) does not import torch.
    if name == "build_model":
        from funnelcli.models.families import build_model

        return build_model
    if name == "FunnelFlow":
        from funnelcli.models.flow import FunnelFlow

        return FunnelFlow
    raise AttributeError(f"module 'funnelcli.models' has no attribute {name!r}")
