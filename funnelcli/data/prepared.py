"""Prepared data folders (``funnel data prepare``): train, validation and test splits with a manifest."""

from __future__ import annotations

from pathlib import Path

from funnelcli.errors import UserError

SPLITS = ("train", "validation", "test")


def is_prepared(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``funnel data prepare``."""
    return Path(path).is_dir() and (Path(path) / "manifest.json").is_file()


def split_file(path: str | Path, split: str) -> Path:
    """The file of one split of a prepared folder, or ``path`` itself when it is not a prepared folder."""
    path = Path(path)
    if not is_prepared(path):
        return path
    file = path / f"{split}.parquet"
    if not file.is_file():
        raise UserError(f"{path} is a prepared data folder without {file.name}; prepare it again with --force")
    return file
