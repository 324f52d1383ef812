"""Streaming tables: chunks add up to the whole table, errors name rows of the file, outputs appear whole."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from funnelcli.data import read_table
from funnelcli.data.stream import TableWriter, iter_columns, iter_table
from funnelcli.errors import UserError


def table(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 5, size=n), "id": [f"r{i}" for i in range(n)]})


@pytest.mark.parametrize("name", ["t.csv", "t.parquet", "t.tsv", "t.csv.gz", "t.h5"])
def test_chunks_add_up_to_the_whole_table(tmp_path, name):
    path = tmp_path / name
    frame = table()
    if name.endswith(".parquet"):
        frame.to_parquet(path)
    elif name.endswith(".h5"):
        frame[["a", "b"]].to_hdf(path, key="t", format="table")
    else:
        frame.to_csv(path, index=False, sep="\t" if name.endswith(".tsv") else ",")
    chunks = list(iter_table(path, columns=["b", "a"], batch_rows=64))
    assert [len(c) for c in chunks] == [64, 64, 64, 64, 44]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), read_table(path, columns=["b", "a"]))


def test_pass_through_columns_come_in_the_same_chunks(tmp_path):
    table().to_parquet(tmp_path / "t.parquet")
    ids = [c["id"].tolist() for c in iter_columns(tmp_path / "t.parquet", ["id"], batch_rows=100)]
    assert [len(c) for c in ids] == [100, 100, 100] and ids[2][0] == "r200"


def test_an_error_in_a_later_chunk_names_the_row_of_the_file(tmp_path):
    frame = table()
    frame.loc[149, "a"] = np.nan
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(UserError, match=r"'a' has 1 NaN value \(first at row 150\)"):
        list(iter_table(tmp_path / "t.csv", columns=["a", "b"], batch_rows=64))


def test_an_empty_table_is_refused(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="no rows"):
        list(iter_table(tmp_path / "t.csv", columns=["a"]))


def test_a_missing_column_is_named(tmp_path):
    table().to_parquet(tmp_path / "t.parquet")
    with pytest.raises(UserError, match="'zz'"):
        list(iter_table(tmp_path / "t.parquet", columns=["zz"]))


@pytest.mark.parametrize("name", ["out.parquet", "out.csv"])
def test_a_written_stream_reads_back_as_the_whole_table(tmp_path, name):
    frame = table()[["a", "b"]].astype(float)
    with TableWriter(tmp_path / name) as writer:
        for start in range(0, len(frame), 64):
            writer.write(frame.iloc[start : start + 64])
    back = pd.read_parquet(tmp_path / name) if name.endswith(".parquet") else pd.read_csv(tmp_path / name)
    pd.testing.assert_frame_equal(back, frame)


def test_a_stream_that_fails_midway_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError), TableWriter(tmp_path / "out.parquet") as writer:
        writer.write(table()[["a"]])
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_a_writer_refuses_an_existing_file_without_overwrite(tmp_path):
    (tmp_path / "out.csv").write_text("x\n1\n")
    with pytest.raises(UserError, match="overwrite=True"):
        TableWriter(tmp_path / "out.csv")
