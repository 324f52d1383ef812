"""The fields of ``model.json``: the type and range each must have, checked before anything is built from them.

``funnel train`` writes every field; a folder whose ``model.json`` lacks one, has one more, or holds a value of
the wrong type or out of range was edited or damaged, and is refused with one line that names the field. That
the values are also the ones training wrote is checked against the weights' own record
(:func:`funnelcli.artifact.verify_folder`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from funnelcli.errors import UserError, shown
from funnelcli.models.recipe import MAX_COLUMNS, Recipe

#: The most names a list of columns in model.json may hold (the modelled ones are at most MAX_COLUMNS).
MAX_LISTED_COLUMNS = 1_000_000
#: The largest whole number model.json may hold (a step, a row count, a parameter count).
MAX_COUNT = 2**63 - 1
#: float32's largest value and smallest positive normal one: the scaler is applied in float32.
_F32_MAX = 3.4028234663852886e38
_F32_TINY = 1.1754943508222875e-38
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_int(value: Any, low: int = 0, high: int = MAX_COUNT) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_number(value: Any) -> bool:
    # Training summaries may hold -inf or NaN (no finite validation score), which JSON here writes as such.
    return isinstance(value, float) or _is_int(value, -MAX_COUNT)


def _is_finite(value: Any, low: float = -_F32_MAX, high: float = _F32_MAX) -> bool:
    return _is_number(value) and math.isfinite(value) and low <= value <= high


def _names(value: Any, low: int, high: int) -> bool:
    return (
        isinstance(value, list)
        and low <= len(value) <= high
        and all(isinstance(name, str) for name in value)
        and len(set(value)) == len(value)
    )


def _strings(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(item, str) for item in value.values())


Check = tuple[Callable[[Any], bool], str]

#: Each field of model.json besides format, format_version and weights_sha256: (test, what it must be).
FIELDS: dict[str, Check] = {
    "recipe_name": (lambda v: isinstance(v, str), "a string"),
    "recipe": (lambda v: isinstance(v, dict), "a table of recipe settings"),
    "columns": (lambda v: _names(v, 1, MAX_COLUMNS), f"a list of 1 to {MAX_COLUMNS} distinct column names"),
    "input_columns": (
        lambda v: _names(v, 1, MAX_LISTED_COLUMNS),
        f"a list of 1 to {MAX_LISTED_COLUMNS} distinct column names",
    ),
    "fitted_on_names": (lambda v: isinstance(v, bool), "true or false"),
    "dtypes": (_strings, "a table of column names and dtype names"),
    "input_dim": (lambda v: _is_int(v, 1, MAX_COLUMNS), f"an integer in 1..{MAX_COLUMNS}"),
    "latent_dim": (lambda v: _is_int(v, 1, MAX_COLUMNS), f"an integer in 1..{MAX_COLUMNS}"),
    "dequantize": (lambda v: v in ("uniform", "none") and isinstance(v, str), "'uniform' or 'none'"),
    "dequantized_columns": (
        lambda v: _names(v, 0, MAX_LISTED_COLUMNS),
        "a list of distinct column names",
    ),
    "dropped_constant_columns": (
        lambda v: _names(v, 0, MAX_LISTED_COLUMNS),
        "a list of distinct column names",
    ),
    "scaler": (
        lambda v: isinstance(v, dict) and set(v) == {"mean", "std"} and all(isinstance(v[k], list) for k in v),
        "a table with a list 'mean' and a list 'std'",
    ),
    "parameters": (lambda v: _is_int(v, 0), "a whole number"),
    "max_parameters": (lambda v: _is_int(v, 1), "a whole number >= 1"),
    "training": (lambda v: isinstance(v, dict), "a table of the training summary"),
    "versions": (_strings, "a table of library names and versions"),
    "created": (lambda v: isinstance(v, str), "a date as a string"),
}


def _condition(entry: Any) -> bool:
    from funnelcli.conditions import CATEGORICAL, MAX_CATEGORIES, NUMERIC

    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("dtype"), str):
        return False
    if entry.get("kind") == NUMERIC:
        keys_ok = set(entry) == {"name", "dtype", "kind", "mean", "std"}
        return keys_ok and _is_finite(entry["mean"]) and _is_finite(entry["std"], _F32_TINY)
    return (
        entry.get("kind") == CATEGORICAL
        and set(entry) == {"name", "dtype", "kind", "categories"}
        and _names(entry["categories"], 2, MAX_CATEGORIES)
    )


def _conditions(value: Any) -> bool:
    return (
        isinstance(value, list)
        and 1 <= len(value) <= MAX_COLUMNS
        and all(_condition(entry) for entry in value)
        and len({entry["name"] for entry in value}) == len(value)
    )


def _categorical(value: Any) -> bool:
    from funnelcli.conditions import CATEGORICAL

    return (
        isinstance(value, dict)
        and set(value) == {"alpha", "columns", "combinations"}
        and _is_finite(value["alpha"], _F32_TINY)
        and _is_int(value["combinations"], 1)
        and _conditions(value["columns"])
        and all(entry["kind"] == CATEGORICAL for entry in value["columns"])
    )


#: Fields that only some models have: ``conditions``, which only a conditional model's model.json holds, and
#: ``categorical``, only a mixed model's (so that other models' folders are as they were before these existed).
OPTIONAL_FIELDS: dict[str, Check] = {
    "conditions": (
        _conditions,
        "a list of distinct condition columns, each numeric (name, dtype, kind, mean, std) or categorical (name, "
        "dtype, kind, categories)",
    ),
    "categorical": (
        _categorical,
        "a table of alpha (> 0), columns (distinct categorical columns: name, dtype, kind, categories) and "
        "combinations (>= 1)",
    ),
}

#: The training summary's fields.
TRAINING: dict[str, Check] = {
    "steps": (lambda v: _is_int(v), "a whole number"),
    "best_step": (lambda v: _is_int(v), "a whole number"),
    "best_val_log_prob": (_is_number, "a number"),
    "final_train_log_prob": (_is_number, "a number"),
    "seconds": (lambda v: _is_finite(v, 0), "a number >= 0"),
    "ms_per_step": (lambda v: _is_finite(v, 0), "a number >= 0"),
    "stopped_early": (lambda v: isinstance(v, bool), "true or false"),
    "skipped_nonfinite_steps": (lambda v: _is_int(v), "a whole number"),
    "device": (lambda v: isinstance(v, str), "a string"),
    "resumed_at_step": (lambda v: v is None or _is_int(v), "null or a whole number"),
    "diverged": (lambda v: isinstance(v, bool), "true or false"),
    "processes": (lambda v: _is_int(v, 1), "a whole number >= 1"),
    "train_rows": (lambda v: _is_int(v), "a whole number"),
    "validation_rows": (lambda v: _is_int(v), "a whole number"),
}

_EDITED = "model.json was edited or damaged: use the folder as `funnel train` wrote it, or retrain"


def check_document(path: Path, metadata: dict[str, Any]) -> None:
    """Refuse (:class:`UserError`, one line naming the field) a ``model.json`` document that ``funnel train``
    cannot have written: a missing, unknown or ill-typed field, a value out of range, or fields that disagree
    with each other. ``format`` and ``format_version`` are checked by the caller."""
    if not isinstance(metadata.get("weights_sha256"), str) or not _SHA256.fullmatch(metadata["weights_sha256"]):
        raise UserError(f"{path} records no weights_sha256 (a SHA-256 in hex); the model folder is damaged, retrain it")
    known = {"format", "format_version", "weights_sha256", *FIELDS, *OPTIONAL_FIELDS}
    unknown = sorted(key for key in metadata if key not in known)
    if unknown:
        raise UserError(f"{path} has an unknown field {shown(unknown[0])}; {_EDITED}")
    _check_fields(path, metadata, FIELDS, "", closed=False)  # its unknown fields are refused above
    optional = {name: check for name, check in OPTIONAL_FIELDS.items() if name in metadata}
    _check_fields(path, metadata, optional, "", closed=False)
    _check_fields(path, metadata["training"], TRAINING, "training.")
    try:
        Recipe.from_dict(metadata["recipe"], name=metadata["recipe_name"], source=f"{path} (field recipe)")
    except UserError as error:
        raise UserError(f"{error}; {_EDITED}") from None

    columns, dim = metadata["columns"], metadata["input_dim"]
    scaler = metadata["scaler"]
    if not len(scaler["mean"]) == len(scaler["std"]) == len(columns) == dim:
        raise UserError(
            f"{path}: the scaler in model.json does not fit its {len(columns)} columns (input_dim {dim}); the model "
            "folder is damaged, retrain it"
        )
    if not all(_is_finite(value) for value in scaler["mean"]) or not all(
        _is_finite(value, _F32_TINY) for value in scaler["std"]
    ):
        raise UserError(
            f"{path}: the scaler's mean must hold finite float32 numbers and its std positive ones; {_EDITED}"
        )
    if metadata["latent_dim"] > dim:
        raise UserError(f"{path}: field latent_dim {metadata['latent_dim']} exceeds input_dim {dim}; {_EDITED}")
    dropped = metadata["dropped_constant_columns"]
    if set(columns) & set(dropped) or set(metadata["input_columns"]) != set(columns) | set(dropped):
        raise UserError(f"{path}: field input_columns must be the columns and the dropped_constant_columns; {_EDITED}")
    if not set(metadata["dequantized_columns"]) <= set(columns) or (
        metadata["dequantize"] == "none" and metadata["dequantized_columns"]
    ):
        raise UserError(f"{path}: field dequantized_columns names columns that were not dequantized; {_EDITED}")
    if not set(metadata["dtypes"]) <= set(metadata["input_columns"]):
        raise UserError(f"{path}: field dtypes names columns the model does not read; {_EDITED}")
    if "conditions" in metadata and {c["name"] for c in metadata["conditions"]} & set(metadata["input_columns"]):
        raise UserError(f"{path}: field conditions names columns the model also reads as modelled ones; {_EDITED}")
    if "categorical" in metadata:
        names = {c["name"] for c in metadata["categorical"]["columns"]}
        conditions = metadata.get("conditions", [])
        if names & (set(metadata["input_columns"]) | {c["name"] for c in conditions}):
            raise UserError(f"{path}: field categorical names a column the model also reads otherwise; {_EDITED}")
        if any(c["kind"] != "categorical" for c in conditions):
            raise UserError(f"{path}: field categorical needs categorical conditions only; {_EDITED}")
    if metadata["parameters"] > metadata["max_parameters"]:
        raise UserError(f"{path}: field parameters exceeds max_parameters; {_EDITED}")


def _check_fields(path: Path, table: dict[str, Any], fields: dict[str, Check], prefix: str, closed=True) -> None:
    for name, (test, expected) in fields.items():
        if name not in table:
            raise UserError(f"{path} lacks field {prefix}{name}; the model folder is damaged, retrain it")
        if not test(table[name]):
            raise UserError(
                f"{path}: field {prefix}{name} = {shown(table[name])} is invalid; it must be {expected}; {_EDITED}"
            )
    unknown = sorted(key for key in table if key not in fields)
    if closed and unknown:
        raise UserError(f"{path} has an unknown field {prefix}{shown(unknown[0])}; {_EDITED}")
