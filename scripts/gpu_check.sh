#!/usr/bin/env bash
# GPU check of the training engine (prepared; needs one CUDA GPU, ~5 minutes on an H200).
#   scripts/gpu_check.sh [OUT_DIR]        -> OUT_DIR/gpu_check.md (default results/gpu_check)
# 1. ResNet-18 on ImageNet-shaped random data at batch 32 and 256, every method that
#    clipbench.optim builds: images/s, peak GPU memory, the optimizer's share of the step
#    (fp32, then bf16 autocast + channels_last).
# 2. `clipbench train` end to end on a small synthetic ImageNet-100 on CUDA with fp16
#    (GradScaler; clipping sees the unscaled gradient) and bf16, mid-epoch checkpoints,
#    a SIGKILL and a resume; and once through torchrun/DDP (NCCL, one process).
set -euo pipefail
OUT_DIR=${1:-${OUT:-results/gpu_check}}
mkdir -p "$OUT_DIR"
REPORT="$OUT_DIR/gpu_check.md"
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/GPU: /' > "$REPORT"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" >> "$REPORT"

echo -e "\n## Training step, fp32\n" >> "$REPORT"
python -m clipbench.bench.train --gpu-table --image-size 224 --steps 30 --warmup 5 | tee -a "$REPORT"
echo -e "\n## Training step, bf16 autocast + channels_last\n" >> "$REPORT"
python -m clipbench.bench.train --gpu-table --image-size 224 --steps 30 --warmup 5 --amp bf16 --channels-last | tee -a "$REPORT"

WORK=$(mktemp -d)
python -m clipbench.cli prepare imagenet100 --json '{"source": "synthetic", "synthetic": {"num_classes": 10, "train_per_class": 64, "val_per_class": 16, "image_size": 64}}' --out "$WORK/data" > /dev/null
spec() {  # method amp extra-engine-json
  python - "$@" <<'PY'
import json, sys
method, amp, extra = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
cfgs = {"sgd": {"lr": 0.01, "momentum": 0.9}, "adam": {"lr": 1e-3, "batch_multiplier": 4},
        "clipped_sgd": {"lr": 0.05, "momentum": 0.9, "clipping": "coordinate", "clip_level": 0.1, "clip_target": "momentum"},
        "clipped_sstm": {"a": 100, "L": 10, "B": 1.0, "clipping": "norm", "ratio_bound": 0.99, "batch_multiplier": 2}}
print(json.dumps({"task": "classification", "method": method, "seed": 0,
    "task_config": {"dataset": "imagenet100", "model": "resnet18", "image_size": 64, "epochs": 3, "batch_size": 32, "eval_batch_size": 80},
    "method_config": cfgs[method],
    "engine": {"device": "cuda", "threads": 4, "num_workers": 4, "deterministic": True, "amp": amp,
               "channels_last": True, "checkpoint_every_steps": 2, "dvclive": True, **extra}}))
PY
}
echo -e "\n## clipbench train on CUDA (synthetic 640 images, 3 epochs)\n" >> "$REPORT"
echo "| method | amp | status | val top1 | images/s | peak GPU MiB | resumed at | same as uninterrupted |" >> "$REPORT"
echo "|---|---|---|---:|---:|---:|---|---|" >> "$REPORT"
for method in sgd adam clipped_sgd clipped_sstm; do
  for amp in fp16 bf16; do
    S=$(spec $method $amp '{}')
    python -m clipbench.cli train --spec "$S" --data "$WORK/data/manifest.json" --out "$WORK/ref-$method-$amp" > "$WORK/log" 2>&1 \
      || { echo "| $method | $amp | failed: $(tail -1 "$WORK/log") | | | | | |" >> "$REPORT"; continue; }
    python -m clipbench.cli train --spec "$S" --data "$WORK/data/manifest.json" --out "$WORK/run-$method-$amp" > "$WORK/log" 2>&1 &
    PID=$!; sleep 12; kill -9 $PID 2>/dev/null || true; wait $PID 2>/dev/null || true
    python -m clipbench.cli train --spec "$S" --data "$WORK/data/manifest.json" --out "$WORK/run-$method-$amp" > "$WORK/log" 2>&1
    python - "$WORK/ref-$method-$amp" "$WORK/run-$method-$amp" $method $amp >> "$REPORT" <<'PY'
import json, sys
a, b = (json.load(open(p + "/metrics.json")) for p in sys.argv[1:3])
t = b["timing"]; same = {k: v for k, v in a.items() if k != "timing"} == {k: v for k, v in b.items() if k != "timing"}
print(f"| {sys.argv[3]} | {sys.argv[4]} | {b['status']} | {b['final'].get('val', {}).get('top1', float('nan')):.3f} | "
      f"{t['images_per_s']:.0f} | {t.get('peak_gpu_memory_mb', float('nan')):.0f} | {t['resumed_at_steps']} | {same} |")
PY
  done
done
echo -e "\n## torchrun (DDP, NCCL, 1 process)\n" >> "$REPORT"
S=$(spec sgd bf16 '{"ddp": true}')
if torchrun --standalone --nproc_per_node=1 -m clipbench.cli train --spec "$S" --data "$WORK/data/manifest.json" --out "$WORK/ddp" > "$WORK/log" 2>&1; then
  python -c "import json,sys; m=json.load(open('$WORK/ddp/metrics.json')); print('ok: world_size', m['world_size'], 'status', m['status'], 'val', m['final']['val'])" >> "$REPORT"
else
  echo "failed:" >> "$REPORT"; tail -20 "$WORK/log" >> "$REPORT"
fi
cat "$REPORT"
