"""The funnel paper's image anomaly test on data that ships offline: scikit-learn's digits.

    python benchmarks/images.py [--steps 2000] [--recipes image,f-image,f-nsf] [--device auto] [--out FILE.json]

The 1,797 digits are 8x8 grey images with 17 levels, 0..16. They are read as 5-bit pixels (``bits=5``: whole
numbers in [0, 32), dequantized with u ~ U[0, 1), no rescaling); no value exceeds 16, so the bits per dimension
compare the models here with one another, not with published 5-bit figures of natural images.

In-distribution: the digits 0-4, split 80/20 (seeded) into training rows and held-out rows. Out-of-distribution:
every digit 5-9. Each recipe is trained on the same rows and pixels, then scores both held-out sets; anomaly
detection ranks rows by -log p (OOD positive, :func:`funnelcli.evaluation.metrics.anomaly_detection`), and the
paper's Table 4 ratio is mean log p(OOD) / mean log p(in) (above 1: OOD rows less likely). ``image`` is the
multi-scale baseline (squeeze-and-split), ``f-image`` the same depth with 2-D funnels, ``f-nsf`` the tabular
funnel flow on the same 64 columns. A recipe whose family this funnelcli lacks is reported as skipped.

Prints a markdown table and writes JSON (``--out``). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from funnelcli.errors import UserError
from funnelcli.estimator import FunnelDensity
from funnelcli.evaluation.metrics import anomaly_detection, bits_per_dim, likelihood_ratio_summary

#: The digits' pixels are read at this depth: 0..16 are whole numbers in [0, 2^5).
BITS = 5
IMAGE_SHAPE = [8, 8, 1]
IMAGE_FAMILIES = ("nsf-image", "f-nsf-image")


def digits_split(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(training rows of 0-4, held-out rows of 0-4, every row of 5-9) as pixel tables p0..p63."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = pd.DataFrame(digits.data, columns=[f"p{j}" for j in range(64)])
    inside = np.flatnonzero(digits.target <= 4)
    order = np.random.default_rng(seed).permutation(inside)
    cut = int(0.8 * len(order))
    train, held_out = pixels.iloc[order[:cut]], pixels.iloc[order[cut:]]
    outside = pixels.iloc[np.flatnonzero(digits.target > 4)]
    return (frame.reset_index(drop=True) for frame in (train, held_out, outside))


def run_recipe(recipe: str, train, held_out, outside, *, steps: int, device: str, seed: int) -> dict:
    """Train ``recipe`` on ``train`` at 5 bits and score both held-out sets; a family this funnelcli lacks is
    returned as ``skipped`` with the reason."""
    from funnelcli.models import load_recipe

    try:
        family = load_recipe(recipe).family
    except UserError as error:
        return {"recipe": recipe, "skipped": str(error)}
    extra = {"image_shape": IMAGE_SHAPE} if family in IMAGE_FAMILIES else {}
    estimator = FunnelDensity(recipe, steps=steps, seed=seed, device=device, bits=BITS, **extra)
    estimator.fit(train)
    log_prob_in = estimator.score_samples(held_out)
    log_prob_out = estimator.score_samples(outside)
    detection = anomaly_detection(log_prob_in, log_prob_out)
    ratio = likelihood_ratio_summary(log_prob_in, log_prob_out)
    dim = train.shape[1]
    return {
        "recipe": recipe,
        "family": family,
        "latent_dim": int(estimator.latent_dim_),
        "bits_per_dim_in": bits_per_dim(ratio["mean_log_prob_in"], dim),
        "bits_per_dim_out": bits_per_dim(ratio["mean_log_prob_out"], dim),
        "mean_log_prob_in": ratio["mean_log_prob_in"],
        "mean_log_prob_out": ratio["mean_log_prob_out"],
        "ratio": ratio["ratio"],
        "auroc": detection["auroc"],
        "ms_per_step": estimator.summary_["ms_per_step"],
        "steps": estimator.summary_["steps"],
    }


def markdown(results: list[dict]) -> str:
    """The results as a markdown table, one row per recipe."""
    lines = [
        "| recipe | family | latent | bits/dim in (0-4) | bits/dim OOD (5-9) | ratio OOD/in | AUROC | ms/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        if "skipped" in row:
            lines.append(f"| {row['recipe']} | skipped: {row['skipped']} | | | | | | |")
            continue
        ratio = "–" if row["ratio"] is None or not math.isfinite(row["ratio"]) else f"{row['ratio']:.3f}"
        lines.append(
            f"| {row['recipe']} | {row['family']} | {row['latent_dim']} | {row['bits_per_dim_in']:.3f} | "
            f"{row['bits_per_dim_out']:.3f} | {ratio} | {row['auroc']:.3f} | {row['ms_per_step']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--recipes", default="image,f-image,f-nsf")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    train, held_out, outside = digits_split(args.seed)
    results = []
    for recipe in args.recipes.split(","):
        results.append(
            run_recipe(recipe, train, held_out, outside, steps=args.steps, device=args.device, seed=args.seed)
        )
        print(markdown(results[-1:]).splitlines()[-1], flush=True)
    print()
    print(
        f"digits: train {len(train)} rows of 0-4, held out {len(held_out)} of 0-4 and {len(outside)} of 5-9; "
        f"{BITS}-bit pixels, {args.steps} steps"
    )
    print(markdown(results))
    if args.out is not None:
        args.out.write_text(json.dumps({"steps": args.steps, "bits": BITS, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
