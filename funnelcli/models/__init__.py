"""Recipes and the model families they build."""

from funnelcli.models.families import FAMILIES, build_model
from funnelcli.models.flow import FunnelFlow
from funnelcli.models.recipe import Recipe, bundled_recipes, latent_dim, load_recipe

__all__ = ["FAMILIES", "FunnelFlow", "Recipe", "build_model", "bundled_recipes", "latent_dim", "load_recipe"]
