"""Is it the funnel's projection that the probe misses on strongly curved surfaces? The probe's sweep with each
funnel's kept directions started elsewhere than at the top principal components.

    python benchmarks/sweep_projection.py --span oracle|search|tangent|principal --table 16-3-1-2000
        [--steps 1200] [--neighbours 0]

Tables are ``D-k-c-ROWS`` as in benchmarks/sweep_start.py (the same rows and seeds), at sizes k - 2 to k + 3.
``principal`` is the probe as bundled. ``oracle`` starts each funnel keeping the surface's own coordinates (the
rows' u in :func:`funnelcli.data.synthetic.near_surface`, which the other columns are a function of; for a size
above k, the top principal components of what they leave). ``search`` is the surface start
(``training.start = "surface"``). ``tangent`` keeps the top directions of the mean projector onto local tangent
planes (PCA of each of 500 anchors' ``--neighbours`` nearest rows; 0: 4k + 4, at least 10). Only the start
changes: the model is trained and exact as from any other weights. Prints one line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep_start import rows  # noqa: E402

from funnelcli import sweep as sweeping  # noqa: E402
from funnelcli.models import funnel_start  # noqa: E402
from funnelcli.models.recipe import load_recipe  # noqa: E402


def surface_span(dim: int, latent: int, scale: np.ndarray):
    """The span of the surface's own coordinates, in the model's standardised units (x = scale * z + mean)."""
    shape = np.random.default_rng([dim, latent])  # near_surface draws A, B, then Q from this
    shape.normal(size=(2, latent, dim - latent))
    q = np.linalg.qr(shape.normal(size=(dim, dim)))[0]

    def span(centred: np.ndarray, keep: int) -> np.ndarray:
        w = q[:, :latent].T * scale
        if keep > latent:
            left = centred - centred @ np.linalg.pinv(w) @ w
            w = np.vstack([w, np.linalg.eigh(left.T @ left)[1][:, -(keep - latent) :].T])
        return np.linalg.qr(w[:keep].T)[0].T

    return span


def tangent_span(neighbours: int):
    from sklearn.neighbors import NearestNeighbors

    def span(centred: np.ndarray, keep: int) -> np.ndarray:
        count = neighbours or max(10, 4 * keep + 4)
        anchors = centred[:: max(1, len(centred) // 500)]
        _, near = NearestNeighbors(n_neighbors=count + 1).fit(centred).kneighbors(anchors)
        projector = np.zeros((centred.shape[1],) * 2)
        for row in near:
            local = centred[row] - centred[row].mean(axis=0)
            vectors = np.linalg.eigh(local.T @ local)[1][:, -keep:]
            projector += vectors @ vectors.T
        return np.linalg.eigh(projector)[1][:, -keep:].T

    return span


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--span", choices=["oracle", "tangent", "principal", "search"], required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--neighbours", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dim, latent, curvature, count = args.table.split("-")
    dim, latent, count = int(dim), int(latent), int(count)
    train, validation = rows(dim, latent, float(curvature), count)
    if args.span == "oracle":
        funnel_start._principal_span = surface_span(dim, latent, train.to_numpy().std(axis=0))
    elif args.span == "search":
        funnel_start._principal_span = funnel_start._surface_span  # as training.start = "surface" does
    elif args.span == "tangent":
        funnel_start._principal_span = tangent_span(args.neighbours)
    recipe = sweeping.with_sweep_defaults(load_recipe("probe"))
    recipe = recipe.with_overrides(steps=args.steps, eval_every=max(1, args.steps // 5))
    sizes = sorted({max(1, latent + d) for d in range(-2, 4) if latent + d < dim})
    began = time.time()
    result = sweeping.run_sweep(
        train, validation, recipe=recipe, sizes=sizes, options={"device": "cpu"}, full=False, baselines=False
    )
    levels = ", ".join(f"{lv.latent_dim}: {lv.val_log_prob:.2f} ± {lv.val_stderr:.2f}" for lv in result.levels)
    print(
        f"{args.span} {args.table} {args.steps} steps: choice {result.chosen_latent_dim} ({levels}) "
        f"{time.time() - began:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
