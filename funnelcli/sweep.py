"""How many dimensions does a table need? Train one funnel per latent size and choose the smallest that is as
good as the best.

A sweep fits the same recipe at a ladder of latent sizes k (``latent_dim = k``), all on the same training and
validation rows, plus the full-dimension flow of the same kind and the classical baselines
(:mod:`funnelcli.baselines`). Its choice is a stated rule: the smallest k whose mean validation
log-likelihood no larger size beats by more than ``tolerance`` standard errors plus ``min_gain`` nats per row
for each dimension it adds (:func:`choose`). With ``min_gain = 0`` this is the one-standard-error rule of model
selection. With a Gaussian ansatz it estimates the intrinsic dimension of data that lie near a surface, because
a Gaussian q(x_drop | z) cannot model a direction along the surface that was dropped, so every size below the
surface's dimension pays for it in likelihood (the paper's question: how far can one reduce before the
likelihood drops?).

Written to a folder (``funnel sweep``), each level is an ordinary model folder ``latent-K`` (``full`` for the
full-dimension flow) beside ``sweep.json``, ``sweep.csv`` and ``sweep.png``. A level whose folder already holds
the model this sweep would train is read back, not trained again, so an interrupted sweep continues where it
stopped and a finished one reruns in seconds.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import signal
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from funnelcli import outputs
from funnelcli.atomic import atomic_path
from funnelcli.errors import BadValue, Misused, OutOfRange, Refused, UserError
from funnelcli.models.recipe import FAMILY_FIELDS, Recipe, latent_dim
from funnelcli.stats import mean_and_stderr
from funnelcli.strict_json import json_safe

log = logging.getLogger("funnelcli")

#: The marker of a sweep folder, in ``sweep.json``.
FORMAT = "funnelcli-sweep"
FORMAT_VERSION = 1
JSON, CSV, PNG = "sweep.json", "sweep.csv", "sweep.png"
FULL = "full"
#: The ansatz of a sweep unless told otherwise: a Gaussian cannot model a dropped direction along the data's
#: surface, so the likelihood falls below the intrinsic dimension and the choice estimates it.
DEFAULT_ANSATZ = "gaussian"
#: Nats per row a kept dimension must add; 0 is the one-standard-error rule. 0.5 stops the creep of under-trained
#: levels on the tables in benchmarks/RESULTS.md ("Choosing the latent size") but misses a gently curved table
#: whose needed dimensions gain only 0.2 to 0.9 nats each, so it is an option, not the default.
DEFAULT_MIN_GAIN = 0.0
#: Every size up to this is tried by the default ladder; above it the ladder grows geometrically.
DENSE_UP_TO = 8
#: A level "still improves" when its best validation pass was its last and the second half of its training
#: gained more than this many of its standard errors: more steps would likely change the picture.
IMPROVING_STDERRS = 1.0
_FULL_FAMILY = {"f-nsf": "nsf", "f-glow": "glow", "f-mlp": "nsf"}


def with_sweep_defaults(
    recipe: Recipe, ansatz: str | None = None, start: str | None = None, funnel_level: int | None = None
) -> Recipe:
    """``recipe`` as a sweep trains it: with ``ansatz`` (by default :data:`DEFAULT_ANSATZ`) where its family has an
    ansatz, and with its funnel at flow step ``funnel_level`` and ``start`` where given.

    By default the recipe's own start and funnel level stay. benchmarks/RESULTS.md finds both the principal start
    ("The principal start") and the funnel first ("The funnel first") better at finding the dimension of
    synthetic surfaces, and both 5 to 10 nats per row worse at most sizes of a real table (breast cancer)."""
    if ansatz is not None or "ansatz" in recipe.fields:
        recipe = recipe.with_overrides(ansatz=ansatz or DEFAULT_ANSATZ)
    if funnel_level is not None:
        if "funnel_level" not in recipe.fields or recipe.model.funnels:
            where = "it lists its funnels in model.funnels" if recipe.model.funnels else f"family {recipe.family}"
            raise UserError(f"recipe {recipe.name!r} has no single funnel_level to set ({where})")
        recipe = recipe.with_overrides(funnel_level=funnel_level)
    return recipe.with_overrides(start=start)


def level_name(latent: int, input_dim: int) -> str:
    return FULL if latent == input_dim else f"latent-{latent}"


def latent_ladder(input_dim: int) -> list[int]:
    """The default sizes for ``input_dim`` columns: every size from 1 to min(D - 1, 8), then about 1.5 times
    the previous size, and D - 1 last (1..7 for 8 columns; 1..8, 12, 18, 27, 31 for 32)."""
    if input_dim < 2:
        raise UserError(f"a sweep needs at least 2 columns to remove one, got {input_dim}")
    sizes = list(range(1, min(input_dim - 1, DENSE_UP_TO) + 1))
    while sizes[-1] < input_dim - 1:
        sizes.append(min(input_dim - 1, math.ceil(sizes[-1] * 1.5)))
    return sizes


def parse_sizes(input_dim: int, latent_dims: Sequence[int] | None = None, reduce: Sequence[float] | None = None):
    """The latent sizes to try, sorted and without repeats: ``latent_dims`` as given, ``reduce`` fractions turned
    into the size ``--reduce`` gives (so ``--reduce 0.5`` and ``--latent-dim`` of its size are one level), or
    the default ladder."""
    if latent_dims and reduce:
        raise Misused(["latent_dims", "reduce"], "both give the sizes to try; pass one of them")
    if reduce:
        for fraction in reduce:
            if not 0 < fraction < 1:
                raise BadValue("reduce", fraction, "is not a fraction strictly between 0 and 1")
        return sorted({latent_dim(input_dim, fraction) for fraction in reduce})
    if latent_dims:
        for size in latent_dims:
            if not 1 <= size <= input_dim - 1:
                raise BadValue(
                    "latent_dims",
                    size,
                    f"does not fit a table of {input_dim} columns: a funnel keeps 1 to {input_dim - 1} of them",
                )
        return sorted(set(latent_dims))
    return latent_ladder(input_dim)


def full_dimension_recipe(recipe: Recipe) -> Recipe | None:
    """The flow of the same kind without a funnel (NSF for F-NSF and F-MLP, Glow for F-Glow), with the recipe's
    shared settings and training (a principal or surface start, which only funnels have, becomes a random one);
    None for a family that has no full-dimension counterpart (the VAE)."""
    family = _FULL_FAMILY.get(recipe.family)
    if family is None:
        return None
    data = recipe.to_dict()
    data["family"] = family
    if recipe.training.start in ("principal", "surface"):
        data["training"]["start"] = "random"
    data["model"] = {key: value for key, value in data["model"].items() if key in FAMILY_FIELDS[family]}
    data["description"] = f"the full-dimension counterpart of {recipe.name}"
    return Recipe.from_dict(data, name=f"{recipe.name}-full")


@dataclass
class Level:
    """One trained size: its validation (and test) log-likelihood in nats per row with standard errors."""

    latent_dim: int
    reduce: float
    val_log_prob: float
    val_stderr: float
    test_log_prob: float | None
    test_stderr: float | None
    parameters: int
    ms_per_step: float
    seconds: float
    best_step: int
    steps: int
    still_improving: bool
    model: str | None = None
    reused: bool = False
    full: bool = False
    family: str = ""


@dataclass
class Sweep:
    """The result of a sweep: its levels (and the full-dimension flow), the baselines, and the choice."""

    input_dim: int
    columns: list[str]
    recipe: str
    ansatz: str | None
    tolerance: float
    min_gain: float
    levels: list[Level]
    full: Level | None
    baselines: dict[str, Any]
    chosen_latent_dim: int
    rule: str
    train_rows: int
    validation_rows: int
    test_rows: int | None
    estimators: dict[int, Any] = field(default_factory=dict, repr=False)

    @property
    def under_trained(self) -> list[int]:
        """The sizes whose training still improved at its end (more steps may move the choice)."""
        return [level.latent_dim for level in self.candidates if level.still_improving]

    @property
    def gaussian_kept(self) -> list[int]:
        """The sizes that kept the Gaussian fit they started from: no trained weights beat it on the validation
        rows. Such levels score alike at every size, so their part of the curve says nothing about the size."""
        return [
            level.latent_dim
            for level in self.candidates
            if level.best_step == 0 and level.steps > 0 and math.isfinite(level.val_log_prob)
        ]

    @property
    def candidates(self) -> list[Level]:
        return [*self.levels, *([self.full] if self.full is not None else [])]

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "chosen_latent_dim": self.chosen_latent_dim,
                "rule": self.rule,
                "tolerance": self.tolerance,
                "min_gain": self.min_gain,
                "input_dim": self.input_dim,
                "columns": self.columns,
                "recipe": self.recipe,
                "ansatz": self.ansatz,
                "rows": {"train": self.train_rows, "validation": self.validation_rows, "test": self.test_rows},
                "under_trained": self.under_trained,
                "gaussian_kept": self.gaussian_kept,
                "levels": [_level_dict(level) for level in self.levels],
                "full": _level_dict(self.full) if self.full is not None else None,
                "baselines": self.baselines,
            }
        )

    def table(self) -> pd.DataFrame:
        """A row per level and per baseline: what ``sweep.csv`` holds."""
        rows = [{"kind": "full" if level.full else "funnel", **_level_dict(level)} for level in self.candidates]
        ppca = {entry["latent_dim"]: entry for entry in self.baselines.get("ppca", [])}
        for row in rows:
            linear = ppca.get(row["latent_dim"])
            row["ppca_val_log_prob"] = linear["val_log_prob"] if linear else None
            row["gain_over_ppca"] = row["val_log_prob"] - linear["val_log_prob"] if linear else None
        for name, entry in self._flat_baselines():
            rows.append({"kind": "baseline", "name": name, **entry})
        return pd.DataFrame(rows)

    def _flat_baselines(self):
        for name, entry in self.baselines.items():
            for one in entry if isinstance(entry, list) else [entry]:
                yield name, one


def _level_dict(level: Level) -> dict[str, Any]:
    data = asdict(level)
    data.pop("full")
    return data


def choose(levels: Sequence[Level], tolerance: float = 1.0, min_gain: float = DEFAULT_MIN_GAIN) -> tuple[int, str]:
    """The smallest latent size k that no larger size k' beats by more than ``tolerance`` standard errors (of
    k''s mean) plus ``min_gain`` nats per row for each of the k' - k dimensions it adds; the rule, in words,
    with it.

    ``min_gain = 0`` is the plain one-standard-error rule. The gain per dimension is there because a level that
    keeps a dimension the data do not need still gains a little while training is unfinished (its flow has
    more room to fit what an under-trained Gaussian ansatz misses), and those small gains add up over many
    sizes. A dimension the data need gains several nats per row: about log(spread / noise) of that direction.
    """
    if not levels:
        raise UserError("no level of the sweep finished, so there is nothing to choose from")
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise OutOfRange("tolerance", tolerance, "a finite number of standard errors, 0 or more")
    if not (min_gain >= 0 and math.isfinite(min_gain)):
        raise OutOfRange("min_gain", min_gain, "a finite number of nats per row, 0 or more")
    finite = sorted(
        (level for level in levels if math.isfinite(level.val_log_prob)), key=lambda level: level.latent_dim
    )
    if not finite:
        raise UserError("every level of the sweep has a non-finite validation log-likelihood; nothing to choose")

    def beaten_by(level: Level) -> Level | None:
        for larger in finite:
            allowed = tolerance * larger.val_stderr + min_gain * (larger.latent_dim - level.latent_dim)
            if larger.latent_dim > level.latent_dim and larger.val_log_prob - level.val_log_prob > allowed:
                return larger
        return None

    chosen = next(level for level in finite if beaten_by(level) is None)
    below = [level for level in finite if level.latent_dim < chosen.latent_dim]
    reason = ""
    if below:
        smaller = below[-1]
        winner = beaten_by(smaller)
        reason = (
            f"; latent {smaller.latent_dim} ({smaller.val_log_prob:.4f}) is beaten by latent {winner.latent_dim} "
            f"({winner.val_log_prob:.4f} ± {winner.val_stderr:.4f})"
        )
    gain = f" plus {min_gain:g} nats/row per added dimension" if min_gain else ""
    rule = (
        f"the smallest latent size that no larger size beats by more than {tolerance:g} standard error(s){gain} "
        f"(latent {chosen.latent_dim}: {chosen.val_log_prob:.4f} ± {chosen.val_stderr:.4f} nats/row{reason})"
    )
    return chosen.latent_dim, rule


def fingerprint(*frames: pd.DataFrame | None) -> str:
    """A SHA-256 of the rows and column names, by which a rerun knows it sweeps the same data."""
    digest = hashlib.sha256()
    for frame in frames:
        if frame is None:
            digest.update(b"none")
            continue
        digest.update(json.dumps([str(c) for c in frame.columns]).encode())
        digest.update(np.ascontiguousarray(frame.to_numpy(dtype=np.float64)).tobytes())
    return digest.hexdigest()


# -- training one level ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    """Everything a level needs, so that it can train in another process."""

    recipe: dict
    recipe_name: str
    latent: int
    input_dim: int
    options: dict
    folder: str | None
    full: bool


def _recipe_for(task: _Task) -> Recipe:
    return Recipe.from_dict(task.recipe, name=task.recipe_name)


def _still_improving(history: list[dict], steps: int, stderr: float) -> bool:
    passes = [record for record in history if math.isfinite(record.get("val_log_prob", math.nan))]
    if len(passes) < 2:
        return False
    best = max(passes, key=lambda record: record["val_log_prob"])
    if best is not passes[-1]:
        return False
    earlier = [record for record in passes if record["step"] <= 0.5 * passes[-1]["step"]]
    if not earlier:
        return True
    return best["val_log_prob"] - earlier[-1]["val_log_prob"] > IMPROVING_STDERRS * max(stderr, 1e-12)


def _level_from(task: _Task, estimator, train, validation, test, *, reused: bool) -> Level:
    from funnelcli.models.contract import count_parameters

    val_mean, val_stderr = mean_and_stderr(estimator.score_samples(validation))
    if test is not None:
        test_mean, test_stderr = mean_and_stderr(estimator.score_samples(test))
    else:
        test_mean = test_stderr = None
    summary = estimator.summary_ or {}
    recipe = estimator.recipe_
    return Level(
        latent_dim=int(estimator.latent_dim_),
        reduce=round(1 - estimator.latent_dim_ / task.input_dim, 6),
        val_log_prob=val_mean,
        val_stderr=val_stderr,
        test_log_prob=test_mean,
        test_stderr=test_stderr,
        parameters=count_parameters(estimator.model_),
        ms_per_step=float(summary.get("ms_per_step") or 0.0),
        seconds=float(summary.get("seconds") or 0.0),
        best_step=int(summary.get("best_step") or 0),
        steps=int(summary.get("steps") or 0),
        still_improving=_still_improving(estimator.history_ or [], recipe.training.steps, val_stderr),
        model=task.folder,
        reused=reused,
        full=task.full,
        family=recipe.family,
    )


def _reusable(task: _Task):
    """The finished model in the level's folder when it is the one this task would train, else None."""
    from funnelcli.artifact import read_metadata
    from funnelcli.estimator import FunnelDensity

    if task.folder is None or not outputs.is_kind(task.folder, outputs.MODEL):
        return None
    try:
        metadata = read_metadata(task.folder)
    except UserError:
        return None
    if metadata.get("recipe") != json.loads(json.dumps(_recipe_for(task).to_dict())):
        return None
    if metadata.get("dequantize") != task.options["dequantize"]:
        return None
    return FunnelDensity.load(task.folder, device=task.options["device"])


def _train_level(task: _Task, train, validation, test, keep_estimator: bool = False):
    """Train (or read back) one level; returns the Level and, with ``keep_estimator``, the fitted estimator."""
    from funnelcli.estimator import FunnelDensity

    estimator = _reusable(task)
    reused = estimator is not None
    if estimator is None:
        estimator = FunnelDensity(_recipe_for(task), **task.options)
        estimator.fit(train, validation=validation)
        if task.folder is not None:
            estimator.save(task.folder, overwrite=True)
    level = _level_from(task, estimator, train, validation, test, reused=reused)
    return level, (estimator if keep_estimator else None)


def _worker_init(threads: int) -> None:
    # The parent handles Ctrl-C and stops the workers; a worker stopped by SIGTERM unwinds, removing its
    # half-written model folder, instead of dying with it on disk. SystemExit, not KeyboardInterrupt: the pool
    # also stops idle workers (another level refused the data), and multiprocessing prints a traceback for
    # any other exception, even in a worker that was only importing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def unwind(number, frame):
        raise SystemExit(128 + number)

    signal.signal(signal.SIGTERM, unwind)
    import torch

    torch.set_num_threads(threads)


def _worker(arguments):
    task, train, validation, test = arguments
    return _train_level(task, train, validation, test)[0]


# -- the sweep -------------------------------------------------------------------------------------------------


def run_sweep(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    test: pd.DataFrame | None = None,
    *,
    recipe: Recipe,
    sizes: Sequence[int],
    options: dict[str, Any],
    out: Path | None = None,
    tolerance: float = 1.0,
    min_gain: float = DEFAULT_MIN_GAIN,
    full: bool = True,
    baselines: bool = True,
    jobs: int = 1,
    keep_estimators: bool = False,
    on_level: Callable[[Level], None] | None = None,
    on_start: Callable[[int, bool], None] | None = None,
    settings: dict[str, Any] | None = None,
) -> Sweep:
    """Train ``recipe`` at each latent size in ``sizes`` (and its full-dimension flow with ``full``) on the same
    rows; fit the baselines; choose. ``options`` are the keyword arguments of every level's
    :class:`~funnelcli.estimator.FunnelDensity` (device, dequantize, ...).

    With ``out``, each level is saved to ``out/latent-K`` as it finishes and ``sweep.json`` is rewritten, so an
    interrupted sweep keeps its finished levels; a level already there with the same recipe is read back.
    ``jobs`` > 1 trains that many levels at a time in worker processes (each given an equal share of the CPU
    threads). ``on_start(latent, reused)`` and ``on_level(level)`` report progress. ``settings``
    (:func:`settings_record`) goes into ``sweep.json``, by which a rerun knows the folder is its own.
    """
    if jobs < 1:
        raise OutOfRange("jobs", jobs, "at least 1")
    tasks = _tasks(recipe, sizes, train.shape[1], options, out, full=full)
    baseline_document = _baselines(train, validation, test, sizes, options) if baselines else {}
    finished: list[Level] = []
    estimators: dict[int, Any] = {}
    assemble = functools.partial(
        _assemble,
        rows=(train, validation, test),
        recipe=recipe,
        tolerance=tolerance,
        min_gain=min_gain,
        baselines=baseline_document,
        estimators=estimators,
    )

    def record(level: Level) -> None:
        finished.append(level)
        if on_level is not None:
            on_level(level)
        if out is not None:
            write_json(out, assemble(finished), settings or {})

    if jobs == 1 or len(tasks) == 1:
        kept = estimators if keep_estimators else None
        _run_serial(tasks, train, validation, test, record, on_start, kept)
    else:
        _run_parallel(tasks, train, validation, test, jobs, record, on_start)
    return assemble(finished)


def _tasks(
    recipe: Recipe, sizes: Sequence[int], input_dim: int, options: dict, out: Path | None, *, full: bool
) -> list[_Task]:
    """A task per latent size, then the full-dimension flow's (with ``full``, where the recipe has one)."""
    tasks = [
        _task(recipe.with_overrides(latent_dim=latent), latent, input_dim, options, out, full=False) for latent in sizes
    ]
    full_recipe = full_dimension_recipe(recipe) if full else None
    if full_recipe is not None:
        tasks.append(_task(full_recipe, input_dim, input_dim, options, out, full=True))
    return tasks


def _assemble(
    levels: list[Level],
    *,
    rows: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None],
    recipe: Recipe,
    tolerance: float,
    min_gain: float,
    baselines: dict[str, Any],
    estimators: dict[int, Any],
) -> Sweep:
    """The sweep of the levels finished so far (any order), with its choice; ``rows`` are (train, validation,
    test)."""
    train, validation, test = rows
    funnel_levels = sorted((level for level in levels if not level.full), key=lambda level: level.latent_dim)
    full_level = next((level for level in levels if level.full), None)
    candidates = funnel_levels + ([full_level] if full_level is not None else [])
    chosen, rule = choose(candidates, tolerance, min_gain) if candidates else (0, "no level has finished yet")
    return Sweep(
        input_dim=train.shape[1],
        columns=[str(c) for c in train.columns],
        recipe=recipe.name,
        ansatz=recipe.model.ansatz if recipe.has_funnel else None,
        tolerance=tolerance,
        min_gain=min_gain,
        levels=funnel_levels,
        full=full_level,
        baselines=baselines,
        chosen_latent_dim=chosen,
        rule=rule,
        train_rows=len(train),
        validation_rows=len(validation),
        test_rows=None if test is None else len(test),
        estimators=estimators,
    )


def _task(recipe: Recipe, latent: int, input_dim: int, options: dict, out: Path | None, *, full: bool) -> _Task:
    folder = None if out is None else str(Path(out) / level_name(latent, input_dim))
    return _Task(recipe.to_dict(), recipe.name, latent, input_dim, dict(options), folder, full)


def _run_serial(tasks, train, validation, test, record, on_start, estimators: dict[int, Any] | None) -> None:
    """Train the levels one after the other in this process; each estimator goes into ``estimators`` if given."""
    for task in tasks:
        if on_start is not None:
            on_start(task.latent, _reusable_quick(task))
        level, estimator = _train_level(task, train, validation, test, keep_estimator=estimators is not None)
        if estimator is not None:
            estimators[level.latent_dim] = estimator
        record(level)


def _reusable_quick(task: _Task) -> bool:
    return task.folder is not None and outputs.is_kind(task.folder, outputs.MODEL)


def _run_parallel(tasks, train, validation, test, jobs, record, on_start) -> None:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(min(jobs, len(tasks)), initializer=_worker_init, initargs=(threads,))
    try:
        for task in tasks:
            if on_start is not None:
                on_start(task.latent, _reusable_quick(task))
        arguments = [(task, train, validation, test) for task in tasks]
        for level in pool.imap_unordered(_worker, arguments):
            record(level)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def _baselines(train, validation, test, sizes, options) -> dict[str, Any]:
    """The full Gaussian, the Gaussian mixture chosen on validation and PPCA at each size, scored on the same
    rows as the levels (integer columns dequantized as the models dequantize them)."""
    from funnelcli.baselines import fit_baselines
    from funnelcli.data.columns import integer_columns

    def values(frame: pd.DataFrame | None, seed: int) -> np.ndarray | None:
        if frame is None:
            return None
        array = frame.to_numpy(dtype=np.float64)
        if options.get("dequantize", "uniform") == "uniform":
            mask = np.isin([str(c) for c in frame.columns], integer_columns(train))
            array = array + mask * np.random.default_rng(seed).random(array.shape)
        return array

    train_values = values(train, 1)
    validation_values, test_values = values(validation, 2), values(test, 3)
    try:
        fitted = fit_baselines(train_values, validation_values, latent_dims=list(sizes), seed=0)
    except UserError as error:  # a singular covariance (columns that are exact combinations of others)
        log.warning("the baselines were left out: %s", error)
        return {}
    document: dict[str, Any] = {"ppca": []}
    for baseline in fitted.values():
        val_mean, val_stderr = mean_and_stderr(baseline.score_samples(validation_values))
        entry = {
            "label": baseline.label,
            "val_log_prob": val_mean,
            "val_stderr": val_stderr,
            "test_log_prob": None,
            "test_stderr": None,
            "parameters": baseline.parameters,
            "latent_dim": baseline.latent_dim,
        }
        if test_values is not None:
            entry["test_log_prob"], entry["test_stderr"] = mean_and_stderr(baseline.score_samples(test_values))
        if baseline.latent_dim is not None:
            document["ppca"].append(entry)
        else:
            document[baseline.name] = entry
    return document


# -- the sweep folder ------------------------------------------------------------------------------------------


def is_sweep_document(path: Path) -> bool:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(document, dict) and document.get("format") == FORMAT


def _unmarked_sweep(folder: Path) -> Path | None:
    return None if is_sweep_document(folder / JSON) else folder / JSON


def _child_kind(name: str) -> outputs.FolderKind | None:
    if name == FULL or (name.startswith("latent-") and name[len("latent-") :].isdigit()):
        return outputs.MODEL
    return None


SWEEP = outputs.FolderKind("sweep folder", frozenset({JSON, CSV, PNG}), {}, _unmarked_sweep, children=_child_kind)


def settings_record(recipe: Recipe, options: dict, data_sha256: str) -> dict[str, Any]:
    """What must match for a rerun to continue a sweep folder: the recipe (without its latent size), the
    estimator options that change a model, and the data."""
    model = {
        key: value for key, value in recipe.to_dict()["model"].items() if key not in ("reduce", "latent_dim", "drop")
    }
    return {
        "family": recipe.family,
        "model": model,
        "training": recipe.to_dict()["training"],
        "dequantize": options.get("dequantize"),
        "data_sha256": data_sha256,
    }


def prepare_folder(out: Path, settings: dict[str, Any], *, overwrite: bool, inputs=()) -> None:
    """Refuse, or make ready, the sweep folder ``out``.

    A new or empty folder is used as it is. A sweep folder of the same settings and data is continued: its
    finished levels are kept. One of other settings is replaced with ``overwrite`` (only the sweep's own files
    go); anything that funnelcli did not write is refused.
    """
    outputs.check_output_folder(out, SWEEP, overwrite=True, inputs=inputs)
    if not out.is_dir() or not any(out.iterdir()):
        return
    previous = json.loads((out / JSON).read_text(encoding="utf-8")).get("settings")
    if previous == json.loads(json.dumps(settings)):
        if overwrite:
            _clear(out)
        return
    if not overwrite:
        what = "data" if previous and previous.get("data_sha256") != settings["data_sha256"] else "settings"
        raise Refused(
            f"{out} holds a sweep of other {what}",
            "pass {overwrite=True} to replace it, or choose another {out} "
            "(the same command with the same data and settings continues a sweep)",
        )
    _clear(out)


def _clear(out: Path) -> None:
    for entry in sorted(out.iterdir()):
        if entry.is_dir() and _child_kind(entry.name) is not None:
            shutil.rmtree(entry)
        elif entry.name in SWEEP.files:
            entry.unlink()


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(out: Path, sweep: Sweep, settings: dict[str, Any]) -> None:
    _write_text(out / JSON, json.dumps({**sweep.to_dict(), "settings": settings}, indent=2) + "\n")


def write_outputs(out: Path, sweep: Sweep, settings: dict[str, Any]) -> None:
    """``sweep.json``, ``sweep.csv`` and ``sweep.png`` (when matplotlib is installed), each written atomically."""
    write_json(out, sweep, settings)
    _write_text(out / CSV, sweep.table().to_csv(index=False))
    from funnelcli.evaluation.plots import require_matplotlib, save_png, sweep_figure

    try:
        require_matplotlib()
    except UserError:
        log.warning("matplotlib is not installed, so %s was not drawn (pip install funnelcli[report])", out / PNG)
        return
    save_png(sweep_figure(sweep), out / PNG)
