"""``model.json`` as a typed value: :class:`ModelMetadata`, read from and written as the same JSON object.

:meth:`ModelMetadata.from_dict` reads a document that :func:`funnelcli.model_json.read_metadata` has checked
field by field (``funnelcli.models.document``), and :meth:`ModelMetadata.to_dict` gives back that document,
equal key for key and in the order ``funnel train`` writes them, so that the file on disk is the same whichever
of the two a writer holds. Imports no torch: ``funnel info`` uses it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from funnelcli.model_json import FORMAT, FORMAT_VERSION


@dataclass(frozen=True)
class ModelMetadata:
    """What a model folder records besides its weights; one attribute per field of ``model.json``.

    D = ``input_dim`` modelled columns (``columns``); ``input_columns`` are the columns the model reads, which
    adds the ``dropped_constant_columns`` left out at training. ``mean`` and ``std`` (D,) are the scaler, the
    model's first layer. ``recipe`` is the recipe as plain data (:meth:`funnelcli.models.Recipe.to_dict`) and
    ``training`` the training summary (its fields: ``funnelcli.models.document.TRAINING``). ``weights_sha256``
    is None until the folder is written: it is the checksum of ``model.safetensors``. ``conditions`` is None for
    an unconditional model, whose ``model.json`` has no such field (as before conditional models existed); for
    a conditional one, the encoding of each condition column (:meth:`funnelcli.conditions.Conditions.to_list`).
    ``categorical`` likewise is None but for a mixed model: its modelled categorical columns, their categories and
    the smoothing of their mass (:meth:`funnelcli.models.categorical.CategoricalModel.to_dict`; the counts are in
    the weights file).
    """

    recipe_name: str
    recipe: dict[str, Any]
    columns: tuple[str, ...]
    input_columns: tuple[str, ...]
    fitted_on_names: bool
    dtypes: dict[str, str]
    input_dim: int
    latent_dim: int
    dequantize: str
    dequantized_columns: tuple[str, ...]
    dropped_constant_columns: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    parameters: int
    max_parameters: int
    training: dict[str, Any]
    versions: dict[str, str]
    created: str
    weights_sha256: str | None = None
    conditions: tuple[dict[str, Any], ...] | None = None
    categorical: dict[str, Any] | None = None
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def family(self) -> str | None:
        """The recipe's model family (``nsf``, ``f-nsf``, ``vae``...)."""
        return self.recipe.get("family")

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> ModelMetadata:
        """The metadata of a ``model.json`` document, or of the fields that :meth:`to_dict` writes.

        The document must have been checked (:func:`funnelcli.model_json.read_metadata`): a missing field raises
        KeyError. Nested tables are copied, so the result shares nothing with ``document``.
        """
        scaler = document["scaler"]
        return cls(
            recipe_name=document["recipe_name"],
            recipe=copy.deepcopy(document["recipe"]),
            columns=tuple(document["columns"]),
            input_columns=tuple(document["input_columns"]),
            fitted_on_names=document["fitted_on_names"],
            dtypes=dict(document["dtypes"]),
            input_dim=document["input_dim"],
            latent_dim=document["latent_dim"],
            dequantize=document["dequantize"],
            dequantized_columns=tuple(document["dequantized_columns"]),
            dropped_constant_columns=tuple(document["dropped_constant_columns"]),
            mean=tuple(scaler["mean"]),
            std=tuple(scaler["std"]),
            parameters=document["parameters"],
            max_parameters=document["max_parameters"],
            training=copy.deepcopy(document["training"]),
            versions=dict(document["versions"]),
            created=document["created"],
            weights_sha256=document.get("weights_sha256"),
            conditions=None if "conditions" not in document else tuple(copy.deepcopy(document["conditions"])),
            categorical=copy.deepcopy(document.get("categorical")),
            format=document.get("format", FORMAT),
            format_version=document.get("format_version", FORMAT_VERSION),
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``model.json`` document: a new JSON-able dict, its keys in the order written to disk
        (``weights_sha256`` last, and only once known)."""
        document = {
            "format": self.format,
            "format_version": self.format_version,
            "recipe_name": self.recipe_name,
            "recipe": copy.deepcopy(self.recipe),
            "columns": list(self.columns),
            "input_columns": list(self.input_columns),
            "fitted_on_names": self.fitted_on_names,
            "dtypes": dict(self.dtypes),
            "input_dim": self.input_dim,
            "latent_dim": self.latent_dim,
            "dequantize": self.dequantize,
            "dequantized_columns": list(self.dequantized_columns),
            "dropped_constant_columns": list(self.dropped_constant_columns),
            "scaler": {"mean": list(self.mean), "std": list(self.std)},
            **({} if self.conditions is None else {"conditions": copy.deepcopy(list(self.conditions))}),
            **({} if self.categorical is None else {"categorical": copy.deepcopy(self.categorical)}),
            "parameters": self.parameters,
            "max_parameters": self.max_parameters,
            "training": copy.deepcopy(self.training),
            "versions": dict(self.versions),
            "created": self.created,
        }
        if self.weights_sha256 is not None:
            document["weights_sha256"] = self.weights_sha256
        return document
