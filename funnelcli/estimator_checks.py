"""What :class:`~funnelcli.estimator.FunnelDensity` checks before it fits or scores: its settings and its rows.

The settings: recipe fields given as keyword arguments (:class:`SklearnParams`, which scikit-learn's
``get_params`` and ``set_params`` see, with the estimator's tags), the recipe they resolve to, the parameter
limit, and the arguments of ``sample``. The rows: checked as scikit-learn checks them (:func:`validate`),
taken in the model's columns (:func:`select`), and constant columns refused or left out (:func:`drop_constant`).
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype
from sklearn.utils.validation import validate_data

from funnelcli.data.columns import constant_columns
from funnelcli.data.tables import validation_size
from funnelcli.errors import ConstantColumns, OutOfRange, Refused, UnknownChoice, UserError, shown
from funnelcli.models import Recipe, load_recipe
from funnelcli.models.families import DEFAULT_MAX_PARAMETERS, MAX_PARAMETERS_LIMIT
from funnelcli.models.recipe import MAX_SEED, field_names
from funnelcli.preparation import DEQUANTIZE

if TYPE_CHECKING:
    from funnelcli.estimator import FunnelDensity

log = logging.getLogger("funnelcli")

#: The most rows one ``sample`` call draws (drawn 8192 at a time; the result is one float64 array).
MAX_SAMPLES = 10_000_000
#: The highest sampling temperature: beyond it, draws lie far outside anything the model was fitted to.
MAX_TEMPERATURE = 10.0
#: ``latent_dim=AUTO`` chooses the latent size by a sweep in ``fit``.
AUTO = "auto"
_NAMED_PARAMS = ("reduce", "latent_dim", "ansatz", "steps", "batch_size", "lr", "seed")


class SklearnParams:
    """scikit-learn parameters beyond ``__init__``'s named ones (any recipe field given as a keyword argument),
    and the estimator's tags: no NaN in the input, deterministic.

    Mixed in before :class:`sklearn.base.BaseEstimator`, so that ``get_params`` lists them and ``set_params``
    (and so ``clone``) sets them.
    """

    def _override_names(self) -> list[str]:
        """The keyword arguments beyond the named ones (public, non-fitted attributes set by the caller)."""
        named = set(self._get_param_names())
        return [k for k in vars(self) if k not in named and not k.startswith("_") and not k.endswith("_")]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        params = super().get_params(deep=deep)
        params.update({name: getattr(self, name) for name in self._override_names()})
        return params

    def set_params(self, **params: Any):
        named = set(self._get_param_names())
        for name in [name for name in params if name not in named]:
            setattr(self, name, params.pop(name))
        super().set_params(**params)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags


def resolved_recipe(estimator: FunnelDensity, rows: int | None = None) -> Recipe:
    """``estimator``'s recipe with its overrides applied (validated; ``max_parameters`` too). Given the number of
    training ``rows``, a recipe with ``small_rows`` gives way to its ``small_recipe`` below that many."""
    parameter_limit(estimator.max_parameters)
    recipe = estimator.recipe if isinstance(estimator.recipe, Recipe) else load_recipe(estimator.recipe)
    if rows is not None:
        recipe = recipe.small_table_recipe(rows, getattr(estimator, "small_rows", None)) or recipe
    unknown = [name for name in estimator._override_names() if name not in field_names()]
    if unknown:
        raise UserError(
            f"FunnelDensity got unknown parameter(s) {', '.join(unknown)}; recipe fields are: "
            + ", ".join(field_names())
        )
    overrides = {name: getattr(estimator, name) for name in (*_NAMED_PARAMS, *estimator._override_names())}
    if rows is not None:
        # Decided once, for the table as given: a sweep's levels and a validation split see fewer rows.
        overrides["small_rows"] = overrides["choose_rows"] = 0
    if overrides.get("latent_dim") == AUTO:
        if estimator.reduce is not None:
            raise UserError("reduce and latent_dim='auto' both set the latent size; pass one of them")
        # The sweep sets each level's size; the recipe without one must still be a funnel (or the VAE).
        overrides["latent_dim"] = None
        recipe = recipe.with_overrides(**overrides)
        if not recipe.has_funnel and recipe.family != "vae":
            raise UserError(f"latent_dim='auto' needs a funnel recipe or the VAE; {recipe.name!r} is {recipe.family}")
        return recipe
    return recipe.with_overrides(**overrides)


def row_count(X) -> int | None:
    """``len(X)``, or None for what has no length (scikit-learn's checks then say what is wrong with it)."""
    try:
        return len(X)
    except TypeError:  # a sparse matrix, a scalar, or an array-like without a length
        return None


def choice_candidates(estimator: FunnelDensity, rows: int) -> list[Recipe]:
    """The resolved recipes that compete on a table of ``rows`` training rows: the estimator's own first, then
    each of its ``choose_from`` below its ``choose_rows`` (each with the estimator's overrides); those that
    resolve alike count once. Fewer than two: no choice to make (an empty list)."""
    recipe = estimator.recipe if isinstance(estimator.recipe, Recipe) else load_recipe(estimator.recipe)
    recipe = recipe.small_table_recipe(rows, getattr(estimator, "small_rows", None)) or recipe
    others = recipe.choice_recipes(
        rows, getattr(estimator, "choose_rows", None), getattr(estimator, "choose_from", None)
    )
    if not others:
        return []
    candidates: list[Recipe] = []
    for candidate in [None, *others]:
        twin = copy.copy(estimator)
        if candidate is not None:
            twin.recipe = candidate
        resolved = resolved_recipe(twin, rows)
        if all(resolved.to_dict() != seen.to_dict() for seen in candidates):
            candidates.append(resolved)
    return candidates if len(candidates) > 1 else []


def training_rows(estimator: FunnelDensity, rows: int, validation_given: bool) -> int:
    """How many of a table's ``rows`` ``fit`` trains on: all of them beside validation rows, else what the
    validation split leaves (what a recipe's ``small_rows`` is compared with)."""
    fraction = estimator.val_fraction
    if validation_given or rows < 2 or not isinstance(fraction, float | int) or not 0 < fraction < 1:
        return rows  # a bad fraction is refused, with its own message, where the rows are split
    return rows - validation_size(rows, fraction)


def checked_settings(estimator: FunnelDensity, X, validation=None) -> tuple[Recipe, int]:
    """(the resolved recipe, the parameter limit), once the settings and the number of rows are checked."""
    rows = row_count(X)
    if rows is not None and rows < 2:
        raise Refused(
            f"the table has {rows} row(s) (n_samples = {rows}); fitting a density needs at least 3 rows "
            "(2 to train on and 1 to validate on)",
            "or 2 with {validation=FILE}",
        )
    if estimator.dequantize not in DEQUANTIZE:
        raise UnknownChoice("dequantize", estimator.dequantize, DEQUANTIZE)
    limit = parameter_limit(estimator.max_parameters)
    trained = None if rows is None else training_rows(estimator, rows, validation is not None)
    return resolved_recipe(estimator, trained), limit


def parameter_limit(max_parameters: Any) -> int:
    """The most parameters a model may have: ``max_parameters``, or the default for ``None``; refused outside
    1..MAX_PARAMETERS_LIMIT."""
    limit = DEFAULT_MAX_PARAMETERS if max_parameters is None else max_parameters
    if not whole(limit, 1, MAX_PARAMETERS_LIMIT):
        raise OutOfRange("max_parameters", limit, f"a whole number in 1..{MAX_PARAMETERS_LIMIT:,}")
    return int(limit)


def check_sampling(n_samples: Any, temperature: Any = 1.0, random_state: Any = None) -> None:
    """Refuse (:class:`UserError`) a number of rows, temperature or seed that ``sample`` does not take:
    ``n_samples`` in 1..10,000,000, ``temperature`` in (0, 10], ``random_state`` None or in 0..2**32 - 1."""
    if not whole(n_samples, 1, MAX_SAMPLES):
        raise UserError(
            f"the number of samples (-n) must be a whole number in 1..{MAX_SAMPLES:,}, got {shown(n_samples)}"
        )
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float | np.integer | np.floating)
        or not 0 < temperature <= MAX_TEMPERATURE
    ):
        raise OutOfRange("temperature", temperature, f"a number in (0, {MAX_TEMPERATURE:g}]")
    if random_state is not None and not whole(random_state, 0, MAX_SEED):
        raise OutOfRange("random_state", random_state, f"a whole number in 0..{MAX_SEED}")


def whole(value: Any, low: int, high: int) -> bool:
    """Whether ``value`` is an integer (not a bool) in [low, high]."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_) and low <= value <= high


# -- the rows ----------------------------------------------------------------------------------------------------


def validate(estimator: FunnelDensity, X, *, reset: bool) -> pd.DataFrame:
    """Check ``X`` as scikit-learn does (shape, dtype, finiteness, feature count and names) and return it as a
    float64 DataFrame with its column names (``x0, x1, ...`` for arrays). ``reset`` records the features on
    ``estimator`` (``n_features_in_``, ``feature_names_in_``), as ``fit`` does."""
    if isinstance(X, pd.DataFrame):
        non_numeric = [str(c) for c, t in X.dtypes.items() if not (is_numeric_dtype(t) or is_bool_dtype(t))]
        if non_numeric:
            raise UserError(f"column(s) {', '.join(non_numeric)} are not numeric; leave them out")
    values = validate_data(estimator, X, reset=reset, dtype=np.float64, ensure_min_samples=2 if reset else 1)
    if isinstance(X, pd.DataFrame) and hasattr(estimator, "feature_names_in_"):
        columns = [str(c) for c in X.columns]
    else:
        columns = [f"x{j}" for j in range(values.shape[1])]
    return pd.DataFrame(values, columns=columns)


def select(estimator: FunnelDensity, X) -> pd.DataFrame:
    """The modelled columns of ``X`` in training order, as float64.

    A DataFrame's columns are matched by name (their order and any extra columns do not matter); an array's by
    position.
    """
    if isinstance(X, pd.DataFrame) and hasattr(estimator, "feature_names_in_"):
        wanted = [str(c) for c in estimator.feature_names_in_]
        missing = [c for c in wanted if c not in X.columns]
        if missing:
            raise UserError(
                f"the data lack the model's column(s) {', '.join(repr(c) for c in missing)}; "
                "the model was trained on " + ", ".join(wanted)
            )
        X = X[wanted]
    elif isinstance(X, pd.DataFrame):
        # Fitted on an array: columns go by position; the ones named x0, x1, ... (as written by the CLI and by
        # `sample`) are taken by name first.
        names = estimator.input_columns_
        X = (X[names] if set(names) <= set(X.columns) else X).to_numpy()
    frame = validate(estimator, X, reset=False)
    if estimator.dropped_constant_columns_:
        frame = frame.drop(columns=estimator.dropped_constant_columns_)
    beyond = np.abs(frame.to_numpy()) >= np.finfo(np.float32).max
    if beyond.any():
        column = int(np.argmax(beyond.any(axis=0)))
        row = int(np.argmax(beyond[:, column]))
        raise UserError(
            f"column {frame.columns[column]!r} holds a value beyond float32's range (3.4e38), in which the model "
            f"computes (first at row {row + 1}: {frame.iat[row, column]:g}); drop or rescale such rows"
        )
    return frame


def drop_constant(estimator: FunnelDensity, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without its constant columns when ``estimator.drop_constant`` (recorded as
    ``dropped_constant_columns_``); refused (:class:`ConstantColumns`) when it has some and may not drop them."""
    # A pixel table's columns are all dequantized, so none is constant: the image keeps every pixel.
    constant = constant_columns(frame) if getattr(estimator, "bits", None) is None else []
    estimator.dropped_constant_columns_ = constant if estimator.drop_constant else []
    if not constant:
        return frame
    names = ", ".join(repr(c) for c in constant)
    if not estimator.drop_constant:
        raise ConstantColumns(constant)
    if len(constant) == frame.shape[1]:
        raise UserError("every column is constant; there is nothing to model")
    log.warning("leaving out constant column(s) %s: the model is a density of the other columns", names)
    return frame.drop(columns=constant)
