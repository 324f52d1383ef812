"""Writing model folders and loading their weights; training checkpoints: safetensors for tensors, JSON else.

A model folder holds ``model.safetensors`` (weights), ``model.json`` (everything else, with the weights'
SHA-256) and ``metrics.jsonl``. A training run that is interrupted also leaves ``checkpoints/`` in it:
``latest.safetensors`` (everything needed to resume) and ``best.safetensors`` (the best weights so far), each
one file whose safetensors header carries its JSON document and a SHA-256 of its tensors.

Nothing here unpickles: loading reads JSON and safetensors only, so no file in a model folder can run code.
Every file is written beside its target and renamed into place, so an interrupted write never leaves half a
file or half a model, and an existing model is only replaced once the new one is complete. Nothing
non-finite is ever written. ``model.json`` is read and verified by :mod:`funnelcli.model_json`, which needs
no torch; its names are available here too.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save, save_file

from funnelcli import atomic, outputs
from funnelcli.checksum import sha256
from funnelcli.errors import Refused, UserError
from funnelcli.model_json import (
    CHECKPOINTS,
    FORMAT,
    FORMAT_VERSION,
    LATEST,
    METADATA,
    METRICS,
    RECORD_KEY,
    WEIGHTS,
    canonical,
    read_metadata,
    read_metrics,
    reason,
    record,
    verify_folder,
)
from funnelcli.model_metadata import ModelMetadata

__all__ = [
    "BEST",
    "CHECKPOINTS",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "FORMAT",
    "FORMAT_VERSION",
    "LATEST",
    "METADATA",
    "METRICS",
    "ModelMetadata",
    "WEIGHTS",
    "check_writable",
    "holds_only_checkpoints",
    "is_checkpoint",
    "read_checkpoint",
    "read_folder",
    "read_metadata",
    "read_metrics",
    "sha256",
    "verify_folder",
    "write_checkpoint",
    "write_folder",
]

BEST = "best.safetensors"
CHECKPOINT_FORMAT = "funnelcli-checkpoint"
#: 2: a SHA-256 of the whole header document (which holds the tensors' SHA-256) is recorded and checked.
CHECKPOINT_VERSION = 2
_HEADER_KEY = "funnelcli"


# -- the model folder ------------------------------------------------------------------------------------------


#: The remedy for a checkpoint that cannot be resumed (a :class:`Refused` remedy, naming parameters).
START_OVER = "start over with {overwrite=True} (without {resume})"


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
            raise Refused(f"{folder} holds no checkpoint to resume ({latest} is missing)", "run without {resume}")
        if (folder / METADATA).exists() and not overwrite:
            raise Refused(
                f"{folder} already holds a model", "pass {overwrite=True} to replace it when the resumed run ends"
            )
        return
    if overwrite or not folder.exists() or not any(folder.iterdir()):
        return
    if latest.is_file():
        raise Refused(
            f"{folder} holds the checkpoints of an unfinished run{_progress_of(latest)}",
            "pass {resume=True} to continue it, or {overwrite=True} to start over",
        )
    raise Refused(f"{folder} already holds a model", "pass {overwrite=True} to replace it or choose another {output}")


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
    metadata: ModelMetadata | dict[str, Any],
    metrics: list[dict] = (),
    *,
    overwrite: bool = False,
) -> Path:
    """Write a complete model folder atomically and return its path.

    ``metadata`` (or its fields as a dict) is stored in ``model.json`` with the format, its version and the
    weights' SHA-256 added. Raises ValueError, before anything is written, when a weight is NaN or infinite.
    """
    if isinstance(metadata, ModelMetadata):
        metadata = metadata.to_dict()
    folder = Path(folder)
    check_writable(folder, overwrite=overwrite)
    weights = _cpu_copies(tensors)
    _check_finite(weights, "the model")
    # Checked again before an existing folder is replaced: it may have changed during the hours this model trained
    check = partial(outputs.check_output_folder, folder, outputs.MODEL, overwrite=True)
    with atomic.staged_folder(folder, check=check) as staging:
        # As model.json reads back (tuples become lists): that is what the weights' header records.
        document = json.loads(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}))
        save_file(weights, str(staging / WEIGHTS), metadata={RECORD_KEY: record(document)})
        document["weights_sha256"] = sha256(staging / WEIGHTS)
        (staging / METADATA).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        with open(staging / METRICS, "w", encoding="utf-8") as handle:
            for entry in metrics:
                handle.write(json.dumps(entry) + "\n")
        # A writer may make its file private; a model folder is meant to be shared like any folder the user makes
        for entry in staging.iterdir():
            os.chmod(entry, 0o666 & ~atomic.umask())
    return folder


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
        raise UserError(f"{weights} is not a valid safetensors file ({reason(error)}); retrain the model") from None
    bad = _non_finite(tensors)
    if bad:
        raise UserError(f"{weights}: weight {bad!r} holds NaN or infinite values; retrain the model")
    return tensors, metadata


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
        os.chmod(name, 0o666 & ~atomic.umask())
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
    way_out = START_OVER
    if not path.is_file():
        raise Refused(f"checkpoint {path} is missing", way_out)
    try:
        with safe_open(str(path), framework="pt") as file:
            header = (file.metadata() or {}).get(_HEADER_KEY)
            document = _parse_header(header)
            if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
                raise Refused(f"{path} is not a funnelcli checkpoint", way_out)
            version = document.get("format_version")
            if isinstance(version, bool) or version != CHECKPOINT_VERSION:
                shown = version if isinstance(version, int) and abs(version) < 10**9 else "?"
                raise UserError(
                    f"checkpoint {path} has format version {shown}; this funnelcli resumes version "
                    f"{CHECKPOINT_VERSION}: resume with the funnelcli version that wrote it, or start over with "
                    "--force (without --resume)"
                )
            if document.get("header_sha256") != _header_sha256(document):
                raise Refused(
                    f"{damaged} (its header was edited: the document does not match its recorded SHA-256)", way_out
                )
            _check_checkpoint_header(path, document, way_out)
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as error:
        if isinstance(error, UserError):
            raise
        raise Refused(f"{damaged} (not a safetensors file: {reason(error)})", way_out) from None
    if document.get("tensors_sha256") != _tensors_sha256(tensors):
        raise Refused(f"{damaged} (its tensors do not match their checksum)", way_out)
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
        raise Refused(f"checkpoint {path} is damaged (header field {problem})", way_out)


def _header_document(path: str | Path) -> Any:
    """A checkpoint file's JSON header document, its tensors unread; None for a file that is not one."""
    try:
        with safe_open(str(path), framework="pt") as file:
            return _parse_header((file.metadata() or {}).get(_HEADER_KEY))
    except Exception:  # a damaged or foreign file is simply not one of ours
        return None


def checkpoint_header(path: str | Path) -> dict[str, Any] | None:
    """A checkpoint's header document as it was written (its own checksum holds), tensors unread; else None."""
    document = _header_document(path)
    if not isinstance(document, dict) or document.get("header_sha256") != _header_sha256(document):
        return None
    return document


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


def _header_sha256(document: dict[str, Any]) -> str:
    """The SHA-256 of a checkpoint header's canonical JSON, less the field that records it."""
    body = {key: value for key, value in document.items() if key != "header_sha256"}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


def _tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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
