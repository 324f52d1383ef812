"""Nothing in a model folder, checkpoint, recipe or flag is believed before it is checked.

An edited ``model.json`` (a recipe size, the columns, the scaler, a field of the wrong type), an edited checkpoint
header, a recipe or flag beyond its stated range, a file nested thousands deep and a model too large to build are
each refused with exit 2 and one ``error:`` line that names the problem, before anything is built or written: no
traceback, no hang, no output.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import save

from funnelcli import artifact
from funnelcli.errors import UserError
from funnelcli.estimator import FunnelDensity
from funnelcli.models import build_model, bundled_recipes, load_recipe
from funnelcli.models.families import DEFAULT_MAX_PARAMETERS, estimate_size
from funnelcli.models.registry import FAMILIES
from tests.helpers import (
    SignalAt,
    assert_one_line_error,
    feed_training_to,
    manifold_table,
    run,
    tiny_recipe,
    write_recipe,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run on one torch thread

#: A test that runs longer than this has hung (an unchecked size looping or allocating): it fails.
HANG_SECONDS = 120


class Hung(BaseException):
    """Raised by the alarm: a BaseException, so that no `except Exception` (the CLI's included) swallows it."""


@pytest.fixture(autouse=True)
def no_hang():
    """Fail a test that hangs in Python (alarm), and kill the run if it hangs in C (faulthandler, later)."""

    def alarm(signum, frame):
        raise Hung(f"the test ran past {HANG_SECONDS} s: an unchecked size was used")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_SECONDS)
    faulthandler.dump_traceback_later(2 * HANG_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


VAE_RECIPE = """
family = "vae"
[model]
hidden_features = 8
vae_layers = 1
[training]
batch_size = 64
steps = 10
eval_every = 10
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    write_recipe(root)
    (root / "vae.toml").write_text(VAE_RECIPE)
    manifold_table(300).to_csv(root / "data.csv", index=False)
    return root


def train_args(workdir: Path, out: Path, recipe: str = "tiny.toml") -> list:
    return ["train", workdir / "data.csv", "--recipe", workdir / recipe, "--out", out, "--steps", "10", "-q"]


@pytest.fixture(scope="module")
def model(workdir) -> Path:
    result = run(*train_args(workdir, workdir / "model"))
    assert result.exit_code == 0, result.output
    return workdir / "model"


@pytest.fixture(scope="module")
def vae(workdir) -> Path:
    result = run(*train_args(workdir, workdir / "vae", "vae.toml"))
    assert result.exit_code == 0, result.output
    return workdir / "vae"


@pytest.fixture(scope="module")
def interrupted(workdir) -> Path:
    """The folder of a run stopped by SIGINT after step 3: it holds only checkpoints/."""
    out = workdir / "interrupted"
    with pytest.MonkeyPatch.context() as patch:
        feed_training_to(patch, SignalAt(3))
        result = run(*train_args(workdir, out))
    assert result.exit_code == 130, result.output
    assert (out / artifact.CHECKPOINTS / artifact.LATEST).is_file()
    return out


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a hash of its bytes: what "nothing was written" compares."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
        for path in sorted(root.rglob("*"))
    }


def refused(root: Path, args: list, *fragments: str) -> str:
    """Run the CLI; assert exit 2, one error line holding ``fragments``, and ``root`` unchanged."""
    before = snapshot(root)
    line = assert_one_line_error(run(*args), *fragments)
    assert snapshot(root) == before
    return line


# -- an edited model.json -----------------------------------------------------------------------------------


def edit_json(folder: Path, change: Callable[[dict], None]) -> None:
    document = json.loads((folder / artifact.METADATA).read_text())
    change(document)
    (folder / artifact.METADATA).write_text(json.dumps(document))


def setter(*path, value):
    """A change that sets document[path[0]][path[1]]... to ``value``."""

    def change(document):
        for key in path[:-1]:
            document = document[key]
        document[path[-1]] = value

    return change


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


#: A field edited within its type and range: only the weights' record of model.json shows that it changed.
EDITED_VALUES = {
    "recipe flow_steps 2 -> 5": (setter("recipe", "model", "flow_steps", value=5), "recipe.model.flow_steps"),
    "recipe hidden_features 16 -> 50000": (
        setter("recipe", "model", "hidden_features", value=50000),
        "recipe.model.hidden_features",
    ),
    "recipe bins 4 -> 8": (setter("recipe", "model", "bins", value=8), "recipe.model.bins"),
    "recipe tail_bound 3 -> 5": (setter("recipe", "model", "tail_bound", value=5.0), "recipe.model.tail_bound"),
    "recipe family f-nsf -> nsf": (
        lambda d: d["recipe"].update(family="nsf", model={"flow_steps": 2, "hidden_features": 16}),
        "recipe.family",
    ),
    "recipe training seed": (setter("recipe", "training", "seed", value=7), "recipe.training.seed"),
    "recipe name": (setter("recipe_name", value="other"), "recipe_name"),
    "columns reversed": (lambda d: d.update(columns=d["columns"][::-1]), "columns"),
    "input_columns reversed": (lambda d: d.update(input_columns=d["input_columns"][::-1]), "input_columns"),
    "columns renamed consistently": (
        lambda d: d.update(
            columns=["w", "x", "y", "z"],
            input_columns=["w", "x", "y", "z"],
            dtypes={"w": "float64", "x": "float64", "y": "float64", "z": "float64"},
        ),
        "columns",
    ),
    "scaler mean changed": (lambda d: d["scaler"]["mean"].__setitem__(0, 1.5), "scaler.mean"),
    "scaler std doubled": (lambda d: d["scaler"].update(std=[2 * s for s in d["scaler"]["std"]]), "scaler.std"),
    "dequantized columns added": (lambda d: d.update(dequantized_columns=["a"]), "dequantized_columns"),
    "dequantize turned off": (lambda d: d.update(dequantize="none"), "dequantize"),
    "a dropped constant column added": (
        lambda d: d.update(dropped_constant_columns=["e"], input_columns=[*d["input_columns"], "e"]),
        "input_columns",
    ),
    "dtypes changed": (lambda d: d["dtypes"].update(a="int64"), "dtypes.a"),
    "fitted on names turned off": (lambda d: d.update(fitted_on_names=False), "fitted_on_names"),
    "latent_dim 2 -> 3": (lambda d: d.update(latent_dim=3), "latent_dim"),
    "parameters changed": (lambda d: d.update(parameters=d["parameters"] + 1), "parameters"),
    "max_parameters raised": (lambda d: d.update(max_parameters=10**12), "max_parameters"),
}


@pytest.mark.parametrize("edit", EDITED_VALUES)
def test_a_model_json_field_edited_within_its_range_is_refused_as_not_matching_the_weights(model, tmp_path, edit):
    folder = shutil.copytree(model, tmp_path / "model")
    change, field = EDITED_VALUES[edit]
    edit_json(folder, change)
    args = ["score", folder, model.parent / "data.csv", "-o", tmp_path / "scores.csv"]
    refused(tmp_path, args, "model.json was edited", f"field {field} differs", "retrain")


#: A field edited to a value of the wrong type, out of range, missing or unknown: refused by its check, which
#: comes before the weights are read.
BAD_VALUES = {
    # recipe sizes beyond their range
    "flow_steps 10^7": (setter("recipe", "model", "flow_steps", value=10**7), "model.flow_steps", "<= 1000"),
    "hidden_features 10^6": (setter("recipe", "model", "hidden_features", value=10**6), "hidden_features", "65536"),
    "tail_bound 1e300": (setter("recipe", "model", "tail_bound", value=1e300), "tail_bound", "(0, 1000]"),
    "steps 10^9": (setter("recipe", "training", "steps", value=10**9), "training.steps", "100000000"),
    # a string where an integer belongs, and other wrong types
    "str for int": (setter("recipe", "model", "hidden_features", value="16"), "hidden_features", "an integer"),
    "float for int": (setter("recipe", "model", "flow_steps", value=2.0), "flow_steps", "an integer"),
    "bool for int": (setter("recipe", "model", "flow_steps", value=True), "flow_steps", "an integer"),
    "null for int": (setter("recipe", "model", "bins", value=None), "bins", "an integer"),
    "NaN for float": (setter("recipe", "model", "tail_bound", value=float("nan")), "tail_bound", "finite"),
    "Infinity for float": (setter("recipe", "training", "lr", value=float("inf")), "training.lr", "finite"),
    "list for dict (recipe)": (setter("recipe", value=[1, 2]), "recipe", "table"),
    "list for dict (training)": (setter("training", value=[]), "field training", "table"),
    "list for dict (scaler)": (setter("scaler", value=[0.0, 1.0]), "field scaler", "table"),
    "dict for list (columns)": (setter("columns", value={"a": 1}), "field columns", "list"),
    "null for list (input_columns)": (setter("input_columns", value=None), "field input_columns", "list"),
    "str for bool": (setter("fitted_on_names", value="yes"), "field fitted_on_names", "true or false"),
    "float for int (input_dim)": (setter("input_dim", value=4.0), "field input_dim", "an integer"),
    "bool for int (latent_dim)": (setter("latent_dim", value=True), "field latent_dim", "an integer"),
    "int for str (versions)": (setter("versions", "torch", value=2), "field versions", "table"),
    "str for number (training summary)": (
        setter("training", "best_val_log_prob", value="high"),
        "training.best_val_log_prob",
        "a number",
    ),
    "NaN in the scaler": (lambda d: d["scaler"]["mean"].__setitem__(0, float("nan")), "scaler", "finite"),
    "zero std in the scaler": (lambda d: d["scaler"]["std"].__setitem__(0, 0.0), "scaler", "positive"),
    "scaler of another width": (setter("scaler", value={"mean": [0.0], "std": [1.0]}), "scaler", "does not fit"),
    "a 400-digit parameter count": (setter("parameters", value=10**400), "field parameters", "whole number"),
    "input_columns shortened": (lambda d: d.update(input_columns=d["input_columns"][:-1]), "input_columns", "columns"),
    "a dequantized column that is not modelled": (
        setter("dequantized_columns", value=["zz"]),
        "dequantized_columns",
        "not dequantized",
    ),
    "latent_dim above input_dim": (setter("latent_dim", value=9), "latent_dim", "exceeds input_dim"),
    "a field missing": (lambda d: d.pop("latent_dim"), "lacks field latent_dim", "retrain"),
    "a field missing from the training summary": (
        lambda d: d["training"].pop("steps"),
        "lacks field training.steps",
        "retrain",
    ),
    "an unknown field": (setter("extra", value=1), "unknown field 'extra'", "retrain"),
    "no weights checksum": (setter("weights_sha256", value=None), "no weights_sha256", "retrain"),
    "another format version": (setter("format_version", value=1), "format version 1", "reads version 2"),
    "a field nested 500 deep": (setter("training", value=nested(500)), "field training", "table"),
}


@pytest.mark.parametrize("edit", BAD_VALUES)
def test_a_model_json_field_of_the_wrong_type_or_range_is_refused_naming_it(model, tmp_path, edit):
    folder = shutil.copytree(model, tmp_path / "model")
    change, *fragments = BAD_VALUES[edit]
    edit_json(folder, change)
    args = ["score", folder, model.parent / "data.csv", "-o", tmp_path / "scores.csv"]
    refused(tmp_path, args, str(folder / artifact.METADATA), *fragments)


@pytest.mark.parametrize("where", ["the whole file", "one field"])
def test_a_model_json_nested_thousands_deep_is_refused_in_one_line(model, tmp_path, where):
    folder = shutil.copytree(model, tmp_path / "model")
    deep = "[" * 100_000 + "]" * 100_000
    text = (folder / artifact.METADATA).read_text()
    text = deep if where == "the whole file" else text.replace('"training": {', f'"deep": {deep}, "training": {{')
    (folder / artifact.METADATA).write_text(text)
    args = ["score", folder, model.parent / "data.csv", "-o", tmp_path / "scores.csv"]
    refused(tmp_path, args, str(folder / artifact.METADATA), "nested too deeply")


@pytest.mark.parametrize("command", ["info", "sample", "encode"])
def test_every_command_that_reads_a_model_refuses_an_edited_model_json(model, tmp_path, command):
    folder = shutil.copytree(model, tmp_path / "model")
    edit_json(folder, lambda d: d.update(columns=d["columns"][::-1]))
    out = tmp_path / "out.csv"
    args = {
        "info": ["info", folder],
        "sample": ["sample", folder, "-n", "5", "-o", out],
        "encode": ["encode", folder, model.parent / "data.csv", "-o", out],
    }[command]
    refused(tmp_path, args, "model.json was edited", "field columns differs")


def test_an_unedited_copy_of_a_model_folder_still_scores(model, tmp_path):
    folder = shutil.copytree(model, tmp_path / "model")
    result = run("score", folder, model.parent / "data.csv", "--json")
    assert result.exit_code == 0, result.output


def test_weights_that_carry_no_record_of_model_json_are_refused(model, tmp_path):
    folder = shutil.copytree(model, tmp_path / "model")
    with safe_open(str(folder / artifact.WEIGHTS), framework="pt") as file:
        tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (not a dict)
    (folder / artifact.WEIGHTS).write_bytes(save(tensors))
    edit_json(folder, setter("weights_sha256", value=artifact.sha256(folder / artifact.WEIGHTS)))
    args = ["score", folder, model.parent / "data.csv", "-o", tmp_path / "scores.csv"]
    refused(tmp_path, args, str(folder / artifact.WEIGHTS), "no record of its model.json", "retrain")


# -- an edited checkpoint header -----------------------------------------------------------------------------


def edit_header(path: Path, change: Callable[[dict], None], *, rehash: bool = False) -> None:
    """Rewrite a checkpoint's JSON header; with ``rehash``, record the edited document's SHA-256 (a forgery)."""
    with safe_open(str(path), framework="pt") as file:
        header = file.metadata()
        tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (not a dict)
    document = json.loads(header["funnelcli"])
    change(document)
    if rehash:
        document["header_sha256"] = artifact._header_sha256(document)
    path.write_bytes(save(tensors, metadata={"funnelcli": json.dumps(document)}))


def resume_args(workdir: Path, out: Path) -> list:
    return [*train_args(workdir, out), "--resume"]


def test_an_unedited_copy_of_a_checkpoint_resumes(workdir, interrupted, tmp_path):
    out = shutil.copytree(interrupted, tmp_path / "run")
    result = run(*resume_args(workdir, out), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["resumed_at_step"] == 3


#: Header fields edited without the header's SHA-256: the checksum over the whole document shows it.
EDITED_HEADER = {
    "step 3 -> 9": setter("step", value=9),
    "steps 10 -> 20": setter("steps", value=20),
    "best_val raised": setter("best_val", value=100.0),
    "best_step": setter("best_step", value=2),
    "cursor": setter("cursor", value=0),
    "history record added": setter("history", value=[{"step": 1, "val_log_prob": 9.0}]),
    "settings lr": setter("settings", "lr", value=0.1),
    "data fingerprint": setter("data_sha256", value="0" * 64),
    "device": setter("device", value="cuda"),
    "seconds": setter("seconds", value=0.0),
    "tensors checksum": setter("tensors_sha256", value="0" * 64),
    "header checksum removed": lambda d: d.pop("header_sha256"),
}


@pytest.mark.parametrize("edit", EDITED_HEADER)
def test_an_edited_checkpoint_header_is_refused_naming_the_checkpoint(workdir, interrupted, tmp_path, edit):
    out = shutil.copytree(interrupted, tmp_path / "run")
    latest = out / artifact.CHECKPOINTS / artifact.LATEST
    edit_header(latest, EDITED_HEADER[edit])
    refused(tmp_path, resume_args(workdir, out), f"checkpoint {latest}", "header was edited", "--force")


#: Header fields forged with a recomputed SHA-256 but of the wrong type or out of range: each is named.
FORGED_HEADER = {
    "step as a string": (setter("step", value="3"), "step"),
    "step past steps": (setter("step", value=11), "step"),
    "steps 0": (setter("steps", value=0), "steps"),
    "steps 10^12": (setter("steps", value=10**12), "steps"),
    "kind": (setter("kind", value="other"), "kind"),
    "best_val as a string": (setter("best_val", value="high"), "best_val"),
    "best_step past step": (setter("best_step", value=9), "best_step"),
    "skipped negative": (setter("skipped", value=-1), "skipped"),
    "history a dict": (setter("history", value={}), "history"),
    "optimizer a list": (setter("optimizer", value=[]), "optimizer"),
    "settings a list": (setter("settings", value=[]), "settings"),
    "seconds NaN": (setter("seconds", value=float("nan")), "seconds"),
    "stopped_early null": (setter("stopped_early", value=None), "stopped_early"),
    "world_size 0": (setter("world_size", value=0), "world_size"),
}


@pytest.mark.parametrize("edit", FORGED_HEADER)
def test_a_forged_checkpoint_header_field_of_the_wrong_type_or_range_is_refused_naming_it(
    workdir, interrupted, tmp_path, edit
):
    out = shutil.copytree(interrupted, tmp_path / "run")
    latest = out / artifact.CHECKPOINTS / artifact.LATEST
    change, field = FORGED_HEADER[edit]
    edit_header(latest, change, rehash=True)
    refused(tmp_path, resume_args(workdir, out), f"checkpoint {latest}", f"header field {field}", "--force")


def test_a_checkpoint_header_nested_thousands_deep_is_refused_in_one_line(workdir, interrupted, tmp_path):
    out = shutil.copytree(interrupted, tmp_path / "run")
    latest = out / artifact.CHECKPOINTS / artifact.LATEST
    with safe_open(str(latest), framework="pt") as file:
        tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (not a dict)
    latest.write_bytes(save(tensors, metadata={"funnelcli": "[" * 100_000 + "]" * 100_000}))
    line = refused(tmp_path, resume_args(workdir, out))
    assert "Recursion" not in line and "internal error" not in line


# -- recipes and flags beyond their stated ranges ---------------------------------------------------------------

#: (family, [model] lines, [training] lines, the field named): each recipe has one value out of range.
OUT_OF_RANGE = {
    "flow_steps 10^9": ("f-nsf", "flow_steps = 1000000000", "", "model.flow_steps"),
    "hidden_features 10^6": ("f-nsf", "hidden_features = 1000000", "", "model.hidden_features"),
    "residual_blocks 65": ("nsf", "residual_blocks = 65", "", "model.residual_blocks"),
    "bins 257": ("nsf", "bins = 257", "", "model.bins"),
    "tail_bound 1e300": ("f-nsf", "tail_bound = 1e300", "", "model.tail_bound"),
    "tail_bound inf": ("f-nsf", "tail_bound = inf", "", "model.tail_bound"),
    "tail_bound nan": ("f-nsf", "tail_bound = nan", "", "model.tail_bound"),
    "funnel_level 1000": ("f-nsf", "funnel_level = 1000", "", "model.funnel_level"),
    "ansatz_hidden_features 10^5": ("f-nsf", "ansatz_hidden_features = 100000", "", "model.ansatz_hidden_features"),
    "ansatz_layers 65": ("f-nsf", "ansatz_layers = 65", "", "model.ansatz_layers"),
    "ansatz_flow_steps 1001": ("f-nsf", "ansatz_flow_steps = 1001", "", "model.ansatz_flow_steps"),
    "vae_layers 65": ("vae", "vae_layers = 65", "", "model.vae_layers"),
    "mlp_layout of 1001 layers": ("f-mlp", f"mlp_layout = {['preserve'] * 1000 + ['latent']}", "", "mlp_layout"),
    "batch_size 2^21": ("nsf", "", "batch_size = 2097152", "training.batch_size"),
    "lr 11": ("nsf", "", "lr = 11.0", "training.lr"),
    "steps 10^9": ("nsf", "", "steps = 1000000000", "training.steps"),
    "grad_clip 1e7": ("nsf", "", "grad_clip = 1e7", "training.grad_clip"),
    "eval_every 10^9": ("nsf", "", "eval_every = 1000000000", "training.eval_every"),
    "patience 10^7": ("nsf", "", "patience = 10000000", "training.patience"),
    "seed 2^32": ("nsf", "", "seed = 4294967296", "training.seed"),
}


@pytest.mark.parametrize("case", OUT_OF_RANGE)
def test_a_recipe_field_beyond_its_stated_range_is_refused_before_training(workdir, tmp_path, case):
    family, model_lines, training_lines, field = OUT_OF_RANGE[case]
    recipe = tmp_path / "big.toml"
    recipe.write_text(f'family = "{family}"\n[model]\n{model_lines}\n[training]\n{training_lines}\n')
    args = ["train", workdir / "data.csv", "--recipe", recipe, "--out", tmp_path / "out"]
    refused(tmp_path, args, field, "must be")


def test_a_recipe_input_dim_beyond_its_range_is_refused(tmp_path):
    recipe = tmp_path / "wide.toml"
    recipe.write_text('family = "nsf"\ninput_dim = 100001\n')
    refused(tmp_path, ["recipes", "show", recipe], "input_dim", "1..100000")


@pytest.mark.parametrize("command", ["train", "recipes show"])
def test_a_recipe_nested_thousands_deep_is_refused_in_one_line(workdir, tmp_path, command):
    recipe = tmp_path / "deep.toml"
    recipe.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    args = ["train", workdir / "data.csv", "--recipe", recipe, "--out", tmp_path / "out"]
    args = args if command == "train" else ["recipes", "show", recipe]
    refused(tmp_path, args, "deep.toml", "nested too deeply")


#: (flag and value, what the error line names): numeric flags of train, each out of its stated range.
TRAIN_FLAGS = {
    "--seed 10^23": (["--seed", "99999999999999999999999"], "training.seed"),
    "--seed -1": (["--seed", "-1"], "training.seed"),
    "--seed 2^32": (["--seed", str(2**32)], "training.seed"),
    "--steps 0": (["--steps", "0"], "training.steps"),
    "--steps 10^9": (["--steps", "1000000000"], "training.steps"),
    "--batch-size 0": (["--batch-size", "0"], "training.batch_size"),
    "--lr inf": (["--lr", "inf"], "training.lr"),
    "--lr nan": (["--lr", "nan"], "training.lr"),
    "--reduce 1.5": (["--reduce", "1.5"], "model.reduce"),
    "--max-parameters 0": (["--max-parameters", "0"], "--max-parameters"),
    "--max-parameters 10^13": (["--max-parameters", str(10**13)], "--max-parameters"),
}


@pytest.mark.parametrize("flag", TRAIN_FLAGS)
def test_a_train_flag_beyond_its_stated_range_is_refused_before_training(workdir, tmp_path, flag):
    extra, named = TRAIN_FLAGS[flag]
    args = ["train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--out", tmp_path / "out", *extra]
    refused(tmp_path, args, named)


#: sample's flags beyond their stated ranges: -n in 1..10^7, --temperature in (0, 10], --seed in 0..2^32 - 1.
SAMPLE_FLAGS = {
    "--temperature inf": (["--temperature", "inf"], "--temperature"),
    "--temperature nan": (["--temperature", "nan"], "--temperature"),
    "--temperature 0": (["--temperature", "0"], "--temperature"),
    "--temperature -1": (["--temperature", "-1"], "--temperature"),
    "--temperature 11": (["--temperature", "11"], "--temperature"),
    "-n 0": (["-n", "0"], "number of samples"),
    "-n 10^7 + 1": (["-n", "10000001"], "number of samples"),
    "--seed -1": (["--seed", "-1"], "--seed"),
    "--seed 10^23": (["--seed", "99999999999999999999999"], "--seed"),
}


@pytest.mark.parametrize("flag", SAMPLE_FLAGS)
def test_a_sample_flag_beyond_its_stated_range_is_refused_before_anything_is_written(model, tmp_path, flag):
    extra, named = SAMPLE_FLAGS[flag]
    args = ["sample", model, "-n", "5", "-o", tmp_path / "fake.csv", *extra]
    refused(tmp_path, args, named)


@pytest.mark.parametrize("k", ["0", "10001", "100000000000000000000"])
def test_iw_samples_beyond_its_stated_range_is_refused(vae, tmp_path, k):
    args = ["score", vae, vae.parent / "data.csv", "--iw-samples", k, "-o", tmp_path / "scores.csv"]
    refused(tmp_path, args, "--iw-samples", "1..10,000")


def test_the_largest_iw_samples_is_scored_in_chunks_that_fit_in_memory(vae):
    estimator = FunnelDensity.load(vae, device="cpu")
    scores = estimator.score_samples(manifold_table(20), iw_samples=10_000)
    assert scores.shape == (20,) and np.isfinite(scores).all()


@pytest.mark.parametrize("dim", ["0", "-3", "100001"])
def test_recipes_show_refuses_a_dim_outside_1_to_100000(tmp_path, dim):
    refused(tmp_path, ["recipes", "show", "f-nsf", "--dim", dim], "--dim", "1..100,000")


def test_recipes_show_counts_a_huge_model_without_building_it(tmp_path):
    result = run("recipes", "show", "f-nsf", "--dim", "100000")
    assert result.exit_code == 0, result.output
    assert "parameters for 100000 columns" in result.stdout and "--max-parameters" in result.stdout


# -- the size of a model, counted before it is built -------------------------------------------------------------


def test_a_model_above_the_parameter_limit_is_refused_naming_its_size_and_how_to_raise_the_limit(workdir, tmp_path):
    args = ["train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--out", tmp_path / "out"]
    estimate = estimate_size(load_recipe(workdir / "tiny.toml"), 4)
    refused(tmp_path, [*args, "--max-parameters", "1000"], f"{estimate.parameters:,} parameters", "--max-parameters")


def test_a_recipe_of_billions_of_parameters_is_refused_by_the_default_limit_without_allocating(workdir, tmp_path):
    recipe = tmp_path / "huge.toml"
    recipe.write_text('family = "nsf"\n[model]\nflow_steps = 1000\nhidden_features = 65536\nresidual_blocks = 64\n')
    args = ["train", workdir / "data.csv", "--recipe", recipe, "--out", tmp_path / "out"]
    line = refused(tmp_path, args, f"above the limit of {DEFAULT_MAX_PARAMETERS:,}", "--max-parameters")
    assert "GB to train" in line


def test_raising_the_parameter_limit_admits_the_model():
    recipe = tiny_recipe("nsf")
    size = estimate_size(recipe, 4).parameters
    with pytest.raises(UserError, match=f"{size:,} parameters"):
        FunnelDensity(recipe, steps=1, device="cpu", max_parameters=size - 1).fit(manifold_table(50))
    fitted = FunnelDensity(recipe, steps=1, device="cpu", max_parameters=size).fit(manifold_table(50))
    assert sum(p.numel() for p in fitted.model_.parameters()) == size


def test_loading_applies_a_parameter_limit_before_building(model):
    with pytest.raises(UserError, match="above the limit of 100"):
        FunnelDensity.load(model, device="cpu", max_parameters=100)


def test_the_trained_limit_is_recorded_so_that_a_model_trained_under_a_raised_limit_loads(model):
    assert json.loads((model / artifact.METADATA).read_text())["max_parameters"] == DEFAULT_MAX_PARAMETERS


def _variants() -> list[tuple[str, dict]]:
    variants = [("nsf", {"transform": "coupling"}), ("nsf", {"transform": "autoregressive"})]
    for transform in ("coupling", "autoregressive"):
        for ansatz in ("gaussian", "flow"):
            for kind in ("spline", "conv", "conv-stride1"):
                variants.append(("f-nsf", {"transform": transform, "ansatz": ansatz, "funnel_kind": kind}))
    variants += [("glow", {}), ("f-glow", {"ansatz": "gaussian"}), ("f-glow", {"ansatz": "flow"})]
    variants += [("f-mlp", {"ansatz": "gaussian"}), ("f-mlp", {"ansatz": "flow"}), ("vae", {})]
    return variants


@pytest.mark.parametrize("dim", [2, 3, 7])
@pytest.mark.parametrize(("family", "fields"), _variants(), ids=lambda v: v if isinstance(v, str) else None)
def test_the_size_estimate_equals_the_built_models_parameter_count(family, fields, dim):
    recipe = tiny_recipe(family, **fields)
    estimate = estimate_size(recipe, dim)
    model = build_model(recipe, np.zeros(dim), np.ones(dim))
    assert (estimate.parameters, estimate.latent_dim) == (sum(p.numel() for p in model.parameters()), model.latent_dim)


@pytest.mark.parametrize("name", list(bundled_recipes()))
def test_the_size_estimate_equals_the_built_count_for_every_bundled_recipe(name):
    recipe = load_recipe(name)
    dim = 16 if FAMILIES[recipe.family].image else 6  # an image recipe needs a pixel table: 16 columns, 4x4
    model = build_model(recipe, np.zeros(dim), np.ones(dim))
    assert estimate_size(recipe, dim).parameters == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", ["f-nsf", "f-glow", "f-mlp", "vae"])
def test_a_model_that_reduces_one_column_is_refused_by_the_estimate(family):
    with pytest.raises(UserError, match="at least 2 columns"):
        estimate_size(tiny_recipe(family), 1)
