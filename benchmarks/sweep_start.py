"""Does the sweep's choice depend on how its levels start? Random weights against the principal start.

    python benchmarks/sweep_start.py [--steps 400] [--starts random,principal] [--tables 16-4-0.3-5000-whole,...]
        [--set ansatz_hidden_features=256 --set ansatz_layers=3] [--recipe f-nsf]

Each table is ``D-k-c-ROWS-LADDER``: rows from :func:`funnelcli.data.synthetic.near_surface` within 0.05 of a
k-dimensional surface of curvature c rotated into D columns. With 2,000 rows the rows and seeds are those of
tests/test_sweep_choice.py (2,000 training and 1,000 validation rows); otherwise 80% train and 20% validate.
LADDER is ``cut`` (the sizes within 2 of k, as the tests run them), ``near`` (k - 2 to k + 3) or ``whole``
(the default ladder). Every level is the tests' compact recipe (tests/test_sweep.py's ``TINY``: f-nsf, 2
coupling steps of width 32, the funnel first, a Gaussian ansatz of 64 x 2, lr 3e-3) or, with ``--recipe NAME``,
a bundled recipe as ``funnel sweep`` trains it (the sweep's ansatz), at ``--steps``, on one thread; the choice is
the sweep's rule (and, in brackets, the rule with ``min_gain = 0.5``); ``--set FIELD=VALUE`` changes a recipe
field of every level. Prints one line per table and start. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import time
import tomllib
from pathlib import Path

import torch

from funnelcli import sweep as sweeping
from funnelcli.data.synthetic import near_surface
from funnelcli.models.recipe import Recipe, load_recipe

ROOT = Path(__file__).resolve().parents[1]
TABLES = (
    "8-2-0.3-2000-cut,16-3-0.3-2000-cut,32-6-0.3-2000-cut,16-4-0.3-5000-whole,24-5-0.5-5000-cut,"
    "10-3-1-5000-whole,12-2-1-5000-cut,8-2-1-2000-cut,16-3-1-2000-cut,32-6-1-2000-cut"
)


def level_recipe(name: str, steps: int, start: str, fields: dict) -> Recipe:
    if name != "tiny":
        recipe = sweeping.with_sweep_defaults(load_recipe(name))
        return recipe.with_overrides(steps=steps, start=start, **fields)
    text = (ROOT / "tests" / "test_sweep.py").read_text().split('TINY = """')[1].split('"""')[0]
    recipe = Recipe.from_dict(tomllib.loads(text), name="tiny")
    return recipe.with_overrides(steps=steps, eval_every=steps // 5, start=start, **fields)


def rows(dim: int, latent: int, curvature: float, count: int):
    if count == 2000:
        train = near_surface(2000, dim, latent, noise=0.05, curvature=curvature, seed=0)[0]
        return train, near_surface(1000, dim, latent, noise=0.05, curvature=curvature, seed=1)[0]
    train = near_surface(int(count * 0.8), dim, latent, noise=0.05, curvature=curvature, seed=1)[0]
    return train, near_surface(int(count * 0.2), dim, latent, noise=0.05, curvature=curvature, seed=2)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--starts", default="random,principal")
    parser.add_argument("--tables", default=TABLES)
    parser.add_argument("--recipe", default="tiny", help="tiny (the tests') or a bundled recipe's name")
    parser.add_argument("--set", action="append", default=[], help="FIELD=VALUE, a recipe field for every level")
    args = parser.parse_args()
    fields = {name: tomllib.loads(f"v = {value}")["v"] for name, value in (item.split("=", 1) for item in args.set)}
    torch.set_num_threads(1)
    for spec in args.tables.split(","):
        dim, latent, curvature, count, ladder = spec.split("-")
        dim, latent, count = int(dim), int(latent), int(count)
        train, validation = rows(dim, latent, float(curvature), count)
        sizes = sweeping.latent_ladder(dim)
        if ladder == "cut":
            sizes = [size for size in sizes if abs(size - latent) <= 2]
        elif ladder == "near":
            sizes = [size for size in sizes if -2 <= size - latent <= 3]
        for start in args.starts.split(","):
            began = time.perf_counter()
            recipe = level_recipe(args.recipe, args.steps, start, fields)
            result = sweeping.run_sweep(
                train, validation, recipe=recipe, sizes=sizes, options={"device": "cpu"}, full=False, baselines=False
            )
            levels = ", ".join(f"{lv.latent_dim}: {lv.val_log_prob:.2f} ± {lv.val_stderr:.2f}" for lv in result.levels)
            with_gain = sweeping.choose(result.levels, 1.0, 0.5)[0]
            print(
                f"{spec} {args.recipe} {start} {args.steps} steps {' '.join(args.set)}: "
                f"choice {result.chosen_latent_dim} (min_gain 0.5: {with_gain}) "
                f"(truth {latent}) | {levels} ({time.perf_counter() - began:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
