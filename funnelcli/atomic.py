"""Writing a file or a folder so that it appears whole or not at all, with the modes of anything the user makes.

Each is made beside its target under a hidden name and renamed into place, so a reader never sees half of it
and a failure (a full disk, Ctrl-C) leaves the target as it was. What an output may replace, and when, is
:mod:`funnelcli.outputs`' decision; this module only does the writing.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

__all__ = ["atomic_path", "replace_folder", "staged_folder", "umask"]


def umask() -> int:
    """The process's umask."""
    # It can only be read by setting it; it is put back at once
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back (where the platform can) until the block ends.

    Python runs a signal's handler between two bytecodes, so an interrupt could land after a temporary file
    exists but before its name is known to the code that removes it; held back, it lands just after."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:
        yield
        return
    previous = mask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, previous)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on any error remove it.

    The temporary file is hidden (``.<name>.<random>.tmp``) and in the same directory, so the final rename
    is atomic and a reader never sees a partial file. Missing parent directories are created. The result
    keeps the mode of the file it replaces, or gets the usual mode for new files (0666 less the umask).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = None
    try:
        with _interrupts_held():
            handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            temporary = Path(name)
        os.close(handle)
        yield temporary
        # mkstemp creates the file private (0600); an output file should be as readable as any other
        os.chmod(temporary, _mode_for(target))
        os.replace(temporary, target)
    except BaseException:
        if temporary is not None:
            with suppress(FileNotFoundError):
                temporary.unlink()
        raise


def _mode_for(target: Path) -> int:
    """The permission bits for ``target``: those of the file it replaces, else 0666 less the umask."""
    with suppress(FileNotFoundError):
        return stat.S_IMODE(target.stat().st_mode)
    return 0o666 & ~umask()


@contextmanager
def staged_folder(target: Path, *, check: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield a new hidden folder beside ``target`` to fill; on success put it in ``target``'s place.

    The folder gets the mode of a folder the user makes (0777 less the umask) and replaces ``target`` as
    :func:`replace_folder` does, ``check`` included. On any failure, the staged folder is removed and the
    error raised: ``target`` is as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = None
    try:
        with _interrupts_held():
            staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        yield staging
        # mkdtemp makes the folder private; an output folder is as readable as any folder the user makes
        os.chmod(staging, 0o777 & ~umask())
        replace_folder(staging, target, check=check)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def temporary_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A new private folder in ``parent``, removed with all it holds when the block ends, however it ends (an
    interrupt just as it is made included)."""
    folder = None
    try:
        with _interrupts_held():
            folder = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
        yield folder
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def replace_folder(staging: Path, target: Path, *, check: Callable[[], None] | None = None) -> None:
    """Rename the folder ``staging`` to ``target``, which it replaces whole if it exists.

    ``check`` runs just before an existing ``target`` is touched, and may raise to keep it: the caller's
    rule on what may be replaced, checked again because another process may have changed ``target`` since.
    The old ``target`` is moved aside (in the same folder, so the rename is atomic) and deleted only once
    ``staging`` is in its place; if that last rename fails, it is put back.
    """
    if not target.exists():
        os.replace(staging, target)
        return
    if check is not None:
        check()
    retired = None
    try:
        with _interrupts_held():
            retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, retired / target.name)
    except BaseException:
        if retired is not None:
            retired.rmdir()
        raise
    try:
        os.replace(staging, target)
    except BaseException:
        # Should the old folder fail to go back, it stays in ``retired`` rather than being deleted with it
        os.replace(retired / target.name, target)
        retired.rmdir()
        raise
    shutil.rmtree(retired, ignore_errors=True)
