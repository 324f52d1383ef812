"""BSDS300-style patches as images: does the image funnel pay on 63 columns that are 8x8 patches less a pixel?

    python benchmarks/patches63.py [--steps 1000] [--rows 20000] [--recipes f-image,f-nsf,nsf] [--out FILE.json]

The real BSDS300 table does not ship offline, so this cuts its like from scikit-learn's two sample photographs,
as BSDS300 was made (docs/maths.md, the MAF preprocessing): grey 8x8 patches at seeded random places, each pixel
dequantized (u ~ U[0, 1)) and divided by 256, the patch's mean subtracted, and the last (bottom-right) pixel
dropped, which the other 63 then determine. ``f-image`` reads the 63 columns as an 8x8 image less its last pixel
(``image_shape = [8, 8]``: its first squeeze is a funnel that drops that pixel's place; docs/maths.md, section 7);
``f-nsf`` and ``nsf`` read them as a table. Each trains on the same rows for the same steps and scores the same
held-out rows. Prints a markdown table and writes JSON (``--out``). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from funnelcli.data.pixels import cut_patches, sklearn_sample_images
from funnelcli.estimator import FunnelDensity
from funnelcli.models import load_recipe


def patch_table(rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` BSDS300-style rows p0..p62 (see the module's text)."""
    patches = cut_patches(sklearn_sample_images(gray=True), size=8, count=rows, seed=seed).astype(np.float64)
    noise = np.random.default_rng(seed + 1).uniform(size=patches.shape)
    values = (patches + noise) / 256.0
    values -= values.mean(axis=1, keepdims=True)
    return pd.DataFrame(values[:, :63], columns=[f"p{j}" for j in range(63)])


def run_recipe(recipe: str, train: pd.DataFrame, test: pd.DataFrame, *, steps: int, seed: int) -> dict:
    extra = {"image_shape": [8, 8]} if load_recipe(recipe).family == "f-nsf-image" else {}
    estimator = FunnelDensity(recipe, steps=steps, seed=seed, device="cpu", **extra).fit(train)
    scores = estimator.score_samples(test)
    return {
        "recipe": recipe,
        "latent_dim": int(estimator.latent_dim_),
        "test_log_prob": float(scores.mean()),
        "test_stderr": float(scores.std(ddof=1) / np.sqrt(len(scores))),
        "ms_per_step": estimator.summary_["ms_per_step"],
        "steps": estimator.summary_["steps"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--recipes", default="f-image,f-nsf,nsf")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    table = patch_table(args.rows, args.seed)
    cut = int(0.9 * len(table))
    train, test = table.iloc[:cut], table.iloc[cut:]
    print("| recipe | latent | test log-likelihood (nats per row) | ms/step |")
    print("|---|---|---|---|")
    results = []
    for recipe in args.recipes.split(","):
        row = run_recipe(recipe, train, test, steps=args.steps, seed=args.seed)
        results.append(row)
        print(
            f"| {recipe} | {row['latent_dim']} | {row['test_log_prob']:.2f} ± {row['test_stderr']:.2f} | "
            f"{row['ms_per_step']:.1f} |",
            flush=True,
        )
    print(f"\n{len(train):,} training and {len(test):,} held-out patches, {args.steps} steps")
    if args.out is not None:
        args.out.write_text(json.dumps({"steps": args.steps, "rows": args.rows, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
