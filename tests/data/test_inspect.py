"""`funnel data inspect`: every column described, every problem a density model will meet named in one warning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from funnelcli.data.columns import integer_columns
from funnelcli.data.inspect import inspect_table
from funnelcli.errors import UserError
from tests.helpers import run

COLUMN_KEYS = {
    "name",
    "dtype",
    "missing",
    "non_finite",
    "unique",
    "min",
    "max",
    "mean",
    "std",
    "integer_valued",
    "constant",
    "numeric",
}
FORMATS = ("csv", "parquet", "h5")


def crafted_table() -> pd.DataFrame:
    """One column per thing to notice, plus a plain float column that has nothing to notice."""
    return pd.DataFrame(
        {
            "plain": [0.1, 0.5, -1.2, 2.0, 3.3, 0.7],
            "count": np.array([1, 2, 3, 2, 1, 5], dtype=np.int64),
            "whole": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "same": [7.0] * 6,
            "gaps": [1.1, np.nan, 2.2, 3.3, np.nan, 4.4],
            "infs": [1.1, np.inf, 2.2, -np.inf, 5.5, 4.4],
            "label": ["a", "b", "c", "a", "b", "c"],
            "sentinel": [0.5, 1.5, 1e30, 2.5, 3.5, 4.5],
        }
    )


def write(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` in the format the extension names."""
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        # Table format: the fixed format pickles text columns, and funnelcli refuses pickled columns
        frame.to_hdf(path, key="table", format="table")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inspect")
    return {fmt: write(crafted_table(), root / f"crafted.{fmt}") for fmt in FORMATS}


@pytest.fixture(scope="module")
def report(files) -> dict:
    return inspect_table(files["csv"])


def column(report: dict, name: str) -> dict:
    return next(entry for entry in report["columns"] if entry["name"] == name)


def warning_about(report: dict, fragment: str) -> str:
    matches = [line for line in report["warnings"] if fragment in line]
    assert len(matches) == 1, report["warnings"]
    return matches[0]


# ------------------------------------------------------------------------------------------------ the report


def test_report_counts_rows_and_describes_every_column_in_file_order(report):
    assert report["rows"] == 6
    assert [entry["name"] for entry in report["columns"]] == list(crafted_table().columns)
    assert all(set(entry) == COLUMN_KEYS for entry in report["columns"])


def test_plain_float_column_gets_its_range_and_no_flags(report):
    plain = column(report, "plain")
    assert (plain["min"], plain["max"]) == (-1.2, 3.3)
    assert plain["mean"] == pytest.approx(0.9)
    assert plain["std"] == pytest.approx(np.std(crafted_table()["plain"]))
    assert plain["numeric"] and not plain["integer_valued"] and not plain["constant"]


def test_int64_column_is_integer_valued_with_exact_integer_range(report):
    count = column(report, "count")
    assert count["dtype"] == "int64" and count["integer_valued"]
    assert (count["min"], count["max"]) == (1, 5) and isinstance(count["max"], int)


def test_float_column_of_whole_numbers_is_integer_valued(report):
    assert column(report, "whole")["integer_valued"]


def test_whole_numbers_beyond_two_to_the_24_are_not_integer_valued(tmp_path):
    # float32, in which the model computes and adds dequantization noise, cannot resolve [0, 1) beyond 2**24
    frame = pd.DataFrame(
        {
            "edge": [0.0, 2.0**24, -(2.0**24), 5.0],
            "beyond": [0.0, 2.0**24 + 2, 1.0, 5.0],
            "huge": [1e30, 2e30, 3.5e30, 1e30],
            "int64": np.array([0, 2**40, 1, 2], dtype=np.int64),
        }
    )
    flags = {
        entry["name"]: entry["integer_valued"] for entry in inspect_table(write(frame, tmp_path / "w.csv"))["columns"]
    }
    assert flags == {"edge": True, "beyond": False, "huge": False, "int64": False}
    assert integer_columns(frame) == ["edge"]


def test_constant_column_is_constant_and_not_integer_valued(report):
    same = column(report, "same")
    assert same["constant"] and same["unique"] == 1
    assert not same["integer_valued"]


def test_nan_values_are_counted_as_missing_and_left_out_of_the_statistics(report):
    gaps = column(report, "gaps")
    assert gaps["missing"] == 2 and gaps["non_finite"] == 0
    assert gaps["mean"] == pytest.approx(2.75)


def test_infinities_are_counted_as_non_finite_and_left_out_of_the_range(report):
    infs = column(report, "infs")
    assert infs["non_finite"] == 2 and infs["missing"] == 0
    assert (infs["min"], infs["max"]) == (1.1, 5.5)


def test_text_column_is_non_numeric_without_statistics(report):
    label = column(report, "label")
    assert not label["numeric"] and label["unique"] == 3
    assert [label[key] for key in ("non_finite", "min", "max", "mean", "std")] == [None] * 5


def test_report_is_strict_json(report):
    assert json.loads(json.dumps(report, allow_nan=False)) == report


@pytest.mark.parametrize("fmt", ["parquet", "h5"])
def test_parquet_and_hdf5_give_the_same_columns_as_csv(files, report, fmt):
    def shape(entries: list[dict]) -> list[tuple]:
        return [(e["name"], e["missing"], e["non_finite"], e["integer_valued"], e["constant"]) for e in entries]

    other = inspect_table(files[fmt])
    assert other["rows"] == report["rows"]
    assert shape(other["columns"]) == shape(report["columns"])
    assert other["warnings"] == report["warnings"]


def test_statistics_that_overflow_are_null(tmp_path):
    path = write(pd.DataFrame({"big": [1.7e308, 1.7e308, 0.5]}), tmp_path / "big.csv")
    big = column(inspect_table(path), "big")
    assert big["max"] == 1.7e308 and big["mean"] is None and big["std"] is None


# ------------------------------------------------------------------------------------------------ warnings


@pytest.mark.parametrize(
    ("fragment", "columns", "advice"),
    [
        ("missing values (NaN", ["gaps"], "drop or impute"),
        ("infinite values", ["infs"], "drop or impute"),
        ("constant column", ["same"], "--drop-constant"),
        ("integer-valued column", ["count", "whole"], "--dequantize none"),
        ("non-numeric column", ["label"], "skips"),
        ("beyond 1e15", ["sentinel"], "sentinel"),
    ],
)
def test_each_problem_gets_one_warning_naming_its_columns_and_what_to_do(report, fragment, columns, advice):
    line = warning_about(report, fragment)
    assert all(repr(name) in line for name in columns)
    assert advice in line and "\n" not in line


def test_plain_column_is_named_in_no_warning(report):
    assert not any("'plain'" in line for line in report["warnings"])


def test_clean_table_has_no_warnings(tmp_path):
    path = write(pd.DataFrame({"a": [0.1, 0.2, 0.4], "b": [1.5, -2.5, 3.25]}), tmp_path / "clean.csv")
    assert inspect_table(path)["warnings"] == []


def test_stray_text_among_numbers_is_warned_with_its_first_bad_value(tmp_path):
    path = write(pd.DataFrame({"typo": ["1", "2", "oops", "4"]}), tmp_path / "typo.csv")
    line = warning_about(inspect_table(path), "stray text")
    assert "'typo'" in line and "row 3: 'oops'" in line


def test_duplicate_column_names_are_each_described_and_warned(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("a,b,a\n1.5,2.5,3.5\n4.5,5.5,6.5\n")
    result = inspect_table(path)
    assert [entry["name"] for entry in result["columns"]] == ["a", "b", "a"]
    assert "'a'" in warning_about(result, "duplicate column name")


def test_table_without_rows_gets_only_the_empty_table_warning(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("a,b\n")
    result = inspect_table(path)
    assert result["rows"] == 0
    assert len(result["warnings"]) == 1 and "empty" in result["warnings"][0]


# ------------------------------------------------------------------------------------------------ mistakes


def test_missing_file_is_a_user_error_naming_it(tmp_path):
    with pytest.raises(UserError, match="nope.csv: no such file"):
        inspect_table(tmp_path / "nope.csv")


def test_unreadable_file_is_a_user_error_naming_it(tmp_path):
    path = tmp_path / "junk.parquet"
    path.write_text("not parquet")
    with pytest.raises(UserError, match="junk.parquet: could not be read as Parquet"):
        inspect_table(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_table_wider_than_the_column_limit_is_refused_before_its_rows_are_read(tmp_path, monkeypatch, fmt):
    import funnelcli.data.tables as tables

    monkeypatch.setattr(tables, "MAX_COLUMNS", 3)
    path = write(crafted_table(), tmp_path / f"wide.{fmt}")
    with pytest.raises(UserError, match="has 8 columns, more than the 3 funnelcli reads"):
        inspect_table(path)


def test_csv_row_with_another_number_of_fields_is_a_user_error_naming_it(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("a,b\n1.5,2.5\n3.5\n")
    with pytest.raises(UserError, match=r"row 2 \(line 3 of the file\) has 1 field, fewer than the header's 2"):
        inspect_table(path)


def test_hdf5_key_chooses_among_several_tables(tmp_path):
    path = tmp_path / "two.h5"
    pd.DataFrame({"x": [1.5, 2.5]}).to_hdf(path, key="first")
    pd.DataFrame({"y": [1.5, 2.5, 3.5]}).to_hdf(path, key="second")
    with pytest.raises(UserError, match="choose one with key"):
        inspect_table(path)
    assert inspect_table(path, key="second")["rows"] == 3


# ------------------------------------------------------------------------------------------------ the command


def test_cli_json_is_one_object_with_the_documented_keys_and_nothing_on_stderr(files):
    result = run("data", "inspect", files["parquet"], "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    document = json.loads(result.stdout)
    assert set(document) == {"file", "rows", "columns", "warnings"}
    assert all(set(entry) == COLUMN_KEYS for entry in document["columns"])


def test_cli_warnings_go_to_stderr_one_per_line_naming_the_columns(files):
    result = run("data", "inspect", files["csv"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == len(inspect_table(files["csv"])["warnings"])
    assert all(line.startswith("warning: ") for line in lines)
    assert all(f"'{name}'" in result.stderr for name in ("gaps", "infs", "same", "count", "label", "sentinel"))
    assert "warning" not in result.stdout.replace("warnings", "")


def test_cli_table_lists_every_column_with_its_flags_and_ends_with_a_summary(files):
    result = run("data", "inspect", files["h5"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:-1]}
    assert set(rows) == set(crafted_table().columns)
    assert rows["count"].endswith("integer") and rows["same"].endswith("constant")
    assert rows["label"].endswith("non-numeric") and rows["plain"].endswith("-")
    assert result.stdout.splitlines()[-1] == "6 rows, 8 columns, 6 warnings"


def test_cli_missing_file_exits_2_with_one_error_line(tmp_path):
    result = run("data", "inspect", tmp_path / "nope.csv")
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope.csv" in lines[0]
