"""Specification of funnelcli.data.tables: reading numeric tables, splitting off validation rows, writing."""

from __future__ import annotations

import gzip
import logging
import os
import signal
import stat
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from funnelcli.atomic import replace_folder, staged_folder, temporary_folder
from funnelcli.data import atomic_path, read_columns, read_table, split_validation, write_table
from funnelcli.errors import UserError

# Values chosen to expose lossy float formatting: thirds, tiny and huge magnitudes, negative zero.
AWKWARD = pd.DataFrame(
    {
        "a": [1 / 3, -2.5e-300, 1.7976931348623157e308, -0.0],
        "b": [0.1 + 0.2, 123456789.123456789, -1e-7, 2.0],
        "c": [1.0, 2.0, 3.0, 4.0],
    }
)


def refused(call: Callable[[], object]) -> str:
    """Run ``call``, expecting a UserError; return its message after checking that it is one line."""
    with pytest.raises(UserError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    return message


def write_csv(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_same_floats(frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(frame.columns) == list(expected.columns)
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    assert isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0
    np.testing.assert_array_equal(frame.to_numpy(), expected.to_numpy(dtype=np.float64))


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz", "t.tsv", "t.parquet", "t.pq"])
def test_written_table_reads_back_to_identical_float64_values(tmp_path: Path, name: str) -> None:
    write_table(AWKWARD, tmp_path / name)
    assert_same_floats(read_table(tmp_path / name), AWKWARD)


def test_csv_gz_is_gzip_compressed(tmp_path: Path) -> None:
    write_table(AWKWARD, tmp_path / "t.csv.gz")
    with gzip.open(tmp_path / "t.csv.gz", "rt") as handle:
        assert handle.readline().strip() == "a,b,c"


@pytest.mark.parametrize("layout", ["table", "fixed"])
def test_hdf5_written_by_pandas_reads_back_to_identical_values(tmp_path: Path, layout: str) -> None:
    AWKWARD.to_hdf(tmp_path / "t.h5", key="df", format=layout)
    assert_same_floats(read_table(tmp_path / "t.h5"), AWKWARD)


def test_hdf5_plain_dataset_takes_column_names_from_its_columns_attribute(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "t.h5", "w") as handle:
        handle.create_dataset("x", data=AWKWARD.to_numpy())
        handle["x"].attrs["columns"] = ["a", "b", "c"]
    assert_same_floats(read_table(tmp_path / "t.h5"), AWKWARD)


def test_hdf5_plain_dataset_without_columns_attribute_names_columns_x0_x1(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "t.h5", "w") as handle:
        handle.create_dataset("x", data=AWKWARD.to_numpy())
    expected = AWKWARD.set_axis(["x0", "x1", "x2"], axis=1)
    assert_same_floats(read_table(tmp_path / "t.h5"), expected)


def test_hdf5_one_dimensional_dataset_is_one_column_named_after_it(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "t.h5", "w") as handle:
        handle.create_dataset("group/height", data=np.array([1, 2, 3], dtype=np.int32))
    assert_same_floats(read_table(tmp_path / "t.h5"), pd.DataFrame({"height": [1.0, 2.0, 3.0]}))


def test_ints_and_bools_are_cast_to_float64(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "n,flag\n1,True\n2,False\n")
    assert_same_floats(read_table(path), pd.DataFrame({"n": [1.0, 2.0], "flag": [1.0, 0.0]}))


def test_stored_index_is_replaced_by_a_fresh_range_index(tmp_path: Path) -> None:
    AWKWARD.set_axis([10, 20, 30, 40]).to_parquet(tmp_path / "t.parquet", index=True)
    assert_same_floats(read_table(tmp_path / "t.parquet"), AWKWARD)


def test_extension_is_matched_case_insensitively(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a\n1\n", name="DATA.CSV")
    assert_same_floats(read_table(path), pd.DataFrame({"a": [1.0]}))


def test_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "\ufeffa,b\n1,2\n")
    assert list(read_table(path, columns=["a"]).columns) == ["a"]


# ------------------------------------------------------------------------------------- column selection


def test_default_selection_skips_a_text_column_with_a_warning_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_csv(tmp_path, "a,label,b\n1,cat,2\n3,dog,4\n")
    with caplog.at_level(logging.WARNING, logger="funnelcli"):
        frame = read_table(path)
    assert list(frame.columns) == ["a", "b"]
    assert "skipping non-numeric column(s) 'label'" in caplog.text
    assert "--columns" in caplog.text


def test_columns_selects_exactly_those_in_the_given_order(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a,b,c,label\n1,2,3,x\n4,5,6,y\n")
    assert_same_floats(read_table(path, columns=["c", "a"]), pd.DataFrame({"c": [3.0, 6.0], "a": [1.0, 4.0]}))


def test_columns_selection_works_for_parquet_and_hdf5(tmp_path: Path) -> None:
    AWKWARD.to_parquet(tmp_path / "t.parquet")
    AWKWARD.to_hdf(tmp_path / "t.h5", key="df", format="table")
    for path in (tmp_path / "t.parquet", tmp_path / "t.h5"):
        assert_same_floats(read_table(path, columns=["c", "a"]), AWKWARD[["c", "a"]])


def test_missing_column_is_refused_listing_it_and_the_available_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a,b\n1,2\n")
    message = refused(lambda: read_table(path, columns=["a", "zz"]))
    assert "'zz'" in message and "available columns: 'a', 'b'" in message


def test_long_list_of_available_columns_is_cut_short(tmp_path: Path) -> None:
    header = ",".join(f"c{i}" for i in range(50))
    path = write_csv(tmp_path, header + "\n" + ",".join(["1"] * 50) + "\n")
    message = refused(lambda: read_table(path, columns=["zz"]))
    assert "'c19'" in message and "'c20'" not in message and "(30 more)" in message


def test_column_selected_twice_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a,b\n1,2\n")
    assert "'a' selected more than once" in refused(lambda: read_table(path, columns=["a", "a"]))


def test_duplicate_column_names_in_a_csv_header_are_refused_naming_them(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a,b,a\n1,2,3\n")
    assert "duplicate column name(s) 'a'" in refused(lambda: read_table(path))


def test_duplicate_column_names_in_parquet_are_refused_naming_them(tmp_path: Path) -> None:
    table = pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0])], names=["x", "x"])
    pq.write_table(table, tmp_path / "t.parquet")
    assert "duplicate column name(s) 'x'" in refused(lambda: read_table(tmp_path / "t.parquet"))


def test_nested_parquet_column_is_skipped_by_default_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    table = pa.table({"a": [1.0, 2.0], "tags": [[1, 2], [3]], "b": [3, 4]})
    pq.write_table(table, tmp_path / "t.parquet")
    with caplog.at_level(logging.WARNING, logger="funnelcli"):
        frame = read_table(tmp_path / "t.parquet")
    assert list(frame.columns) == ["a", "b"]
    assert "'tags'" in caplog.text


def test_nested_parquet_column_is_refused_when_selected(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": [1.0], "tags": [[1, 2]]}), tmp_path / "t.parquet")
    message = refused(lambda: read_table(tmp_path / "t.parquet", columns=["tags"]))
    assert "column 'tags' holds list" in message and "not numbers" in message


def test_file_with_only_text_columns_has_no_numeric_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "name\nann\nbob\n")
    assert refused(lambda: read_table(path)).startswith(f"{path} has no numeric columns; ")


# ------------------------------------------------------------------------------------------- bad values


def test_nan_in_a_column_is_refused_naming_the_column_count_and_first_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a,b\n1,2\n3,\n5,nan\n")
    message = refused(lambda: read_table(path))
    assert message == f"{path}: column 'b' has 2 NaN values (first at row 2); drop or impute these rows"


def test_nan_and_infinite_values_in_several_columns_are_reported_in_one_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a,b,c\n1,2,3\n4,,inf\n7,,-inf\n")
    message = refused(lambda: read_table(path))
    assert "column 'b' has 2 NaN values (first at row 2)" in message
    assert "column 'c' has 2 infinite values (first at row 2)" in message
    assert "'a'" not in message


def test_nan_in_an_hdf5_dataset_is_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "t.h5", "w") as handle:
        handle.create_dataset("x", data=np.array([[1.0, np.nan], [2.0, 3.0]]))
    assert "column 'x1' has 1 NaN value (first at row 1)" in refused(lambda: read_table(tmp_path / "t.h5"))


def test_mostly_numeric_column_with_stray_text_is_refused_naming_row_and_value(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a,b\n1,2\n3,4\n5,abc\n7,8\n")
    message = refused(lambda: read_table(path))
    assert "column 'b' has 1 non-numeric value (first at row 3: 'abc')" in message
    assert "exclude the column(s) with columns" in message


def test_selected_text_column_is_refused_naming_its_first_value(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a,label\n1,cat\n2,dog\n")
    message = refused(lambda: read_table(path, columns=["a", "label"]))
    assert "column 'label' has 2 non-numeric values (first at row 1: 'cat')" in message


def test_stray_value_containing_a_newline_still_gives_a_one_line_message(tmp_path: Path) -> None:
    path = write_csv(tmp_path, 'a,b\n1,2\n3,"x\ny"\n5,6\n')
    assert "(first at row 2: 'x\\ny')" in refused(lambda: read_table(path))


# ---------------------------------------------------------------------------------------- bad files


def test_empty_file_has_no_rows(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "")
    assert refused(lambda: read_table(path)) == f"{path} has no rows"


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a,b\n")
    assert refused(lambda: read_table(path)) == f"{path} has no rows"


def test_unknown_extension_is_refused_listing_the_supported_ones(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a\n1\n", name="data.xlsx")
    message = refused(lambda: read_table(path))
    assert message.startswith(f"{path}: unsupported file type ('.xlsx')")
    for extension in (".csv", ".csv.gz", ".tsv", ".parquet", ".pq", ".h5", ".hdf5", ".hdf"):
        assert extension in message


def test_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    assert refused(lambda: read_table(path)) == f"{path}: no such file"


def test_directory_is_refused_asking_for_a_table_file(tmp_path: Path) -> None:
    message = refused(lambda: read_table(tmp_path))
    assert message.startswith(f"{tmp_path} is a directory; expected a table file")


def test_truncated_parquet_is_refused_as_unreadable(tmp_path: Path) -> None:
    AWKWARD.to_parquet(tmp_path / "t.parquet")
    data = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "t.parquet").write_bytes(data[: len(data) // 2])
    assert refused(lambda: read_table(tmp_path / "t.parquet")).startswith(
        f"{tmp_path / 't.parquet'}: could not be read as Parquet: "
    )


def test_csv_with_bytes_that_are_not_utf8_is_refused_as_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"a,b\n1,2\n3,\xff\xfe\n")
    message = refused(lambda: read_table(path))
    assert message.startswith(f"{path}: could not be read as CSV: ") and "utf-8" in message


def test_csv_row_with_too_many_fields_is_refused_naming_the_row_its_line_and_both_counts(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a,b\n1,2\n3,4,5,6\n")
    assert refused(lambda: read_table(path)).startswith(
        f"{path}: row 2 (line 3 of the file) has 4 fields, more than the header's 2"
    )


def test_file_that_is_not_hdf5_is_refused_as_unreadable(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a\n1\n", name="data.h5")
    assert refused(lambda: read_table(path)).startswith(f"{path}: could not be read as HDF5: ")


def test_missing_hdf5_libraries_are_refused_saying_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    AWKWARD.to_hdf(tmp_path / "t.h5", key="df")
    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` raise ImportError
    assert "pip install 'funnelcli[hdf5]'" in refused(lambda: read_table(tmp_path / "t.h5"))


# --------------------------------------------------------------------------------------------- HDF5 keys


def test_hdf5_with_several_tables_and_no_key_is_refused_listing_them(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    AWKWARD.to_hdf(path, key="train", format="table")
    AWKWARD.to_hdf(path, key="test", format="fixed")
    message = refused(lambda: read_table(path))
    assert message == f"{path} holds several tables (test, train); choose one with key"


def test_hdf5_pandas_internals_are_not_listed_as_tables(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    AWKWARD.to_hdf(path, key="df", format="table")
    with h5py.File(path, "a") as handle:
        handle.create_dataset("raw", data=np.ones((2, 2)))
    assert "(df, raw)" in refused(lambda: read_table(path))


@pytest.mark.parametrize("key", ["test", "/test"])
def test_hdf5_key_chooses_a_pandas_table_with_or_without_leading_slash(tmp_path: Path, key: str) -> None:
    path = tmp_path / "t.h5"
    AWKWARD.to_hdf(path, key="train", format="table")
    AWKWARD[["c"]].to_hdf(path, key="test", format="table")
    assert_same_floats(read_table(path, key=key), AWKWARD[["c"]])


def test_hdf5_key_chooses_a_nested_plain_dataset(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "t.h5", "w") as handle:
        handle.create_dataset("runs/a", data=np.zeros((2, 1)))
        handle.create_dataset("runs/b", data=np.ones((2, 1)))
    assert_same_floats(read_table(tmp_path / "t.h5", key="/runs/b"), pd.DataFrame({"x0": [1.0, 1.0]}))


def test_hdf5_single_plain_dataset_is_used_without_a_key(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "t.h5", "w") as handle:
        handle.create_dataset("only", data=np.ones((3, 2)))
    assert read_table(tmp_path / "t.h5").shape == (3, 2)


def test_hdf5_wrong_key_is_refused_listing_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    AWKWARD.to_hdf(path, key="train")
    message = refused(lambda: read_table(path, key="nope"))
    assert message == f"{path}: no table 'nope'; keys in the file: train; choose one with key"


def test_hdf5_columns_attribute_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "t.h5", "w") as handle:
        handle.create_dataset("x", data=np.ones((2, 3)))
        handle["x"].attrs["columns"] = ["a", "b"]
    assert "lists 2 names" in refused(lambda: read_table(tmp_path / "t.h5"))


# ------------------------------------------------------------------------------------ HDF5 without pickles

MIXED = pd.DataFrame(
    {
        "f": [1.5, -2.25, 3.0],
        "i": np.array([1, -2, 3], dtype=np.int64),
        "i32": np.array([7, 8, 9], dtype=np.int32),
        "u8": np.array([0, 255, 3], dtype=np.uint8),
        "flag": [True, False, True],
        "f32": np.array([0.5, 1.5, 2.5], dtype=np.float32),
    }
)
LAYOUTS = {
    "fixed": {"format": "fixed"},
    "table": {"format": "table"},
    "table with data columns": {"format": "table", "data_columns": True},
}


def without_pytables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make PyTables and pandas' HDF5 reader unusable (once the test file is written): funnelcli must read HDF5
    with h5py alone."""

    def refuse(*args, **kwargs):
        raise AssertionError("pd.read_hdf was called")

    monkeypatch.setattr(pd, "read_hdf", refuse)
    monkeypatch.setitem(sys.modules, "tables", None)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_hdf5_blocks_of_floats_ints_and_bools_read_back_as_float64_without_pytables(
    tmp_path: Path, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    MIXED.to_hdf(tmp_path / "t.h5", key="df", **LAYOUTS[layout])
    without_pytables(monkeypatch)
    assert_same_floats(read_table(tmp_path / "t.h5"), MIXED.astype(np.float64))


@pytest.mark.parametrize("layout", ["fixed", "table"])
def test_hdf5_series_is_one_column_named_after_the_series_or_else_the_key(tmp_path: Path, layout: str) -> None:
    pd.Series([1.0, 2.5], name="height").to_hdf(tmp_path / "named.h5", key="s", format=layout)
    pd.Series([1, 2]).to_hdf(tmp_path / "anonymous.h5", key="runs/s", format=layout)
    assert_same_floats(read_table(tmp_path / "named.h5"), pd.DataFrame({"height": [1.0, 2.5]}))
    assert_same_floats(read_table(tmp_path / "anonymous.h5"), pd.DataFrame({"s": [1.0, 2.0]}))


@pytest.mark.parametrize("layout", ["table", "table with data columns"])
def test_hdf5_table_text_column_passes_through_read_columns_as_text(tmp_path: Path, layout: str) -> None:
    frame = pd.DataFrame({"id": ["a", "bé", None], "x": [1.0, 2.0, 3.0]})
    frame.to_hdf(tmp_path / "t.h5", key="df", **LAYOUTS[layout])
    ids = read_columns(tmp_path / "t.h5", ["id"])["id"]
    assert ids.iloc[:2].tolist() == ["a", "bé"] and pd.isna(ids.iloc[2])


def test_hdf5_table_text_column_is_skipped_by_read_table_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pd.DataFrame({"id": ["a", "b"], "x": [1.0, 2.0]}).to_hdf(tmp_path / "t.h5", key="df", format="table")
    with caplog.at_level(logging.WARNING, logger="funnelcli"):
        assert_same_floats(read_table(tmp_path / "t.h5"), pd.DataFrame({"x": [1.0, 2.0]}))
    assert "'id'" in caplog.text


def test_hdf5_categorical_and_time_columns_of_a_table_keep_their_values(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"kind": pd.Categorical(["b", "a", None]), "when": pd.date_range("2020-01-01", periods=3), "x": [1.0, 2, 3]}
    )
    frame.to_hdf(tmp_path / "t.h5", key="df", format="table")
    got = read_columns(tmp_path / "t.h5", ["kind", "when"])
    assert got["kind"].tolist()[:2] == ["b", "a"] and pd.isna(got["kind"].iloc[2])
    assert got["when"].tolist() == frame["when"].tolist()


def test_hdf5_fixed_format_text_column_is_refused_naming_it_and_the_way_out(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0], "label": ["a", "b"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame.to_hdf(tmp_path / "t.h5", key="df", format="fixed")
    message = refused(lambda: read_columns(tmp_path / "t.h5", ["x"]))
    assert message.startswith(f"{tmp_path / 't.h5'}: key 'df' stores column(s) 'label' as pickled Python objects")
    assert "format='table'" in message


def test_hdf5_pickled_attribute_naming_a_global_is_refused_as_hostile(tmp_path: Path) -> None:
    AWKWARD.to_hdf(tmp_path / "t.h5", key="df", format="table")
    with h5py.File(tmp_path / "t.h5", "a") as handle:
        handle["df"].attrs["non_index_axes"] = np.bytes_(b"cos\nsystem\n(Vtrue\ntR.")
    message = refused(lambda: read_table(tmp_path / "t.h5"))
    assert "'non_index_axes'" in message and "os.system" in message and "ran nothing" in message


def test_hdf5_table_with_multi_level_row_index_reads_its_columns_only(tmp_path: Path) -> None:
    index = pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["k", "j"])
    pd.DataFrame({"x": [1.0, 2.0]}, index=index).to_hdf(tmp_path / "t.h5", key="df", format="table")
    assert_same_floats(read_table(tmp_path / "t.h5"), pd.DataFrame({"x": [1.0, 2.0]}))


# ------------------------------------------------------------------------------------- shape of CSV rows


def ten_rows(bad_row: int, bad_line: str) -> str:
    lines = ["a,b"] + [f"{i}.5,{i}" for i in range(1, 11)]
    lines[bad_row] = bad_line
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ("7.5,7,1", "row 7 (line 8 of the file) has 3 fields, more than"),
        ("7.5", "row 7 (line 8 of the file) has 1 field, fewer than"),
    ],
)
@pytest.mark.parametrize("chunksize", [None, 3])
def test_misshapen_row_is_refused_whole_or_in_chunks(tmp_path: Path, bad_line: str, fragment: str, chunksize) -> None:
    from funnelcli.data.tables import iter_delimited

    path = write_csv(tmp_path, ten_rows(7, bad_line))
    message = refused(lambda: list(iter_delimited(path, str(path), "CSV", ["a"], chunksize=chunksize)))
    assert fragment in message and "the header's 2" in message


def test_empty_last_field_of_a_full_row_is_a_missing_value_not_a_short_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a,b\n1,2\n3,\n")
    assert "column 'b' has 1 NaN value (first at row 2)" in refused(lambda: read_table(path))
    assert read_columns(path, ["a"])["a"].tolist() == [1, 3]


def test_tsv_with_decimal_commas_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a\tb\n1,5\t2,25\n3,5\t4,75\n", name="t.tsv")
    assert "decimal comma" in refused(lambda: read_table(path))


# ------------------------------------------------------------------------------------ only regular files


@pytest.mark.parametrize("reader", ["read_table", "read_columns", "iter_table", "iter_columns", "inspect_table"])
def test_every_reader_refuses_a_link_to_a_device_before_opening_it(tmp_path: Path, reader: str) -> None:
    from funnelcli.data.inspect import inspect_table
    from funnelcli.data.stream import iter_columns, iter_table

    link = tmp_path / "t.csv"
    link.symlink_to("/dev/null")
    call = {
        "read_table": lambda: read_table(link),
        "read_columns": lambda: read_columns(link, ["a"]),
        "iter_table": lambda: list(iter_table(link, columns=["a"])),
        "iter_columns": lambda: list(iter_columns(link, ["a"])),
        "inspect_table": lambda: inspect_table(link),
    }[reader]
    assert refused(call) == (
        f"{link} is a character device, not a regular file; funnelcli reads only regular files: save the data to "
        "a file first"
    )


def test_table_wider_than_the_column_limit_is_refused_from_its_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import funnelcli.data.tables as tables

    monkeypatch.setattr(tables, "MAX_COLUMNS", 2)
    write_table(AWKWARD, tmp_path / "t.parquet")
    write_csv(tmp_path, "a,b,c\n1,2,3\n")
    AWKWARD.to_hdf(tmp_path / "t.h5", key="df", format="table")
    for path in (tmp_path / "data.csv", tmp_path / "t.parquet", tmp_path / "t.h5"):
        assert "has 3 columns, more than the 2 funnelcli reads" in refused(lambda path=path: read_table(path))


# ---------------------------------------------------------------------------------------------- splitting


def numbered(n: int) -> pd.DataFrame:
    return pd.DataFrame({"i": np.arange(n, dtype=np.float64)})


def test_split_with_the_same_seed_is_the_same_split() -> None:
    first = split_validation(numbered(100), 0.2, seed=7)
    second = split_validation(numbered(100), 0.2, seed=7)
    for a, b in zip(first, second, strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_split_with_another_seed_is_another_split() -> None:
    _, first = split_validation(numbered(100), 0.2, seed=7)
    _, second = split_validation(numbered(100), 0.2, seed=8)
    assert not first.equals(second)


def test_split_sizes_follow_the_fraction_and_cover_every_row_once() -> None:
    train, val = split_validation(numbered(10), 0.3, seed=0)
    assert (len(train), len(val)) == (7, 3)
    assert sorted(pd.concat([train, val])["i"]) == list(range(10))
    assert isinstance(train.index, pd.RangeIndex) and isinstance(val.index, pd.RangeIndex)


@pytest.mark.parametrize(("fraction", "sizes"), [(0.001, (9, 1)), (0.999, (1, 9))])
def test_split_keeps_at_least_one_row_on_each_side(fraction: float, sizes: tuple[int, int]) -> None:
    train, val = split_validation(numbered(10), fraction, seed=0)
    assert (len(train), len(val)) == sizes


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_split_fraction_outside_zero_to_one_is_refused(fraction: float) -> None:
    assert "val_fraction must be between 0 and 1" in refused(lambda: split_validation(numbered(10), fraction, seed=0))


def test_split_of_fewer_than_two_rows_is_refused_suggesting_a_validation_file() -> None:
    message = refused(lambda: split_validation(numbered(1), 0.5, seed=0))
    assert "at least 2 rows" in message and "validation=..." in message


# ------------------------------------------------------------------------------------------------ writing


def test_write_creates_missing_parent_directories(tmp_path: Path) -> None:
    write_table(AWKWARD, tmp_path / "a" / "b" / "t.csv")
    assert (tmp_path / "a" / "b" / "t.csv").is_file()


def test_failed_write_leaves_neither_target_nor_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_written(table: object, where: object, **_: object) -> None:
        Path(str(where)).write_bytes(b"PAR1 partial")
        raise RuntimeError("killed midway")

    monkeypatch.setattr(pq, "write_table", half_written)
    with pytest.raises(RuntimeError):
        write_table(AWKWARD, tmp_path / "t.parquet")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_file_and_reports_the_os_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = write_csv(tmp_path, "old\n1\n")

    def half_written(self: pd.DataFrame, where: object, **_: object) -> None:
        Path(str(where)).write_text("a,b\n1,")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_written)
    message = refused(lambda: write_table(AWKWARD, target))
    assert message.startswith(f"{target}: could not write the file: ") and "No space left" in message
    assert target.read_text() == "old\n1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["data.csv"]


def test_write_refuses_to_overwrite_an_existing_file_without_overwrite(tmp_path: Path) -> None:
    target = write_csv(tmp_path, "old\n1\n")
    message = refused(lambda: write_table(AWKWARD, target, overwrite=False))
    assert message == f"{target} already exists; pass overwrite=True to overwrite it"
    assert target.read_text() == "old\n1\n"


def test_write_replaces_an_existing_file_by_default(tmp_path: Path) -> None:
    target = write_csv(tmp_path, "old\n1\n")
    write_table(AWKWARD, target)
    assert_same_floats(read_table(target), AWKWARD)


def test_write_to_an_unknown_extension_is_refused_listing_output_extensions(tmp_path: Path) -> None:
    message = refused(lambda: write_table(AWKWARD, tmp_path / "t.h5"))
    assert "supported output extensions: .csv, .csv.gz, .tsv, .parquet, .pq" in message
    assert list(tmp_path.iterdir()) == []


def test_written_file_gets_the_usual_permissions_not_the_private_temporary_ones(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_table(AWKWARD, tmp_path / "t.csv")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "t.csv").stat().st_mode) == 0o644


def test_atomic_path_yields_a_hidden_temporary_beside_the_target_and_renames_it(tmp_path: Path) -> None:
    target = tmp_path / "model.json"
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".model.json.")
        assert not target.exists()
        temporary.write_text("{}")
    assert target.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_atomic_path_removes_the_temporary_when_the_body_fails(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "model.json") as temporary:
        temporary.write_text("{")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler, even where this process started with SIGINT ignored (as a background job)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def interrupt_inside(monkeypatch, make: str) -> None:
    """Make ``tempfile.<make>`` raise SIGINT just after it has made its file or folder."""
    real = getattr(tempfile, make)

    def interrupted(*args, **kwargs):
        made = real(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)
        return made

    monkeypatch.setattr(tempfile, make, interrupted)


HOLDS_SIGNALS = pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="signals cannot be held here")


@HOLDS_SIGNALS
@pytest.mark.usefixtures("python_sigint")
@pytest.mark.parametrize("writer", ["atomic_path", "staged_folder", "temporary_folder"])
def test_an_interrupt_just_as_the_temporary_is_made_leaves_nothing_behind(tmp_path, monkeypatch, writer) -> None:
    # Ctrl-C landing between the temporary's creation and the code that knows its name once left it behind.
    interrupt_inside(monkeypatch, "mkstemp" if writer == "atomic_path" else "mkdtemp")
    writers = {
        "atomic_path": lambda: atomic_path(tmp_path / "out.csv"),
        "staged_folder": lambda: staged_folder(tmp_path / "out"),
        "temporary_folder": lambda: temporary_folder(tmp_path, ".report-"),  # the report's staging folder
    }
    with pytest.raises(KeyboardInterrupt), writers[writer]():
        pass
    assert list(tmp_path.iterdir()) == []


@HOLDS_SIGNALS
@pytest.mark.usefixtures("python_sigint")
def test_an_interrupt_as_an_old_folder_is_set_aside_keeps_it_and_leaves_nothing_else(tmp_path, monkeypatch) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.json").write_text("{}")
    (tmp_path / "staged").mkdir()
    interrupt_inside(monkeypatch, "mkdtemp")
    with pytest.raises(KeyboardInterrupt):
        replace_folder(tmp_path / "staged", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "staged"]
    assert (tmp_path / "out" / "model.json").read_text() == "{}"


def test_a_file_with_another_delimiter_is_refused_naming_the_delimiter(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("a;b\n1;2\n3;4\n")
    message = refused(lambda: read_table(path))
    assert "has no numeric columns" in message and "delimited by ';'" in message
