#!/usr/bin/env bash
# GPU check: on a machine with one GPU, prints in under 8 minutes the figures docs/benchmarks.md records for it.
#
#   bash benchmarks/gpu_check.sh [RAW_HIPPOCAMPUS_FOLDER] [WORK_DIR]
#
# RAW_HIPPOCAMPUS_FOLDER: Dataset004_Hippocampus in the nnU-Net raw layout (default ../shared/data/...); it is copied,
# never written. WORK_DIR (default a new temporary folder) gets the workspace, logs and summary.txt.
# Prints, for Hippocampus 3d_fullres at nnU-Net's plan (batch 9):
#   - seconds per epoch and the share spent waiting for data, with the batched torch pipeline ("default") and the
#     batchgenerators reference, 3 epochs x 50 iterations each (the first epoch includes start-up: read epochs 2-3);
#   - per pipeline: CPU ms per batch, augmentation ms on the GPU, cores needed (autoseg benchmark);
#   - peak GPU memory against the planner's estimate; sliding-window seconds per case;
#   - ms per training step with each training-step switch (benchmarks/step_switches.py);
#   - when nnunetv2 imports in NNUNET_PYTHON (default: python3), nnU-Net's seconds per epoch on the same data.
# Each stage has its own time limit, so the whole script stays under 8 minutes; a stage that runs out says so.
#
# Rehearsal on a machine without a GPU (checks the script itself, not the figures; about 6 minutes on 2 cores):
#   DEVICE=cpu EPOCHS=1 ITERATIONS=2 BENCH_ITERATIONS=2 SWITCHES="baseline channels_last" bash benchmarks/gpu_check.sh
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
raw=${1:-$here/../shared/data/Dataset004_Hippocampus}
work=${2:-$(mktemp -d /tmp/autoseg_gpu_check.XXXXXX)}
nn_python=${NNUNET_PYTHON:-python3}
device=${DEVICE:-cuda}
epochs=${EPOCHS:-3}
iterations=${ITERATIONS:-50}
val_iterations=$(( iterations / 5 > 0 ? iterations / 5 : 1 ))
bench_iterations=${BENCH_ITERATIONS:-20}
switches=${SWITCHES:-}
export AUTOSEG_NO_PROGRESS=1
ws=$work/ws
mkdir -p "$ws/raw"
summary=$work/summary.txt
say() { echo "$*" | tee -a "$summary"; }
start=$(date +%s)

say "# autoseg GPU check $(date -Is) on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
[ -d "$raw" ] || { say "raw dataset not found: $raw"; exit 2; }
cp -r "$raw" "$ws/raw/Dataset004_Hippocampus"

timeout 150 autoseg plan_and_preprocess -d 4 -c 3d_fullres -j 8 --workspace "$ws" > "$work/preprocess.log" 2>&1 \
  || say "plan_and_preprocess failed or ran out of time (see $work/preprocess.log)"
say "plan: $(python3 -c "
import json; p = json.load(open('$ws/preprocessed/Dataset004_Hippocampus/plans.json'))
c = [c for c in p['configurations'] if c['name'] == '3d_fullres'][0]
print('patch', c['patch_size'], 'batch', c['batch_size'])")"

for pipeline in default batchgenerators; do
  timeout 100 autoseg train -d 4 -c 3d_fullres -f 0 --workspace "$ws" --trainer default -j 8 --device "$device" \
    --set epochs=$epochs --set iterations_per_epoch=$iterations --set val_iterations_per_epoch=$val_iterations \
    --set validate_at_end=false --set augmentation=$pipeline > "$work/train_$pipeline.log" 2>&1 \
    || say "train ($pipeline) failed or ran out of time (see $work/train_$pipeline.log)"
  run=$ws/results/Dataset004_Hippocampus/default/3d_fullres/default/fold_0
  if [ -f "$run/progress.csv" ]; then
    say "train $pipeline: $(python3 -c "
import csv; rows = list(csv.DictReader(open('$run/progress.csv')))
for r in rows:
    s, d = float(r['seconds']), float(r['data_seconds'])
    print(f\"epoch {r['epoch']}: {s:.1f} s, waiting for data {d / s:.0%};\", end=' ')")"
  fi
  rm -rf "$run"
done

timeout 120 autoseg benchmark -d 4 -c 3d_fullres --workspace "$ws" --iterations "$bench_iterations" -j 8 \
  --device "$device" --step-ms 14.8 \
  -o "$work/benchmark.json" > "$work/benchmark.log" 2>&1 || say "benchmark failed or ran out of time"
[ -f "$work/benchmark.json" ] && sed -n '/dataset \/ configuration/,$p' "$work/benchmark.log" | tee -a "$summary"

# training-step switches (autocast dtype, channels-last, cuDNN autotuning, torch.compile): ms per step of each, to
# decide which to turn on by default (docs/benchmarks.md); compilation happens in the warm-up steps
timeout 110 python "$here/benchmarks/step_switches.py" "$ws" 4 3d_fullres --device "$device" \
  --iterations "$bench_iterations" --warmup 3 ${switches:+--switches $switches} > "$work/step_switches.log" 2>&1 \
  || say "step switches failed or ran out of time (see $work/step_switches.log)"
grep -E "ms/step|failed:" "$work/step_switches.log" | sed 's/^/switch /' | tee -a "$summary"

if "$nn_python" -c "import nnunetv2" 2>/dev/null; then
  nn=$work/nnunet; mkdir -p "$nn/raw" "$nn/pre" "$nn/res"
  cp -r "$raw" "$nn/raw/Dataset004_Hippocampus"
  export nnUNet_raw=$nn/raw nnUNet_preprocessed=$nn/pre nnUNet_results=$nn/res
  timeout 120 "$nn_python" -m nnunetv2.experiment_planning.plan_and_preprocess_entrypoints -d 4 -c 3d_fullres \
    -np 8 > "$nn/preprocess.log" 2>&1 || say "nnU-Net preprocessing failed or ran out of time"
  NNUNET_TIMED_EPOCHS=$epochs NNUNET_TIMED_TRAIN_ITERS=$iterations NNUNET_TIMED_VAL_ITERS=$val_iterations \
    NNUNET_TIMED_SKIP_FINAL_VAL=1 timeout 120 "$nn_python" "$here/../shared/peer/nnunet_train.py" 4 3d_fullres 0 \
    -device "$device" > "$nn/train.log" 2>&1 \
    || say "nnU-Net training failed or ran out of time (see $nn/train.log)"
  say "nnU-Net: $(grep -E 'Epoch time' "$nn/train.log" | tr '\n' ' ')"
else
  say "nnU-Net: not installed in $nn_python (set NNUNET_PYTHON to a venv with nnunetv2 to compare)"
fi
say "total $(( $(date +%s) - start )) s; logs in $work"
