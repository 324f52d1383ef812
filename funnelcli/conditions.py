"""The conditions of a conditional model p(x | c): which columns they are, and how they become the context c.

A numeric condition is standardised, (v - mean) / std with the training rows' mean and standard deviation
(ddof 0), one context column. A categorical one (strings, booleans, pandas categoricals, or any column named in
``categorical_columns``) is one-hot encoded over the categories seen in the table given to ``fit``, one context
column per category, in sorted order. The model folder records both (``model.json``'s ``conditions``), so that
scoring encodes exactly as training did; a category the model never saw is refused, not guessed.

The context is an input of the model, not something it models: conditions get no density, no dequantization
noise, and no share of the log-likelihood. A mixed model's modelled categorical columns are encoded here too
(one-hot, the same way): they are the flow's context beside the conditions, and
:mod:`funnelcli.models.categorical` gives them their mass. Imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from funnelcli.errors import Misused, Refused, UserError, shown

#: The most categories a categorical condition may have: each is a column of the one-hot context.
MAX_CATEGORIES = 1000
NUMERIC = "numeric"
CATEGORICAL = "categorical"


@dataclass(frozen=True)
class Condition:
    """One condition column: ``kind`` numeric (``mean``, ``std``) or categorical (``categories``, as strings)."""

    name: str
    dtype: str
    kind: str
    mean: float | None = None
    std: float | None = None
    categories: tuple[str, ...] | None = None

    @property
    def width(self) -> int:
        """Its columns in the context: 1, or one per category."""
        return 1 if self.kind == NUMERIC else len(self.categories)

    def encode(self, values: pd.Series, role: str = "condition") -> np.ndarray:
        """The context columns of ``values``, shape (N, width), float64."""
        if self.kind == NUMERIC:
            return ((_numbers(self.name, values, role) - self.mean) / self.std)[:, None]
        return one_hot(self.indices(values, role), len(self.categories))

    def indices(self, values: pd.Series, role: str = "condition") -> np.ndarray:
        """Each value's position among a categorical column's ``categories``, shape (N,), int64. A category the
        model never saw is a :class:`UserError` that names the column (a ``role`` column) and the value."""
        index = {category: j for j, category in enumerate(self.categories)}
        keys = _keys(self.name, values, role)
        found = np.fromiter((index.get(key, -1) for key in keys), dtype=np.int64, count=len(keys))
        if (found < 0).any():
            row = int(np.argmax(found < 0))
            known = ", ".join(self.categories[:5]) + (", ..." if len(self.categories) > 5 else "")
            raise UserError(
                f"{role} column {self.name!r} holds {shown(keys[row])} (row {row + 1}), a category the model did "
                f"not see in training (it knows {known}); leave such rows out or retrain with them"
            )
        return found

    def values(self, indices: np.ndarray) -> pd.Series:
        """The categories at ``indices`` (N,) as a column of the dtype the model was fitted on where that is
        simple (integers, booleans, floats, pandas categoricals), else strings: what ``sample`` returns."""
        labels = np.asarray(self.categories, dtype=object)[np.asarray(indices, dtype=np.int64)]
        dtype = self.dtype.lower()
        if dtype.startswith(("int", "uint")):
            return pd.Series(labels.astype(np.int64), name=self.name)
        if dtype.startswith("bool"):
            return pd.Series(labels == "True", name=self.name)
        if dtype.startswith("float"):
            return pd.Series(labels.astype(np.float64), name=self.name)
        if dtype == "category":
            return pd.Series(pd.Categorical(labels, categories=list(self.categories)), name=self.name)
        try:  # a string dtype ("str", "string") as fitted; anything else stays text
            return pd.Series(labels, name=self.name).astype(self.dtype)
        except (TypeError, ValueError):
            return pd.Series(labels, name=self.name, dtype=object)

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "kind": self.kind}
        if self.kind == NUMERIC:
            entry.update(mean=self.mean, std=self.std)
        else:
            entry["categories"] = list(self.categories)
        return entry

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> Condition:
        categories = entry.get("categories")
        return cls(
            name=entry["name"],
            dtype=entry["dtype"],
            kind=entry["kind"],
            mean=entry.get("mean"),
            std=entry.get("std"),
            categories=None if categories is None else tuple(categories),
        )


@dataclass(frozen=True)
class Conditions:
    """The condition columns of a conditional model, in order; the context c is their encodings side by side."""

    columns: tuple[Condition, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def width(self) -> int:
        """C, the context's number of columns."""
        return sum(c.width for c in self.columns)

    @property
    def categorical(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == CATEGORICAL]

    def encode(self, X) -> np.ndarray:
        """The context of the rows of ``X`` (a DataFrame holding the condition columns), shape (N, C), float64.

        A missing column, a missing or non-finite value, or an unseen category is a :class:`UserError` that names
        the column (and the value)."""
        if not isinstance(X, pd.DataFrame):
            raise UserError(
                f"this model is conditional on {', '.join(self.names)}; give it a DataFrame that holds those columns"
            )
        missing = [name for name in self.names if name not in X.columns]
        if missing:
            raise UserError(
                f"the data lack the condition column(s) {', '.join(repr(c) for c in missing)}; the model is "
                f"conditional on {', '.join(self.names)}"
            )
        return np.concatenate([c.encode(X[c.name]) for c in self.columns], axis=1)

    def to_list(self) -> list[dict[str, Any]]:
        """What ``model.json`` records (field ``conditions``)."""
        return [c.to_dict() for c in self.columns]

    @classmethod
    def from_list(cls, entries: Sequence[dict[str, Any]]) -> Conditions:
        return cls(tuple(Condition.from_dict(entry) for entry in entries))


def check_names(conditional_columns: Any, categorical_columns: Any) -> tuple[list[str], list[str], list[str]]:
    """(conditions, categorical conditions, modelled categorical columns) as lists of str, or a :class:`UserError`
    unless each parameter is a list of distinct names.

    A column in both ``conditional_columns`` and ``categorical_columns`` is a condition encoded by category (it is
    given, not modelled); one in ``categorical_columns`` alone is modelled: it gets a probability mass, P(k | c), and
    conditions the flow (docs/maths.md, section 1.9)."""
    lists = []
    given = {"conditional_columns": conditional_columns, "categorical_columns": categorical_columns}
    for parameter, value in given.items():
        names = [] if value is None else [value] if isinstance(value, str) else value
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            raise Misused([parameter], f"must be a list of column names, got {shown(value)}")
        if len(set(names)) != len(names):
            raise Misused([parameter], f"names a column twice: {shown(names)}")
        lists.append(list(names))
    conditions, categorical = lists
    modelled = [name for name in categorical if name not in conditions]
    return conditions, [name for name in categorical if name in conditions], modelled


def categories_of(
    frame: pd.DataFrame, categorical: Sequence[str], modelled: Sequence[str] = ()
) -> dict[str, tuple[str, ...]]:
    """The sorted categories of each categorical column of ``frame`` (the context columns), by name.

    A condition is categorical when named in ``categorical`` or when its dtype is not numeric (strings, objects,
    booleans, pandas categoricals); a ``modelled`` categorical column always is. Refused: a missing value, one
    category only, more than :data:`MAX_CATEGORIES`."""
    found = {}
    for name in frame.columns:
        if not is_categorical(frame[name], name in categorical or name in modelled):
            continue
        modelled_here = name in modelled
        role = "categorical" if modelled_here else "condition"
        parameter = "categorical_columns" if modelled_here else "conditional_columns"
        categories = tuple(sorted(set(_keys(name, frame[name], role))))
        if len(categories) < 2:
            raise Refused(
                f"{role} column {name!r} has one value ({shown(categories[0])}) in the table, so it cannot "
                "condition anything",
                f"leave it out of {{{parameter}}}",
            )
        if len(categories) > MAX_CATEGORIES:
            raise Refused(
                f"{role} column {name!r} has {len(categories):,} categories; a categorical column is one-hot "
                f"encoded and may have at most {MAX_CATEGORIES:,}",
                f"leave it out of {{{parameter}}} (an identifier conditions nothing)",
            )
        found[str(name)] = categories
    return found


def context_width(names: Sequence[str], categories: dict[str, tuple[str, ...]]) -> int:
    """C for conditions ``names`` of which ``categories`` are categorical: one column per category, else one."""
    return sum(len(categories[name]) if name in categories else 1 for name in names)


def fit_conditions(train: pd.DataFrame, categories: dict[str, tuple[str, ...]]) -> Conditions:
    """The :class:`Conditions` of the training rows' condition columns ``train``: numeric ones standardised by
    these rows, categorical ones over ``categories`` (:func:`categories_of` the whole table). A numeric condition
    that is constant in the training rows is refused."""
    columns = []
    for name in train.columns:
        dtype = str(train[name].dtype)
        if name in categories:
            columns.append(Condition(str(name), dtype, CATEGORICAL, categories=categories[name]))
            continue
        values = _numbers(name, train[name])
        mean, std = float(values.mean()), float(values.std())
        if not std > 0 or not math.isfinite(std):
            raise Refused(
                f"condition column {name!r} is constant in the training rows, so it cannot condition anything",
                "leave it out of {conditional_columns}",
            )
        columns.append(Condition(str(name), dtype, NUMERIC, mean=mean, std=std))
    return Conditions(tuple(columns))


def is_categorical(values: pd.Series, named: bool) -> bool:
    """Whether a condition column is encoded by category: named so, or not numeric (booleans are categories)."""
    return named or is_bool_dtype(values.dtype) or not is_numeric_dtype(values.dtype)


def one_hot(indices: np.ndarray, width: int) -> np.ndarray:
    """Rows of ``width`` zeros with a one at each of ``indices`` (N,), shape (N, width), float64."""
    encoded = np.zeros((len(indices), width))
    encoded[np.arange(len(indices)), indices] = 1.0
    return encoded


def _numbers(name: str, values: pd.Series, role: str = "condition") -> np.ndarray:
    if not is_numeric_dtype(values.dtype) or is_bool_dtype(values.dtype):
        raise UserError(
            f"{role} column {name!r} holds {values.dtype} values, but the model reads it as numbers; "
            "give it the numbers it was trained on"
        )
    numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(numbers) | (np.abs(numbers) >= np.finfo(np.float32).max)
    if bad.any():
        row = int(np.argmax(bad))
        raise UserError(
            f"{role} column {name!r} holds {numbers[row]:g} at row {row + 1}; conditions must be finite float32 numbers"
        )
    return numbers


def _keys(name: str, values: pd.Series, role: str = "condition") -> list[str]:
    """Each value as the category it names: ``True``, ``3`` (for 3 and 3.0 alike), ``'adelie'`` -> ``adelie``."""
    missing = pd.isna(values).to_numpy()
    if missing.any():
        raise UserError(
            f"{role} column {name!r} has a missing value at row {int(np.argmax(missing)) + 1}; its values must "
            "all be given"
        )
    return [_key(value) for value in values.tolist()]


def _key(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value)
