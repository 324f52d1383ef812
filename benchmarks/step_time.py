"""Training ms per step of every family at the paper's POWER and HEPMASS settings, side by side in one run.

    python benchmarks/step_time.py [--steps 20] [--out benchmarks/results]

Each model is built from its bundled paper recipe (``power-nsf``, ``power-f-nsf``, ...) at the recipe's input
size and batch size and trained on standard normal rows with the recipe's optimiser settings; the first steps
are discarded as warm-up. The paper reports that funnels cost up to 20% more per step than their baselines and
that F-MLP trains up to six times faster per step than the flows: the ratios below are those comparisons.
Timings are medians over steps, on whatever device ``--device`` names; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from funnelcli.models import build_model, load_recipe
from funnelcli.training import resolve_device

FAMILIES = ("nsf", "f-nsf", "glow", "f-glow", "f-mlp", "vae")
DATA_SETS = ("power", "hepmass")


def step_times(name: str, steps: int, warmup: int, device: torch.device) -> tuple[float, int]:
    recipe = load_recipe(name)
    dim = recipe.input_dim
    model = build_model(recipe, np.zeros(dim), np.ones(dim)).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.training.lr)
    batch = torch.randn(recipe.training.batch_size, dim, device=device)
    times = []
    for step in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        tick = time.perf_counter()
        loss = -model.log_prob(batch).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.training.grad_clip)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(1000 * (time.perf_counter() - tick))
    return statistics.median(times), sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = []
    for data_set in DATA_SETS:
        for family in FAMILIES:
            ms, parameters = step_times(f"{data_set}-{family}", args.steps, args.warmup, device)
            rows.append({"data_set": data_set, "family": family, "ms_per_step": round(ms, 2), "parameters": parameters})
            print(f"{data_set:<8} {family:<7} {ms:9.2f} ms/step  {parameters:>10,} parameters", flush=True)
    by = {(r["data_set"], r["family"]): r["ms_per_step"] for r in rows}
    ratios = {
        data_set: {
            "f-nsf / nsf": round(by[(data_set, "f-nsf")] / by[(data_set, "nsf")], 3),
            "f-glow / glow": round(by[(data_set, "f-glow")] / by[(data_set, "glow")], 3),
            "nsf / f-mlp": round(by[(data_set, "nsf")] / by[(data_set, "f-mlp")], 3),
            "glow / f-mlp": round(by[(data_set, "glow")] / by[(data_set, "f-mlp")], 3),
        }
        for data_set in DATA_SETS
    }
    machine = {
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_time.json").write_text(json.dumps({"machine": machine, "rows": rows, "ratios": ratios}, indent=2))
    lines = [
        f"Training ms per step at the paper's settings ({machine['device']}, {machine['cpu_threads']} threads, "
        f"torch {machine['torch']}; median of {args.steps} steps)",
        "",
        "| data set | " + " | ".join(FAMILIES) + " | f-nsf/nsf | f-glow/glow | nsf/f-mlp |",
        "|---|" + "---|" * (len(FAMILIES) + 3),
    ]
    for data_set in DATA_SETS:
        cells = [f"{by[(data_set, f)]:.1f}" for f in FAMILIES]
        r = ratios[data_set]
        lines.append(
            f"| {data_set} | " + " | ".join(cells) + f" | {r['f-nsf / nsf']:.2f} | {r['f-glow / glow']:.2f} | "
            f"{r['nsf / f-mlp']:.1f} |"
        )
    (args.out / "step_time.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
