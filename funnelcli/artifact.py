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
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save, save_file

from funnelcli.checksum import sha256
from funnelcli.errors import UserError

FORMAT = "funnelcli-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
METADATA = "model.json"
METRICS = "metrics.jsonl"

CHECKPOINTS = "checkpoints"
LATEST = "latest.safetensors"
BEST = "best.safetensors"
CHECKPOINT_FORMAT = "funnelcli-checkpoint"
CHECKPOINT_VERSION = 1
_HEADER_KEY = "funnelcli"


# -- the model folder ------------------------------------------------------------------------------------------


def check_writable(folder: Path, *, overwrite: bool, resume: bool = False) -> None:
    """Refuse early (before hours of training) an output folder that this run may not write.

    A folder that holds the checkpoints of an unfinished run is continued with ``resume`` or replaced with
    ``overwrite``; a folder with a finished model (or other files) is replaced only with ``overwrite``.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a model folder; choose another --out")
    latest = folder / CHECKPOINTS / LATEST
    if resume:
        if not latest.is_file():
            raise UserError(f"{folder} holds no checkpoint to resume ({latest} is missing); run without --resume")
        if (folder / METADATA).exists() and not overwrite:
            raise UserError(f"{folder} already holds a model; pass --force to replace it when the resumed run ends")
        return
    if not folder.exists() or overwrite:
        return
    if latest.is_file():
        raise UserError(
            f"{folder} holds the checkpoints of an unfinished run{_progress_of(latest)}; pass --resume to continue "
            "it, or --force to start over"
        )
    what = "a model" if (folder / METADATA).exists() else "files"
    raise UserError(f"{folder} already holds {what}; pass --force to replace it or choose another --out")


def holds_only_checkpoints(folder: str | Path) -> bool:
    """Whether ``folder`` holds nothing but the ``checkpoints/`` of a run, which that run's model replaces."""
    folder = Path(folder)
    return folder.is_dir() and {entry.name for entry in folder.iterdir()} == {CHECKPOINTS}


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
        save_file(weights, str(staging / WEIGHTS))
        document = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
        document["weights_sha256"] = sha256(staging / WEIGHTS)
        (staging / METADATA).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        with open(staging / METRICS, "w", encoding="utf-8") as handle:
            for record in metrics:
                handle.write(json.dumps(record) + "\n")
        # mkdtemp makes the folder private; a model folder is meant to be shared like any folder the user makes
        os.chmod(staging, 0o777 & ~_umask())
        if folder.exists():
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
    """``model.json`` of a model folder, checked for format and version."""
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
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise UserError(f"{path} is not a funnelcli model description; pass a folder from `funnel train`")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{path} has format version {metadata.get('format_version')!r}; this funnelcli reads version "
            f"{FORMAT_VERSION}: use the funnelcli version that wrote it, or retrain"
        )
    return metadata


def read_folder(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(weights, metadata) of a model folder.

    The weights must match the SHA-256 recorded in ``model.json``, parse as safetensors and be finite; any
    other file in the folder (a ``.pt`` or ``.pkl`` someone put there) is never opened.
    """
    folder = Path(folder)
    metadata = read_metadata(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise UserError(f"{folder}: {WEIGHTS} is missing; the model folder is incomplete, retrain it")
    if not isinstance(metadata.get("weights_sha256"), str):
        raise UserError(f"{folder / METADATA} records no weights_sha256; the model folder is damaged, retrain it")
    if sha256(weights) != metadata["weights_sha256"]:
        raise UserError(
            f"{weights} does not match the checksum in {METADATA}: the file was altered, truncated or replaced; "
            "use the folder as `funnel train` wrote it, or retrain"
        )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"{weights} is not a valid safetensors file ({error}); retrain the model") from None
    bad = _non_finite(tensors)
    if bad:
        raise UserError(f"{weights}: weight {bad!r} holds NaN or infinite values; retrain the model")
    return tensors, metadata


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

    The header also records the format, its version and a SHA-256 of the tensors. The bytes reach the disk
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

    Raises UserError for a missing, truncated, altered or foreign file, or another format version.
    """
    path = Path(path)
    damaged = f"checkpoint {path} is damaged"
    way_out = "start over with --force (without --resume)"
    if not path.is_file():
        raise UserError(f"checkpoint {path} is missing; {way_out}")
    try:
        with safe_open(str(path), framework="pt") as file:
            header = (file.metadata() or {}).get(_HEADER_KEY)
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as error:
        reason = " ".join(str(error).split())[:120]
        raise UserError(f"{damaged} (not a safetensors file: {reason}); {way_out}") from None
    try:
        document = json.loads(header) if header is not None else None
    except json.JSONDecodeError:
        document = None
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a funnelcli checkpoint; {way_out}")
    if document.get("format_version") != CHECKPOINT_VERSION:
        raise UserError(
            f"checkpoint {path} has format version {document.get('format_version')!r}; this funnelcli resumes "
            f"version {CHECKPOINT_VERSION}: resume with the funnelcli version that wrote it, or {way_out}"
        )
    if document.get("tensors_sha256") != _tensors_sha256(tensors):
        raise UserError(f"{damaged} (its tensors do not match their checksum); {way_out}")
    return tensors, document


def _progress_of(latest: Path) -> str:
    """`` (step S of N)`` from a checkpoint's header, or nothing when it cannot be read."""
    try:
        with safe_open(str(latest), framework="pt") as file:
            document = json.loads((file.metadata() or {}).get(_HEADER_KEY, "{}"))
        return f" (step {int(document['step'])} of {int(document['steps'])})"
    except Exception:  # only a nicety for a message: a damaged checkpoint is reported when it is resumed
        return ""


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
