"""Training ms per step of every family at the paper's settings of each data set, side by side in one run.

    python benchmarks/step_time.py [--steps 20] [--data-sets power,hepmass] [--families nsf,f-mlp] [--compile]

Each model is built from its bundled paper recipe (``power-nsf``, ``power-f-nsf``, ...) at the recipe's input
size and batch size and trained on standard normal rows with the recipe's optimiser settings; the first steps
are discarded as warm-up (with ``--compile``, the compilation happens there and its seconds are reported). The
optimiser is the training loop's (fused Adam, gradient clipping). The paper reports that funnels cost up to 20%
more per step than their baselines and that F-MLP trains up to six times faster per step than the flows: the
ratios below are those comparisons.
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
DATA_SETS = ("power", "gas", "hepmass", "miniboone", "bsds300")


def step_times(name: str, steps: int, warmup: int, device: torch.device, compile: bool = False) -> dict:
    recipe = load_recipe(name)
    dim = recipe.input_dim
    model = build_model(recipe, np.zeros(dim), np.ones(dim)).to(device).train()
    log_prob = torch.compile(model.log_prob) if compile else model.log_prob
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.training.lr, fused=True)
    batch = torch.randn(recipe.training.batch_size, dim, device=device)
    times = []
    started = time.perf_counter()
    for step in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        tick = time.perf_counter()
        loss = -log_prob(batch).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.training.grad_clip)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(1000 * (time.perf_counter() - tick))
        if step == warmup - 1:
            warmup_seconds = time.perf_counter() - started
    return {
        "ms_per_step": round(statistics.median(times), 2),
        "parameters": sum(p.numel() for p in model.parameters()),
        "warmup_s": round(warmup_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-sets", default=",".join(DATA_SETS))
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--compile", action="store_true", help="time torch.compile'd steps (compiled in warm-up)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    data_sets, families = args.data_sets.split(","), args.families.split(",")
    rows = []
    for data_set in data_sets:
        for family in families:
            row = step_times(f"{data_set}-{family}", args.steps, args.warmup, device, args.compile)
            if args.compile:  # the eager step of the same model, in the same run, for the speed-up
                eager = step_times(f"{data_set}-{family}", args.steps, args.warmup, device)["ms_per_step"]
                row |= {"eager_ms_per_step": eager, "compile_speedup": round(eager / row["ms_per_step"], 3)}
            rows.append({"data_set": data_set, "family": family, **row})
            print(
                f"{data_set:<9} {family:<7} {row['ms_per_step']:9.2f} ms/step  {row['parameters']:>10,} parameters"
                f"  warm-up {row['warmup_s']:.1f} s",
                flush=True,
            )
    by = {(r["data_set"], r["family"]): r["ms_per_step"] for r in rows}
    pairs = {"f-nsf / nsf": ("f-nsf", "nsf"), "f-glow / glow": ("f-glow", "glow"), "nsf / f-mlp": ("nsf", "f-mlp")}
    ratios = {
        data_set: {
            name: round(by[(data_set, a)] / by[(data_set, b)], 3)
            for name, (a, b) in pairs.items()
            if (data_set, a) in by and (data_set, b) in by
        }
        for data_set in data_sets
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
    stem = "step_time_compiled" if args.compile else "step_time"
    document = {"machine": machine, "compiled": args.compile, "rows": rows, "ratios": ratios}
    (args.out / f"{stem}.json").write_text(json.dumps(document, indent=2))
    shown = [name for name in pairs if any(name in r for r in ratios.values())]
    lines = [
        f"Training ms per step at the paper's settings ({machine['device']}, {machine['cpu_threads']} threads, "
        f"torch {machine['torch']}{', torch.compile' if args.compile else ''}; median of {args.steps} steps)",
        "",
        "| data set | " + " | ".join(families) + "".join(f" | {name}" for name in shown) + " |",
        "|---|" + "---|" * (len(families) + len(shown)),
    ]
    for data_set in data_sets:
        cells = [f"{by[(data_set, f)]:.1f}" for f in families]
        cells += [f"{ratios[data_set][name]:.2f}" if name in ratios[data_set] else "-" for name in shown]
        lines.append(f"| {data_set} | " + " | ".join(cells) + " |")
    if args.compile:
        speedup = {(r["data_set"], r["family"]): r["compile_speedup"] for r in rows}
        lines += ["", "Eager ms per step over compiled, the same models in the same run:", ""]
        lines += ["| data set | " + " | ".join(families) + " |", "|---|" + "---|" * len(families)]
        for data_set in data_sets:
            lines.append(f"| {data_set} | " + " | ".join(f"{speedup[(data_set, f)]:.2f}" for f in families) + " |")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
