"""The model families, each declared once: its name, summary, recipe fields, whether it has a funnel, and where its
builder and parameter count live.

This module imports no torch, so the recipe validator (:mod:`funnelcli.models.recipe`), ``funnel info`` and
``funnel recipes`` read it for nothing. A family's builder and counter are named as ``"module:function"`` and
imported only when a model is built or sized (:mod:`funnelcli.models.families` holds them).

A new family is one entry in :data:`FAMILIES`, a builder and a counter in ``families.py``, and a recipe named after
it in ``recipes/``; the tests parametrised over :data:`FAMILIES` pick it up from here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from funnelcli.models.recipe import Recipe

#: The latent distribution, which every flow family (not the VAE) can change.
_BASE = ("base", "base_components")
_SPLINE = ("flow_steps", "transform", "hidden_features", "residual_blocks", "bins", "tail_bound", "dropout", *_BASE)
#: The image families' fields: ``flow_steps`` counts the steps of each level, ``hidden_features`` conv channels.
_IMAGE = ("image_shape", "levels", "flow_steps", "hidden_features", "bins", "tail_bound")
_GLOW = ("flow_steps", "hidden_features", "residual_blocks", "dropout", *_BASE)
#: The ``[model]`` fields of a funnel; a family without a funnel that is given only these is told it has none.
FUNNEL_FIELDS = (
    "reduce",
    "latent_dim",
    "drop",
    "funnel_level",
    "ansatz",
    "ansatz_hidden_features",
    "ansatz_layers",
    "ansatz_flow_steps",
    "ansatz_layer",
    "ansatz_lu",
    "ansatz_spline",
)


def _resolve(reference: str) -> Callable[..., Any]:
    """The function that ``"package.module:name"`` names, importing its module."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Family:
    """One model family.

    ``fields`` are the ``[model]`` fields its recipes may set (any other is an error that names it); ``has_funnel``
    says whether its latent size is set by a funnel (``reduce``, ``latent_dim``, ``drop``); ``builder`` and
    ``counter`` name, as ``"module:function"``, the functions that build its model and count its parameters.
    """

    name: str
    summary: str
    fields: tuple[str, ...]
    has_funnel: bool
    builder: str
    counter: str
    #: The columns are the pixels of an image (``model.image_shape``); its models are multi-scale image flows.
    image: bool = False

    def build(self, recipe: Recipe, scaler: Any, context_features: int = 0) -> Any:
        """The family's model for ``recipe``, starting with the standardisation ``scaler`` (imports torch);
        conditional on ``context_features`` encoded condition columns when that is above 0."""
        return _resolve(self.builder)(recipe, scaler, context_features)

    def count(self, recipe: Recipe, input_dim: int, context_features: int = 0) -> Any:
        """The size estimate of ``recipe``'s model on ``input_dim`` columns (and ``context_features`` encoded
        condition columns), counted without building it."""
        return _resolve(self.counter)(recipe, input_dim, context_features)


_FAMILIES = "funnelcli.models.families:"

#: Every family, by name, in the order ``funnel recipes`` lists them.
FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            "nsf",
            "rational-quadratic neural spline flow, full dimension",
            _SPLINE,
            has_funnel=False,
            builder=_FAMILIES + "build_nsf",
            counter=_FAMILIES + "count_nsf",
        ),
        Family(
            "f-nsf",
            "NSF with one step replaced by a funnel (F-NSF)",
            (*_SPLINE, *FUNNEL_FIELDS, "funnel_kind", "funnels"),
            has_funnel=True,
            builder=_FAMILIES + "build_nsf",
            counter=_FAMILIES + "count_nsf",
        ),
        Family(
            "glow",
            "Glow for tables: ActNorm, LU linear maps, affine couplings",
            _GLOW,
            has_funnel=False,
            builder=_FAMILIES + "build_glow",
            counter=_FAMILIES + "count_glow",
        ),
        Family(
            "f-glow",
            "Glow with one step replaced by an affine funnel (F-Glow)",
            (*_GLOW, *FUNNEL_FIELDS, "bins", "tail_bound", "funnels"),
            has_funnel=True,
            builder=_FAMILIES + "build_glow",
            counter=_FAMILIES + "count_glow",
        ),
        Family(
            "f-mlp",
            "the paper's MLP funnel model: y = s(Wx + b) layers (F-MLP)",
            (
                "bins",
                "tail_bound",
                "mlp_layout",
                *(f for f in FUNNEL_FIELDS if f != "funnel_level"),
                "residual_blocks",
                "dropout",
                *_BASE,
            ),
            has_funnel=True,
            builder=_FAMILIES + "build_f_mlp",
            counter=_FAMILIES + "count_f_mlp",
        ),
        Family(
            "nsf-image",
            "multi-scale image flow: ActNorm, 1x1 convolutions, spline couplings; squeeze-and-split between levels",
            _IMAGE,
            has_funnel=False,
            builder=_FAMILIES + "build_image",
            counter=_FAMILIES + "count_image",
            image=True,
        ),
        Family(
            "f-nsf-image",
            "nsf-image with a 2-D convolutional funnel between levels instead of squeeze-and-split",
            (*_IMAGE, "reduce", "ansatz_hidden_features"),
            has_funnel=True,
            builder=_FAMILIES + "build_image",
            counter=_FAMILIES + "count_image",
            image=True,
        ),
        Family(
            "vae",
            "variational autoencoder baseline; scores are lower bounds",
            ("hidden_features", "vae_layers", "reduce", "latent_dim", "drop"),
            has_funnel=False,
            builder=_FAMILIES + "build_vae",
            counter=_FAMILIES + "count_vae",
        ),
    )
}

#: ``{family: its [model] fields}``, read from :data:`FAMILIES` (for callers that filter a recipe's fields).
FAMILY_FIELDS: dict[str, tuple[str, ...]] = {name: family.fields for name, family in FAMILIES.items()}
