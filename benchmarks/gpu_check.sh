#!/usr/bin/env bash
# GPU check, under 8 minutes on one CUDA device: trains the POWER-size f-nsf and nsf recipes for a fixed number
# of steps on synthetic data and prints ms per step and score rows per second on the GPU; then f-nsf again with
# its rows streamed from pinned host memory (the path for training sets larger than the GPU), and, on a machine
# with two GPUs or more, with two NCCL processes under torchrun.
#   bash benchmarks/gpu_check.sh            (from the repository root, with the project installed)
# Paste its output into benchmarks/RESULTS.md with the date and the GPU's name.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-500}
"$PY" - <<PYTHON
import time, numpy as np, pandas as pd, torch, tempfile, pathlib
from funnelcli.estimator import FunnelDensity
from funnelcli.apply import score_file
assert torch.cuda.is_available(), "no CUDA device: this check needs a GPU"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
rng = np.random.default_rng(0)
frame = pd.DataFrame(rng.normal(size=(200_000, 6)), columns=[f"c{j}" for j in range(6)])
tmp = pathlib.Path(tempfile.mkdtemp())
frame.to_parquet(tmp / "rows.parquet")
for name in ("power-nsf", "power-f-nsf"):
    model = FunnelDensity(name, steps=${STEPS}, device="cuda", eval_every=${STEPS}, patience=0).fit(frame)
    s = model.summary_
    tick = time.perf_counter()
    summary = score_file(model, tmp / "rows.parquet", output=tmp / "scores.parquet", overwrite=True)
    torch.cuda.synchronize()
    rate = summary.count / (time.perf_counter() - tick)
    print(f"{name:<12} {s['ms_per_step']:8.2f} ms/step over {s['steps']} steps | score {rate:,.0f} rows/s (Parquet to Parquet)")
import funnelcli.estimator
funnelcli.estimator.fits_on_device = lambda n_bytes, device: False
model = FunnelDensity("power-f-nsf", steps=${STEPS}, device="cuda", eval_every=${STEPS}, patience=0).fit(frame)
print(f"{'power-f-nsf':<12} {model.summary_['ms_per_step']:8.2f} ms/step with its rows streamed from pinned host memory")
PYTHON
if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  tmp=$(mktemp -d)
  "$PY" -c "import numpy as np, pandas as pd; pd.DataFrame(np.random.default_rng(0).normal(size=(200_000, 6))).add_prefix('c').to_parquet('$tmp/rows.parquet')"
  "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 -m funnelcli train "$tmp/rows.parquet" \
    --recipe power-f-nsf --steps "$STEPS" --device cuda --out "$tmp/ddp" --json
fi
