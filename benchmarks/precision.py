"""Does mixed precision leave likelihoods unchanged? The measurement behind funnelcli's float32-only training.

    python benchmarks/precision.py [--steps 1500] [--out benchmarks/results]

A funnel (F-NSF) is trained in float32 on data with a known density near a surface (``synthetic.make_data``),
then its test rows are scored in float32 and again under autocast (bfloat16 on the CPU, bfloat16 and float16 on
a GPU): how far does each row's log p(x) move? The same model is also trained under bfloat16 autocast from the
same seed and scored in float32: what does it cost at the end of training? Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import make_data  # noqa: E402

from funnelcli.estimator import FunnelDensity  # noqa: E402
from funnelcli.stats import mean_and_stderr  # noqa: E402


def scores_under(model: FunnelDensity, rows: np.ndarray, dtype: torch.dtype | None) -> np.ndarray:
    device = next(model.model_.parameters()).device
    if dtype is None:
        return model.score_samples(rows)
    with torch.autocast(device.type, dtype=dtype):
        return model.score_samples(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    data, _ = make_data(24000, 6, 2, 0.05, seed=0)
    train, test = data[:20000], data[20000:]
    settings = {"reduce": 4 / 6, "steps": args.steps, "device": args.device, "eval_every": 250}
    model = FunnelDensity("small-f-nsf", **settings).fit(train)
    device = next(model.model_.parameters()).device
    reference = scores_under(model, test, None)
    kinds = {"bfloat16": torch.bfloat16} | ({"float16": torch.float16} if device.type == "cuda" else {})
    rows = [{"scored_in": "float32", "trained_in": "float32", **_summary(reference, reference)}]
    for name, dtype in kinds.items():
        rows.append(
            {"scored_in": name, "trained_in": "float32", **_summary(scores_under(model, test, dtype), reference)}
        )
    with torch.autocast(device.type, dtype=torch.bfloat16):
        low = FunnelDensity("small-f-nsf", **settings).fit(train)
    rows.append({"scored_in": "float32", "trained_in": "bfloat16", **_summary(low.score_samples(test), reference)})

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "precision.json").write_text(json.dumps({"device": str(device), "rows": rows}, indent=2))
    lines = [
        f"F-NSF on 4,000 test rows of the D = 6 near-surface data ({device}, {args.steps} steps); log p in nats/row",
        "",
        "| trained in | scored in | mean log p | mean abs change per row | largest change | mean change |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['trained_in']} | {r['scored_in']} | {r['mean']:.4f} ± {r['stderr']:.4f} | "
            f"{r['mean_abs_change']:.4f} | {r['max_abs_change']:.3f} | {r['mean_change']:+.4f} |"
        )
    (args.out / "precision.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _summary(scores: np.ndarray, reference: np.ndarray) -> dict:
    mean, stderr = mean_and_stderr(scores)
    change = scores - reference
    return {
        "mean": float(mean),
        "stderr": float(stderr),
        "mean_abs_change": float(np.abs(change).mean()),
        "max_abs_change": float(np.abs(change).max()),
        "mean_change": float(change.mean()),
        "nonfinite": int((~np.isfinite(scores)).sum()),
    }


if __name__ == "__main__":
    main()
