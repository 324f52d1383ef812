"""A model folder is believed only once checked, and nothing in it ever runs code.

A folder whose weights or model.json are missing, damaged or foreign is refused in one line with exit code 2; a
pickle in place of the weights or of a checkpoint, or beside them, is never unpickled; and no module of
funnelcli unpickles or uses torch.save and torch.load.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from funnelcli import artifact
from funnelcli.errors import UserError
from funnelcli.estimator import FunnelDensity
from funnelcli.training import TrainingInterrupted
from tests.helpers import (
    RECIPE,
    SignalAt,
    assert_one_line_error,
    copy_model,
    manifold_table,
    run,
    tiny_estimator,
    write_recipe,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this creates ``marker``: what a hostile model file would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


def test_the_hostile_payload_really_runs_code_when_unpickled(tmp_path):
    pickle.loads(hostile(tmp_path / "proof"))  # the test below is only meaningful if this creates the file
    assert (tmp_path / "proof").exists()


@pytest.mark.parametrize("checksum", ["kept", "updated to the pickle's"])
def test_a_pickle_in_place_of_the_weights_is_refused_and_never_run(model, tmp_path, checksum):
    folder = copy_model(model, tmp_path / "model")
    marker = tmp_path / "pwned"
    (folder / artifact.WEIGHTS).write_bytes(hostile(marker))
    if checksum != "kept":
        metadata = json.loads((folder / artifact.METADATA).read_text())
        metadata["weights_sha256"] = artifact.sha256(folder / artifact.WEIGHTS)
        (folder / artifact.METADATA).write_text(json.dumps(metadata))
    result = run("score", folder, model.parent / "data.csv")
    assert_one_line_error(result, str(folder / artifact.WEIGHTS))
    with pytest.raises(UserError):
        FunnelDensity.load(folder)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["model.pt", "model.pkl", "weights.pth", "estimator.joblib"])
def test_a_pickle_beside_the_weights_is_never_opened(model, tmp_path, name):
    folder = copy_model(model, tmp_path / "model")
    marker = tmp_path / "pwned"
    (folder / name).write_bytes(hostile(marker))
    result = run("score", folder, model.parent / "data.csv", "--json")
    assert result.exit_code == 0, result.output
    assert run("info", folder).exit_code == 0
    assert not marker.exists()


def test_a_pickle_in_place_of_a_checkpoint_is_refused_and_never_run(workdir, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    marker = tmp_path / "pwned"
    (out / "checkpoints" / artifact.LATEST).write_bytes(hostile(marker))
    result = run("train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--out", out, "--resume")
    assert_one_line_error(result, "checkpoints/latest.safetensors", "did not write")
    assert not marker.exists()


def test_loading_models_and_resuming_runs_never_unpickle(model, tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("something unpickled")

    with pytest.raises(TrainingInterrupted):
        tiny_estimator().fit(manifold_table(240), callback=SignalAt(3), checkpoint_dir=tmp_path)
    for target, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(target, name, forbidden)
    FunnelDensity.load(model, device="cpu")
    tiny_estimator().fit(manifold_table(240), checkpoint_dir=tmp_path, resume=True)


def test_no_module_of_funnelcli_unpickles_or_uses_torch_save_and_load():
    # Two exceptions. data/safe_pickle.py holds the restricted unpickler, whose find_class refuses every global
    # not on an explicit list; it must never call pickle's own loaders. data/maf.py may let pandas unpickle the
    # GAS archive (raw data that exists only as a pandas pickle), in one function, only under --trust-pickle.
    allowed = {
        ("data/maf.py", "read_pickle"),
        ("data/safe_pickle.py", "import pickle"),
        ("data/safe_pickle.py", "pickle"),
    }
    pattern = re.compile(r"\b(import pickle|from pickle|pickle\.|torch\.load|torch\.save|read_pickle|joblib|dill)\b")
    found = set()
    texts = {}
    for path in (ROOT / "funnelcli").rglob("*.py"):
        relative = str(path.relative_to(ROOT / "funnelcli"))
        texts[relative] = path.read_text(encoding="utf-8")
        for match in pattern.finditer(texts[relative]):
            found.add((relative, match.group(1).rstrip(".")))
    assert found <= allowed, found - allowed
    restricted = texts["data/safe_pickle.py"]
    assert "class RestrictedUnpickler(pickle.Unpickler)" in restricted and "def find_class" in restricted
    assert not re.search(r"pickle\.(?:loads?\b|_Unpickler\b|Unpickler\()", restricted), "it uses pickle's own loader"
    maf = texts["data/maf.py"]
    assert maf.count("read_pickle") == 1
    function = maf[maf.index("def _unpickle_trusted") :].split("\ndef ", 1)[0]
    assert "read_pickle" in function
    assert maf.count("_unpickle_trusted(") == 2, "defined once, called once"
    assert "_unpickle_trusted(" in maf[maf.index("if not trust_pickle:") :][:600], "read only under --trust-pickle"


def _set_json(folder: Path, **changes):
    metadata = json.loads((folder / artifact.METADATA).read_text())
    metadata.update(changes)
    (folder / artifact.METADATA).write_text(json.dumps(metadata))


def _rewrite_weights(folder: Path, tensors: dict):
    """Replace the weights, keeping the record of model.json their header carries, and update their checksum."""
    with safe_open(str(folder / artifact.WEIGHTS), framework="pt") as file:
        record = file.metadata()
    save_file(tensors, str(folder / artifact.WEIGHTS), metadata=record)
    _set_json(folder, weights_sha256=artifact.sha256(folder / artifact.WEIGHTS))


def _other_recipes_weights(folder: Path, workdir: Path):
    other = workdir / "other-recipe"
    if not other.exists():
        (workdir / "other").mkdir()
        recipe = write_recipe(workdir / "other", RECIPE.replace("hidden_features = 16", "hidden_features = 24"))
        args = ["train", workdir / "data.csv", "--recipe", recipe, "--out", other, "--steps", "2", "-q"]
        assert run(*args).exit_code == 0
    (folder / artifact.WEIGHTS).write_bytes((other / artifact.WEIGHTS).read_bytes())


def _nan_weights(folder: Path, workdir: Path):
    tensors = load_file(str(folder / artifact.WEIGHTS))
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
    tensors[name][0] = float("nan")
    _rewrite_weights(folder, tensors)


DAMAGE = {
    "weights missing": (lambda f, w: (f / artifact.WEIGHTS).unlink(), ["model.safetensors is missing"]),
    "weights truncated": (
        lambda f, w: (f / artifact.WEIGHTS).write_bytes((f / artifact.WEIGHTS).read_bytes()[:100]),
        ["does not match the checksum", "truncated"],
    ),
    "one byte of the weights altered": (
        lambda f, w: (f / artifact.WEIGHTS).write_bytes(
            (lambda b: b[:-1] + bytes([b[-1] ^ 1]))((f / artifact.WEIGHTS).read_bytes())
        ),
        ["does not match the checksum", "altered"],
    ),
    "weights of another recipe": (_other_recipes_weights, ["does not match the checksum", "replaced"]),
    "weights of another recipe with their checksum": (
        lambda f, w: (_other_recipes_weights(f, w), _set_json(f, weights_sha256=artifact.sha256(f / artifact.WEIGHTS))),
        ["do not fit the recipe", "retrain"],
    ),
    "NaN weights with their checksum": (_nan_weights, ["NaN", "retrain"]),
    "wrong format version": (lambda f, w: _set_json(f, format_version=99), ["format version 99", "retrain"]),
    "model.json missing": (lambda f, w: (f / artifact.METADATA).unlink(), ["not a model folder"]),
    "model.json not JSON": (lambda f, w: (f / artifact.METADATA).write_text("{oops"), ["not valid JSON", "retrain"]),
    "no checksum recorded": (lambda f, w: _set_json(f, weights_sha256=None), ["no weights_sha256", "retrain"]),
    "scaler of another width": (
        lambda f, w: _set_json(f, scaler={"mean": [0.0], "std": [1.0]}),
        ["scaler", "does not fit", "retrain"],
    ),
    "metrics.jsonl damaged": (lambda f, w: (f / artifact.METRICS).write_text("{oops\n"), ["metrics.jsonl", "retrain"]),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_model_folder_is_refused_in_one_line_with_exit_code_2(model, workdir, tmp_path, damage):
    folder = copy_model(model, tmp_path / "model")
    make, fragments = DAMAGE[damage]
    make(folder, workdir)
    out = tmp_path / "scores.csv"
    result = run("score", folder, workdir / "data.csv", "-o", out)
    assert_one_line_error(result, *fragments)
    assert not out.exists()
