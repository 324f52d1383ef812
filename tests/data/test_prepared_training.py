"""A folder from `funnel data prepare` goes straight into train, score and encode, with its own splits."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from funnelcli.cli import app
from tests.helpers import write_power

runner = CliRunner()


def test_train_and_score_use_a_prepared_folders_own_splits(tmp_path):
    write_power(tmp_path / "raw")
    prepared = tmp_path / "power"
    assert runner.invoke(app, ["data", "prepare", "power", str(tmp_path / "raw"), "-o", str(prepared)]).exit_code == 0
    (tmp_path / "tiny.toml").write_text(
        "[model]\nflow_steps = 2\nhidden_features = 16\nfunnel_level = 0\n[training]\nsteps = 5\n"
    )
    trained = runner.invoke(
        app,
        ["train", str(prepared), "--recipe", str(tmp_path / "tiny.toml"), "--out", str(tmp_path / "model"), "--json"],
    )
    assert trained.exit_code == 0, trained.output
    metadata = json.loads((tmp_path / "model" / "model.json").read_text())
    splits = json.loads((prepared / "manifest.json").read_text())["splits"]
    assert metadata["training"]["train_rows"] == splits["train"]["rows"]
    assert metadata["training"]["validation_rows"] == splits["validation"]["rows"]

    scored = runner.invoke(app, ["score", str(tmp_path / "model"), str(prepared), "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["rows"] == splits["test"]["rows"]

    encoded = runner.invoke(app, ["encode", str(tmp_path / "model"), str(prepared), "-o", str(tmp_path / "z.csv")])
    assert encoded.exit_code == 0 and len(pd.read_csv(tmp_path / "z.csv")) == splits["test"]["rows"]


def test_the_default_model_folder_is_named_after_the_prepared_folder(tmp_path, monkeypatch):
    write_power(tmp_path / "raw")
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["data", "prepare", "power", "raw", "-o", "power"]).exit_code == 0
    (tmp_path / "tiny.toml").write_text(
        "[model]\nflow_steps = 1\nhidden_features = 8\nfunnel_level = 0\n[training]\nsteps = 2\n"
    )
    result = runner.invoke(app, ["train", "power/", "--recipe", "tiny.toml", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "power" / "model.json").is_file()
