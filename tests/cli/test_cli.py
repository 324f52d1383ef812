"""The command line: what a user types, what comes out, and one clear line (exit 2) for each mistake."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import assert_one_line_error, manifold_table, run

RECIPE = """
family = "f-nsf"
description = "tiny, for tests"
[model]
flow_steps = 3
hidden_features = 32
residual_blocks = 1
bins = 6
funnel_level = 1
ansatz = "gaussian"
ansatz_hidden_features = 16
ansatz_layers = 2
[training]
batch_size = 128
steps = 40
eval_every = 20
lr = 3e-3
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    (root / "tiny.toml").write_text(RECIPE)
    table = manifold_table(500)
    table.to_csv(root / "data.csv", index=False)
    manifold_table(80, seed=1).to_parquet(root / "test.parquet")
    return root


@pytest.fixture(scope="module")
def model(workdir) -> Path:
    result = run(
        "train",
        workdir / "data.csv",
        "--recipe",
        workdir / "tiny.toml",
        "--out",
        workdir / "model",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    return workdir / "model"


def test_train_writes_a_model_folder_of_safetensors_and_json(model):
    assert (model / "model.safetensors").is_file()
    metadata = json.loads((model / "model.json").read_text())
    assert metadata["columns"] == ["a", "b", "c", "d"]
    assert (metadata["input_dim"], metadata["latent_dim"]) == (4, 2)
    assert metadata["recipe"]["model"]["ansatz"] == "gaussian"
    assert set(metadata["scaler"]) == {"mean", "std"} and metadata["parameters"] > 0
    assert {"torch", "nflows", "funnelcli"} <= set(metadata["versions"])
    assert metadata["training"]["steps"] == 40
    lines = (model / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [20, 40]


def test_train_without_out_writes_runs_named_after_the_input(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    result = run("train", "test.parquet", "--recipe", "tiny.toml", "--steps", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert (workdir / "runs" / "test" / "model.json").is_file()


def test_train_flags_override_the_recipe(workdir):
    out = workdir / "override"
    result = run(
        "train",
        workdir / "data.csv",
        "--recipe",
        workdir / "tiny.toml",
        "--out",
        out,
        "--steps",
        "3",
        "--reduce",
        "0.25",
        "--ansatz",
        "flow",
        "--base",
        "mixture",
        "--seed",
        "4",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["latent_dim"], report["steps"]) == (3, 3)
    recipe = json.loads((out / "model.json").read_text())["recipe"]
    assert (recipe["model"]["ansatz"], recipe["model"]["base"], recipe["training"]["seed"]) == ("flow", "mixture", 4)


def test_score_json_is_one_object_with_the_documented_keys(model, workdir):
    result = run("score", model, workdir / "test.parquet", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"rows", "mean_log_prob", "stderr", "input_dim", "latent_dim"}
    assert report["rows"] == 80 and report["latent_dim"] == 2 and report["stderr"] > 0


def test_score_writes_the_input_columns_and_a_log_prob_column(model, workdir):
    out = workdir / "scores.parquet"
    result = run("score", model, workdir / "test.parquet", "-o", out)
    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(out)
    assert list(scores.columns) == ["a", "b", "c", "d", "log_prob"]
    assert "±" in result.stdout and "80 rows" in result.stdout


def test_csv_parquet_and_hdf5_copies_of_a_table_get_the_same_scores(model, workdir):
    table = manifold_table(60, seed=2)
    table.to_csv(workdir / "same.csv", index=False)
    table.to_parquet(workdir / "same.parquet")
    table.to_hdf(workdir / "same.h5", key="rows", format="table")
    import h5py

    with h5py.File(workdir / "plain.h5", "w") as handle:
        handle.create_dataset("x", data=table.to_numpy()).attrs["columns"] = list(table.columns)
    scores = []
    for name in ("same.csv", "same.parquet", "same.h5", "plain.h5"):
        out = workdir / f"{name}.scores.csv"
        assert run("score", model, workdir / name, "-o", out).exit_code == 0
        scores.append(pd.read_csv(out)["log_prob"].to_numpy())
    for other in scores[1:]:
        np.testing.assert_array_equal(other, scores[0])


def test_score_matches_columns_by_name(model, workdir):
    table = manifold_table(30, seed=3)
    table[["d", "b", "a", "c"]].assign(extra=1.0).to_csv(workdir / "shuffled.csv", index=False)
    table.to_csv(workdir / "ordered.csv", index=False)
    first = json.loads(run("score", model, workdir / "shuffled.csv", "--json").stdout)
    second = json.loads(run("score", model, workdir / "ordered.csv", "--json").stdout)
    assert first["mean_log_prob"] == second["mean_log_prob"]


def test_encode_writes_exactly_the_latent_columns_and_passes_kept_columns_through(model, workdir):
    table = manifold_table(25, seed=4).assign(id=[f"row{i}" for i in range(25)])
    table.to_csv(workdir / "ids.csv", index=False)
    out = workdir / "latent.csv"
    result = run("encode", model, workdir / "ids.csv", "-o", out, "--keep", "id")
    assert result.exit_code == 0, result.output
    latent = pd.read_csv(out)
    assert list(latent.columns) == ["id", "z0", "z1"]
    assert latent["id"].tolist() == table["id"].tolist()


def test_score_passes_kept_columns_through_before_the_model_columns_and_the_scores(model, workdir):
    table = manifold_table(25, seed=4).assign(id=[f"row{i}" for i in range(25)], label=range(25))
    table.to_csv(workdir / "ids.csv", index=False)
    out = workdir / "scored.csv"
    result = run("score", model, workdir / "ids.csv", "-o", out, "--keep", "id,label,a")
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(out)
    assert list(scored.columns) == ["id", "label", "a", "b", "c", "d", "log_prob"]
    assert scored["id"].tolist() == table["id"].tolist() and scored["label"].tolist() == list(range(25))
    plain = workdir / "plain.csv"
    assert run("score", model, workdir / "ids.csv", "-o", plain).exit_code == 0
    np.testing.assert_array_equal(scored["log_prob"], pd.read_csv(plain)["log_prob"])


def test_score_keep_needs_an_output_and_existing_columns(model, workdir):
    manifold_table(5, seed=4).to_csv(workdir / "few.csv", index=False)
    assert_one_line_error(run("score", model, workdir / "few.csv", "--keep", "a"), "--keep", "-o")
    result = run("score", model, workdir / "few.csv", "-o", workdir / "kept.csv", "--keep", "id")
    assert_one_line_error(result, "few.csv", "id")
    assert not (workdir / "kept.csv").exists()


def test_sample_writes_the_training_columns(model, workdir):
    out = workdir / "fake.parquet"
    result = run("sample", model, "-n", "37", "-o", out, "--seed", "1", "--temperature", "0.8")
    assert result.exit_code == 0, result.output
    fake = pd.read_parquet(out)
    assert list(fake.columns) == ["a", "b", "c", "d"] and len(fake) == 37
    assert np.isfinite(fake.to_numpy()).all()


def test_sample_with_a_seed_is_reproducible(model, workdir):
    for name in ("one.csv", "two.csv"):
        assert run("sample", model, "-n", "5", "-o", workdir / name, "--seed", "7").exit_code == 0
    assert (workdir / "one.csv").read_text() == (workdir / "two.csv").read_text()


def test_info_shows_recipe_dimensions_and_training(model):
    result = run("info", model)
    assert result.exit_code == 0
    assert "4 -> 2" in result.stdout and "gaussian" in result.stdout
    assert json.loads(run("info", model, "--json").stdout)["latent_dim"] == 2


def test_recipes_lists_and_shows_the_bundled_recipes():
    listing = run("recipes")
    assert listing.exit_code == 0 and "f-nsf" in listing.stdout and "nsf-ar" in listing.stdout
    shown = run("recipes", "show", "f-nsf")
    assert shown.exit_code == 0 and 'family = "f-nsf"' in shown.stdout


def test_the_package_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "funnelcli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("funnelcli ")


# -- every user mistake: exit 2, one line, no traceback, no output -------------------------------------------


def write(workdir: Path, name: str, text: str) -> Path:
    path = workdir / name
    path.write_text(text)
    return path


MISTAKES = {
    "non-numeric column selected": (
        lambda w: ["train", write(w, "text.csv", "a,b\n1,x\n2,y\n3,z\n"), "--columns", "a,b"],
        ["text.csv", "'b'"],
    ),
    "NaN in a column": (
        lambda w: ["train", write(w, "nan.csv", "a,b\n1,2\n,3\n4,5\n"), "--columns", "a,b"],
        ["nan.csv", "'a'", "1 NaN"],
    ),
    "infinity in a column": (
        lambda w: ["train", write(w, "inf.csv", "a,b\n1,2\ninf,3\n4,5\n")],
        ["inf.csv", "'a'", "infinite"],
    ),
    "empty table": (lambda w: ["train", write(w, "empty.csv", "a,b\n")], ["empty.csv", "no rows"]),
    "missing file": (lambda w: ["train", w / "absent.csv"], ["absent.csv", "no such file"]),
    "unknown recipe key": (
        lambda w: ["train", w / "data.csv", "--recipe", write(w, "typo.toml", "[model]\nbinz = 3\n")],
        ["'binz'", "'bins'"],
    ),
    "bad recipe value": (
        lambda w: ["train", w / "data.csv", "--recipe", write(w, "bad.toml", "[training]\nlr = -1\n")],
        ["training.lr"],
    ),
    "unknown recipe name": (lambda w: ["train", w / "data.csv", "--recipe", "nope"], ["'nope'"]),
    "reduce on a family without a funnel": (
        lambda w: ["train", w / "data.csv", "--recipe", "nsf", "--reduce", "0.5"],
        ["--reduce", "no funnel"],
    ),
    "reduce out of range": (lambda w: ["train", w / "data.csv", "--reduce", "1.5"], ["reduce", "(0, 1)"]),
    "unknown ansatz": (lambda w: ["train", w / "data.csv", "--ansatz", "normal"], ["ansatz", "'gaussian'"]),
    "constant column": (
        lambda w: ["train", write(w, "const.csv", "a,b\n1,2\n1,3\n1,4\n1,5\n"), "--val-fraction", "0.25"],
        ["'a'", "constant"],
    ),
    "missing column at score": (
        lambda w: ["score", w / "model", write(w, "fewer.csv", "a,b,c\n1,2,3\n")],
        ["fewer.csv", "'d'"],
    ),
    "not a model folder": (lambda w: ["score", w, w / "data.csv"], ["not a model folder"]),
    "unsupported output extension": (
        lambda w: ["score", w / "model", w / "data.csv", "-o", w / "scores.xlsx"],
        ["scores.xlsx", ".parquet"],
    ),
    "negative temperature": (
        lambda w: ["sample", w / "model", "-n", "3", "-o", w / "t.csv", "--temperature", "-1"],
        ["temperature"],
    ),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_user_mistake_is_one_line_and_exit_code_2_with_no_output(mistake, model, workdir):
    make_args, fragments = MISTAKES[mistake]
    out = workdir / "mistake-out"
    args = make_args(workdir)
    if args[0] == "train":
        args += ["--out", out]
    before = set(workdir.iterdir())
    result = run(*args)
    assert_one_line_error(result, *fragments)
    created = {p for p in set(workdir.iterdir()) - before if not p.name.endswith((".csv", ".toml"))}
    assert not created and not out.exists()


def test_an_existing_model_is_not_replaced_without_force(model, workdir):
    before = (model / "model.safetensors").read_bytes()
    result = run("train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--out", model)
    assert_one_line_error(result, "--force")
    assert (model / "model.safetensors").read_bytes() == before


def test_a_failure_that_is_not_the_users_is_one_line_and_exit_code_1(model, workdir, monkeypatch):
    from funnelcli.estimator import FunnelDensity

    def broken(self, X, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(FunnelDensity, "score_samples", broken)
    out = workdir / "never.parquet"
    result = run("score", model, workdir / "test.parquet", "-o", out)
    assert_one_line_error(result, "internal error", "simulated bug", "FUNNEL_DEBUG", code=1)
    assert not out.exists()


@pytest.mark.parametrize(
    "command",
    [[], ["train"], ["sweep"], ["score"], ["encode"], ["sample"], ["info"], ["evaluate"], ["report"], ["compare"],
     ["recipes"], ["recipes", "show"], ["data"], ["data", "prepare"], ["data", "inspect"]],
)  # fmt: skip
def test_minus_h_prints_the_help_as_help_does(command):
    short, long = run(*command, "-h"), run(*command, "--help")
    assert short.exit_code == 0 and "Usage:" in short.output
    assert short.output == long.output
