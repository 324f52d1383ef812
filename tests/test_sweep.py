"""``funnel sweep`` and ``FunnelDensity(latent_dim="auto")``: one model per latent size, and a stated choice.

The choice is the smallest size within one standard error of the best, and on tables with a known intrinsic
dimension it lands within one of it. A sweep folder holds ordinary model folders; a rerun trains nothing,
Ctrl-C keeps what finished, and the picture shows every level and baseline.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from funnelcli import sweep as sweeping
from funnelcli.data.synthetic import near_surface
from funnelcli.errors import UserError
from funnelcli.estimator import FunnelDensity
from funnelcli.evaluation.plots import sweep_figure
from funnelcli.models import Recipe
from funnelcli.models.recipe import load_recipe
from tests.helpers import assert_one_line_error, run

TINY = """
family = "f-nsf"
[model]
flow_steps = 2
hidden_features = 32
residual_blocks = 1
bins = 6
funnel_level = 0
ansatz = "gaussian"
ansatz_hidden_features = 64
ansatz_layers = 2
[training]
batch_size = 256
steps = 60
eval_every = 20
lr = 3e-3
patience = 0
"""


def level(latent: int, value: float, stderr: float = 0.1, best_step: int = 0, steps: int = 0) -> sweeping.Level:
    return sweeping.Level(latent, 0.0, value, stderr, None, None, 0, 0.0, 0.0, best_step, steps, False)


def tiny(steps: int = 60) -> Recipe:
    import tomllib

    return Recipe.from_dict(tomllib.loads(TINY), name="tiny").with_overrides(steps=steps, eval_every=steps // 5)


# -- the sizes and the rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dim", "ladder"),
    [
        (2, [1]),
        (8, [1, 2, 3, 4, 5, 6, 7]),
        (10, [1, 2, 3, 4, 5, 6, 7, 8, 9]),
        (32, [1, 2, 3, 4, 5, 6, 7, 8, 12, 18, 27, 31]),
    ],
)
def test_the_default_ladder_tries_every_size_to_eight_then_half_again_each_time_up_to_d_minus_1(dim, ladder):
    assert sweeping.latent_ladder(dim) == ladder


def test_reduce_fractions_become_the_sizes_that_train_gives_them():
    assert sweeping.parse_sizes(8, reduce=[0.25, 0.5, 0.75]) == [2, 4, 6]
    assert sweeping.parse_sizes(8, latent_dims=[4, 2, 4]) == [2, 4]


@pytest.mark.parametrize("size", [0, 8, 9])
def test_a_size_outside_1_to_d_minus_1_is_refused(size):
    with pytest.raises(UserError, match="1 to 7"):
        sweeping.parse_sizes(8, latent_dims=[size])


def test_the_choice_is_the_smallest_size_no_larger_size_beats_by_a_standard_error_plus_the_gain_per_dimension():
    levels = [level(1, -5.0), level(2, -1.2), level(3, -1.05), level(4, -1.0)]
    chosen, rule = sweeping.choose(levels, tolerance=1, min_gain=0)
    assert chosen == 3
    assert "beats by more than 1 standard error(s) (latent 3" in rule
    assert "latent 2 (-1.2000) is beaten by latent 3" in rule
    assert "plus 0.5 nats/row per added dimension" in sweeping.choose(levels, min_gain=0.5)[1]


def test_a_larger_tolerance_chooses_a_smaller_size_and_zero_chooses_the_best():
    levels = [level(1, -5.0), level(2, -1.2), level(3, -1.05), level(4, -1.0)]
    assert sweeping.choose(levels, tolerance=3, min_gain=0)[0] == 2
    assert sweeping.choose(levels, tolerance=0, min_gain=0)[0] == 4


def test_a_gain_per_dimension_keeps_a_slow_creep_over_unneeded_dimensions_from_moving_the_choice_up():
    # A recorded sweep (benchmarks/RESULTS.md) of 16 columns near a 4-D surface: gains of 2 to 3 nats per
    # dimension up to 4, then under-trained levels creeping up by about half a nat each.
    curve = {1: 0.01, 2: 2.86, 3: 4.84, 4: 7.51, 5: 8.22, 6: 8.80, 7: 8.76, 8: 9.33, 12: 9.64, 15: 8.78}
    levels = [level(k, value, stderr=0.3) for k, value in curve.items()]
    assert sweeping.choose(levels)[0] == 12  # the one-standard-error rule, the default
    assert sweeping.choose(levels, min_gain=0.5)[0] in (4, 5)


def test_a_negative_min_gain_is_refused():
    with pytest.raises(UserError, match="min_gain must be"):
        sweeping.choose([level(1, -1.0)], min_gain=-0.1)


def test_a_level_with_a_non_finite_likelihood_is_never_chosen():
    assert sweeping.choose([level(1, -math.inf), level(2, -1.0)])[0] == 2


def fitted(latent: int, value: float, best_step: int) -> sweeping.Level:
    return level(latent, value, best_step=best_step, steps=400)


def a_sweep(*levels: sweeping.Level) -> sweeping.Sweep:
    chosen, rule = sweeping.choose(levels)
    return sweeping.Sweep(
        input_dim=8, columns=[f"x{j}" for j in range(8)], recipe="probe", ansatz="gaussian", tolerance=1.0,
        min_gain=0.0, levels=list(levels), full=None, baselines={}, chosen_latent_dim=chosen, rule=rule,
        train_rows=100, validation_rows=20, test_rows=None,
    )  # fmt: skip


def test_levels_that_kept_their_gaussian_start_are_named_in_the_table_and_the_json():
    from funnelcli.cli.sweep import format_sweep

    result = a_sweep(fitted(1, -3.0, 0), fitted(2, -3.0, 0), fitted(3, -1.0, 240))
    assert result.gaussian_kept == [1, 2]
    assert result.to_dict()["gaussian_kept"] == [1, 2]
    text = format_sweep(result)
    assert "level(s) 1, 2 kept the Gaussian (or Gaussian-mixture) fit of the training rows" in text
    assert [line for line in text.splitlines() if line.startswith("3 ")][0].count("Gaussian kept") == 0


def test_a_sweep_whose_every_level_kept_its_gaussian_start_says_the_choice_means_nothing():
    from funnelcli.cli.sweep import format_sweep

    text = format_sweep(a_sweep(fitted(1, -3.0, 0), fitted(2, -3.0, 0)))
    assert "every level kept the Gaussian (or Gaussian-mixture) fit" in text
    assert "the choice says nothing about how many dimensions the table needs" in text


def passes(*values: float) -> list[dict]:
    return [{"step": 250 * (i + 1), "val_log_prob": v} for i, v in enumerate(values)]


def test_a_level_still_gaining_at_its_last_pass_is_marked_still_improving():
    assert sweeping._still_improving(passes(-4.5, -2.4, -1.6, -1.5), 1000, stderr=0.3)


def test_a_level_whose_best_pass_came_early_or_that_gained_little_is_not_marked():
    assert not sweeping._still_improving(passes(-4.5, -1.4, -1.6, -1.5), 1000, stderr=0.3)
    assert not sweeping._still_improving(passes(-4.5, -1.6, -1.55, -1.5), 1000, stderr=0.3)


def test_a_sweep_starts_its_levels_as_the_recipe_says_unless_told_otherwise():
    assert sweeping.with_sweep_defaults(tiny()).training.start == "random"
    assert sweeping.with_sweep_defaults(tiny(), start="principal").training.start == "principal"


def test_a_sweep_keeps_the_recipes_funnel_level_unless_told_otherwise():
    bundled = load_recipe("f-nsf")
    assert sweeping.with_sweep_defaults(bundled).model.funnel_level == bundled.model.funnel_level == 2
    assert sweeping.with_sweep_defaults(bundled, funnel_level=0).model.funnel_level == 0
    assert sweeping.with_sweep_defaults(load_recipe("f-glow"), funnel_level=0).model.funnel_level == 0


def test_a_sweep_with_the_probe_recipe_keeps_its_funnel_first_its_wide_gaussian_ansatz_and_its_principal_start():
    from funnelcli.cli.sweep import _sweepable_recipe

    recipe = _sweepable_recipe("probe", None, None, None, rows=5000)
    assert (recipe.name, recipe.model.funnel_level, recipe.training.start) == ("probe", 0, "principal")
    model = recipe.model
    assert (model.ansatz, model.ansatz_hidden_features, model.ansatz_layers) == ("gaussian", 256, 3)


def test_a_funnel_level_is_refused_for_a_recipe_without_one():
    assert sweeping.with_sweep_defaults(load_recipe("f-mlp")).family == "f-mlp"  # no level to set, none set
    with pytest.raises(UserError, match="no single funnel_level"):
        sweeping.with_sweep_defaults(load_recipe("f-mlp"), funnel_level=1)


def test_the_full_dimension_reference_of_a_principal_start_starts_at_random_weights():
    started = sweeping.with_sweep_defaults(tiny(), start="principal")
    assert sweeping.full_dimension_recipe(started).training.start == "random"


def test_the_full_dimension_reference_is_the_same_flow_without_its_funnel():
    full = sweeping.full_dimension_recipe(tiny())
    assert full.family == "nsf"
    assert (full.model.flow_steps, full.model.hidden_features, full.training.steps) == (2, 32, 60)


# -- the command -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A finished sweep of 1, 2 and 3 of 6 columns near a 2-D surface, with its full-dimension flow."""
    root = tmp_path_factory.mktemp("sweep")
    near_surface(1200, 6, 2, seed=0)[0].to_csv(root / "data.csv", index=False)
    near_surface(300, 6, 2, seed=1)[0].to_csv(root / "test.csv", index=False)
    (root / "tiny.toml").write_text(TINY)
    result = sweep_command(root, "--test", root / "test.csv")
    assert result.exit_code == 0, result.output
    return root


def sweep_command(root, *extra, out="out"):
    return run(
        "sweep", root / "data.csv", "--out", root / out, "--recipe", root / "tiny.toml", "--latent-dims", "1,2,3",
        "--device", "cpu", *extra,
    )  # fmt: skip


def test_every_level_is_an_ordinary_model_folder_beside_the_three_files(swept):
    out = swept / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "full", "latent-1", "latent-2", "latent-3", "sweep.csv", "sweep.json", "sweep.png",
    ]  # fmt: skip
    model = FunnelDensity.load(out / "latent-2")
    assert model.latent_dim_ == 2
    assert np.isfinite(model.score_samples(pd.read_csv(swept / "test.csv"))).all()


def test_start_principal_starts_every_level_at_the_principal_components(swept):
    result = run(
        "sweep", swept / "data.csv", "--out", swept / "principal", "--recipe", swept / "tiny.toml", "--latent-dims",
        "2", "--start", "principal", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert FunnelDensity.load(swept / "principal" / "latent-2").recipe_.training.start == "principal"
    assert FunnelDensity.load(swept / "principal" / "full").recipe_.training.start == "random"


def test_funnel_level_places_every_levels_funnel(swept):
    assert FunnelDensity.load(swept / "out" / "latent-2").recipe_.model.funnel_level == 0  # the recipe's
    result = run(
        "sweep", swept / "data.csv", "--out", swept / "level-1", "--recipe", swept / "tiny.toml", "--latent-dims",
        "2", "--funnel-level", "1", "--no-full", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert FunnelDensity.load(swept / "level-1" / "latent-2").recipe_.model.funnel_level == 1


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--funnel-level", "-1"], "funnel_level = -1 is invalid"),
        (["--funnel-level", "1", "--recipe", "f-mlp"], "no single funnel_level"),
    ],
)
def test_a_funnel_level_that_cannot_be_placed_is_one_line(tmp_path, extra, fragment):
    near_surface(50, 4, 2)[0].to_csv(tmp_path / "data.csv", index=False)
    result = run("sweep", tmp_path / "data.csv", "--out", tmp_path / "out", *extra)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_constant_column_is_refused_in_one_line_before_any_level_or_baseline_starts(tmp_path, jobs):
    table = near_surface(60, 4, 2)[0].assign(flat=1.5)
    table.to_csv(tmp_path / "data.csv", index=False)
    result = run("sweep", tmp_path / "data.csv", "--out", tmp_path / "out", "--jobs", jobs, "--device", "cpu")
    assert_one_line_error(result, "'flat' are constant in the training rows", "--drop-constant")
    assert not (tmp_path / "out").exists()


def test_sweep_json_holds_every_level_the_baselines_and_the_choice(swept):
    document = json.loads((swept / "out" / "sweep.json").read_text())
    assert [lv["latent_dim"] for lv in document["levels"]] == [1, 2, 3]
    for entry in document["levels"]:
        assert set(entry) >= {
            "latent_dim", "reduce", "val_log_prob", "val_stderr", "test_log_prob", "test_stderr",
            "parameters", "ms_per_step", "model",
        }  # fmt: skip
        assert math.isfinite(entry["test_log_prob"])
    assert document["full"]["latent_dim"] == 6 and document["full"]["family"] == "nsf"
    assert set(document["baselines"]) == {"gaussian", "gmm", "ppca"}
    assert [entry["latent_dim"] for entry in document["baselines"]["ppca"]] == [1, 2, 3]
    assert document["chosen_latent_dim"] in (1, 2, 3, 6) and "standard error" in document["rule"]
    assert (document["tolerance"], document["min_gain"]) == (1.0, sweeping.DEFAULT_MIN_GAIN)  # the CLI's defaults


def test_sweep_csv_has_a_row_per_level_and_per_baseline(swept):
    table = pd.read_csv(swept / "out" / "sweep.csv")
    assert list(table["kind"]) == ["funnel"] * 3 + ["full"] + ["baseline"] * 5  # gaussian, gmm, ppca 1 to 3
    assert table.loc[table["kind"] == "funnel", "gain_over_ppca"].notna().all()


def test_the_picture_opens_and_shows_every_level_and_baseline(swept):
    from matplotlib.image import imread

    image = imread(swept / "out" / "sweep.png")
    assert image.shape[0] > 200 and image.shape[1] > 300
    result = sweeping_result(swept / "out")
    figure = sweep_figure(result)
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert any(label.startswith("funnel") for label in labels)
    assert any("full-dimension flow" in label for label in labels)
    assert any("Gaussian mixture" in label for label in labels)
    assert any("full-covariance Gaussian" in label for label in labels)
    assert any("probabilistic PCA" in label for label in labels)
    funnel_line = figure.axes[0].lines[0]
    assert list(funnel_line.get_xdata()) == [1, 2, 3]


def sweeping_result(out) -> sweeping.Sweep:
    """The sweep read back from its JSON (what a user's script would do)."""
    document = json.loads((out / "sweep.json").read_text())
    fields = {f for f in sweeping.Level.__dataclass_fields__}

    def read(entry, full=False):
        return sweeping.Level(**{k: v for k, v in entry.items() if k in fields}, full=full)

    return sweeping.Sweep(
        input_dim=document["input_dim"], columns=document["columns"], recipe=document["recipe"],
        ansatz=document["ansatz"], tolerance=document["tolerance"], min_gain=document["min_gain"],
        levels=[read(entry) for entry in document["levels"]], full=read(document["full"], True),
        baselines=document["baselines"], chosen_latent_dim=document["chosen_latent_dim"], rule=document["rule"],
        train_rows=0, validation_rows=0, test_rows=None,
    )  # fmt: skip


def test_a_second_run_trains_nothing(swept, monkeypatch):
    weights = {p: p.stat().st_mtime_ns for p in (swept / "out").glob("*/model.safetensors")}

    def refuse(*args, **kwargs):
        raise AssertionError("a finished level was trained again")

    monkeypatch.setattr(FunnelDensity, "fit", refuse)
    result = sweep_command(swept, "--test", swept / "test.csv")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("reused") == 4
    assert {p: p.stat().st_mtime_ns for p in (swept / "out").glob("*/model.safetensors")} == weights


def test_ctrl_c_keeps_the_finished_levels_and_the_same_command_continues(swept, monkeypatch):
    trained = []
    real = sweeping._train_level

    def interrupted_at_the_second(task, *args, **kwargs):
        if len(trained) == 1:
            raise KeyboardInterrupt
        trained.append(task.latent)
        return real(task, *args, **kwargs)

    monkeypatch.setattr(sweeping, "_train_level", interrupted_at_the_second)
    result = sweep_command(swept, out="stopped")
    assert result.exit_code == 130
    assert "1 finished level(s) kept" in result.stderr and "run the same command again" in result.stderr
    kept = swept / "stopped"
    assert [p.name for p in kept.iterdir() if p.is_dir()] == ["latent-1"]
    assert [lv["latent_dim"] for lv in json.loads((kept / "sweep.json").read_text())["levels"]] == [1]

    monkeypatch.setattr(sweeping, "_train_level", real)
    result = sweep_command(swept, out="stopped")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("reused") == 1
    assert sorted(p.name for p in kept.iterdir() if p.is_dir()) == ["full", "latent-1", "latent-2", "latent-3"]


def test_jobs_trains_levels_in_worker_processes(swept):
    result = run(
        "sweep", swept / "data.csv", "--out", swept / "parallel", "--recipe", swept / "tiny.toml",
        "--latent-dims", "1,2", "--no-full", "--jobs", "2", "--device", "cpu", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [lv["latent_dim"] for lv in document["levels"]] == [1, 2] and document["full"] is None
    assert all(math.isfinite(lv["val_log_prob"]) for lv in document["levels"])
    assert FunnelDensity.load(swept / "parallel" / "latent-2").latent_dim_ == 2


def test_json_prints_what_sweep_json_holds(swept, monkeypatch):
    result = sweep_command(swept, "--test", swept / "test.csv", "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    stored = json.loads((swept / "out" / "sweep.json").read_text())
    assert printed["chosen_latent_dim"] == stored["chosen_latent_dim"]
    assert printed["levels"] == [{**entry, "reused": True} for entry in stored["levels"]]


def test_a_sweep_of_other_settings_is_refused_without_force(swept):
    result = sweep_command(swept, "--test", swept / "test.csv", "--steps", "7")
    assert_one_line_error(result, "holds a sweep of other settings", "--force")


def test_a_sweep_of_other_data_is_refused_without_force(swept):
    near_surface(1200, 6, 2, seed=5)[0].to_csv(swept / "other.csv", index=False)
    result = run(
        "sweep", swept / "other.csv", "--out", swept / "out", "--recipe", swept / "tiny.toml", "--latent-dims",
        "1,2,3", "--device", "cpu",
    )  # fmt: skip
    assert_one_line_error(result, "holds a sweep of other data", "--force")


def test_another_test_table_rescores_the_levels_without_training_them(swept, monkeypatch):
    monkeypatch.setattr(FunnelDensity, "fit", lambda *a, **k: pytest.fail("a finished level was trained again"))
    result = sweep_command(swept, "--json")
    assert result.exit_code == 0, result.output
    assert all(lv["reused"] and lv["test_log_prob"] is None for lv in json.loads(result.stdout)["levels"])


def test_a_folder_with_files_funnelcli_did_not_write_is_refused_even_with_force(swept, tmp_path):
    out = swept / "foreign"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = sweep_command(swept, "--force", out="foreign")
    assert_one_line_error(result, "notes.txt", "did not write")
    assert (out / "notes.txt").read_text() == "mine"


def test_latent_dims_and_reduce_together_are_refused(swept):
    result = sweep_command(swept, "--reduce", "0.5")
    assert_one_line_error(result, "--latent-dims and --reduce")


def test_a_recipe_without_a_latent_size_is_refused(swept):
    result = run("sweep", swept / "data.csv", "--out", swept / "nsf", "--recipe", "nsf")
    assert_one_line_error(result, "no latent size to sweep")
    assert not (swept / "nsf").exists()


# -- the estimator ---------------------------------------------------------------------------------------------


def test_auto_latent_dim_keeps_the_chosen_levels_model_and_the_sweep_table(tmp_path):
    train, _ = near_surface(1000, 5, 2, seed=0)
    model = FunnelDensity(tiny(), latent_dim="auto", steps=100, device="cpu").fit(train)
    chosen = model.sweep_.loc[model.sweep_["kind"] == "funnel"]
    assert list(chosen["latent_dim"]) == [1, 2, 3, 4]
    assert model.latent_dim_ in (1, 2, 3)
    assert model.recipe_.model.latent_dim == model.latent_dim_
    assert model.recipe_.model.ansatz == "gaussian"  # the sweep's level itself
    assert model.transform(train).shape == (1000, model.latent_dim_)
    assert model.get_params()["latent_dim"] == "auto"
    assert "standard error" in model.sweep_rule_
    same = FunnelDensity.load(model.save(tmp_path / "auto"), device="cpu")
    np.testing.assert_array_equal(same.score_samples(train), model.score_samples(train))


def test_auto_latent_dim_with_reduce_is_refused():
    with pytest.raises(UserError, match="both set the latent size"):
        FunnelDensity(tiny(), latent_dim="auto", reduce=0.5).fit(near_surface(50, 4, 2)[0])
