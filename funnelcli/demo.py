"""``make demo``: the main job on real data that ships with scikit-learn, with the commands a user types.

The Wisconsin breast-cancer table (569 tumours x 30 measurements) lies near a lower-dimensional surface:
radius, perimeter and area of a cell nucleus are nearly functions of one another. The demo trains the default
recipe (an F-NSF that keeps half the dimensions) and the full-dimension NSF on 80% of the rows, as a user types
them. Below 600 training rows the default trains its small-table recipe, and below 5,000 ``nsf`` trains itself,
``small-nsf`` and ``nsf-slow`` and keeps the best on the validation rows; both say so. It scores the
held-out 20%, encodes and samples, and prints the test log-likelihoods beside a Gaussian mixture's (k chosen on
held-out training rows) and a full-covariance Gaussian's.

Run: ``python -m funnelcli.demo [OUT_DIR]`` (default ``demo/``).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _funnel(*args: str) -> str:
    command = [sys.executable, "-m", "funnelcli", *args]
    print("$ funnel " + " ".join(shlex.quote(a) for a in args), flush=True)
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"demo step failed (exit {result.returncode}): funnel {' '.join(args)}")
    if args[-1] != "--json":
        print(result.stdout.rstrip(), flush=True)
    return result.stdout


def export_data(directory: Path) -> tuple[Path, Path]:
    """Write the breast-cancer table as train.csv (80%) and test.csv (20%), split with a fixed seed."""
    from sklearn.datasets import load_breast_cancer

    from funnelcli.data import write_table

    table = load_breast_cancer(as_frame=True).data
    table.columns = [name.replace(" ", "_") for name in table.columns]
    test_rows = np.random.default_rng(0).permutation(len(table))[: len(table) // 5]
    is_test = np.zeros(len(table), dtype=bool)
    is_test[test_rows] = True
    train, test = directory / "train.csv", directory / "test.csv"
    write_table(table[~is_test], train)
    write_table(table[is_test], test)
    return train, test


def main(out: Path) -> None:
    from funnelcli.baselines import gaussian_mixture
    from funnelcli.stats import gaussian_log_prob, mean_and_stderr

    started = time.perf_counter()
    train, test = export_data(out / "data")
    print(f"data: {train} and {test} (scikit-learn's breast-cancer table, 30 columns)\n", flush=True)
    results = {}
    for recipe in ("f-nsf", "nsf"):
        run = out / "runs" / recipe
        _funnel(
            "train", str(train), *(["--recipe", recipe] if recipe != "f-nsf" else []), "--output", str(run), "--force"
        )
        results[recipe] = json.loads(_funnel("score", str(run), str(test), "--json"))
        results[recipe]["info"] = json.loads((run / "model.json").read_text())
        print()
    model = str(out / "runs" / "f-nsf")
    _funnel("score", model, str(test), "-o", str(out / "scores.parquet"), "--force")
    _funnel("encode", model, str(test), "-o", str(out / "latent.parquet"), "--force")
    _funnel("sample", model, "-n", "1000", "-o", str(out / "samples.parquet"), "--seed", "0", "--force")

    train_rows, test_rows = pd.read_csv(train), pd.read_csv(test)
    gaussian = gaussian_log_prob(train_rows.to_numpy(), test_rows.to_numpy())
    g_mean, g_err = mean_and_stderr(gaussian)
    mixture = gaussian_mixture(train_rows)
    m_mean, m_err = mean_and_stderr(mixture.score_samples(test_rows))
    print(f"\nTest log-likelihood, nats per row (mean ± standard error), {len(gaussian)} held-out rows:")
    print(f"  {'model':<28}{'log-likelihood':>20}{'latent dims':>13}{'s / 100 steps':>15}")
    for recipe, label in (("f-nsf", "F-NSF (funnel, reduce 0.5)"), ("nsf", "NSF (full dimension)")):
        r = results[recipe]
        per_100 = r["info"]["training"]["ms_per_step"] / 10
        line = f"{r['mean_log_prob']:.2f} ± {r['stderr']:.2f}"
        print(f"  {label:<28}{line:>20}{r['latent_dim']:>13}{per_100:>15.2f}")
    for label, mean, err in (
        (f"Gaussian mixture (k = {mixture.details['components']})", m_mean, m_err),
        ("Gaussian (full covariance)", g_mean, g_err),
    ):
        print(f"  {label:<28}{f'{mean:.2f} ± {err:.2f}':>20}{30:>13}{'-':>15}")
    print(
        f"\noutputs in {out}/ (scores.parquet, latent.parquet, samples.parquet); {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("demo"))
