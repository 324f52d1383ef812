"""The MAF benchmark tables: POWER, GAS, HEPMASS, MINIBOONE and BSDS300, preprocessed as the MAF paper did.

Papamakarios, Pavlakou & Murray (2017), "Masked Autoregressive Flow for Density Estimation", published the
raw files in one archive (Zenodo record 1161203, ``data.tar.gz``) together with the code that turns them into
train, validation and test sets. Every later paper (NSF, the funnels paper) reports log-likelihoods on exactly
those sets, so :func:`prepare` reproduces that code's steps, seeds, random draws and statistics (numpy's
population std where it used numpy, pandas' sample std where it used pandas) and writes the three sets as
Parquet tables with a ``manifest.json`` that records how they were made.

"Split" means: with N rows, test = the last int(0.1 N) rows; of the N_rest = N - N_test rows before them,
validation = the last int(0.1 N_rest); train = the remainder. Nothing is shuffled except POWER's rows.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from funnelcli import atomic
from funnelcli._version import __version__
from funnelcli.checksum import sha256
from funnelcli.data import prepared
from funnelcli.data.hdf5 import OutsideTheFile, local
from funnelcli.data.safe_pickle import ForbiddenGlobal, NotATable, load_dataframe
from funnelcli.data.tables import not_a_regular_file
from funnelcli.errors import UserError

log = logging.getLogger("funnelcli")

__all__ = ["ARCHIVE", "DATASETS", "SPLITS", "Dataset", "prepare", "resolve_raw", "split_sizes"]

ARCHIVE = "the MAF data archive, Zenodo record 1161203 (https://zenodo.org/record/1161203, file data.tar.gz)"
SPLITS = ("train", "validation", "test")
MANIFEST = "manifest.json"
PREPROCESSING = "MAF (Papamakarios et al. 2017)"

_POWER_SEED = 42
# POWER's raw columns: global active power, global reactive power, voltage, global intensity, sub-metering
# 1-3, time. The MAF code deletes column 3, then column 1 (both are nearly functions of the others).
_POWER_WIDTH = 8
_POWER_REMOVED = [3, 1]
_POWER_KEPT = [0, 2, 4, 5, 6, 7]
_GAS_DROPPED = ["Meth", "Eth", "Time"]  # concentrations and time stamps, not sensor readings
_GAS_CORRELATION = 0.98
_HEPMASS_REPEATS = 5  # a column whose smallest value occurs more often than this is (partly) discrete
_NPY_MAGIC = b"\x93NUMPY"
_ROW_GROUP = 1 << 17  # rows per Parquet row group: bounds the extra memory of writing to a few MB per column
# The "kind" of each normalisation, as the manifest states it
_TRAIN_VALIDATION = "standardise with the mean and population std (numpy, ddof 0) of train and validation together"
_WHOLE_TABLE = "standardise with the mean and sample std (pandas, ddof 1) of the whole cleaned table, before splitting"
_TRAIN_SAMPLE = "standardise with the mean and sample std (pandas, ddof 1) of the train file's label-1 rows"


@dataclass(frozen=True)
class Dataset:
    """One MAF data set: the raw files it needs, as laid out in the archive, and its dimension after preprocessing.

    ``files`` are relative to the archive's root (``power/data.npy``); their first part is the data set's folder.
    """

    name: str
    files: tuple[str, ...]
    dims: int

    @property
    def folder(self) -> str:
        return self.files[0].split("/")[0]

    @property
    def basenames(self) -> tuple[str, ...]:
        return tuple(file.split("/")[-1] for file in self.files)

    def needs(self) -> str:
        """The raw files in words, for messages: "hepmass/1000_train.csv and hepmass/1000_test.csv"."""
        return " and ".join(self.files)


DATASETS: dict[str, Dataset] = {
    "power": Dataset("power", ("power/data.npy",), 6),
    "gas": Dataset("gas", ("gas/ethylene_CO.pickle",), 8),
    "hepmass": Dataset("hepmass", ("hepmass/1000_train.csv", "hepmass/1000_test.csv"), 21),
    "miniboone": Dataset("miniboone", ("miniboone/data.npy",), 43),
    "bsds300": Dataset("bsds300", ("BSDS300/BSDS300.hdf5",), 63),
}


@dataclass
class _Recipe:
    """What a data set's preprocessing did, for the manifest.

    ``removed`` and ``kept`` name raw columns (names for tables, 0-based indices for arrays); ``kept[j]`` is the
    raw column behind output column x{j}. ``normalisation`` is None when the data are used as they are.
    """

    removed: list[Any]
    kept: list[Any]
    normalisation: dict[str, Any] | None
    seed: int | None = None


# ------------------------------------------------------------------------------------------------- prepare


def prepare(
    name: str,
    raw: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    trust_pickle: bool = False,
) -> dict:
    """Preprocess one MAF data set from its raw file(s) in ``raw`` into the folder ``out``; return the manifest.

    ``out`` receives ``train.parquet``, ``validation.parquet`` and ``test.parquet`` (float64 columns x0 ..
    x{D-1}, no index) and ``manifest.json``. It is built in a hidden folder beside ``out`` and renamed into
    place, so it appears complete or not at all; an existing ``out`` is replaced only with ``overwrite``, and
    is left as it was when preparing fails. The same input always gives byte-identical files.

    GAS's raw file is a pandas pickle; it is read without running any code it names (see
    :func:`_read_gas_pickle`). ``trust_pickle`` lets pandas unpickle it instead when that safe reader refuses
    it, with a warning: only for the archive's own file, since unpickling a file can run any code.

    Raises UserError for an unknown name, an existing ``out`` without ``overwrite``, missing raw files (naming
    the ones expected), raw files that are not regular files (a FIFO, a device, a file under /proc), cannot be
    read or are not shaped like the archive's, and a GAS pickle that names a global a table does not need.
    """
    dataset = _dataset(name)
    target = Path(out)
    files = resolve_raw(name, raw)
    # The raw files and the folders that hold them (data/power, not the archive's root): never written to
    _check_out(target, overwrite=overwrite, inputs=(*files, *{file.parent for file in files}))
    with _staged_folder(target, overwrite=overwrite) as staging:
        writer = _SplitWriter(staging, files[0])
        preprocess = partial(_gas, trust_pickle=trust_pickle) if dataset.name == "gas" else _PREPROCESS[dataset.name]
        recipe = preprocess(files, writer)
        manifest = _manifest(dataset, files, recipe, writer.shapes)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return manifest


def _dataset(name: str) -> Dataset:
    """The data set called ``name`` (any case), or a UserError listing the five."""
    dataset = DATASETS.get(str(name).lower())
    if dataset is None:
        raise UserError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return dataset


def _check_out(out: Path, *, overwrite: bool, inputs: tuple[str | os.PathLike[str], ...] = ()) -> None:
    """Refuse, before any work, an output that may not be written: a file, an earlier prepared folder without
    ``overwrite``, a folder holding anything else (even with ``overwrite``), or one that is, holds or lies
    inside the raw input."""
    from funnelcli import outputs

    outputs.check_output_folder(out, outputs.PREPARED, overwrite=overwrite, inputs=inputs, flag="-o/--output")


def _manifest(dataset: Dataset, files: list[Path], recipe: _Recipe, shapes: dict[str, tuple[int, int]]) -> dict:
    """The manifest: where the data came from (with checksums), what was done, and what came out."""
    return {
        "format": prepared.FORMAT,
        "dataset": dataset.name,
        "source": [
            {"path": os.path.abspath(path), "sha256": sha256(path), "bytes": path.stat().st_size} for path in files
        ],
        "seed": recipe.seed,
        "splits": {split: {"rows": rows, "dims": dims} for split, (rows, dims) in shapes.items()},
        "removed_columns": [_json_name(column) for column in recipe.removed],
        "kept_columns": [_json_name(column) for column in recipe.kept],
        "normalisation": recipe.normalisation,
        "preprocessing": PREPROCESSING,
        "funnelcli_version": __version__,
    }


# ------------------------------------------------------------------------------------------- raw files


def resolve_raw(name: str, raw: str | os.PathLike[str]) -> list[Path]:
    """The raw file(s) of data set ``name``, in the order of ``DATASETS[name].files``.

    ``raw`` may be the raw file itself (for HEPMASS either CSV, the other is looked for beside it), the data
    set's folder (``.../power``), or the archive's root (holding ``power/data.npy``), or the folder it was
    extracted into (holding ``data/power/data.npy``). Raises UserError naming the file(s) expected.
    """
    dataset = _dataset(name)
    path = Path(raw)
    if path.exists() and not path.is_dir():
        problem = not_a_regular_file(path)
        if problem is not None:
            raise UserError(f"{path}{problem}")
    if path.is_file():
        return _files_beside(dataset, path)
    if path.is_dir():
        return _files_under(dataset, path)
    raise UserError(f"{path}: no such file or folder; {dataset.name} needs {dataset.needs()} from {ARCHIVE}")


def _files_beside(dataset: Dataset, path: Path) -> list[Path]:
    """The raw files given one of them: itself for one-file sets; for HEPMASS, both CSVs in its folder."""
    if len(dataset.files) == 1:
        return [path]
    if path.name not in dataset.basenames:
        raise UserError(
            f"{path} is not one of {dataset.needs()}; pass the folder holding {' and '.join(dataset.basenames)}"
        )
    return _complete(dataset, path.parent)


def _files_under(dataset: Dataset, folder: Path) -> list[Path]:
    """The raw files in the data set's folder, the archive's root, or the folder the archive was extracted to."""
    for base in (folder, folder / dataset.folder, folder / "data" / dataset.folder):
        if any((base / name).exists() for name in dataset.basenames):
            return _complete(dataset, base)
    expected = " or ".join(
        f"{folder / name} ({where})"
        for name, where in ((dataset.basenames[0], "the data set's folder"), (dataset.files[0], "the archive's root"))
    )
    raise UserError(f"{folder}: no {dataset.needs()} found; expected {expected}; {dataset.name} comes from {ARCHIVE}")


def _complete(dataset: Dataset, base: Path) -> list[Path]:
    """All of the data set's files in ``base``, or a UserError naming the ones missing there."""
    files = [base / name for name in dataset.basenames]
    missing = [str(path) for path in files if not path.exists()]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise UserError(
            f"{' and '.join(missing)} {verb} missing; {dataset.name} needs both {' and '.join(dataset.basenames)} "
            f"in one folder, as {dataset.folder}/ of {ARCHIVE}"
        )
    for path in files:
        problem = not_a_regular_file(path)  # a FIFO would block the reader forever
        if problem is not None:
            raise UserError(f"{path}{problem}")
    return files


# ------------------------------------------------------------------------------------------ the five sets

# Called once per split, in the order train, validation, test, with that split's (N_split, D) array
_Writer = Callable[[str, np.ndarray], None]


def _power(files: list[Path], write: _Writer) -> _Recipe:
    """POWER (D = 6): UCI household electric power consumption, (N, 8) -> (N, 6).

    rng = RandomState(42); shuffle the rows with rng; delete raw columns 3 and 1; add noise drawn from rng in
    this order: voltage 0.01 U(0, 1) (N x 1), global active power 0.001 U(0, 1) (N x 1), sub-metering U(0, 1)
    (N x 3), time none (it already carries its noise), so that columns [gap, voltage, sm1-3, time] are
    dequantised; split; x <- (x - mean) / std with numpy's mean and population std of train and validation.
    """
    path = files[0]
    raw = _load_npy(path, "power/data.npy", _POWER_WIDTH)
    rng = np.random.RandomState(_POWER_SEED)
    # RandomState.shuffle draws the same numbers for any N rows, so shuffling row numbers and gathering once
    # orders the rows as shuffling the array in place would, with one copy and no Python loop over rows
    order = np.arange(len(raw))
    rng.shuffle(order)
    x = raw[np.ix_(order, _POWER_KEPT)].astype(np.float64, copy=False)
    del raw, order
    n = len(x)
    # The draw order (voltage, gap, sub-metering) is part of the benchmark: it fixes every noise value
    x[:, 1] += 0.01 * rng.rand(n, 1)[:, 0]
    x[:, 0] += 0.001 * rng.rand(n, 1)[:, 0]
    x[:, 2:5] += rng.rand(n, 3)
    n_train, n_validation, _ = split_sizes(n, path)
    normalisation = _standardise_in_place(x, x[: n_train + n_validation], _TRAIN_VALIDATION)
    _write_splits(write, x, n_train, n_validation)
    return _Recipe(_POWER_REMOVED, _POWER_KEPT, normalisation, seed=_POWER_SEED)


def _gas(files: list[Path], write: _Writer, *, trust_pickle: bool = False) -> _Recipe:
    """GAS (D = 8): a gas sensor array in ethylene and CO mixtures, (N, 19) -> (N, 8).

    Drop columns Meth, Eth, Time. Repeat: C = pandas' correlation matrix, B_i = #{j : C_ij > 0.98} (the
    diagonal counts); while some B_i > 1, drop the first such column and recompute. Then x <- (x - mean) / std
    with pandas' mean and sample std (ddof 1) of the whole cleaned table, before splitting; no shuffle; split.
    """
    path = files[0]
    frame = _read_gas_pickle(path, trust_pickle=trust_pickle)
    _require_columns(frame, path, _GAS_DROPPED)
    frame = frame.drop(columns=_GAS_DROPPED)
    _require_numeric(frame, path)
    removed: list[Any] = list(_GAS_DROPPED)
    while True:
        counts = (frame.corr() > _GAS_CORRELATION).to_numpy().sum(axis=1)
        over = np.flatnonzero(counts > 1)
        if over.size == 0:
            break
        # One at a time: dropping a column can leave its partners with no correlate left, and they stay
        removed.append(frame.columns[over[0]])
        frame = frame.drop(columns=frame.columns[over[0]])
    mean, std = frame.mean(), frame.std()
    x = ((frame - mean) / std).to_numpy(dtype=np.float64)
    normalisation = {"kind": _WHOLE_TABLE, "mean": mean.to_numpy().tolist(), "std": std.to_numpy().tolist()}
    kept = list(frame.columns)
    del frame
    n_train, n_validation, _ = split_sizes(len(x), path)
    _write_splits(write, x, n_train, n_validation)
    return _Recipe(removed, kept, normalisation)


def _hepmass(files: list[Path], write: _Writer) -> _Recipe:
    """HEPMASS (D = 21): the signal events of a particle-physics simulation at mass 1000.

    Read both CSVs; keep the rows whose first column (the label) is 1 and drop that column; from the test
    table also drop the last column (it has no counterpart in train). x <- (x - mean) / std for both, with
    pandas' mean and sample std (ddof 1) of the train rows. Drop every column whose smallest train value
    occurs more than 5 times (discrete features), from both. Validation = the last int(0.1 N_train) train
    rows; no shuffle.
    """
    train_path, test_path = files
    train = _read_hepmass_csv(train_path)
    test = _read_hepmass_csv(test_path)
    label = train.columns[0]
    train = _signal_rows(train, train_path).iloc[:, 1:]
    test = _signal_rows(test, test_path).iloc[:, 1:-1]
    if test.shape[1] != train.shape[1]:
        raise UserError(
            f"{test_path} has {test.shape[1] + 2} columns and {train_path} {train.shape[1] + 1}; the test file "
            "should have one more (a trailing column that is dropped); pass the archive's hepmass files"
        )
    # Columns pair up by position: the MAF code's pandas arithmetic pairs them by name, which is the same
    # thing for the archive's files (whose names agree) and would give all-NaN columns where names differ
    test.columns = train.columns
    mean, std = train.mean(), train.std()
    x_train = ((train - mean) / std).to_numpy(dtype=np.float64)
    x_test = ((test - mean) / std).to_numpy(dtype=np.float64)
    del train, test
    keep = _not_discrete(x_train, std.to_numpy())
    removed = [label, *mean.index[~keep]]
    kept = list(mean.index[keep])
    normalisation = {
        "kind": _TRAIN_SAMPLE,
        "mean": mean.to_numpy()[keep].tolist(),
        "std": std.to_numpy()[keep].tolist(),
    }
    n_validation = _validation_size(len(x_train), train_path)
    x_train = x_train[:, keep]
    write("train", x_train[:-n_validation])
    write("validation", x_train[-n_validation:])
    del x_train
    write("test", x_test[:, keep])
    return _Recipe(removed, kept, normalisation)


def _miniboone(files: list[Path], write: _Writer) -> _Recipe:
    """MINIBOONE (D = 43): particle identification events, already cleaned, (N, 43).

    No shuffle; split; x <- (x - mean) / std with numpy's mean and population std of train and validation.
    """
    path = files[0]
    dims = DATASETS["miniboone"].dims
    x = _load_npy(path, "miniboone/data.npy", dims).astype(np.float64, copy=False)
    n_train, n_validation, _ = split_sizes(len(x), path)
    normalisation = _standardise_in_place(x, x[: n_train + n_validation], _TRAIN_VALIDATION)
    _write_splits(write, x, n_train, n_validation)
    return _Recipe([], list(range(dims)), normalisation)


def _bsds300(files: list[Path], write: _Writer) -> _Recipe:
    """BSDS300 (D = 63): 8 x 8 patches of natural images with the last pixel removed, used as they are.

    The HDF5 file holds the datasets ``train``, ``validation`` and ``test``, each (N_split, 63).
    """
    path = files[0]
    dims = DATASETS["bsds300"].dims
    h5py = _import_h5py(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise _unreadable(path, "HDF5", error) from None
    with handle:
        try:
            # Resolved link by link: an external link or external storage could name a FIFO that blocks forever
            datasets = {split: local(handle, split) for split in SPLITS}
        except OutsideTheFile as outside:
            raise UserError(f"{path}: {outside}; pass the archive's BSDS300/BSDS300.hdf5") from None
        missing = [split for split in SPLITS if not isinstance(datasets[split], h5py.Dataset)]
        if missing:
            raise UserError(
                f"{path} has no dataset(s) {', '.join(missing)}; the archive's BSDS300/BSDS300.hdf5 holds "
                f"{', '.join(SPLITS)}"
            )
        # One split in memory at a time: train alone is 1,000,000 x 63 values
        for split in SPLITS:
            write(split, _bsds300_split(path, datasets[split], split, dims))
    return _Recipe([], list(range(dims)), None)


_PREPROCESS: dict[str, Callable[[list[Path], _Writer], _Recipe]] = {
    "power": _power,
    "gas": _gas,
    "hepmass": _hepmass,
    "miniboone": _miniboone,
    "bsds300": _bsds300,
}

# ------------------------------------------------------------------------------------ splits and statistics


def split_sizes(n: int, source: Path | str = "the data") -> tuple[int, int, int]:
    """(n_train, n_validation, n_test) of the MAF split of ``n`` rows: n_test = int(0.1 n), then
    n_validation = int(0.1 (n - n_test)), n_train the rest. Raises UserError when a part would be empty."""
    n_test = int(0.1 * n)
    n_validation = int(0.1 * (n - n_test))
    n_train = n - n_test - n_validation
    if min(n_train, n_validation, n_test) < 1:
        raise UserError(f"{source} has {n} rows; the MAF split needs at least 11 so that no part is empty")
    return n_train, n_validation, n_test


def _validation_size(n: int, source: Path) -> int:
    """int(0.1 n), the validation rows taken from the end of HEPMASS's train rows; refused when 0."""
    n_validation = int(0.1 * n)
    if n_validation < 1 or n_validation == n:
        raise UserError(f"{source} has {n} rows with label 1; the validation split needs at least 10")
    return n_validation


def _write_splits(write: _Writer, x: np.ndarray, n_train: int, n_validation: int) -> None:
    """Write the three consecutive blocks of ``x``: train, then validation, then test."""
    write("train", x[:n_train])
    write("validation", x[n_train : n_train + n_validation])
    write("test", x[n_train + n_validation :])


def _standardise_in_place(x: np.ndarray, fit: np.ndarray, kind: str) -> dict[str, Any]:
    """x <- (x - mean) / std with numpy's mean and population std of the rows ``fit`` (a view of ``x``).

    ``fit`` is the train and validation block, which lies in ``x`` exactly as the MAF code's
    ``np.vstack((train, validation))`` lays it out, so the statistics agree with it to the last bit.
    """
    mean = fit.mean(axis=0)
    std = fit.std(axis=0)
    x -= mean
    # A constant column divides by zero; the writer's finite check reports it as the user's file problem
    with np.errstate(divide="ignore", invalid="ignore"):
        x /= std
    return {"kind": kind, "mean": mean.tolist(), "std": std.tolist()}


def _not_discrete(x: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Mask of the columns of ``x`` (N, D) to keep: those whose smallest value occurs at most 5 times.

    A constant column (std 0) is dropped too: its smallest value is every value, although standardising
    has turned it into NaN, which equals nothing and so would otherwise be counted zero times.
    """
    smallest_count = (x == x.min(axis=0)).sum(axis=0)
    return (smallest_count <= _HEPMASS_REPEATS) & (std > 0)


# ------------------------------------------------------------------------------------------------- readers


def _load_npy(path: Path, archive_name: str, width: int) -> np.ndarray:
    """A 2-D numeric array of ``width`` columns from an ``.npy`` file (never unpickled)."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(_NPY_MAGIC))
        # Checked first: np.load would call any other file "pickled data" and suggest unpickling it
        if magic != _NPY_MAGIC:
            raise UserError(f"{path} is not a NumPy .npy file; pass the archive's {archive_name}")
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise _unreadable(path, "a NumPy .npy array", error) from None
    if not isinstance(array, np.ndarray):
        array.close()  # an .npz archive, not one array
        raise UserError(f"{path} is an .npz archive; pass the archive's {archive_name}, a single .npy array")
    if array.ndim != 2 or array.shape[1] != width or array.dtype.kind not in "biuf":
        raise UserError(
            f"{path} holds a {array.dtype} array of shape {array.shape}; the archive's {archive_name} is a "
            f"numeric array with {width} columns; pass that file"
        )
    return array


def _read_gas_pickle(path: Path, *, trust_pickle: bool = False) -> pd.DataFrame:
    """The GAS table, which the archive ships only as a pandas pickle.

    Unpickling a file with pickle's own loader can run any code the file names, so it is read with a
    restricted unpickler (:func:`funnelcli.data.safe_pickle.load_dataframe`): it knows the globals a pickled
    frame of numbers needs, under the module paths of every pandas since 0.14 and of Python 2, and refuses
    any other. With ``trust_pickle``, a file it refuses is unpickled by pandas instead, with a warning.
    """
    try:
        with open(path, "rb") as handle:
            frame = load_dataframe(handle)
    except (ForbiddenGlobal, NotATable) as refusal:
        if not trust_pickle:
            raise UserError(_pickle_refusal(path, refusal)) from None
        log.warning(
            "%s: %s; unpickling it with pandas anyway (--trust-pickle), which runs whatever code it names",
            path,
            refusal,
        )
        frame = _unpickle_trusted(path)
    except Exception as error:  # not a pickle at all: UnpicklingError, EOFError, ValueError, UnicodeDecodeError...
        raise _unreadable(path, "a pandas pickle", error) from None
    if not isinstance(frame, pd.DataFrame):
        raise UserError(
            f"{path} holds a {type(frame).__name__}, not a table; pass the archive's gas/ethylene_CO.pickle"
        )
    if not frame.columns.is_unique:
        raise UserError(f"{path} has duplicate column names; pass the archive's gas/ethylene_CO.pickle")
    return frame


def _pickle_refusal(path: Path, refusal: Exception) -> str:
    """Why a GAS pickle was not unpickled, and the way out if the user knows the file is the archive's own."""
    if isinstance(refusal, ForbiddenGlobal):
        what = (
            f"names the Python global {refusal.name}, which a pickled table of numbers does not need; funnelcli "
            "did not unpickle it, since unpickling can run any code the file names"
        )
    else:
        what = f"is not a pickled table of numbers ({refusal})"
    return (
        f"{path} {what}; pass the archive's gas/ethylene_CO.pickle, or, only if this is that file, "
        "--trust-pickle to let pandas unpickle it"
    )


def _unpickle_trusted(path: Path) -> Any:
    """The one place funnelcli lets pandas unpickle a file: GAS, with --trust-pickle, after the safe reader
    refused it."""
    try:
        return pd.read_pickle(path)
    except Exception as error:  # unpickling fails in many ways: UnpicklingError, ImportError, EOFError...
        raise _unreadable(path, "a pandas pickle", error) from None


def _read_hepmass_csv(path: Path) -> pd.DataFrame:
    """One HEPMASS CSV, all columns numeric, the first being the label."""
    try:
        frame = pd.read_csv(path, index_col=False)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path} is empty; pass the archive's hepmass/{path.name}") from None
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise _unreadable(path, "CSV", error) from None
    if frame.shape[1] < 3:
        raise UserError(f"{path} has {frame.shape[1]} column(s); a HEPMASS file has a label and the features")
    _require_numeric(frame, path)
    return frame


def _signal_rows(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The rows whose label (first column) is 1: the signal events, the only ones the benchmark models."""
    signal = frame[frame.iloc[:, 0] == 1]
    if signal.empty:
        raise UserError(f"{path}: no row has label 1 in its first column {frame.columns[0]!r}; pass the archive's file")
    return signal


def _bsds300_split(path: Path, dataset: Any, split: str, dims: int) -> np.ndarray:
    """One BSDS300 split as a float64 (N, 63) array."""
    if dataset.ndim != 2 or dataset.shape[1] != dims or dataset.dtype.kind not in "biuf":
        raise UserError(
            f"{path}: dataset {split!r} holds {dataset.dtype} of shape {dataset.shape}; the archive's has {dims} "
            "numeric columns; pass the archive's BSDS300/BSDS300.hdf5"
        )
    try:
        return dataset[()].astype(np.float64, copy=False)
    except OSError as error:
        raise _unreadable(path, "HDF5", error) from None


def _import_h5py(path: Path) -> Any:
    """h5py, or a UserError saying how to install it."""
    try:
        import h5py
    except ImportError:
        raise UserError(f"{path}: reading HDF5 files needs h5py; pip install 'funnelcli[hdf5]'") from None
    return h5py


def _require_columns(frame: pd.DataFrame, path: Path, names: list[str]) -> None:
    """Refuse a table without the named columns."""
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise UserError(f"{path} has no column(s) {', '.join(missing)}; pass the archive's gas/ethylene_CO.pickle")


def _require_numeric(frame: pd.DataFrame, path: Path) -> None:
    """Refuse a table with non-numeric columns, naming them."""
    bad = [str(name) for name, dtype in frame.dtypes.items() if not pd.api.types.is_numeric_dtype(dtype)]
    if bad:
        raise UserError(f"{path}: column(s) {', '.join(bad[:10])} are not numeric; pass the archive's file")


# ------------------------------------------------------------------------------------------------- writing


@dataclass
class _SplitWriter:
    """Writes each split as ``<split>.parquet`` in ``folder``, refusing non-finite values, and notes its shape."""

    folder: Path
    source: Path
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __call__(self, split: str, x: np.ndarray) -> None:
        _check_finite(x, split, self.source)
        _write_parquet(x, self.folder / f"{split}.parquet")
        self.shapes[split] = (int(x.shape[0]), int(x.shape[1]))


def _check_finite(x: np.ndarray, split: str, source: Path) -> None:
    """Refuse NaN or infinite values, which come from missing values or a constant column in the raw data."""
    finite = np.isfinite(x).all(axis=0)
    if not finite.all():
        columns = ", ".join(f"x{j}" for j in np.flatnonzero(~finite)[:10])
        raise UserError(
            f"{source}: preprocessing gave NaN or infinite values in {split} column(s) {columns} (missing values "
            "or a constant column in the raw data); pass the archive's file"
        )


def _write_parquet(x: np.ndarray, path: Path) -> None:
    """Write ``x`` (N, D) as float64 columns x0 .. x{D-1}, a row group at a time (no copy of the whole table)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(f"x{j}", pa.float64()) for j in range(x.shape[1])])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, len(x), _ROW_GROUP):
            block = x[start : start + _ROW_GROUP]
            writer.write_table(pa.table([pa.array(block[:, j]) for j in range(block.shape[1])], schema=schema))


@contextmanager
def _staged_folder(out: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a hidden folder beside ``out`` that replaces ``out`` on success (:func:`funnelcli.atomic.staged_folder`).

    An existing ``out`` (with ``overwrite``) is moved aside first and deleted only once the new one is in place;
    on any failure the hidden folder is removed, and an OSError becomes a UserError that names ``out``.
    """
    created = False
    try:
        # Checked again before ``out`` is replaced: another process may have made it while this one worked
        with atomic.staged_folder(out, check=partial(_check_out, out, overwrite=overwrite)) as staging:
            created = True
            yield staging
    except OSError as error:
        what = "write the data set" if created else "create the folder"
        raise UserError(f"{out}: could not {what}: {error.strerror or error}") from None


# -------------------------------------------------------------------------------------------------- helpers


def _json_name(column: Any) -> int | str:
    """A column name or index as JSON: integers stay integers, anything else becomes its string."""
    if isinstance(column, int | np.integer) and not isinstance(column, bool):
        return int(column)
    return str(column)


def _unreadable(path: Path, what: str, error: BaseException) -> UserError:
    """The UserError for a file that could not be parsed, with the library's first line of reason."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = lines[0][:200] if lines else type(error).__name__
    return UserError(f"{path} could not be read as {what} ({reason}); pass the file from {ARCHIVE}")
