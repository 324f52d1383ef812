"""`funnel data prepare`: the MAF benchmark preprocessing, checked against a re-derivation of docs/maths.md, section 6.

Each data set gets a small synthetic raw input in the archive's format and layout. The expected outputs are
derived here step by step from the written procedure (np.delete, np.hstack, np.vstack, pandas arithmetic,
collections.Counter, as the MAF code did), never from the module's helpers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from funnelcli import __version__
from funnelcli.cli import data as data_cli
from funnelcli.data.maf import DATASETS, prepare
from funnelcli.errors import UserError
from tests.helpers import write_power

TOL = 1e-6
SPLITS = ("train", "validation", "test")

# ------------------------------------------------------------------------------------ synthetic raw inputs
# POWER's is tests/helpers.py's write_power: test_prepared_training.py prepares it too.

GAS_EXPECTED_REMOVED = ["Meth", "Eth", "Time", "s00", "s01", "s04"]


def write_gas(root: Path, n: int = 1000) -> Path:
    """Time, Meth, Eth and 16 sensors with planted correlations.

    s00 - s01 - s02 is a chain: corr(s00, s01) = corr(s01, s02) = 1/sqrt(1.03) ~ 0.985 > 0.98, but
    corr(s00, s02) = 1/1.03 ~ 0.971. Removing one column at a time drops s00 then s01 and keeps s02 (dropping
    every column over the threshold at once would lose s02 too). s04 ~ 2 s05 is dropped; s06 ~ -s07 is
    strongly anti-correlated and kept (the rule is C > 0.98, not |C|).
    """
    rng = np.random.default_rng(2)
    z = rng.normal(size=n)
    a = np.sqrt(0.03)
    sensors = {f"s{i:02d}": 500 + 40 * rng.normal(size=n) + 5 * i for i in range(16)}
    sensors["s00"] = 300 + 20 * (z + a * rng.normal(size=n))
    sensors["s01"] = 300 + 20 * z
    sensors["s02"] = 300 + 20 * (z + a * rng.normal(size=n))
    sensors["s04"] = 2 * sensors["s05"] + rng.normal(size=n)
    sensors["s06"] = -sensors["s07"] + rng.normal(size=n)
    frame = pd.DataFrame(
        {"Time": np.arange(n) * 0.01, "Meth": rng.uniform(0, 600, n), "Eth": rng.uniform(0, 20, n), **sensors}
    )
    path = root / "gas" / "ethylene_CO.pickle"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_pickle(path)
    return path


HEPMASS_FEATURES = [f"f{i}" for i in range(27)]
HEPMASS_EXPECTED_REMOVED = ["# label", "f3", "f7"]


def hepmass_table(n: int, seed: int, extra_column: bool) -> pd.DataFrame:
    """Label (0/1) then 27 features. f3 is discrete (its minimum repeats often); f7's minimum occurs 6 times
    and f11's 5 times among label-1 rows; f20's minimum repeats 6 times but only in label-0 rows."""
    rng = np.random.default_rng(seed)
    label = (np.arange(n) % 2 == 0).astype(float)  # mixed, every other row a signal event
    features = rng.normal(size=(n, 27)) * np.linspace(0.5, 3.0, 27) + np.linspace(-2, 2, 27)
    features[label == 0] += 100.0  # background rows far away: any use of them shows in the statistics
    features[:, 3] = rng.integers(0, 4, n).astype(float)
    signal, background = np.flatnonzero(label == 1), np.flatnonzero(label == 0)
    features[signal[:6], 7] = -50.0
    features[signal[:5], 11] = -50.0
    features[background[:6], 20] = -50.0
    frame = pd.DataFrame(features, columns=HEPMASS_FEATURES)
    frame.insert(0, "# label", label)
    if extra_column:
        frame["mass"] = rng.normal(size=n) * 1e6  # the test file's trailing column, to be dropped
    return frame


def write_hepmass(root: Path) -> tuple[Path, Path]:
    folder = root / "hepmass"
    folder.mkdir(parents=True, exist_ok=True)
    hepmass_table(400, 3, extra_column=False).to_csv(folder / "1000_train.csv", index=False)
    hepmass_table(200, 4, extra_column=True).to_csv(folder / "1000_test.csv", index=False)
    return folder / "1000_train.csv", folder / "1000_test.csv"


def write_miniboone(root: Path, n: int = 500, constant_column: bool = False) -> Path:
    rng = np.random.default_rng(5)
    array = rng.normal(size=(n, 43)) * np.geomspace(0.01, 100, 43) + np.linspace(-5, 5, 43)
    if constant_column:
        array[:, 10] = 3.0
    path = root / "miniboone" / "data.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


def write_bsds300(root: Path) -> Path:
    rng = np.random.default_rng(6)
    path = root / "BSDS300" / "BSDS300.hdf5"
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        for split, n in zip(SPLITS, (300, 40, 60), strict=True):
            handle.create_dataset(split, data=rng.uniform(-0.5, 0.5, (n, 63)).astype(np.float32))
    return path


WRITERS = {
    "power": write_power,
    "gas": write_gas,
    "hepmass": write_hepmass,
    "miniboone": write_miniboone,
    "bsds300": write_bsds300,
}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """An archive root holding all five raw inputs in the MAF layout (power/data.npy, ...)."""
    root = tmp_path_factory.mktemp("archive") / "data"
    for write in WRITERS.values():
        write(root)
    return root


# ------------------------------------------------------------------------------- the procedure, re-derived


def maf_split(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """test = last int(0.1 N); of the rest, validation = last int(0.1 N_rest); train = the remainder."""
    n_test = int(0.1 * data.shape[0])
    test, rest = data[-n_test:], data[:-n_test]
    n_validation = int(0.1 * rest.shape[0])
    return rest[:-n_validation], rest[-n_validation:], test


def numpy_standardised(train, validation, test):
    both = np.vstack((train, validation))
    mean, std = both.mean(axis=0), both.std(axis=0)
    return [(part - mean) / std for part in (train, validation, test)], mean, std


def expected_power(path: Path):
    data = np.load(path)
    rng = np.random.RandomState(42)
    rng.shuffle(data)
    n = data.shape[0]
    data = np.delete(data, 3, axis=1)
    data = np.delete(data, 1, axis=1)
    voltage = 0.01 * rng.rand(n, 1)
    gap = 0.001 * rng.rand(n, 1)
    sm = rng.rand(n, 3)
    time = np.zeros((n, 1))
    data = data + np.hstack((gap, voltage, sm, time))
    return numpy_standardised(*maf_split(data))


def expected_gas(path: Path):
    frame = pd.read_pickle(path).drop(columns=["Meth", "Eth", "Time"])
    removed = ["Meth", "Eth", "Time"]

    def over_threshold(frame):
        return (frame.corr() > 0.98).values.sum(axis=1)

    counts = over_threshold(frame)
    while np.any(counts > 1):
        name = frame.columns[np.where(counts > 1)[0][0]]
        removed.append(name)
        frame = frame.drop(columns=name)
        counts = over_threshold(frame)
    frame = (frame - frame.mean()) / frame.std()
    return maf_split(frame.values), removed


def expected_hepmass(train_path: Path, test_path: Path):
    train = pd.read_csv(train_path, index_col=False)
    test = pd.read_csv(test_path, index_col=False)
    label = train.columns[0]
    train = train[train[label] == 1].drop(columns=label)
    test = test[test[test.columns[0]] == 1].drop(columns=test.columns[0])
    test = test.drop(columns=test.columns[-1])
    mean, std = train.mean(), train.std()
    train, test = ((train - mean) / std).values, ((test - mean) / std).values
    removed = []
    for i, feature in enumerate(train.T):
        smallest_count = sorted(Counter(feature).items())[0][1]
        if smallest_count > 5:
            removed.append(i)
    keep = [i for i in range(train.shape[1]) if i not in removed]
    train, test = train[:, keep], test[:, keep]
    n_validation = int(0.1 * train.shape[0])
    names = [label] + [mean.index[i] for i in removed]
    return (train[:-n_validation], train[-n_validation:], test), names


def expected_miniboone(path: Path):
    return numpy_standardised(*maf_split(np.load(path)))


# --------------------------------------------------------------------------------------------- helpers


def read_splits(folder: Path) -> list[np.ndarray]:
    """The three written splits, checked to be float64 columns x0 .. x{D-1} with a plain row index."""
    arrays = []
    for split in SPLITS:
        frame = pd.read_parquet(folder / f"{split}.parquet")
        assert list(frame.columns) == [f"x{j}" for j in range(frame.shape[1])]
        assert all(dtype == np.float64 for dtype in frame.dtypes)
        assert isinstance(frame.index, pd.RangeIndex)
        arrays.append(frame.to_numpy())
    return arrays


def assert_splits(folder: Path, expected) -> None:
    for got, want in zip(read_splits(folder), expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def user_error(call, *fragments: str) -> str:
    """Run ``call``, expect a one-line UserError holding every fragment, return its message."""
    with pytest.raises(UserError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def leftovers(folder: Path) -> list[str]:
    """Hidden staging or retired folders left beside an output."""
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


# ------------------------------------------------------------------------------------- the five data sets


def test_power_is_shuffled_with_seed_42_dequantised_and_standardised_with_train_and_validation(archive, tmp_path):
    manifest = prepare("power", archive / "power" / "data.npy", tmp_path / "out")
    (train, validation, test), mean, std = expected_power(archive / "power" / "data.npy")
    assert (len(train), len(validation), len(test)) == (810, 90, 100)
    assert train.shape[1] == 6
    assert_splits(tmp_path / "out", (train, validation, test))
    assert manifest["removed_columns"] == [3, 1]
    np.testing.assert_allclose(manifest["normalisation"]["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(manifest["normalisation"]["std"], std, rtol=1e-12)


def test_gas_drops_correlated_sensors_one_at_a_time_then_standardises_the_whole_table(archive, tmp_path):
    manifest = prepare("gas", archive / "gas" / "ethylene_CO.pickle", tmp_path / "out")
    expected, removed = expected_gas(archive / "gas" / "ethylene_CO.pickle")
    assert removed == GAS_EXPECTED_REMOVED  # the planted chain and pair, so the loop is really exercised
    assert manifest["removed_columns"] == removed
    assert [len(part) for part in expected] == [810, 90, 100]
    assert expected[0].shape[1] == 16 - 3
    assert_splits(tmp_path / "out", expected)


def pandas_must_not_unpickle(monkeypatch) -> None:
    """Make pandas' own unpickling fail the test: the safe reader alone must read these files."""

    def refuse(*args, **kwargs):
        raise AssertionError("pandas unpickled the GAS file")

    monkeypatch.setattr(pd, "read_pickle", refuse)


def old_pandas_pickle(frame: pd.DataFrame) -> bytes:
    """``frame`` pickled as pandas 0.19 wrote it under Python 2 (the MAF archive dates from 2017): protocol 2,
    copy_reg._reconstructor, the pandas 0.14.1 BlockManager state, and the module paths of that time."""
    import copyreg
    import io
    import pickle

    from pandas.core.indexes.base import _new_Index
    from pandas.core.internals.managers import BlockManager

    class OldPickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, pd.DataFrame):
                state = {"_data": obj._mgr, "_typ": "dataframe", "_metadata": [], "is_copy": None}
                return copyreg._reconstructor, (pd.DataFrame, object, None), state
            if isinstance(obj, BlockManager):
                axes = list(obj.axes)
                blocks = [{"values": b.values, "mgr_locs": b.mgr_locs.indexer} for b in obj.blocks]
                items = [obj.items[b.mgr_locs.indexer] for b in obj.blocks]
                state = (axes, [b.values for b in obj.blocks], items, {"0.14.1": {"axes": axes, "blocks": blocks}})
                return copyreg._reconstructor, (BlockManager, object, None), state
            if isinstance(obj, pd.RangeIndex):
                return _new_Index, (pd.RangeIndex, {"start": obj.start, "stop": obj.stop, "step": 1, "name": None})
            if isinstance(obj, pd.Index):
                return _new_Index, (pd.Index, {"data": np.array(list(obj), dtype=object), "name": None})
            return NotImplemented

    buffer = io.BytesIO()
    OldPickler(buffer, protocol=2).dump(frame)
    data = buffer.getvalue()
    for new, old in [
        (b"cpandas\nDataFrame", b"cpandas.core.frame\nDataFrame"),
        (b"cpandas.core.internals.managers\nBlockManager", b"cpandas.core.internals\nBlockManager"),
        (b"cpandas.core.indexes.base\n_new_Index", b"cpandas.indexes.base\n_new_Index"),
        (b"cpandas\nIndex", b"cpandas.indexes.base\nIndex"),
        (b"cpandas\nRangeIndex", b"cpandas.indexes.range\nRangeIndex"),
        (b"cnumpy._core.multiarray\n_reconstruct", b"cnumpy.core.multiarray\n_reconstruct"),
    ]:
        assert new in data, new
        data = data.replace(new, old)
    assert b"c__builtin__\nobject" in data and b"ccopy_reg\n_reconstructor" in data  # Python 2's names
    return data


@pytest.mark.parametrize("layout", ["protocol 2", "pandas 0.19 under Python 2"])
def test_gas_pickles_of_other_protocols_and_pandas_versions_are_read_by_the_safe_reader(
    layout, archive, tmp_path, monkeypatch
):
    original = archive / "gas" / "ethylene_CO.pickle"
    frame = pd.read_pickle(original)
    path = tmp_path / "raw" / "gas" / "ethylene_CO.pickle"
    path.parent.mkdir(parents=True)
    if layout == "protocol 2":
        frame.to_pickle(path, protocol=2)
    else:
        path.write_bytes(old_pandas_pickle(frame))
    expected, _ = expected_gas(original)
    pandas_must_not_unpickle(monkeypatch)
    manifest = prepare("gas", path, tmp_path / "out")
    assert manifest["removed_columns"] == GAS_EXPECTED_REMOVED
    assert_splits(tmp_path / "out", expected)


def test_gas_written_by_current_pandas_is_read_without_pandas_unpickling_it(archive, tmp_path, monkeypatch):
    pandas_must_not_unpickle(monkeypatch)
    manifest = prepare("gas", archive / "gas" / "ethylene_CO.pickle", tmp_path / "out")
    assert manifest["removed_columns"] == GAS_EXPECTED_REMOVED


class MakeFolder:
    """Unpickled, it calls os.mkdir(marker): the stand-in for a payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def gas_with_payload(archive: Path, folder: Path) -> tuple[Path, Path]:
    frame = pd.read_pickle(archive / "gas" / "ethylene_CO.pickle")
    marker, path = folder / "PWNED", folder / "raw" / "gas" / "ethylene_CO.pickle"
    path.parent.mkdir(parents=True)
    frame.attrs["note"] = MakeFolder(marker)
    frame.to_pickle(path)
    return path, marker


def test_gas_pickle_naming_another_global_is_refused_naming_it_and_runs_nothing(archive, tmp_path):
    path, marker = gas_with_payload(archive, tmp_path)
    user_error(
        lambda: prepare("gas", path, tmp_path / "out"), str(path), f"{os.mkdir.__module__}.mkdir", "--trust-pickle"
    )
    assert not marker.exists() and not (tmp_path / "out").exists()
    with open(path, "rb") as handle:  # the control: plain unpickling runs the payload
        pickle.load(handle)
    assert marker.exists()


def test_trust_pickle_lets_pandas_unpickle_a_refused_gas_file_with_a_warning(archive, tmp_path, caplog):
    path, marker = gas_with_payload(archive, tmp_path)
    with caplog.at_level(logging.WARNING, logger="funnelcli"):
        manifest = prepare("gas", path, tmp_path / "out", trust_pickle=True)
    assert marker.exists()
    assert manifest["removed_columns"] == GAS_EXPECTED_REMOVED
    assert any("--trust-pickle" in record.getMessage() for record in caplog.records)


def test_gas_pickle_holding_something_other_than_a_table_is_refused(tmp_path):
    path = tmp_path / "raw" / "gas" / "ethylene_CO.pickle"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps({"Time": [1.0, 2.0]}))
    user_error(lambda: prepare("gas", path, tmp_path / "out"), str(path), "not a pickled table of numbers")


def test_hepmass_keeps_signal_rows_drops_discrete_columns_and_standardises_with_train_statistics(archive, tmp_path):
    folder = archive / "hepmass"
    manifest = prepare("hepmass", folder, tmp_path / "out")
    expected, removed = expected_hepmass(folder / "1000_train.csv", folder / "1000_test.csv")
    assert removed == HEPMASS_EXPECTED_REMOVED  # f11 (minimum 5 times) and f20 (repeats only in label 0) stay
    assert manifest["removed_columns"] == removed
    assert [len(part) for part in expected] == [180, 20, 100]
    assert expected[0].shape[1] == 25
    assert_splits(tmp_path / "out", expected)


def test_hepmass_constant_train_column_counts_as_discrete_and_is_dropped(tmp_path):
    train_path, test_path = write_hepmass(tmp_path / "raw")
    train = pd.read_csv(train_path)
    train["f5"] = 1000.0  # the whole column is its smallest value; standardising would make it NaN
    train.to_csv(train_path, index=False)
    manifest = prepare("hepmass", train_path, tmp_path / "out")
    assert manifest["removed_columns"] == ["# label", "f3", "f5", "f7"]
    assert manifest["splits"]["test"]["dims"] == 24


def test_miniboone_is_split_in_file_order_and_standardised_with_train_and_validation(archive, tmp_path):
    manifest = prepare("miniboone", archive / "miniboone", tmp_path / "out")
    (train, validation, test), mean, std = expected_miniboone(archive / "miniboone" / "data.npy")
    assert (len(train), len(validation), len(test)) == (405, 45, 50)
    assert_splits(tmp_path / "out", (train, validation, test))
    assert manifest["removed_columns"] == []
    np.testing.assert_allclose(manifest["normalisation"]["std"], std, rtol=1e-12)


def test_bsds300_splits_are_used_as_they_are(archive, tmp_path):
    manifest = prepare("bsds300", archive / "BSDS300" / "BSDS300.hdf5", tmp_path / "out")
    with h5py.File(archive / "BSDS300" / "BSDS300.hdf5", "r") as handle:
        expected = [handle[split][()].astype(np.float64) for split in SPLITS]
    assert_splits(tmp_path / "out", expected)
    assert manifest["normalisation"] is None
    assert manifest["seed"] is None
    assert manifest["splits"] == {
        "train": {"rows": 300, "dims": 63},
        "validation": {"rows": 40, "dims": 63},
        "test": {"rows": 60, "dims": 63},
    }


# ------------------------------------------------------------------------------------------- the manifest


def test_manifest_records_source_checksum_seed_splits_columns_and_normalisation(archive, tmp_path):
    raw = archive / "power" / "data.npy"
    returned = prepare("power", raw, tmp_path / "out")
    manifest = manifest_of(tmp_path / "out")
    assert manifest == returned
    assert list(manifest) == [
        "format",
        "dataset",
        "source",
        "seed",
        "splits",
        "removed_columns",
        "kept_columns",
        "normalisation",
        "preprocessing",
        "funnelcli_version",
    ]
    assert manifest["dataset"] == "power"
    assert manifest["source"] == [
        {
            "path": str(raw.absolute()),
            "sha256": hashlib.sha256(raw.read_bytes()).hexdigest(),
            "bytes": raw.stat().st_size,
        }
    ]
    assert manifest["seed"] == 42
    assert manifest["splits"] == {
        "train": {"rows": 810, "dims": 6},
        "validation": {"rows": 90, "dims": 6},
        "test": {"rows": 100, "dims": 6},
    }
    assert manifest["kept_columns"] == [0, 2, 4, 5, 6, 7]
    assert set(manifest["normalisation"]) == {"kind", "mean", "std"}
    assert "train and validation" in manifest["normalisation"]["kind"]
    assert len(manifest["normalisation"]["mean"]) == 6
    assert manifest["preprocessing"] == "MAF (Papamakarios et al. 2017)"
    assert manifest["funnelcli_version"] == __version__


def test_manifest_of_a_table_names_the_kept_columns_behind_each_output_column(archive, tmp_path):
    manifest = prepare("hepmass", archive / "hepmass", tmp_path / "out")
    assert manifest["kept_columns"] == [name for name in HEPMASS_FEATURES if name not in ("f3", "f7")]
    assert len(manifest["normalisation"]["mean"]) == len(manifest["kept_columns"])


@pytest.mark.parametrize("name", list(DATASETS))
def test_two_runs_give_byte_identical_files_and_equal_manifests(name, archive, tmp_path):
    first = prepare(name, archive, tmp_path / "first")
    second = prepare(name, archive, tmp_path / "second")
    assert first == second
    for file in ("train.parquet", "validation.parquet", "test.parquet", "manifest.json"):
        assert (tmp_path / "first" / file).read_bytes() == (tmp_path / "second" / file).read_bytes()


# ------------------------------------------------------------------------------------------ where RAW is


@pytest.mark.parametrize(
    "raw",
    ["data/power/data.npy", "data/power", "data", "."],
    ids=["the file", "the data set's folder", "the archive's root", "the folder the archive was extracted to"],
)
def test_raw_may_be_the_file_its_folder_or_the_archive_root(raw, archive, tmp_path):
    manifest = prepare("power", archive.parent / raw, tmp_path / "out")
    assert manifest["source"][0]["path"] == str((archive / "power" / "data.npy").absolute())


def test_hepmass_raw_may_be_either_csv_and_finds_the_other_beside_it(archive, tmp_path):
    manifest = prepare("hepmass", archive / "hepmass" / "1000_test.csv", tmp_path / "out")
    assert [Path(source["path"]).name for source in manifest["source"]] == ["1000_train.csv", "1000_test.csv"]


def test_missing_raw_file_names_the_file_expected(tmp_path):
    (tmp_path / "empty").mkdir()
    user_error(lambda: prepare("power", tmp_path / "empty", tmp_path / "out"), "power/data.npy", "1161203")
    user_error(lambda: prepare("bsds300", tmp_path / "nowhere", tmp_path / "out"), "BSDS300/BSDS300.hdf5")


def test_hepmass_with_one_csv_missing_names_the_missing_one(tmp_path):
    train_path, test_path = write_hepmass(tmp_path / "raw")
    test_path.unlink()
    message = user_error(lambda: prepare("hepmass", tmp_path / "raw", tmp_path / "out"), "1000_test.csv")
    assert message.startswith(f"{test_path} is missing;")


@pytest.mark.parametrize(
    "name, relative",
    [
        ("power", "power/data.npy"),
        ("gas", "gas/ethylene_CO.pickle"),
        ("hepmass", "hepmass/1000_train.csv"),
        ("bsds300", "BSDS300/BSDS300.hdf5"),
    ],
)
def test_unparseable_raw_file_is_a_user_error_naming_it(name, relative, tmp_path):
    WRITERS[name](tmp_path / "raw")
    path = tmp_path / "raw" / relative
    path.write_bytes(b"\x00\x01 this is not the archive's file \xff" * 3)
    user_error(lambda: prepare(name, tmp_path / "raw", tmp_path / "out"), str(path))
    assert not (tmp_path / "out").exists()


def test_raw_array_of_the_wrong_width_is_refused_naming_the_width_expected(tmp_path):
    path = write_power(tmp_path / "raw", width=7)
    user_error(lambda: prepare("power", path, tmp_path / "out"), str(path), "8 columns")


def test_unknown_data_set_name_lists_the_five(archive, tmp_path):
    user_error(lambda: prepare("cifar10", archive, tmp_path / "out"), "cifar10", "power, gas, hepmass")


def test_too_few_rows_for_three_nonempty_splits_is_refused(tmp_path):
    path = write_miniboone(tmp_path / "raw", n=10)
    user_error(lambda: prepare("miniboone", path, tmp_path / "out"), str(path), "10 rows")


# ---------------------------------------------------------------------------------------- the output folder


def test_existing_output_is_refused_without_overwrite_and_left_alone(archive, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    user_error(lambda: prepare("miniboone", archive, out), str(out), "--force")
    assert [path.name for path in out.iterdir()] == ["keep.txt"]


def test_overwrite_replaces_an_earlier_prepared_folder_entirely(archive, tmp_path):
    out = tmp_path / "out"
    prepare("power", archive, out)
    prepare("miniboone", archive, out, overwrite=True)
    assert manifest_of(out)["dataset"] == "miniboone"
    assert sorted(path.name for path in out.iterdir()) == [
        "manifest.json",
        "test.parquet",
        "train.parquet",
        "validation.parquet",
    ]
    assert leftovers(tmp_path) == []


def test_failure_while_preparing_leaves_no_output_or_staging_folder(tmp_path):
    raw = write_miniboone(tmp_path / "raw", constant_column=True)  # std 0: standardising gives NaN
    user_error(lambda: prepare("miniboone", raw, tmp_path / "outputs" / "out"), "x10")
    assert list((tmp_path / "outputs").iterdir()) == []


def test_failed_overwrite_keeps_the_previous_output(archive, tmp_path):
    out = tmp_path / "out"
    before = prepare("miniboone", archive, out)
    raw = write_miniboone(tmp_path / "raw", constant_column=True)
    user_error(lambda: prepare("miniboone", raw, out, overwrite=True), "NaN")
    assert manifest_of(out) == before
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------- the command

runner = CliRunner()


def run(*args: object):
    app = typer.Typer()
    app.add_typer(data_cli.app, name="data")
    return runner.invoke(app, ["data", *(str(arg) for arg in args)])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_prepare_writes_the_splits_and_prints_one_line_per_split(archive, tmp_path):
    result = run("prepare", "miniboone", archive, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "train.parquet").is_file()
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["train", "405", "rows", "x", "43", "dims"]
    assert lines[1].split()[:2] == ["validation", "45"] and lines[2].split()[:2] == ["test", "50"]
    assert str(tmp_path / "out") in lines[3]


def test_cli_json_prints_the_manifest_as_one_object(archive, tmp_path):
    result = run("prepare", "bsds300", archive, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == manifest_of(tmp_path / "out")


def test_cli_unknown_data_set_exits_2_with_one_line(archive, tmp_path):
    assert_one_line_error(run("prepare", "mnist", archive, "-o", tmp_path / "out"), "mnist", "bsds300")


def test_cli_missing_raw_file_exits_2_with_one_line_naming_it(tmp_path):
    assert_one_line_error(run("prepare", "gas", tmp_path, "-o", tmp_path / "out"), "gas/ethylene_CO.pickle")


def test_cli_existing_output_exits_2_suggesting_force(archive, tmp_path):
    prepare("miniboone", archive, tmp_path / "out")
    assert_one_line_error(run("prepare", "miniboone", archive, "-o", tmp_path / "out"), "--force")


def test_an_existing_empty_output_folder_is_used_without_force(archive, tmp_path):
    (tmp_path / "out").mkdir()
    assert run("prepare", "miniboone", archive, "-o", tmp_path / "out").exit_code == 0
    assert manifest_of(tmp_path / "out")["dataset"] == "miniboone"


def test_cli_help_says_where_the_archive_is_and_which_files_each_set_needs():
    result = run("prepare", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "Zenodo record 1161203" in text and "https://zenodo.org/record/1161203" in text and "data.tar.gz" in text
    for dataset in DATASETS.values():
        for file in dataset.files:
            assert file in text
