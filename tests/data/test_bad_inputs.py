"""Every defect a table can have, through `train`, `score` and `encode`.

Each row of the matrix is an input and, for each command it applies to, what must happen: either it works
(and writes its output), or it exits with code 2 and one line that names the problem and the way out, with no
traceback and no output left behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from funnelcli import artifact
from tests.helpers import RECIPE, assert_one_line_error, manifold_table, run, write_recipe

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run on one torch thread

COMMANDS = ("train", "score", "encode")


@dataclass(frozen=True)
class Expect:
    """What one command must do with an input: succeed, or refuse in one line holding ``fragments``."""

    ok: bool
    fragments: tuple[str, ...] = ()
    args: tuple[str, ...] = ()  # extra command-line arguments


def works(*args: str) -> Expect:
    return Expect(True, args=args)


def refused(*fragments: str, args: tuple[str, ...] = ()) -> Expect:
    return Expect(False, fragments, args)


@dataclass(frozen=True)
class Case:
    """An input file, made in a folder, and what each command does with it (None: does not apply)."""

    make: Callable[[Path], Path]
    train: Expect | None = None
    score: Expect | None = None
    encode: Expect | None = None
    #: The model score and encode use: "shared", "own" (trained on this very file), or the shared model with
    #: another recipe's weights put in: "swapped", or "swapped with checksum" (model.json's checksum updated too).
    model: str = "shared"


def text(name: str, content: str | bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    return make


def frame(name: str, build: Callable[[], pd.DataFrame], **options) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        table = build()
        if name.endswith(".parquet"):
            table.to_parquet(path)
        else:
            table.to_csv(path, index=False, **options)
        return path

    return make


def table(n: int = 120, seed: int = 7) -> pd.DataFrame:
    return manifold_table(n, seed=seed)


def with_values(**cells) -> Callable[[], pd.DataFrame]:
    """The table with some cells replaced: ``b=(5, np.nan)`` puts NaN in column b at row index 5."""

    def build() -> pd.DataFrame:
        result = table().astype(object) if any(isinstance(v[1], str) for v in cells.values()) else table()
        for column, (row, value) in cells.items():
            result.loc[row, column] = value
        return result

    return build


def utf8_broken(folder: Path) -> Path:
    path = folder / "latin1.csv"
    path.write_bytes(
        table().to_csv(index=False).encode()[:120] + b"\xff\xfe" + table().to_csv(index=False).encode()[120:]
    )
    return path


def truncated_parquet(folder: Path) -> Path:
    table().to_parquet(folder / "whole.parquet")
    data = (folder / "whole.parquet").read_bytes()
    (folder / "truncated.parquet").write_bytes(data[: len(data) // 2])
    return folder / "truncated.parquet"


def nested_parquet(only_nested: bool) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        base = table() if not only_nested else pd.DataFrame(index=range(40))
        base = base.assign(tags=[[1, 2]] * len(base), label=["x"] * len(base))
        path = folder / ("nested-only.parquet" if only_nested else "nested.parquet")
        base.to_parquet(path)
        return path

    return make


def several_keys(folder: Path) -> Path:
    path = folder / "keys.h5"
    table().to_hdf(path, key="one", format="table")
    table(seed=8).to_hdf(path, key="two", format="table")
    return path


def directory(folder: Path) -> Path:
    (folder / "a-folder").mkdir(exist_ok=True)
    return folder / "a-folder"


NO_ROWS = ("no rows",)

MATRIX: dict[str, Case] = {
    "empty file": Case(text("empty.csv", ""), *[refused("empty.csv", *NO_ROWS)] * 3),
    "header only": Case(text("header.csv", "a,b,c,d\n"), *[refused("header.csv", *NO_ROWS)] * 3),
    "one row": Case(
        text("one.csv", "a,b,c,d\n3,0.1,0.2,0.3\n"),
        train=refused("1 row", "n_samples = 1", "at least 3 rows", "--validation"),
        score=works(),
        encode=works(),
    ),
    "two rows (nothing left to train on after the validation split)": Case(
        text("two.csv", "a,b,c,d\n3,0.1,0.2,0.3\n4,0.2,0.1,0.5\n"),
        train=refused("leaves 1 to train on", "at least 3 rows", "--validation"),
        score=works(),
        encode=works(),
    ),
    "a constant column": Case(
        frame("constant.csv", lambda: table().assign(a=1.0)),
        train=refused("'a'", "constant", "--drop-constant"),
        score=works(),
        encode=works(),
    ),
    "a constant column, with --drop-constant": Case(
        frame("constant2.csv", lambda: table().assign(e=1.0)), train=works("--drop-constant")
    ),
    "duplicate column names": Case(
        text("dup.csv", "a,b,a,d\n1,2,3,4\n2,3,4,5\n3,1,2,3\n"),
        *[refused("duplicate column name", "'a'", "unique name")] * 3,
    ),
    "a non-numeric column (ids)": Case(
        frame("ids.csv", lambda: table().assign(id=[f"row{i}" for i in range(120)])),
        train=works(),
        score=works(),
        encode=works(),
    ),
    "a non-numeric column chosen with --columns": Case(
        frame("ids2.csv", lambda: table().assign(id=[f"row{i}" for i in range(120)])),
        train=refused("'id'", "non-numeric", "--columns", args=("--columns", "a,b,id")),
    ),
    "only non-numeric columns": Case(
        text("words.csv", "name,colour\nx,red\ny,blue\nz,green\n"),
        train=refused("no numeric columns"),
        score=refused("no column(s) named 'a'", "available columns: 'name', 'colour'"),
        encode=refused("no column(s) named 'a'", "available columns"),
    ),
    "NaN": Case(frame("nan.csv", with_values(b=(5, np.nan))), *[refused("'b'", "1 NaN value", "row 6", "impute")] * 3),
    "+inf and -inf": Case(
        frame("inf.csv", with_values(b=(5, np.inf), c=(7, -np.inf))),
        *[refused("'b' has 1 infinite value (first at row 6)", "'c'", "impute")] * 3,
    ),
    "values of 1e30 (a column on that scale, another on 1e-30)": Case(
        frame("huge.csv", lambda: table().assign(a=lambda t: t["a"] * 1e30, c=lambda t: t["c"] * 1e-30)),
        train=works(),
        score=works(),
        encode=works(),
        model="own",
    ),
    "values of 1e39, beyond float32": Case(
        frame("beyond.csv", lambda: table().assign(a=lambda t: t["a"] * 1e39)),
        train=refused("'a'", "beyond float32's range", "rescale"),
    ),
    "a column whose spread float32 cannot resolve (1e6 +- 1e-3)": Case(
        frame("fine.csv", lambda: table().assign(b=lambda t: 1e6 + 1e-3 * t["b"])),
        train=refused("'b'", "vary too little", "subtract an offset"),
    ),
    "mixed types in a CSV column": Case(
        frame("mixed.csv", with_values(b=(5, "oops"))),
        *[refused("'b'", "1 non-numeric value", "row 6: 'oops'", "--columns")] * 3,
    ),
    "wrong delimiter (;)": Case(
        frame("semicolon.csv", table, sep=";"),
        train=refused("semicolon.csv has no numeric columns"),
        score=refused("no column(s) named 'a'", "available columns: 'a;b;c;d'"),
        encode=refused("no column(s) named 'a'", "'a;b;c;d'"),
    ),
    "non-UTF-8 bytes": Case(utf8_broken, *[refused("could not be read as CSV", "utf-8", "save it as UTF-8")] * 3),
    "truncated Parquet file": Case(truncated_parquet, *[refused("could not be read as Parquet", "corrupted")] * 3),
    "Parquet with nested and string columns beside numbers": Case(
        nested_parquet(only_nested=False), train=works(), score=works(), encode=works()
    ),
    "Parquet with only nested and string columns": Case(
        nested_parquet(only_nested=True),
        train=refused("no numeric columns"),
        score=refused("no column(s) named 'a'", "'tags', 'label'"),
        encode=refused("no column(s) named 'a'"),
    ),
    "a nested Parquet column chosen with --columns": Case(
        nested_parquet(only_nested=False),
        train=refused("'tags'", "not numbers", "--columns", args=("--columns", "a,tags")),
    ),
    "HDF5 with several keys and no --key": Case(
        several_keys, *[refused("several tables (one, two)", "choose one with --key")] * 3
    ),
    "HDF5 with several keys and --key": Case(
        several_keys, train=works("--key", "two"), score=works("--key", "two"), encode=works("--key", "two")
    ),
    "missing file": Case(lambda folder: folder / "absent.csv", *[refused("absent.csv", "no such file")] * 3),
    "a directory instead of a file": Case(directory, *[refused("is a directory", "expected a table file")] * 3),
    "a model folder with the weights of another recipe": Case(
        frame("plain.csv", table),
        score=refused("does not match the checksum", "replaced"),
        encode=refused("does not match the checksum", "replaced"),
        model="swapped",
    ),
    "a model folder with the weights and checksum of another recipe": Case(
        frame("plain2.csv", table),
        score=refused("weights do not fit the recipe", "retrain"),
        encode=refused("weights do not fit the recipe", "retrain"),
        model="swapped with checksum",
    ),
    "columns in another order at score time": Case(
        frame("shuffled.csv", lambda: table()[["d", "b", "a", "c"]]), score=works(), encode=works()
    ),
    "extra columns at score time": Case(
        frame("extra.csv", lambda: table().assign(e=2.0, note="x")), score=works(), encode=works()
    ),
    "extra columns at score time, with --strict": Case(
        frame("extra2.csv", lambda: table().assign(e=2.0, note="x")),
        score=refused("'e', 'note'", "does not use", "--strict", args=("--strict",)),
        encode=refused("'e', 'note'", "does not use", "--strict", args=("--strict",)),
    ),
    "--keep columns with --strict": Case(
        frame("kept.csv", lambda: table().assign(id=range(120))), encode=works("--strict", "--keep", "id")
    ),
}

PAIRS = [(case, command) for case in MATRIX for command in COMMANDS if getattr(MATRIX[case], command) is not None]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-inputs")
    write_recipe(root)
    table(300, seed=0).to_csv(root / "train.csv", index=False)
    return root


def train_model(folder: Path, data: Path, out: Path, *args: str) -> Path:
    if not out.exists():
        result = run("train", data, "--recipe", folder / "tiny.toml", "--out", out, "--steps", "5", "-q", *args)
        assert result.exit_code == 0, result.output
    return out


def model_for(case: Case, data: Path, folder: Path) -> Path:
    shared = train_model(folder, folder / "train.csv", folder / "shared")
    if case.model == "shared":
        return shared
    if case.model == "own":
        return train_model(folder, data, folder / f"own-{data.stem}")
    # Another recipe's weights in place of the shared model's: copied alone, or with their checksum too.
    other = folder / "other"
    if not other.exists():
        (folder / "other-recipe").mkdir()
        recipe = write_recipe(folder / "other-recipe", RECIPE.replace("hidden_features = 16", "hidden_features = 24"))
        assert (
            run("train", folder / "train.csv", "--recipe", recipe, "--out", other, "--steps", "2", "-q").exit_code == 0
        )
    swapped = folder / case.model.replace(" ", "-")
    if not swapped.exists():
        swapped.mkdir()
        for file in shared.iterdir():
            (swapped / file.name).write_bytes(file.read_bytes())
        (swapped / artifact.WEIGHTS).write_bytes((other / artifact.WEIGHTS).read_bytes())
        if case.model == "swapped with checksum":
            metadata = (swapped / artifact.METADATA).read_text()
            old = artifact.sha256(shared / artifact.WEIGHTS)
            (swapped / artifact.METADATA).write_text(metadata.replace(old, artifact.sha256(other / artifact.WEIGHTS)))
    return swapped


@pytest.mark.parametrize("case, command", PAIRS, ids=[f"{case} -> {command}" for case, command in PAIRS])
def test_bad_input_matrix(case, command, folder, tmp_path):
    spec = MATRIX[case]
    expect: Expect = getattr(spec, command)
    data = spec.make(folder)
    out = tmp_path / ("model" if command == "train" else f"{command}.csv")
    if command == "train":
        args = ["train", data, "--recipe", folder / "tiny.toml", "--out", out, "--steps", "3", "-q"]
    else:
        args = [command, model_for(spec, data, folder), data, "-o", out]
    result = run(*args, *expect.args)
    if not expect.ok:
        assert_one_line_error(result, *expect.fragments)
        assert list(tmp_path.iterdir()) == [], "a refused command must leave no output"
        return
    assert result.exit_code == 0, result.output
    if command == "train":
        assert (out / artifact.WEIGHTS).is_file()
    else:
        written = pd.read_csv(out)
        values = written["log_prob"] if command == "score" else written.filter(like="z")
        assert len(written) > 0 and np.isfinite(values.to_numpy()).all()


def test_columns_in_another_order_get_the_scores_of_the_original_order(folder, tmp_path):
    model = model_for(MATRIX["columns in another order at score time"], folder / "train.csv", folder)
    table()[["d", "b", "a", "c"]].to_csv(tmp_path / "shuffled.csv", index=False)
    table().to_csv(tmp_path / "ordered.csv", index=False)
    for name in ("shuffled", "ordered"):
        assert run("score", model, tmp_path / f"{name}.csv", "-o", tmp_path / f"{name}-scores.csv").exit_code == 0
    shuffled = pd.read_csv(tmp_path / "shuffled-scores.csv")["log_prob"]
    ordered = pd.read_csv(tmp_path / "ordered-scores.csv")["log_prob"]
    np.testing.assert_array_equal(shuffled.to_numpy(), ordered.to_numpy())


def test_extra_columns_are_ignored_without_strict_and_do_not_change_the_scores(folder, tmp_path):
    model = model_for(MATRIX["extra columns at score time"], folder / "train.csv", folder)
    table().to_csv(tmp_path / "plain.csv", index=False)
    table().assign(e=2.0, note="x").to_csv(tmp_path / "extra.csv", index=False)
    for name in ("plain", "extra"):
        assert run("score", model, tmp_path / f"{name}.csv", "-o", tmp_path / f"{name}-scores.csv").exit_code == 0
    extra = pd.read_csv(tmp_path / "extra-scores.csv")["log_prob"]
    plain = pd.read_csv(tmp_path / "plain-scores.csv")["log_prob"]
    np.testing.assert_array_equal(extra.to_numpy(), plain.to_numpy())
