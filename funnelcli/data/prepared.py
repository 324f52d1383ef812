"""Prepared data folders (``funnel data prepare``): train, validation and test splits with a manifest."""

from __future__ import annotations

import json
from pathlib import Path

from funnelcli.errors import Refused

SPLITS = ("train", "validation", "test")
MANIFEST = "manifest.json"
#: The manifest's ``format``; manifests written before it existed are recognised by their ``preprocessing`` record.
FORMAT = "funnelcli-prepared"


def is_manifest(path: str | Path) -> bool:
    """Whether ``path`` is the manifest of a folder that ``funnel data prepare`` wrote."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    if not isinstance(document, dict):
        return False
    return document.get("format") == FORMAT or ("preprocessing" in document and "splits" in document)


def is_prepared(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``funnel data prepare``."""
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def split_file(path: str | Path, split: str) -> Path:
    """The file of one split of a prepared folder, or ``path`` itself when it is not a prepared folder."""
    path = Path(path)
    if not is_prepared(path):
        return path
    file = path / f"{split}.parquet"
    if not file.is_file():
        raise Refused(f"{path} is a prepared data folder without {file.name}", "prepare it again with {overwrite=True}")
    return file
