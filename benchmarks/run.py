"""funnelcli's speed and memory, side by side with bare nflows, in one run on one machine.

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--out benchmarks/results]

Measures (nothing is asserted; JSON and a markdown table are written, with the machine):
1. Training ms per step of every family (nsf, f-nsf, glow, f-glow, f-mlp, vae; the HEPMASS paper recipes'
   architectures) at D = 8, 32, 128 with batch 512, through funnelcli's training loop, and the same NSF step
   written directly against nflows (no funnelcli code) as the bare reference.
2. Score and encode throughput in rows per second end to end, Parquet file to Parquet file
   (``funnelcli.apply``, what ``funnel score``/``encode`` run), against bare ``log_prob`` on an in-memory
   tensor of the same model.
3. Peak resident memory of ``funnel score`` (a fresh process) on 1 and on 10 million rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

FAMILIES = ("nsf", "f-nsf", "glow", "f-glow", "f-mlp", "vae")


def _recipe(family: str, steps: int):
    from funnelcli.models import load_recipe

    recipe = load_recipe(f"hepmass-{family}")
    return recipe.with_overrides(steps=steps, batch_size=512, eval_every=steps, patience=0)


def funnelcli_step_ms(family: str, dim: int, steps: int, device: torch.device) -> float:
    """ms per step of funnelcli's own training loop (``training.fit``), warm-up excluded."""
    from funnelcli.models import build_model
    from funnelcli.training import fit

    recipe = _recipe(family, steps)
    model = build_model(recipe, np.zeros(dim), np.ones(dim)).to(device)
    data = torch.randn(20_000, dim, device=device)
    fit(model, data[:2048], data[:512], dataclasses.replace(recipe.training, steps=3))  # warm-up
    summary = fit(model, data, data[:512], recipe.training)
    return summary.ms_per_step


def bare_nflows_step_ms(dim: int, steps: int, device: torch.device) -> float:
    """The NSF step (HEPMASS architecture) written against nflows alone: Flow, StandardNormal, Adam, clipping."""
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.nn.nets import ResidualNet
    from nflows.transforms import CompositeTransform, LULinear, PiecewiseRationalQuadraticCouplingTransform
    from nflows.transforms.permutations import RandomPermutation
    from nflows.utils import create_alternating_binary_mask

    recipe = _recipe("nsf", steps).model
    layers = []
    for step in range(recipe.flow_steps):
        layers += [
            RandomPermutation(dim),
            LULinear(dim, identity_init=True),
            PiecewiseRationalQuadraticCouplingTransform(
                create_alternating_binary_mask(dim, even=step % 2 == 0),
                lambda n_in, n_out: ResidualNet(
                    n_in,
                    n_out,
                    recipe.hidden_features,
                    num_blocks=recipe.residual_blocks,
                    dropout_probability=recipe.dropout,
                ),
                num_bins=recipe.bins,
                tails="linear",
                tail_bound=recipe.tail_bound,
            ),
        ]
    layers += [RandomPermutation(dim), LULinear(dim, identity_init=True)]
    flow = Flow(CompositeTransform(layers), StandardNormal([dim])).to(device)
    optimizer = torch.optim.Adam(flow.parameters(), lr=5e-4)
    data = torch.randn(20_000, dim, device=device)
    times = []
    for step in range(steps + 3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        tick = time.perf_counter()
        batch = data[torch.randint(0, 20_000, (512,), device=device)]
        loss = -flow.log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 5.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 3:
            times.append(1000 * (time.perf_counter() - tick))
    return statistics.mean(times)


def throughput(rows: int, workdir: Path, device: str) -> dict:
    """Rows per second of score and encode (Parquet to Parquet) and of bare log_prob, for one f-nsf model."""
    from funnelcli.apply import encode_file, score_file
    from funnelcli.estimator import FunnelDensity

    dim = 8
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(rows, dim)), columns=[f"c{j}" for j in range(dim)])
    estimator = FunnelDensity(_recipe("f-nsf", 2), device=device).fit(frame.iloc[:4096])
    estimator.save(workdir / "model", overwrite=True)
    frame.to_parquet(workdir / "rows.parquet")
    model = estimator.model_.eval()
    tensor = torch.tensor(frame.to_numpy(np.float32), device=model.scaler.mean.device)
    tick = time.perf_counter()
    with torch.no_grad():
        for start in range(0, rows, 65_536):
            model.log_prob(tensor[start : start + 65_536])
    bare = rows / (time.perf_counter() - tick)
    tick = time.perf_counter()
    score_file(estimator, workdir / "rows.parquet", output=workdir / "scores.parquet", overwrite=True)
    scored = rows / (time.perf_counter() - tick)
    tick = time.perf_counter()
    encode_file(estimator, workdir / "rows.parquet", workdir / "latent.parquet", overwrite=True)
    encoded = rows / (time.perf_counter() - tick)
    return {
        "rows": rows,
        "bare_log_prob_rows_per_s": round(bare),
        "score_rows_per_s": round(scored),
        "encode_rows_per_s": round(encoded),
        "score_over_bare": round(scored / bare, 3),
    }


def score_peak_memory(rows: int, workdir: Path) -> float:
    """Peak resident MiB of a fresh `funnel score` process on a Parquet file of ``rows`` rows."""
    dim = 8
    path = workdir / f"rows-{rows}.parquet"
    if not path.exists():
        import pyarrow as pa
        import pyarrow.parquet as pq

        rng = np.random.default_rng(1)
        writer = None
        for start in range(0, rows, 1_000_000):
            n = min(1_000_000, rows - start)
            table = pa.table({f"c{j}": rng.normal(size=n) for j in range(dim)})
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        writer.close()
    code = (
        "import sys; from funnelcli.cli import main; sys.argv = ['funnel', 'score', sys.argv[1], "
        "sys.argv[2], '-o', sys.argv[3], '--force', '--json', '--device', 'cpu'];\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        # VmHWM, the peak of this program's own memory map: ru_maxrss would include the RSS of the benchmark
        # process it was forked from, which Linux carries across exec.
        "print([line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0], "
        "file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(workdir / "model"), str(path), str(workdir / "out.parquet")],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and rows, for a smoke run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    device = torch.device(args.device)
    steps = 5 if args.quick else 20
    dims = (8, 32) if args.quick else (8, 32, 128)
    results: dict = {
        "machine": {
            "device": str(device),
            "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        }
    }
    training = []
    for dim in dims:
        row = {"dim": dim, "bare nflows nsf": round(bare_nflows_step_ms(dim, steps, device), 2)}
        for family in FAMILIES:
            row[family] = round(funnelcli_step_ms(family, dim, steps, device), 2)
        training.append(row)
        print(json.dumps(row), flush=True)
    results["training_ms_per_step"] = training
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        results["throughput"] = throughput(200_000 if args.quick else 1_000_000, workdir, args.device)
        print(json.dumps(results["throughput"]), flush=True)
        sizes = (100_000, 1_000_000) if args.quick else (1_000_000, 10_000_000)
        results["score_peak_rss_mib"] = {str(n): round(score_peak_memory(n, workdir), 1) for n in sizes}
        print(json.dumps(results["score_peak_rss_mib"]), flush=True)
    results["self_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "run.json").write_text(json.dumps(results, indent=2))
    m = results["machine"]
    lines = [
        f"Machine: {m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), "
        f"device {m['device']}{' (' + m['gpu'] + ')' if m['gpu'] else ''}.",
        "",
        "Training ms per step (batch 512, HEPMASS recipe architectures):",
        "",
        "| D | bare nflows NSF | " + " | ".join(FAMILIES) + " | nsf / bare | f-nsf / nsf | nsf / f-mlp |",
        "|---|---|" + "---|" * (len(FAMILIES) + 3),
    ]
    for row in training:
        lines.append(
            f"| {row['dim']} | {row['bare nflows nsf']:.1f} | "
            + " | ".join(f"{row[f]:.1f}" for f in FAMILIES)
            + f" | {row['nsf'] / row['bare nflows nsf']:.2f} | {row['f-nsf'] / row['nsf']:.2f} | "
            f"{row['nsf'] / row['f-mlp']:.1f} |"
        )
    t = results["throughput"]
    lines += [
        "",
        f"Throughput on {t['rows']:,} rows (D = 8, f-nsf): bare log_prob {t['bare_log_prob_rows_per_s']:,} "
        f"rows/s; score Parquet to Parquet {t['score_rows_per_s']:,} rows/s ({t['score_over_bare']:.2f} of bare); "
        f"encode {t['encode_rows_per_s']:,} rows/s.",
        "",
        "Peak resident memory of `funnel score`: "
        + ", ".join(f"{int(n):,} rows: {mib:.0f} MiB" for n, mib in results["score_peak_rss_mib"].items())
        + ".",
    ]
    (args.out / "run.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
