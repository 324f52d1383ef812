"""Where a command may write, and what it may replace: funnelcli removes only what it wrote.

The one deletion rule (README, "Nothing lost, nothing run"):

- An output folder is new, empty, or a folder that funnelcli wrote, of the kind the command writes: a model
  folder, a report folder or a prepared data folder, recognised by its own marker file and holding nothing but
  that kind's files. Such a folder is replaced only with ``overwrite`` (``--force``); a folder holding anything
  else is refused, with or without it, naming the first foreign entry.
- An output file is new, or a regular file that is replaced only with ``overwrite``.
- An output may never be, contain, or lie inside an input of the same command.
- An output's path is checked before any work: its nearest existing parent must be a folder, and neither it
  nor a parent on the way may be a dangling symbolic link.

Every check raises :class:`~funnelcli.errors.UserError` with one line that names the path and the way out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from funnelcli.errors import UserError

__all__ = [
    "MODEL",
    "PREPARED",
    "REPORT",
    "FolderKind",
    "check_disjoint",
    "check_output_file",
    "check_output_folder",
    "check_parents",
    "foreign_entry",
    "is_kind",
]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class FolderKind:
    """A kind of folder funnelcli writes: the names it may hold, and how to tell one that funnelcli wrote.

    ``files`` are the names at its top, ``folders`` its sub-folders with the names each may hold. Hidden
    ``.NAME.*.tmp`` files of those names (left by a write that a power cut stopped) count as its own too.
    ``unmarked`` gives the file of a folder holding only such names that lacks funnelcli's marker (the folder
    itself when the marker file is missing), or None when the folder really is one of funnelcli's.
    ``children`` names the kind of a sub-folder by its name (a sweep's ``latent-3`` is a model folder), or
    None for a name that is not its own; such a sub-folder must itself be a folder of that kind.
    """

    what: str
    files: frozenset[str]
    folders: dict[str, frozenset[str]]
    unmarked: Callable[[Path], Path | None]
    children: Callable[[str], FolderKind | None] | None = None

    def owns(self, entry: Path, sub: str | None = None) -> bool:
        names = self.files if sub is None else self.folders[sub]
        name = entry.name
        if name.startswith(".") and name.endswith(".tmp"):
            name = name[1:].split(".tmp", 1)[0].rsplit(".", 1)[0]  # ".best.safetensors.abc123.tmp" -> best...
        if entry.is_symlink():
            return False
        if sub is None and entry.name in self.folders:
            return entry.is_dir()
        return name in names and entry.is_file()


def _json_has(path: Path, key: str, value: str) -> bool:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(document, dict) and document.get(key) == value


def _unmarked_model(folder: Path) -> Path | None:
    from funnelcli.artifact import CHECKPOINTS, FORMAT, METADATA, is_checkpoint

    if (folder / METADATA).is_file():
        return None if _json_has(folder / METADATA, "format", FORMAT) else folder / METADATA
    # Only the checkpoints of an unfinished run (or none: a diverged run takes its own away)
    checkpoints = folder / CHECKPOINTS
    if not checkpoints.is_dir():
        return folder
    files = sorted(path for path in checkpoints.iterdir() if not path.name.startswith("."))
    return next((path for path in files if not is_checkpoint(path)), None)


def _unmarked_report(folder: Path) -> Path | None:
    from funnelcli.evaluation.report import INDEX, is_report_page

    return None if is_report_page(folder / INDEX) else folder / INDEX


def _unmarked_prepared(folder: Path) -> Path | None:
    from funnelcli.data.prepared import MANIFEST, is_manifest

    return None if is_manifest(folder / MANIFEST) else folder / MANIFEST


MODEL = FolderKind(
    "model folder",
    frozenset({"model.safetensors", "model.json", "metrics.jsonl"}),
    {"checkpoints": frozenset({"latest.safetensors", "best.safetensors"})},
    _unmarked_model,
)
REPORT = FolderKind(
    "report folder",
    frozenset(
        {"index.html", "training.png", "columns.png", "corner.png", "latent.png", "temperatures.png"}
        | {"ood_log_prob.png", "roc.png"}
        | {"image_samples.png", "reconstructions.png"}  # a model with an image shape
    ),
    {},
    _unmarked_report,
)
PREPARED = FolderKind(
    "prepared data folder",
    frozenset({"manifest.json", "train.parquet", "validation.parquet", "test.parquet"}),
    {},
    _unmarked_prepared,
)


def foreign_entry(folder: PathLike, kind: FolderKind) -> Path | None:
    """The first entry of ``folder`` (in name order) that is not one of ``kind``'s own files, or None."""
    folder = Path(folder)
    for entry in sorted(folder.iterdir()):
        child = kind.children(entry.name) if kind.children is not None else None
        if child is not None and entry.is_dir() and not entry.is_symlink():
            inner = foreign_entry(entry, child) or child.unmarked(entry)
            if inner is not None:
                return inner
            continue
        if not kind.owns(entry):
            return entry
        if entry.name in kind.folders:
            for inner in sorted(entry.iterdir()):
                if not kind.owns(inner, entry.name):
                    return inner
    return None


def is_kind(folder: PathLike, kind: FolderKind) -> bool:
    """Whether ``folder`` is a folder that funnelcli wrote, of ``kind``, holding nothing else."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return False
    return foreign_entry(folder, kind) is None and kind.unmarked(folder) is None


def check_output_folder(
    folder: PathLike, kind: FolderKind, *, overwrite: bool, inputs: Iterable[PathLike] = (), flag: str = "--output"
) -> None:
    """Refuse, before any work, an output folder that this command may not write or replace.

    A new or empty folder is fine; one of ``kind`` that funnelcli wrote is replaced only with ``overwrite``;
    anything else is refused whatever ``overwrite`` says.
    """
    folder = Path(folder)
    check_parents(folder, flag=flag)
    check_disjoint(folder, inputs, flag=flag)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise UserError(f"{folder} is a file, not a {kind.what}; choose another {flag}")
    if not any(folder.iterdir()):
        return
    foreign = foreign_entry(folder, kind)
    if foreign is None:
        foreign = kind.unmarked(folder)
    if foreign is not None:
        raise UserError(
            f"{folder} holds {_describe(foreign, folder)}, which funnelcli did not write, so it is not a "
            f"{kind.what} that can be replaced (funnelcli removes only what it wrote, even with --force); "
            f"choose another {flag}, an empty folder or a new one"
        )
    if not overwrite:
        raise UserError(f"{folder} already holds a {kind.what}; pass --force to replace it or choose another {flag}")


def check_output_file(path: PathLike, *, inputs: Iterable[PathLike] = (), flag: str = "--output") -> None:
    """Refuse, before any work, an output file whose path cannot be written or is an input of the command.

    (Whether an existing file may be replaced, ``--force``, is the writer's check.)
    """
    path = Path(path)
    check_parents(path, flag=flag)
    check_disjoint(path, inputs, flag=flag)
    if path.exists() and not path.is_file() and not path.is_dir():
        raise UserError(f"{path} is not a regular file (a FIFO, device or socket); choose another {flag}")


def check_parents(path: PathLike, *, flag: str) -> None:
    """The output itself and the first existing folder above it must be usable: no dangling symbolic link
    on the way, and no file where a folder must be."""
    path = Path(path)
    if path.is_symlink():
        target = os.readlink(path)
        state = "a dangling symbolic link" if not path.exists() else "a symbolic link"
        raise UserError(f"{path} is {state} (to {target}); give {flag} a real path")
    for parent in path.absolute().parents:
        if parent.is_symlink() and not parent.exists():
            raise UserError(f"{path}: {parent} is a dangling symbolic link; give {flag} a path under a real folder")
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{path}: {parent} is a file, not a folder; choose another {flag}")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"{path}: the folder {parent} is not writable; choose another {flag}")
            return


def check_disjoint(output: PathLike, inputs: Iterable[PathLike], *, flag: str) -> None:
    """Refuse an output that is, contains or lies inside one of the command's ``inputs``."""
    shown = Path(output)
    target = _real(shown)
    for given in inputs:
        if given is None:
            continue
        source = _real(Path(given))
        if target == source:
            relation = "is"
        elif source in target.parents:
            relation = "lies inside"
        elif target in source.parents:
            relation = "contains"
        else:
            continue
        raise UserError(f"{flag} {shown} {relation} the input {given}; write the output somewhere else")


def _real(path: Path) -> Path:
    """``path`` with every symbolic link and ``..`` resolved, whether or not it exists."""
    return Path(os.path.realpath(path))


def _describe(entry: Path, folder: Path) -> str:
    if entry == folder:
        return "files without funnelcli's marker"
    if entry.is_dir() and not entry.is_symlink():
        return f"the folder {entry.relative_to(folder)!s}"
    # A name funnelcli uses, but content without its marker
    unmarked = (
        " (without funnelcli's marker)"
        if entry.name in {"model.json", "index.html", "manifest.json"} or (entry.suffix == ".safetensors")
        else ""
    )
    return f"the file {entry.relative_to(folder)!s}{unmarked}"
