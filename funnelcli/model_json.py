"""A model folder's JSON: ``model.json`` read, checked and verified against its weights, and ``metrics.jsonl``.

Verifying needs the weights' bytes (their SHA-256) and their safetensors header (the record of ``model.json``
that ``funnel train`` wrote there), never their tensors, so nothing here imports torch: ``funnel info`` reads
a model folder without it. :mod:`funnelcli.artifact` writes the folders and loads the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from funnelcli.checksum import sha256
from funnelcli.errors import UserError

FORMAT = "funnelcli-model"
#: 2: the weights' safetensors header records the fields of model.json that change numbers; they must match it.
FORMAT_VERSION = 2
WEIGHTS = "model.safetensors"
METADATA = "model.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
LATEST = "latest.safetensors"

#: The key of the model weights' safetensors header that records model.json's fields (all but _UNBOUND) as
#: canonical JSON. The weights_sha256 in model.json covers the whole file, header included, so those fields
#: cannot be edited without the difference showing.
RECORD_KEY = "funnelcli-model"
#: The fields of model.json that are not recorded: its checksum of the file itself, and what differs between
#: two runs that give the same weights (the date, the duration, the library versions), so that the same seed,
#: data, recipe and device still give a byte-identical model.safetensors. None of them changes a number.
_UNBOUND = ("weights_sha256", "training", "versions", "created")


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """``model.json`` of a model folder, checked for format, version and the type and range of every field.

    It is not compared with the weights here: :func:`verify_folder` does that.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such model folder; pass the folder that `funnel train` wrote")
    path = folder / METADATA
    if not path.is_file():
        if (folder / CHECKPOINTS / LATEST).is_file():
            raise UserError(
                f"{folder} holds only the checkpoints of an unfinished run; finish it with `funnel train ... --resume`"
            )
        raise UserError(f"{folder} is not a model folder ({METADATA} is missing); pass a folder from `funnel train`")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error}); the model folder is damaged, retrain it") from None
    except RecursionError:
        raise UserError(
            f"{path} is nested too deeply to be a model description; the folder is damaged, retrain it"
        ) from None
    except ValueError as error:  # an integer with more digits than Python converts
        raise UserError(f"{path} is not valid model JSON ({error}); the model folder is damaged, retrain it") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise UserError(f"{path} is not a funnelcli model description; pass a folder from `funnel train`")
    version = metadata.get("format_version")
    if isinstance(version, bool) or version != FORMAT_VERSION:
        shown = version if isinstance(version, int) and not isinstance(version, bool) and abs(version) < 10**9 else "?"
        raise UserError(
            f"{path} has format version {shown}; this funnelcli reads version {FORMAT_VERSION}: use the funnelcli "
            "version that wrote it, or retrain"
        )
    from funnelcli.models.document import check_document

    check_document(path, metadata)
    return metadata


def verify_folder(folder: str | Path) -> dict[str, Any]:
    """``model.json`` of a model folder (checked as :func:`read_metadata` does), verified against its weights.

    The weights must match the SHA-256 in ``model.json``, and every field of ``model.json`` but the training
    summary, the date and the versions must match what the weights' safetensors header recorded when ``funnel
    train`` wrote them, so that an edited field (a recipe size, the columns, the scaler...) is refused before
    anything is built. Reads the weights' header, not their tensors.
    """
    folder = Path(folder)
    metadata = read_metadata(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise UserError(f"{folder}: {WEIGHTS} is missing; the model folder is incomplete, retrain it")
    if sha256(weights) != metadata["weights_sha256"]:
        raise UserError(
            f"{weights} does not match the checksum in {METADATA}: the file was altered, truncated or replaced; "
            "use the folder as `funnel train` wrote it, or retrain"
        )
    try:
        # numpy, not torch: only the header is read, and torch would take seconds to import
        with safe_open(str(weights), framework="numpy") as file:
            header = file.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"{weights} is not a valid safetensors file ({reason(error)}); retrain the model") from None
    recorded = header.get(RECORD_KEY)
    if not isinstance(recorded, str):
        raise UserError(
            f"{weights} holds no record of its {METADATA} (it was not written by this funnelcli's `funnel train`); "
            "retrain the model"
        )
    if record(metadata) != recorded:
        field = _first_difference(_bound(metadata), recorded)
        raise UserError(
            f"{folder / METADATA} was edited, or the weights replaced: its field {field} differs from the record in "
            f"{WEIGHTS}, so the weights do not fit the recipe and columns in {METADATA}; use the folder as "
            "`funnel train` wrote it, or retrain"
        )
    return metadata


def read_metrics(folder: str | Path) -> list[dict]:
    path = Path(folder) / METRICS
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON lines ({error}); the model folder is damaged, retrain it") from None


def record(document: dict[str, Any]) -> str:
    """What the weights' header records of a model.json ``document``: its bound fields as canonical JSON."""
    return canonical(_bound(document))


def canonical(document: Any) -> str:
    """One JSON text per value: sorted keys, no spaces (NaN and infinities as Python's json writes them)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def reason(error: Exception) -> str:
    """A library's error message as a short part of one line."""
    return " ".join(str(error).split())[:120]


def _bound(document: dict[str, Any]) -> dict[str, Any]:
    """The fields of a model.json document that its weights record."""
    return {key: value for key, value in document.items() if key not in _UNBOUND}


#: The fields of model.json that change a model's numbers, named first when several differ from the record.
_NUMBERS_FIRST = (
    "recipe",
    "columns",
    "input_columns",
    "fitted_on_names",
    "dtypes",
    "scaler",
    "dequantize",
    "dequantized_columns",
    "dropped_constant_columns",
    "conditions",
    "categorical",
    "input_dim",
    "latent_dim",
    "parameters",
    "max_parameters",
)


def _first_difference(document: dict[str, Any], text: str) -> str:
    """The dotted name of the first field of ``document`` that differs from the recorded JSON ``text``."""
    try:
        recorded = json.loads(text)
    except (ValueError, RecursionError):
        return "(all of them: the record is not JSON)"
    if not isinstance(recorded, dict):
        return "(all of them: the record is not a JSON object)"

    def walk(left: Any, right: Any, prefix: str) -> str | None:
        if canonical(left) == canonical(right):
            return None
        if isinstance(left, dict) and isinstance(right, dict):
            others = sorted(set(left) | set(right))
            for key in [*(k for k in _NUMBERS_FIRST if k in others), *others]:
                found = walk(left.get(key), right.get(key), f"{prefix}{key}.")
                if found is not None:
                    return found
        return prefix.rstrip(".") or "(the document)"

    return walk(document, recorded, "") or "(the document)"
