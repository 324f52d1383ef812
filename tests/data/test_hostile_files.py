"""Hostile and malformed input files: each is refused with exit 2 and one `error:` line, before it runs or writes
anything.

Every test makes its input in tmp_path, runs the real `funnel` command in this process, and checks the exit code,
the one line (the file and the problem named, what to do said), and the file system afterwards: no output
written, nothing deleted, and no marker file created by a payload. Payloads call ``open(marker, "w")`` when
unpickled, so a regression creates the marker instead of doing harm; control tests show that pandas' own
readers do run them, so that the refusals are refusals of something real.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from funnelcli.data.tables import MAX_COLUMNS
from tests.helpers import assert_one_line_error, manifold_table, run, write_recipe

COMMANDS = ("inspect", "train", "score", "encode")
COLUMNS = ["a", "b", "c", "d"]  # the columns of the model that score and encode use


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run on one torch thread


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny model of the columns a, b, c, d, for score and encode."""
    root = tmp_path_factory.mktemp("hostile-model")
    manifold_table(200).to_csv(root / "data.csv", index=False)
    args = ["train", root / "data.csv", "--recipe", write_recipe(root), "--steps", "30", "--quiet"]
    result = run(*args, "--out", root / "model")
    assert result.exit_code == 0, result.output
    return root / "model"


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    return write_recipe(tmp_path_factory.mktemp("hostile-recipe"))


def command(name: str, data: Path, model: Path, recipe: Path) -> list:
    """The arguments of ``funnel <name>`` reading ``data``, with every output inside data's folder."""
    out = data.parent
    return {
        "inspect": ["data", "inspect", data],
        "train": ["train", data, "--recipe", recipe, "--steps", "30", "--quiet", "--out", out / "run"],
        "score": ["score", model, data, "-o", out / "scores.csv"],
        "encode": ["encode", model, data, "-o", out / "latent.parquet", "--keep", "a"],
    }[name]


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folder`` (links not followed) with its size and modification time."""
    found = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        found[str(path.relative_to(folder))] = (info.st_size, info.st_mtime_ns)
    return found


def refused(name: str, data: Path, model: Path, recipe: Path, *fragments: str, run_command=None) -> str:
    """Run command ``name`` on ``data``; check exit 2, one error line holding ``fragments`` and the file name,
    and that nothing in data's folder was written, changed or deleted."""
    before = listing(data.parent)
    args = command(name, data, model, recipe)
    result = (run_command or (lambda: run(*args)))()
    line = assert_one_line_error(result, str(data), *fragments)
    assert listing(data.parent) == before
    return line


class Payload:
    """Unpickled, it calls ``open(marker, "w")``: a harmless stand-in for ``os.system``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class FolderPayload(Payload):
    """Unpickled, it calls ``os.mkdir(marker)``, which returns None: a frame holding it can still be copied."""

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


MKDIR = f"{os.mkdir.__module__}.mkdir"  # posix.mkdir: the name pickle records for os.mkdir


# ------------------------------------------------------------------------------------------------ HDF5


def object_column_h5(folder: Path) -> tuple[Path, Path]:
    """A fixed-format frame whose object column holds a payload among text: pandas pickles that column."""
    marker, path = folder / "PWNED", folder / "evil.h5"
    frame = manifold_table(60)
    frame["o"] = [Payload(marker)] + ["x"] * 59
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas' PerformanceWarning about pickling the column
        frame.to_hdf(path, key="t", format="fixed")
    return path, marker


def pickled_column_names_h5(folder: Path) -> tuple[Path, Path]:
    """A fixed-format frame with a payload as a column name: pandas pickles such a name axis."""
    marker, path = folder / "PWNED", folder / "evil.h5"
    frame = manifold_table(60)
    frame[Payload(marker)] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame.to_hdf(path, key="t", format="fixed")
    return path, marker


def hostile_attribute_h5(folder: Path) -> tuple[Path, Path]:
    """A table-format frame whose column-name attribute was replaced by a pickle naming ``open``: PyTables
    unpickles every attribute that ends in '.'."""
    marker, path = folder / "PWNED", folder / "evil.h5"
    manifold_table(60).to_hdf(path, key="t", format="table")
    with h5py.File(path, "a") as handle:
        handle["t/table"].attrs["values_block_0_kind"] = np.bytes_(pickle.dumps(Payload(marker), protocol=0))
    return path, marker


def hostile_series_name_h5(folder: Path) -> tuple[Path, Path]:
    """A fixed-format series whose name attribute is such a pickle."""
    marker, path = folder / "PWNED", folder / "evil.h5"
    pd.Series(np.linspace(0.0, 1.0, 60), name="a").to_hdf(path, key="s", format="fixed")
    with h5py.File(path, "a") as handle:
        handle["s"].attrs["name"] = np.bytes_(pickle.dumps(Payload(marker), protocol=0))
    return path, marker


HOSTILE_H5 = {
    "an object column": (object_column_h5, ["column(s) 'o'", "pickled Python objects", "format='table'"]),
    "pickled column names": (pickled_column_names_h5, ["column names as pickled Python objects"]),
    "a column-name attribute that is a pickle": (hostile_attribute_h5, ["'values_block_0_kind'", "io.open"]),
}


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("case", list(HOSTILE_H5))
def test_hdf5_that_would_unpickle_is_refused_without_running_its_payload(case, name, tmp_path, model, recipe):
    write, fragments = HOSTILE_H5[case]
    path, marker = write(tmp_path)
    refused(name, path, model, recipe, "key 't'", *fragments)
    assert not marker.exists()


def test_hdf5_series_whose_name_attribute_is_a_pickle_is_refused_as_hostile(tmp_path, model, recipe):
    path, marker = hostile_series_name_h5(tmp_path)
    refused("inspect", path, model, recipe, "key 's'", "'name'", "io.open", "do not use this file")
    assert not marker.exists()


@pytest.mark.parametrize("write", [object_column_h5, hostile_attribute_h5, hostile_series_name_h5])
def test_control_pandas_own_hdf5_reader_runs_these_payloads(write, tmp_path):
    path, marker = write(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.suppress(Exception):  # the damaged attribute breaks pandas after the payload ran
            pd.read_hdf(path)
    assert marker.exists()


# ------------------------------------------------------------------------------------------------ GAS


def hostile_gas(folder: Path) -> tuple[Path, Path]:
    """A GAS-shaped frame pickled by pandas with a payload among its attrs."""
    marker, path = folder / "PWNED", folder / "raw" / "gas" / "ethylene_CO.pickle"
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"Time": np.arange(100) * 0.01, "Meth": rng.uniform(0, 600, 100), "Eth": rng.uniform(0, 20, 100)}
        | {f"s{i:02d}": 500 + 40 * rng.normal(size=100) for i in range(4)}
    )
    frame.attrs["note"] = FolderPayload(marker)
    frame.to_pickle(path)
    return path, marker


def test_gas_pickle_naming_a_global_is_refused_without_running_it(tmp_path):
    path, marker = hostile_gas(tmp_path)
    before = listing(tmp_path)
    result = run("data", "prepare", "gas", path, "-o", tmp_path / "prepared")
    assert_one_line_error(result, str(path), MKDIR, "--trust-pickle")
    assert not marker.exists()
    assert listing(tmp_path) == before


def test_control_trust_pickle_lets_pandas_unpickle_it_and_runs_the_payload_with_a_warning(tmp_path):
    path, marker = hostile_gas(tmp_path)
    result = run("data", "prepare", "gas", path, "-o", tmp_path / "prepared", "--trust-pickle")
    assert result.exit_code == 0, result.output
    assert marker.exists()
    assert "warning:" in result.stderr and "--trust-pickle" in result.stderr


# ------------------------------------------------------------------------------------------- table shape

ROWS = "1.5,0.5,2.5,3.5\n2.5,1.5,3.5,4.5\n3.5,2.5,4.5,5.5\n4.5,3.5,5.5,6.5\n"

MISSHAPEN = {
    "a first row with an extra field": (
        "a,b,c,d\n1.5,0.5,2.5,3.5,9\n" + ROWS,
        ["row 1 (line 2 of the file) has 5 fields, more than the header's 4"],
    ),
    "a later row with an extra field": (
        "a,b,c,d\n" + ROWS + "5.5,4.5,6.5,7.5,9\n" + ROWS,
        ["row 5 (line 6 of the file) has 5 fields, more than the header's 4"],
    ),
    "a row with a missing field": (
        "a,b,c,d\n" + ROWS + "\n5.5,4.5,6.5\n" + ROWS,
        ["row 5 (line 7 of the file) has 3 fields, fewer than the header's 4"],
    ),
    "decimal commas with ';' separators": (
        "a;b;c;d\n1,5;0,5;2,5;3,5\n2,5;1,5;3,5;4,5\n",
        ["row 1 (line 2 of the file)", "';'", "save it with '.' decimals and ',' separators"],
    ),
    "trailing separators": (
        "a,b,c,d\n" + ROWS.replace("\n", ",\n"),
        ["row 1 (line 2 of the file) has 5 fields", "remove the trailing separator"],
    ),
}


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("case", list(MISSHAPEN))
def test_csv_row_with_another_number_of_fields_than_the_header_is_refused_naming_it(
    case, name, tmp_path, model, recipe
):
    text, fragments = MISSHAPEN[case]
    path = tmp_path / "data.csv"
    path.write_text(text)
    refused(name, path, model, recipe, *fragments)


def test_short_row_in_a_later_chunk_of_a_streamed_score_is_refused_and_writes_nothing(tmp_path, model, recipe):
    # score reads 65,536 rows at a time: the short row is in the second chunk, after one chunk was scored
    rows = manifold_table(70_000).round(3)
    text = rows.to_csv(index=False).splitlines()
    text[68_001] = ",".join(text[68_001].split(",")[:2])
    path = tmp_path / "data.csv"
    path.write_text("\n".join(text) + "\n")
    refused("score", path, model, recipe, "row 68001 (line 68002 of the file) has 2 fields, fewer than the header's 4")


# ------------------------------------------------------------------------------------------ not a regular file


def blocking_run(args: list, fifo: Path, seconds: float = 20) -> Callable[[], object]:
    """Run the command in a thread; if it is still blocked (on the FIFO) after ``seconds``, open the FIFO's
    other end until it returns, and fail: a regression fails the test instead of hanging it."""

    def go():
        outcome: dict = {}
        thread = threading.Thread(target=lambda: outcome.setdefault("result", run(*args)), daemon=True)
        thread.start()
        thread.join(seconds)
        blocked = thread.is_alive()
        deadline = time.monotonic() + 30
        while thread.is_alive() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # a writer that opens and closes gives the reader end-of-file
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            thread.join(0.1)
        if blocked:
            pytest.fail(f"`funnel {args[0]}` blocked on the FIFO {fifo} for {seconds} s")
        return outcome["result"]

    return go


@pytest.mark.parametrize("name", COMMANDS)
def test_fifo_is_refused_at_once_instead_of_blocking_forever(name, tmp_path, model, recipe):
    fifo = tmp_path / "f.csv"
    os.mkfifo(fifo)
    args = command(name, fifo, model, recipe)
    refused(
        name, fifo, model, recipe, "is a FIFO (named pipe), not a regular file", run_command=blocking_run(args, fifo)
    )


def hdf5_pointing_at(fifo: Path, path: Path, how: str) -> None:
    """An HDF5 file whose only table lies in ``fifo``: through an external link, or as external storage."""
    with h5py.File(path, "w") as handle:
        if how == "an external link":
            handle["t"] = h5py.ExternalLink(str(fifo), "/t")
        else:
            handle.create_dataset("t", shape=(60, 4), dtype="f8", external=[(str(fifo), 0, 60 * 4 * 8)])


@pytest.mark.parametrize("name", ["inspect", "train", "score"])
@pytest.mark.parametrize("how", ["an external link", "external storage"])
def test_hdf5_whose_table_lies_in_another_file_is_refused_without_opening_it(how, name, tmp_path, model, recipe):
    (tmp_path / "pipes").mkdir()
    fifo = tmp_path / "pipes" / "p"
    os.mkfifo(fifo)
    path = tmp_path / "t.h5"
    hdf5_pointing_at(fifo, path, how)
    args = command(name, path, model, recipe)
    refused(name, path, model, recipe, "key 't' is not in the file", run_command=blocking_run(args, fifo))


@pytest.mark.parametrize("name", ["inspect", "score"])
def test_link_to_a_fifo_is_refused_after_following_the_link(name, tmp_path, model, recipe):
    (tmp_path / "pipes").mkdir()
    fifo = tmp_path / "pipes" / "p"
    os.mkfifo(fifo)
    link = tmp_path / "f.csv"
    link.symlink_to(fifo)
    args = command(name, link, model, recipe)
    refused(name, link, model, recipe, "is a FIFO", run_command=blocking_run(args, fifo))


@pytest.mark.parametrize("name", COMMANDS)
def test_link_to_a_character_device_is_refused(name, tmp_path, model, recipe):
    link = tmp_path / "dev.csv"
    link.symlink_to("/dev/null")
    refused(name, link, model, recipe, "is a character device, not a regular file")


@pytest.mark.parametrize("name", COMMANDS)
def test_file_under_proc_is_refused(name, tmp_path, model, recipe):
    link = tmp_path / "status.csv"
    link.symlink_to(f"/proc/{os.getpid()}/status")
    refused(name, link, model, recipe, "/proc", "not a table")


def test_fifo_among_the_raw_files_of_data_prepare_is_refused(tmp_path):
    fifo = tmp_path / "raw" / "power" / "data.npy"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    args = ["data", "prepare", "power", tmp_path / "raw", "-o", tmp_path / "prepared"]
    before = listing(tmp_path)
    result = blocking_run(args, fifo)()
    assert_one_line_error(result, str(fifo), "is a FIFO")
    assert listing(tmp_path) == before


# ------------------------------------------------------------------------------------------ too wide, warnings


@pytest.mark.parametrize("name", ["inspect", "train", "score"])
def test_header_of_a_million_columns_is_refused_quickly_before_reading_rows(name, tmp_path, model, recipe):
    path = tmp_path / "wide.csv"
    n = 1_000_000
    path.write_text(",".join(f"c{i}" for i in range(n)) + "\n" + ",".join(["1"] * n) + "\n")
    started = time.perf_counter()
    refused(name, path, model, recipe, f"{n:,} columns", f"{MAX_COLUMNS:,}")
    assert time.perf_counter() - started < 5


@pytest.fixture(scope="module")
def late_text(tmp_path_factory) -> Path:
    """300,000 rows of numbers, then one word: pandas' chunked parser warns of mixed types (DtypeWarning)."""
    path = tmp_path_factory.mktemp("late") / "late.csv"
    rows = manifold_table(300_000).round(2)
    rows["b"] = rows["b"].astype(object)
    rows.loc[len(rows) - 1, "b"] = "oops"
    rows.to_csv(path, index=False)
    return path


def recorded_warnings(call: Callable[[], object]) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [f"{w.category.__name__}: {w.message}" for w in caught]


def test_column_turning_to_text_late_gives_one_error_line_and_no_pandas_warning(late_text, tmp_path, recipe):
    result, caught = recorded_warnings(
        lambda: run("train", late_text, "--recipe", recipe, "--quiet", "--out", tmp_path / "run")
    )
    assert_one_line_error(result, "column 'b' has 1 non-numeric value (first at row 300000: 'oops')")
    assert caught == []


def test_inspect_of_a_column_turning_to_text_late_warns_only_in_its_own_words(late_text):
    result, caught = recorded_warnings(lambda: run("data", "inspect", late_text))
    assert result.exit_code == 0, result.output
    assert caught == []
    assert all(line.startswith("warning: ") for line in result.stderr.splitlines())


def test_inspect_of_values_near_the_float64_limit_gives_no_numpy_warning(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("a,b\n1.7e308,1e300\n1.7e308,-1e300\n-1.7e308,3\n")
    result, caught = recorded_warnings(lambda: run("data", "inspect", path, "--json"))
    assert result.exit_code == 0, result.output
    assert caught == [] and result.stderr == ""


# ------------------------------------------------------------------------------------------ huge whole numbers


def test_column_at_1e30_scale_is_not_integer_valued_to_inspect(tmp_path):
    path = tmp_path / "huge.csv"
    pd.DataFrame({"x": [1e30, 2e30, 3.5e30, 2e30], "n": [1.0, 2.0, 3.0, 5.0]}).to_csv(path, index=False)
    result = run("data", "inspect", path, "--json")
    report = json.loads(result.stdout)
    flags = {column["name"]: column["integer_valued"] for column in report["columns"]}
    assert flags == {"x": False, "n": True}


def test_column_at_1e30_scale_is_not_dequantized_by_train(tmp_path, recipe):
    table = manifold_table(200)
    table["b"] = np.round(table["b"] * 10) * 1e30  # whole numbers (every float beyond 2**53 is), not counts
    table.to_csv(tmp_path / "huge.csv", index=False)
    result = run("train", tmp_path / "huge.csv", "--recipe", recipe, "--steps", "30", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "integer-valued" not in result.stderr
    assert json.loads((tmp_path / "run" / "model.json").read_text())["dequantized_columns"] == []
