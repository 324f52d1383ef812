"""The model folder and training checkpoints: safetensors for tensors, JSON for everything else.

A model folder holds ``model.safetensors`` (weights), ``model.json`` (everything else, with the weights'
SHA-256) and ``metrics.jsonl``. A training run that is interrupted also leaves ``checkpoints/`` in it:
``latest.safetensors`` (everything needed to resume) and ``best.safetensors`` (the best weights so far), each
one file whose safetensors header carries its JSON document and a SHA-256 of its tensors.

Nothing here unpickles: loading reads JSON and safetensors only, so no file in a model folder can run code.
Every file is written beside its target and renamed into place, so an interrupted write never leaves half a
file or half a model, and an existing model is only replaced once the new one is complete. Nothing
non-finite is ever written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save, save_file

from funnelcli import outputs
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
BEST = "best.safetensors"
CHECKPOINT_FORMAT = "funnelcli-checkpoint"
#: 2: a SHA-256 of the whole header document (which holds the tensors' SHA-256) is recorded and checked.
CHECKPOINT_VERSION = 2
_HEADER_KEY = "funnelcli"
#: The key of the model weights' safetensors header that records model.json's fields (all but _UNBOUND) as
#: canonical JSON. The weights_sha256 in model.json covers the whole file, header included, so those fields
#: cannot be edited without the difference showing.
_RECORD_KEY = "funnelcli-model"
#: The fields of model.json that are not recorded: its checksum of the file itself, and what differs between
#: two runs that give the same weights (the date, the duration, the library versions), so that the same seed,
#: data, recipe and device still give a byte-identical model.safetensors. None of them changes a number.
_UNBOUND = ("weights_sha256", "training", "versions", "created")


# -- the model folder ------------------------------------------------------------------------------------------


def check_writable(folder: Path, *, overwrite: bool, resume: bool = False, inputs: Iterable[str | Path] = ()) -> None:
    """Refuse early (before hours of training) an output folder that this run may not write.

    A folder holding anything funnelcli did not write, or one that is, holds or lies inside one of ``inputs``,
    is refused whatever the flags say (:mod:`funnelcli.outputs`). A folder that holds the checkpoints of an
    unfinished run is continued with ``resume`` or replaced with ``overwrite``; a folder with a finished model
    is replaced only with ``overwrite``; an empty one is used as it is.
    """
    folder = Path(folder)
    outputs.check_output_folder(folder, outputs.MODEL, overwrite=True, inputs=inputs)
    latest = folder / CHECKPOINTS / LATEST
    if resume:
        if not latest.is_file():
            raise UserError(f"{folder} holds no checkpoint to resume ({latest} is missing); run without --resume")
        if (folder / METADATA).exists() and not overwrite:
            raise UserError(f"{folder} already holds a model; pass --force to replace it when the resumed run ends")
        return
    if overwrite or not folder.exists() or not any(folder.iterdir()):
        return
    if latest.is_file():
        raise UserError(
            f"{folder} holds the checkpoints of an unfinished run{_progress_of(latest)}; pass --resume to continue "
            "it, or --force to start over"
        )
    raise UserError(f"{folder} already holds a model; pass --force to replace it or choose another --output")


def holds_only_checkpoints(folder: str | Path) -> bool:
    """Whether ``folder`` holds nothing but the ``checkpoints/`` of a run, which that run's model replaces."""
    folder = Path(folder)
    return folder.is_dir() and {entry.name for entry in folder.iterdir()} == {CHECKPOINTS}


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint file that funnelcli wrote (by its header; its tensors are not read)."""
    document = _header_document(path)
    return isinstance(document, dict) and document.get("format") == CHECKPOINT_FORMAT


def write_folder(
    folder: str | Path,
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, Any],
    metrics: list[dict] = (),
    *,
    overwrite: bool = False,
) -> Path:
    """Write a complete model folder atomically and return its path.

    ``metadata`` is stored in ``model.json`` with the format, its version and the weights' SHA-256 added.
    Raises ValueError, before anything is written, when a weight is NaN or infinite.
    """
    folder = Path(folder)
    check_writable(folder, overwrite=overwrite)
    weights = _cpu_copies(tensors)
    _check_finite(weights, "the model")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        # As model.json reads back (tuples become lists): that is what the weights' header records.
        document = json.loads(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}))
        save_file(weights, str(staging / WEIGHTS), metadata={_RECORD_KEY: _canonical(_bound(document))})
        document["weights_sha256"] = sha256(staging / WEIGHTS)
        (staging / METADATA).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        with open(staging / METRICS, "w", encoding="utf-8") as handle:
            for record in metrics:
                handle.write(json.dumps(record) + "\n")
        # mkdtemp makes the folder private (and a writer may make its file private); a model folder is meant
        # to be shared like any folder the user makes
        for entry in staging.iterdir():
            os.chmod(entry, 0o666 & ~_umask())
        os.chmod(staging, 0o777 & ~_umask())
        if folder.exists():
            # Checked again: the folder may have changed during the hours this model trained
            outputs.check_output_folder(folder, outputs.MODEL, overwrite=True)
            retired = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-"))
            os.replace(folder, retired / folder.name)
            os.replace(staging, folder)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


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


def read_folder(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(weights, metadata) of a model folder.

    The weights must match the SHA-256 recorded in ``model.json``, parse as safetensors and be finite; any
    other file in the folder (a ``.pt`` or ``.pkl`` someone put there) is never opened.
    """
    folder = Path(folder)
    metadata = verify_folder(folder)
    weights = folder / WEIGHTS
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"{weights} is not a valid safetensors file ({_reason(error)}); retrain the model") from None
    bad = _non_finite(tensors)
    if bad:
        raise UserError(f"{weights}: weight {bad!r} holds NaN or infinite values; retrain the model")
    return tensors, metadata


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
        with safe_open(str(weights), framework="pt") as file:
            header = file.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"{weights} is not a valid safetensors file ({_reason(error)}); retrain the model") from None
    record = header.get(_RECORD_KEY)
    if not isinstance(record, str):
        raise UserError(
            f"{weights} holds no record of its {METADATA} (it was not written by this funnelcli's `funnel train`); "
            "retrain the model"
        )
    document = _bound(metadata)
    if _canonical(document) != record:
        field = _first_difference(document, record)
        raise UserError(
            f"{folder / METADATA} was edited, or the weights replaced: its field {field} differs from the record in "
            f"{WEIGHTS}, so the weights do not fit the recipe and columns in {METADATA}; use the folder as "
            "`funnel train` wrote it, or retrain"
        )
    return metadata


def _bound(document: dict[str, Any]) -> dict[str, Any]:
    """The fields of a model.json document that its weights record."""
    return {key: value for key, value in document.items() if key not in _UNBOUND}


def read_metrics(folder: str | Path) -> list[dict]:
    path = Path(folder) / METRICS
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON lines ({error}); the model folder is damaged, retrain it") from None


# -- checkpoints -----------------------------------------------------------------------------------------------


def write_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], document: dict[str, Any]) -> Path:
    """Write one checkpoint file atomically: ``tensors`` in safetensors, ``document`` (JSON) in its header.

    The header also records the format, its version, a SHA-256 of the tensors and a SHA-256 of the whole header
    document (tensors' SHA-256 included), so that neither can be edited unseen. The bytes reach the disk
    (fsync) before the file is renamed into place, so a crash leaves the previous checkpoint or the new one.
    Raises ValueError, before anything is written, when a floating-point tensor is NaN or infinite.
    """
    path = Path(path)
    tensors = _cpu_copies(tensors)
    _check_finite(tensors, "a checkpoint")
    header = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        **document,
        "tensors_sha256": _tensors_sha256(tensors),
    }
    header = json.loads(json.dumps(header, allow_nan=False))  # as it reads back: tuples are lists, keys strings
    header["header_sha256"] = _header_sha256(header)
    payload = save(tensors, metadata={_HEADER_KEY: json.dumps(header, allow_nan=False)})
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(name, 0o666 & ~_umask())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors on the CPU, JSON document) of a checkpoint written by :func:`write_checkpoint`, verified.

    Raises UserError for a missing, truncated, altered or foreign file, another format version, or a header
    whose document was edited (it must match its recorded SHA-256). The header is checked before any tensor is
    read.
    """
    path = Path(path)
    damaged = f"checkpoint {path} is damaged"
    way_out = "start over with --force (without --resume)"
    if not path.is_file():
        raise UserError(f"checkpoint {path} is missing; {way_out}")
    try:
        with safe_open(str(path), framework="pt") as file:
            header = (file.metadata() or {}).get(_HEADER_KEY)
            document = _parse_header(header)
            if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
                raise UserError(f"{path} is not a funnelcli checkpoint; {way_out}")
            version = document.get("format_version")
            if isinstance(version, bool) or version != CHECKPOINT_VERSION:
                shown = version if isinstance(version, int) and abs(version) < 10**9 else "?"
                raise UserError(
                    f"checkpoint {path} has format version {shown}; this funnelcli resumes version "
                    f"{CHECKPOINT_VERSION}: resume with the funnelcli version that wrote it, or {way_out}"
                )
            if document.get("header_sha256") != _header_sha256(document):
                raise UserError(
                    f"{damaged} (its header was edited: the document does not match its recorded SHA-256); {way_out}"
                )
            _check_checkpoint_header(path, document, way_out)
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as error:
        if isinstance(error, UserError):
            raise
        raise UserError(f"{damaged} (not a safetensors file: {_reason(error)}); {way_out}") from None
    if document.get("tensors_sha256") != _tensors_sha256(tensors):
        raise UserError(f"{damaged} (its tensors do not match their checksum); {way_out}")
    return tensors, document


def _parse_header(header: str | None) -> Any:
    """A checkpoint's JSON header document, or None when there is none or it is not JSON."""
    if header is None:
        return None
    try:
        return json.loads(header)
    except (ValueError, RecursionError):  # not JSON, a too-long integer, or nested too deeply
        return None


def _check_checkpoint_header(path: Path, document: dict[str, Any], way_out: str) -> None:
    """The fields every checkpoint has: its kind, and its step of so many (whole numbers in range)."""

    def whole(value: Any, low: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= _MAX_STEPS

    problem = None
    if document.get("kind") not in ("latest", "best"):
        problem = "kind is not 'latest' or 'best'"
    elif not whole(document.get("steps"), 1):
        problem = f"steps is not a whole number in 1..{_MAX_STEPS}"
    elif not whole(document.get("step"), 0) or document["step"] > document["steps"]:
        problem = "step is not a whole number in 0..steps"
    if problem is not None:
        raise UserError(f"checkpoint {path} is damaged (header field {problem}); {way_out}")


def _header_document(path: str | Path) -> Any:
    """A checkpoint file's JSON header document, its tensors unread; None for a file that is not one."""
    try:
        with safe_open(str(path), framework="pt") as file:
            return _parse_header((file.metadata() or {}).get(_HEADER_KEY))
    except Exception:  # a damaged or foreign file is simply not one of ours
        return None


def _progress_of(latest: Path) -> str:
    """`` (step S of N)`` from a checkpoint's header, or nothing when it cannot be read."""
    document = _header_document(latest)
    # Only a header that is as it was written, with whole numbers for its step and steps, is quoted.
    if not isinstance(document, dict) or document.get("header_sha256") != _header_sha256(document):
        return ""
    try:
        _check_checkpoint_header(latest, document, "")
    except UserError:  # only a nicety for a message: a damaged checkpoint is reported when it is resumed
        return ""
    return f" (step {document['step']} of {document['steps']})"


# -- helpers ---------------------------------------------------------------------------------------------------


def _cpu_copies(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Copies: safetensors refuses tensors that share memory, and the caller's tensors keep training.
    return {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in tensors.items()}


def _non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor with a NaN or infinite value, or None."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def _check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    bad = _non_finite(tensors)
    if bad is not None:
        raise ValueError(f"refusing to write {what}: tensor {bad!r} holds NaN or infinite values")


#: The most steps a checkpoint may record (a recipe's training.steps is at most 10^8).
_MAX_STEPS = 100_000_000


def _canonical(document: Any) -> str:
    """One JSON text per value: sorted keys, no spaces (NaN and infinities as Python's json writes them)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def _header_sha256(document: dict[str, Any]) -> str:
    """The SHA-256 of a checkpoint header's canonical JSON, less the field that records it."""
    body = {key: value for key, value in document.items() if key != "header_sha256"}
    return hashlib.sha256(_canonical(body).encode("utf-8")).hexdigest()


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
    "input_dim",
    "latent_dim",
    "parameters",
    "max_parameters",
)


def _first_difference(document: dict[str, Any], record: str) -> str:
    """The dotted name of the first field of ``document`` that differs from the recorded JSON document."""
    try:
        recorded = json.loads(record)
    except (ValueError, RecursionError):
        return "(all of them: the record is not JSON)"
    if not isinstance(recorded, dict):
        return "(all of them: the record is not a JSON object)"

    def walk(left: Any, right: Any, prefix: str) -> str | None:
        if _canonical(left) == _canonical(right):
            return None
        if isinstance(left, dict) and isinstance(right, dict):
            others = sorted(set(left) | set(right))
            for key in [*(k for k in _NUMBERS_FIRST if k in others), *others]:
                found = walk(left.get(key), right.get(key), f"{prefix}{key}.")
                if found is not None:
                    return found
        return prefix.rstrip(".") or "(the document)"

    return walk(document, recorded, "") or "(the document)"


def _reason(error: Exception) -> str:
    return " ".join(str(error).split())[:120]


def _tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _umask() -> int:
    # The umask can only be read by setting it; it is put back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening a folder)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
