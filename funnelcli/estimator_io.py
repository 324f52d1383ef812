"""A :class:`~funnelcli.estimator.FunnelDensity` to and from its model folder (:mod:`funnelcli.artifact`).

:func:`save` records what the estimator learned as a :class:`~funnelcli.model_metadata.ModelMetadata` beside the
weights; :func:`load` checks the folder, counts the model's size from its recipe before building it, loads the
weights and sets the fitted attributes ``fit`` would have set. Nothing is unpickled.
"""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib.metadata import version as metadata_version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from funnelcli import artifact
from funnelcli._version import __version__
from funnelcli.conditions import Conditions
from funnelcli.errors import UserError
from funnelcli.estimator_checks import parameter_limit, whole
from funnelcli.model_metadata import ModelMetadata
from funnelcli.models import Recipe, build_model
from funnelcli.models.categorical import CategoricalModel
from funnelcli.models.contract import DensityModel, count_parameters
from funnelcli.models.families import MAX_PARAMETERS_LIMIT, estimate_size
from funnelcli.training import resolve_device

if TYPE_CHECKING:
    from funnelcli.estimator import FunnelDensity


def save(estimator: FunnelDensity, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``estimator``'s model folder (``model.safetensors``, ``model.json``, ``metrics.jsonl``)."""
    tensors = dict(estimator.model_.state_dict())
    if estimator.categorical_ is not None:
        # A mixed model's mass is counts, not weights, but they are learned numbers all the same: they go in the
        # weights file (under keys no module uses), its categories in model.json.
        tensors.update({name: torch.from_numpy(values) for name, values in estimator.categorical_.tensors().items()})
    # A pixel model's bit depths go with its weights (under keys no module uses) until model.json has a field for
    # them: scoring must read pixels as training did.
    for name in _PIXEL_KEYS:
        value = getattr(estimator, name.split(".")[1], None)
        if value is not None:
            tensors[name] = torch.tensor(int(value), dtype=torch.int64)
    return artifact.write_folder(path, tensors, metadata(estimator), estimator.history_, overwrite=overwrite)


#: The weights file's keys of a pixel model's ``bits`` and ``source_bits``.
_PIXEL_KEYS = ("pixels.bits", "pixels.source_bits")


def _pixel_depths(path: str | Path, tensors: dict[str, torch.Tensor]) -> dict[str, int | None]:
    """``bits`` and ``source_bits`` of a pixel model (None each for any other), taken out of ``tensors``."""
    from funnelcli.preparation import check_bits

    depths = {}
    for name in _PIXEL_KEYS:
        stored = tensors.pop(name, None)
        if stored is not None and (stored.numel() != 1 or stored.is_floating_point()):
            raise UserError(f"{path}: the weights hold a malformed {name}; the model folder is damaged, retrain it")
        depths[name.split(".")[1]] = None if stored is None else int(stored.item())
    try:
        check_bits(depths["bits"], depths["source_bits"])
    except UserError as error:
        raise UserError(f"{path}: the weights' pixel depths are invalid ({error}); retrain it") from None
    return depths


def metadata(estimator: FunnelDensity) -> ModelMetadata:
    """What ``model.json`` records of a fitted ``estimator``: its recipe, columns, scaling, size and training."""
    scaler = estimator.model_.scaler
    return ModelMetadata(
        recipe_name=estimator.recipe_.name,
        recipe=estimator.recipe_.to_dict(),
        columns=tuple(estimator.columns_),
        input_columns=tuple(estimator.input_columns_),
        fitted_on_names=hasattr(estimator, "feature_names_in_"),
        dtypes=estimator.dtypes_,
        input_dim=len(estimator.columns_),
        latent_dim=estimator.latent_dim_,
        dequantize=estimator.dequantize,
        dequantized_columns=tuple(estimator.dequantized_columns_),
        dropped_constant_columns=tuple(estimator.dropped_constant_columns_),
        mean=tuple(scaler.mean.double().tolist()),
        std=tuple(scaler.std.double().tolist()),
        conditions=None if estimator.conditions_ is None else tuple(estimator.conditions_.to_list()),
        categorical=None if estimator.categorical_ is None else estimator.categorical_.to_dict(),
        parameters=count_parameters(estimator.model_),
        max_parameters=parameter_limit(estimator.max_parameters),
        training=estimator.summary_,
        versions={
            "funnelcli": __version__,
            "torch": torch.__version__,
            "nflows": metadata_version("nflows"),
            "python": platform.python_version(),
        },
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def load(cls: type[FunnelDensity], path: str | Path, *, device: str, max_parameters: int | None) -> FunnelDensity:
    """An estimator of class ``cls`` fitted as the model folder at ``path`` records, its model on ``device``."""
    tensors, document = artifact.read_folder(path)
    metadata = ModelMetadata.from_dict(document)
    recipe = Recipe.from_dict(metadata.recipe, name=metadata.recipe_name)
    conditions = None if metadata.conditions is None else Conditions.from_list(metadata.conditions)
    categorical = _categorical(path, metadata, conditions, tensors)
    depths = _pixel_depths(path, tensors)
    width = categorical.width if categorical is not None else 0
    model = _rebuilt(path, recipe, metadata, tensors, max_parameters, conditions, width)
    categorical_columns = ([] if conditions is None else conditions.categorical) + (
        [] if categorical is None else categorical.names
    )
    estimator = cls(
        recipe=recipe,
        device=device,
        dequantize=metadata.dequantize,
        max_parameters=metadata.max_parameters,
        conditional_columns=None if conditions is None else conditions.names,
        categorical_columns=categorical_columns or None,
        **depths,
    )
    estimator.recipe_ = recipe
    estimator.conditions_ = conditions
    estimator.categorical_ = categorical
    estimator.model_ = model.to(resolve_device(device)).eval()
    estimator.columns_ = list(metadata.columns)
    if metadata.fitted_on_names:
        estimator.feature_names_in_ = np.asarray(metadata.input_columns, dtype=object)
    estimator.dtypes_ = metadata.dtypes
    estimator.dequantized_columns_ = list(metadata.dequantized_columns)
    estimator.dropped_constant_columns_ = list(metadata.dropped_constant_columns)
    estimator.n_features_in_ = len(metadata.input_columns)
    estimator.latent_dim_ = model.latent_dim
    estimator.summary_ = metadata.training
    estimator.history_ = _read_history(path)
    estimator.metadata_ = document
    return estimator


def _categorical(
    path: str | Path, metadata: ModelMetadata, conditions: Conditions | None, tensors: dict[str, torch.Tensor]
) -> CategoricalModel | None:
    """A mixed model's :class:`CategoricalModel` from its ``model.json`` field and the counts in the weights
    (taken out of ``tensors``, which then hold the flow's weights alone); None for any other model."""
    stored = {name: tensors.pop(name, None) for name in ("categorical.codes", "categorical.counts")}
    if metadata.categorical is None:
        if any(value is not None for value in stored.values()):
            raise UserError(f"{path}: the weights hold categorical counts model.json does not describe; retrain it")
        return None
    if any(value is None for value in stored.values()):
        raise UserError(f"{path}: the weights lack the counts of the categorical columns; retrain it")
    given = () if conditions is None else conditions.columns
    try:
        return CategoricalModel.from_stored(
            metadata.categorical, given, stored["categorical.codes"].numpy(), stored["categorical.counts"].numpy()
        )
    except ValueError as error:
        raise UserError(f"{path}: {error}; the weights do not fit model.json, retrain it") from None


def _rebuilt(
    path: str | Path,
    recipe: Recipe,
    metadata: ModelMetadata,
    tensors: dict[str, torch.Tensor],
    limit: int | None,
    conditions: Conditions | None = None,
    categorical_width: int = 0,
) -> DensityModel:
    """The model of a folder's ``recipe`` (conditional on ``conditions`` and a mixed model's one-hot categorical
    columns, ``categorical_width`` of them) holding its weights ``tensors``, on the CPU; refused when its size
    exceeds ``limit`` (default: the folder's ``max_parameters``) or the weights do not fit the recipe."""
    width = (0 if conditions is None else conditions.width) + categorical_width
    limit = metadata.max_parameters if limit is None else limit
    if not whole(limit, 1, MAX_PARAMETERS_LIMIT):
        raise UserError(f"max_parameters must be a whole number in 1..{MAX_PARAMETERS_LIMIT:,}, got {limit!r}")
    estimate = estimate_size(recipe, len(metadata.columns), width)
    if estimate.parameters > limit:
        raise UserError(
            f"{path}: its recipe gives a model of {estimate.parameters:,} parameters, above the limit of "
            f"{limit:,}; raise it with FunnelDensity.load(..., max_parameters=N)"
        )
    mismatch = f"{path}: the weights do not fit the recipe in model.json (another model's files?); retrain it"
    # Every number in the file, buffers too: fewer than the recipe's parameters cannot be its weights.
    numbers = sum(tensor.numel() for tensor in tensors.values())
    if (estimate.parameters, estimate.latent_dim) != (metadata.parameters, metadata.latent_dim) or (
        estimate.parameters > numbers
    ):
        raise UserError(mismatch)
    mean, std = (np.asarray(values, dtype=np.float64) for values in (metadata.mean, metadata.std))
    model = build_model(recipe, mean, std, context_features=width)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError:
        raise UserError(mismatch) from None
    return model


def _read_history(path: str | Path) -> list[dict]:
    """A model folder's validation curve, ``metrics.jsonl``: one JSON record per line."""
    try:
        history = artifact.read_metrics(path)
    except UserError:
        raise
    except (RecursionError, ValueError):  # nested too deeply, or an integer too long to read
        history = None
    if not isinstance(history, list) or not all(isinstance(record, dict) for record in history):
        raise UserError(
            f"{path}: metrics.jsonl is not one JSON record per line; the model folder is damaged, retrain it"
        )
    return history
