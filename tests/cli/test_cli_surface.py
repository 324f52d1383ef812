"""The command line's surface is the same on every command.

Every command answers -h. Every command that writes takes its output as --output, -o or --out (the spelling
that train, sweep and data prepare took before; an alias now), and its help names --output first. Every command
that prints results prints exactly one JSON object on stdout with --json, warnings included in it. And
`funnel --show-completion` prints a shell completion script that names `funnel`, however funnel was started.

One tiny model is trained once for the whole module; every run of a writing command is made once and shared by
the tests that read it, and `funnel report` writes its figures as empty files (rendering them takes seconds).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from funnelcli.cli import app
from funnelcli.evaluation import plots
from tests.helpers import RECIPE, manifold_table

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run on one torch thread


runner = CliRunner()

#: Every command and subcommand.
COMMANDS = [
    ["train"], ["sweep"], ["score"], ["encode"], ["sample"], ["info"], ["evaluate"], ["report"], ["compare"],
    ["recipes"], ["recipes", "list"], ["recipes", "show"], ["data", "prepare"], ["data", "inspect"],
]  # fmt: skip

#: The commands that write, each with its arguments (``w`` is the work folder) and what it writes: a file, or a
#: folder holding the named file.
WRITERS = {
    "train": (lambda w: ["train", w / "data.csv", "--recipe", w / "tiny.toml", "--steps", "2"], "model.json"),
    "sweep": (
        lambda w: (
            ["sweep", w / "data.csv", "--recipe", w / "tiny.toml", "--latent-dims", "1", "--no-full"] + ["--steps", "2"]
        ),
        "sweep.json",
    ),
    "score": (lambda w: ["score", w / "model", w / "data.csv"], None),
    "encode": (lambda w: ["encode", w / "model", w / "data.csv"], None),
    "sample": (lambda w: ["sample", w / "model", "-n", "5"], None),
    "report": (lambda w: ["report", w / "model", w / "data.csv"], "index.html"),
    "data prepare": (lambda w: ["data", "prepare", "miniboone", w / "raw"], "manifest.json"),
}

#: The commands that only print, with their arguments.
PRINTERS = {
    "info": lambda w: ["info", w / "model"],
    "evaluate": lambda w: ["evaluate", w / "model", w / "data.csv"],
    "compare": lambda w: ["compare", w / "model", "--data", w / "data.csv"],
    "recipes": lambda w: ["recipes"],
    "recipes list": lambda w: ["recipes", "list"],
    "recipes show": lambda w: ["recipes", "show", "f-nsf"],
    "data inspect": lambda w: ["data", "inspect", w / "data.csv"],
}

SPELLINGS = ["--output", "-o", "--out"]


def run(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], prog_name="funnel", **kwargs)


def one_json_object(result) -> dict:
    """Exit 0, and stdout is one line holding one JSON object; return it."""
    assert result.exit_code == 0, (result.exit_code, result.output)
    assert len(result.stdout.splitlines()) == 1, result.stdout
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A table with an integer column (which training dequantizes, with a warning), and a raw MAF data set."""
    root = tmp_path_factory.mktemp("surface")
    (root / "tiny.toml").write_text(RECIPE)
    table = manifold_table(200)[["a", "b", "c"]]
    table["n"] = np.arange(len(table)) % 5
    table.to_csv(root / "data.csv", index=False)
    rng = np.random.default_rng(5)
    raw = root / "raw" / "miniboone" / "data.npy"
    raw.parent.mkdir(parents=True)
    np.save(raw, rng.normal(size=(300, 43)) * np.geomspace(0.01, 100, 43) + np.linspace(-5, 5, 43))
    return root


@pytest.fixture(scope="module")
def trained(workdir):
    """`funnel train --output WORK/model --json`: the model every other command reads."""
    return run(
        "train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--output", workdir / "model", "--json"
    )


def empty_png(figure, path) -> Path:
    """Stands in for rendering a report figure (seconds each; test_evaluate looks at the real ones)."""
    Path(path).write_bytes(b"")
    return Path(path)


@pytest.fixture(scope="module")
def written(workdir, trained):
    """``written(command, spelling)``: the writing command run once with ``spelling OUTPUT --json``, and OUTPUT."""
    assert trained.exit_code == 0, trained.output
    runs: dict[tuple[str, str], tuple] = {}

    def get(command: str, spelling: str):
        if (command, spelling) not in runs:
            arguments, inside = WRITERS[command]
            output = workdir / "written" / f"{command.replace(' ', '-')}{spelling.lstrip('-')}"
            output = output if inside else output.with_suffix(".csv")
            with pytest.MonkeyPatch.context() as patch:
                if command == "report":
                    patch.setattr(plots, "save_png", empty_png)
                runs[command, spelling] = run(*arguments(workdir), spelling, output, "--json"), output
        return runs[command, spelling]

    return get


# -- -h ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_answers_minus_h_with_its_usage(command):
    result = run(*command, "-h")
    assert result.exit_code == 0, result.output
    assert f"Usage: funnel {' '.join(command)}" in result.stdout


# -- -o / --output / --out ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", WRITERS)
def test_every_writing_command_names_output_first_in_its_help_with_o_and_out_beside_it(command):
    result = run(*command.split(), "-h")
    assert result.exit_code == 0, result.output
    flags = [re.findall(r"(?<![\w-])--?[a-z][\w-]*", line) for line in result.stdout.splitlines()]
    (names,) = [names for names in flags if {"--output", "-o", "--out"} <= set(names)]
    assert names[0] == "--output", names


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("command", WRITERS)
def test_every_writing_command_writes_its_output_where_each_spelling_points(written, command, spelling):
    result, output = written(command, spelling)
    assert result.exit_code == 0, result.output
    inside = WRITERS[command][1]
    assert (output / inside).is_file() if inside else output.is_file()


# -- --json ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [*WRITERS, *PRINTERS])
def test_every_command_that_prints_results_prints_exactly_one_json_object_with_json(workdir, written, command):
    if command in WRITERS:
        result, _ = written(command, "--output")
    else:
        result = run(*PRINTERS[command](workdir), "--json")
    one_json_object(result)
    assert "warning:" not in result.stderr, result.stderr  # warnings go into the JSON


def test_train_json_holds_the_dequantization_warning_and_the_dequantized_columns(trained):
    document = one_json_object(trained)
    assert document["dequantized_columns"] == ["n"]
    assert any("dequantization" in warning and "'n'" in warning for warning in document["warnings"])
    assert trained.stderr == ""


@pytest.mark.parametrize("command", ["score", "encode", "sample", "report"])
def test_the_json_of_a_command_that_writes_one_output_names_it(written, command):
    result, output = written(command, "--output")
    assert one_json_object(result)["output"] == str(output)


def test_encode_json_gives_the_rows_and_the_latent_columns(written, trained):
    document = one_json_object(written("encode", "--output")[0])
    latent = one_json_object(trained)["latent_dim"]
    assert (document["rows"], document["columns"], document["latent_dim"]) == (
        200,
        [f"z{j}" for j in range(latent)],
        latent,
    )


def test_sample_json_gives_the_rows_and_the_training_columns(written):
    document = one_json_object(written("sample", "--output")[0])
    assert (document["rows"], document["columns"]) == (5, ["a", "b", "c", "n"])


def test_report_json_gives_the_index_page(written):
    result, output = written("report", "--output")
    assert one_json_object(result)["report"] == str(output / "index.html")


def test_recipes_json_lists_every_bundled_recipe_with_its_family_and_description():
    from funnelcli.models.recipe import bundled_recipes

    listing = one_json_object(run("recipes", "--json"))["recipes"]
    assert sorted(entry["name"] for entry in listing) == sorted(bundled_recipes())
    assert all(set(entry) == {"name", "family", "description"} for entry in listing)
    assert one_json_object(run("recipes", "list", "--json")) == {"recipes": listing}


def test_recipes_show_json_holds_the_recipe_fields_and_its_size_for_dim():
    document = one_json_object(run("recipes", "show", "f-nsf", "--dim", "10", "--json"))
    assert (document["name"], document["family"]) == ("f-nsf", "f-nsf")
    assert document["model"]["flow_steps"] > 0 and document["training"]["steps"] > 0
    assert document["size"]["columns"] == 10 and document["size"]["parameters"] > 0
    assert one_json_object(run("recipes", "--json", "show", "f-nsf", "--dim", "10")) == document


# -- shell completion --------------------------------------------------------------------------------------------


@pytest.fixture
def in_bash(monkeypatch, tmp_path) -> Path:
    """The shell funnel finds itself in is bash, and HOME is an empty folder (to see that nothing is installed)."""
    import shellingham

    monkeypatch.setattr(shellingham, "detect_shell", lambda *args, **kwargs: ("bash", "/bin/bash"))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_show_completion_prints_a_bash_script_for_funnel_and_installs_nothing(in_bash):
    result = run("--show-completion")
    assert result.exit_code == 0, result.output
    assert "complete -o default -F _funnel_completion funnel" in result.stdout
    assert "_FUNNEL_COMPLETE=complete_bash" in result.stdout
    assert list(in_bash.iterdir()) == []


def test_the_completion_script_completes_command_names():
    result = run(env={"_FUNNEL_COMPLETE": "complete_bash", "COMP_WORDS": "funnel tr", "COMP_CWORD": "1"})
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ["train"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_python_m_funnelcli_prints_the_same_script_for_the_funnel_command(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}
    # Run from bash (not exec'd by it) so that the shell funnel finds is bash.
    command = ["bash", "-c", '"$0" -m funnelcli --show-completion; exit $?', sys.executable]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "complete -o default -F _funnel_completion funnel" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_info_reads_a_model_folder_without_importing_torch(tmp_path):
    import subprocess
    import sys

    from funnelcli.estimator import FunnelDensity
    from tests.helpers import manifold_table, tiny_recipe

    FunnelDensity(tiny_recipe("f-nsf"), steps=3, device="cpu").fit(manifold_table(200)).save(tmp_path / "model")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "funnelcli", "info", str(tmp_path / "model"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    imported = [line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time")]
    assert imported and not [name for name in imported if name.split(".")[0] == "torch"]
