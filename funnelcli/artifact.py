"""The model folder: ``model.safetensors`` (weights), ``model.json`` (everything else), ``metrics.jsonl``.

Loading reads JSON and safetensors only: nothing in a model folder can run code. The folder is written
beside its target and renamed into place, so an interrupted save never leaves half a model, and an existing
model is only replaced once the new one is complete.
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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from funnelcli.errors import UserError

FORMAT = "funnelcli-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
METADATA = "model.json"
METRICS = "metrics.jsonl"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_writable(folder: Path, *, overwrite: bool) -> None:
    """Refuse early (before hours of training) to replace a model without ``overwrite``."""
    folder = Path(folder)
    if folder.exists() and not overwrite:
        what = "a model" if (folder / METADATA).exists() else "files"
        raise UserError(f"{folder} already holds {what}; pass --force to replace it or choose another --out")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a model folder; choose another --out")


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
    """
    folder = Path(folder)
    check_writable(folder, overwrite=overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        weights = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in tensors.items()}
        save_file(weights, str(staging / WEIGHTS))
        document = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
        document["weights_sha256"] = sha256(staging / WEIGHTS)
        (staging / METADATA).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        with open(staging / METRICS, "w", encoding="utf-8") as handle:
            for record in metrics:
                handle.write(json.dumps(record) + "\n")
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
    """(weights, metadata) of a model folder. Weights are checked against the recorded SHA-256."""
    folder = Path(folder)
    metadata = read_metadata(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise UserError(f"{folder}: {WEIGHTS} is missing; the model folder is incomplete, retrain it")
    if sha256(weights) != metadata.get("weights_sha256"):
        raise UserError(f"{weights} does not match the checksum in {METADATA}: the file was altered or truncated")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"{weights} is not a valid safetensors file ({error}); retrain the model") from None
    return tensors, metadata


def read_metrics(folder: str | Path) -> list[dict]:
    path = Path(folder) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
