"""Shared fixtures: tiny recipes that train in seconds, and small tables with known structure."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

from funnelcli.models import Recipe
from funnelcli.models.recipe import FAMILY_FIELDS

# `make test` runs one pytest-xdist worker per core: each then computes on one thread (and so do the commands it
# starts), because two workers of two threads each on two cores wait for each other far more than they gain.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(2)

TINY_MODEL = {
    "vae_layers": 1,
    "mlp_layout": ["preserve", "halfway", "latent", "preserve"],
    "flow_steps": 3,
    "hidden_features": 32,
    "residual_blocks": 1,
    "bins": 6,
    "funnel_level": 1,
    "ansatz_hidden_features": 16,
    "ansatz_layers": 2,
    "ansatz_flow_steps": 1,
}
TINY_TRAINING = {"batch_size": 128, "steps": 60, "eval_every": 20, "lr": 3e-3}


def tiny_recipe(family: str = "f-nsf", **model) -> Recipe:
    """A recipe of ``family`` small enough to train in a second; ``model`` overrides its fields."""
    settings = {key: value for key, value in TINY_MODEL.items() if key in FAMILY_FIELDS[family]}
    settings.update(model)
    return Recipe.from_dict({"family": family, "model": settings, "training": dict(TINY_TRAINING)}, name="tiny")


def manifold_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Four columns near a two-dimensional surface: c and d are functions of a and b plus small noise."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    return pd.DataFrame(
        {
            "a": 3.0 + 2.0 * a,
            "b": b,
            "c": a * b + 0.05 * rng.normal(size=n),
            "d": np.sin(a) + 0.05 * rng.normal(size=n),
        }
    )


@pytest.fixture
def table() -> pd.DataFrame:
    return manifold_table()
