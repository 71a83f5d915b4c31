#!/usr/bin/env bash
# The GPU check of issue 24, on one GPU in under 10 minutes (sized for one H100); figures to DIR/gpu_check.json.
#
#   benchmarks/gpu_check.sh [DIR]            # DIR default: $OUT, else runs/gpu-check
#   benchmarks/gpu_check.sh --dry-run [DIR]  # the same steps on the CPU at toy sizes (exact task, hf only), ~1 minute
#
# 1. sampling throughput, vLLM against hf (`alignlimits sample`, safety prompts, SmolLM2-135M);
# 2. a bf16 training step's log-probs against float32 (teacher forcing under bf16 autocast, as the trainers run);
# 3. PPO on the exact task launched as one process by torchrun on the GPU, its exact point against the CPU's (z);
# 4. a reduced `run --preset full` (fewer steps and held-out prompts), its points and wall time.
# Each step's figures land in DIR even when a later step fails; the script exits with the first failure's code.
set -uo pipefail
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
DIR=${1:-${OUT:-runs/gpu-check}}
PY=${PY:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$DIR"
STATUS=0

if (( DRY )); then
  export CUDA_VISIBLE_DEVICES=""
  SAMPLE=(--task exact --n 64 --max-new-tokens 3) ENGINES=(hf) MODEL=exact-tiny SEEDS=2 STEPS=(--steps 4)
  BF16=(--max-new-tokens 3)
  FULL=(run exact --preset full --steps 4 --n 64 --eval-n 64 --max-new-tokens 3 --methods bon,ppo --betas 0.5)
else
  SAMPLE=(--task safety --n 64 --max-new-tokens 64) ENGINES=(hf vllm) MODEL=smollm2-135m-instruct SEEDS=3 STEPS=()
  BF16=(--max-new-tokens 32)
  FULL=(run safety --preset full --steps 40 --eval-prompts 16 --methods bon,ppo,grpo)
fi

step() {  # step NAME COMMAND...: run it, keep its seconds and exit code in DIR/NAME.status
  local name=$1; shift
  local t0=$SECONDS
  "$@"
  local rc=$?
  echo "{\"seconds\": $((SECONDS - t0)), \"rc\": $rc}" > "$DIR/$name.status"
  (( rc && !STATUS )) && STATUS=$rc
  return 0
}

for engine in "${ENGINES[@]}"; do
  step "sample-$engine" alignlimits sample "${SAMPLE[@]}" --engine "$engine" --out "$DIR/sample-$engine" --force
done
step bf16 sh -c "$PY '$HERE/gpu_check.py' bf16 $MODEL ${BF16[*]} > '$DIR/bf16.json'"
step point sh -c "$PY '$HERE/gpu_check.py' point --seeds $SEEDS ${STEPS[*]} > '$DIR/point.json'"
step full timeout 300 alignlimits "${FULL[@]}" --out "$DIR/full" --force

DIR="$DIR" DRY=$DRY "$PY" - <<'PY'
import json, os
from pathlib import Path

import pandas as pd
import torch

d = Path(os.environ["DIR"])
def load(name):
    path = d / name
    return json.loads(path.read_text()) if path.exists() and path.stat().st_size else None
figures = {"dry_run": os.environ["DRY"] == "1",
           "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "sampling": {}}
for status in sorted(d.glob("sample-*.status")):
    engine, run = status.stem.removeprefix("sample-"), load(status.name)
    table = d / status.stem / "samples"
    tokens = int(pd.read_parquet(table)["n_tokens"].sum()) if table.exists() else None
    figures["sampling"][engine] = {**run, "completion_tokens": tokens,
                                   "tokens_per_s_wall": tokens / run["seconds"] if tokens and run["seconds"] else None}
figures["bf16"] = {**load("bf16.status"), **(load("bf16.json") or {})}
figures["point"] = {**load("point.status"), **(load("point.json") or {})}
results = load("full/results.json")
figures["full"] = {**load("full.status"), "points": [{k: p.get(k) for k in ("label", "kl", "gain", "efficiency", "verdict")}
                                                   for p in (results or {}).get("evaluate", [])]}
(d / "gpu_check.json").write_text(json.dumps(figures, indent=2))
print(json.dumps(figures, indent=2))
PY
exit $STATUS
