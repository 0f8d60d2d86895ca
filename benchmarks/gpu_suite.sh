#!/usr/bin/env bash
# The accelerator benchmark suite, in one call (about 5-8 minutes on one H100/H200, mostly compilation):
#   1. ResNet-50, 224 px, bfloat16, two views, EMA key encoder + 65536-key queue (the ImageNet recipe's step)
#   1b. the same step in micro-batches of 32 images (config.micro_batch_size): at 1.'s batch (the time ratio of
#      micro-batched to dense), and at per-device batch 512, the ImageNet recipe's batch 4096 on one 8-GPU node
#      (configs/imagenet_resnet50.py:gpu8), with a teacher, Mixup-CutMix and the loss in 1024-row blocks
#   2. ResNet-50, CIFAR stem, 32 px, float32, two views (the authors' CIFAR recipe's step)
#   3. the loss alone: N in {1k, 4k, 8k, 16k} anchors vs N + 65536 contrasts, C in {10, 1000}, dense and chunked
#   4. the collective audit: every collective of the ImageNet recipe's step partitioned over 8 devices, with bytes
#      (JAX_PLATFORMS=cpu with 8 forced host devices: one GPU has no collectives to audit)
#   5. case 1's step fed by the product's host input pipeline (tf.data on synthetic 375x500 JPEGs, colour and blur
#      on the device): images/s end to end against step only, and the input-wait share, i.e. whether the host
#      keeps up. It needs tensorflow and tensorflow_datasets, which the accelerator VM lacks and which are too large
#      to carry: there the case prints "skipped: ..." and its JSON says so (install them to run it).
# Every case builds the product's step from config_defaults.base_config(), so it needs ml_collections (pure
# Python), which the accelerator VM lacks: carry its wheel (the device tool's README shows how).
#
#   bash benchmarks/gpu_suite.sh                # on the accelerator; results in $OUT (default benchmarks/results/)
#   bash benchmarks/gpu_suite.sh --dry-run      # print the commands only (with --tiny: the tiny ones)
#   bash benchmarks/gpu_suite.sh --tiny         # the same commands at tiny sizes: checks the script on a CPU
#   CASES='r50_224|loss_chunked' bash benchmarks/gpu_suite.sh   # only the cases whose names match
#
# Per-device batches: 128 at 224 px bf16 (256 views; the CPU compiler plans ~30 GiB) and 512 at 32 px (1024
# views, half the authors' global batch; ~37 GiB on the CPU plan) leave headroom on 80 GB; the bench
# prints each program's planned memory, so a later run can raise them. PEAK_TFLOPS is the per-device dense
# peak used for MFU: 989 is H100/H200 SXM bf16 dense; for the float32 CIFAR run XLA uses TF32 matmuls and
# convolutions by default, whose dense peak on the same chips is about 495.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0; SIZES=full
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --tiny) SIZES=tiny ;;
    *) echo "usage: $0 [--dry-run] [--tiny]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python}
OUT=${OUT:-benchmarks/results}
PEAK_BF16=${PEAK_TFLOPS:-989}
PEAK_TF32=${PEAK_TFLOPS_TF32:-495}
CASE_TIMEOUT=${CASE_TIMEOUT:-300}  # seconds per case, so one stuck case cannot eat the whole call
CASES=${CASES:-.}  # a regex of case names to run, e.g. CASES='r50_224|loss_chunked' to rerun some

if [[ $SIZES == tiny ]]; then
  R50_224=(--model resnet10 --width 0.0625 --image-size 64 --per-device-batch 4 --dtype bfloat16 --moco --queue-size 64
           --head-dim 16 --steps 2 --repeats 2 --warmup 1)
  MICRO=(--micro-batch-size 2)
  R50_GPU8=(--model resnet10 --width 0.0625 --image-size 64 --per-device-batch 8 --dtype bfloat16 --moco --queue-size 64
            --head-dim 16 --teacher resnet10 --teacher-width 0.0625 --mix mixup_cutmix --optimizer lars
            --loss-block-size 8 --micro-batch-size 2 --steps 2 --repeats 2 --warmup 1)
  R50_32=(--model resnet10 --width 0.0625 --image-size 16 --per-device-batch 4 --steps 2 --repeats 2 --warmup 1)
  PIPELINE=(--input-images 16)
  LOSS=(--anchors 64,128 --queue 256 --loss-block 32 --loss-steps 2 --repeats 2)
  SHARE=(--anchors 128 --classes 1000)
else
  R50_224=(--model resnet50 --image-size 224 --per-device-batch 128 --dtype bfloat16 --moco --queue-size 65536
           --steps 10 --repeats 5 --warmup 3)
  MICRO=(--micro-batch-size 32)
  # configs/imagenet_resnet50.py:gpu8's step on one of its 8 GPUs (1000 classes: the queue's labels are the recipe's)
  R50_GPU8=(--model resnet50 --image-size 224 --per-device-batch 512 --num-classes 1000 --dtype bfloat16 --moco
            --queue-size 65536 --teacher resnet50 --mix mixup_cutmix --optimizer lars --loss-block-size 1024
            --micro-batch-size 32 --steps 3 --repeats 3 --warmup 1)
  R50_32=(--model resnet50 --image-size 32 --per-device-batch 512 --steps 10 --repeats 5 --warmup 3)
  PIPELINE=(--input-images 1024)
  LOSS=(--anchors 1024,4096,8192,16384 --queue 65536 --loss-block 1024 --loss-steps 5 --repeats 5)
  SHARE=(--anchors 8192 --classes 1000)  # the ImageNet recipe: 4096 images x 2 views
fi

run() {  # run NAME ARGS...: one bench process, its JSON and log under $OUT
  local name=$1; shift
  [[ $name =~ $CASES ]] || return 0
  local cmd=(timeout "$CASE_TIMEOUT" "$PY" -m genscl_jax.bench "$@" --json "$OUT/$name.json")
  echo "== $name: ${cmd[*]}"
  [[ $DRY == 1 ]] && return 0
  # A failed case (e.g. out of memory) is logged and the suite goes on to the next one.
  "${cmd[@]}" 2>&1 | tee "$OUT/$name.log" || echo "== FAILED: $name (exit ${PIPESTATUS[0]})" | tee -a "$OUT/failed.txt"
}

[[ $DRY == 1 ]] || { mkdir -p "$OUT"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
  > "$OUT/gpu.txt" 2>/dev/null || true; }
run r50_224_bf16_moco "${R50_224[@]}" --peak-tflops "$PEAK_BF16"
run r50_224_bf16_moco_micro32 "${R50_224[@]}" "${MICRO[@]}" --peak-tflops "$PEAK_BF16"
run r50_224_gpu8_b512_micro32 "${R50_GPU8[@]}" --peak-tflops "$PEAK_BF16"
run r50_cifar32_fp32 "${R50_32[@]}" --peak-tflops "$PEAK_TF32"
run r50_224_jpeg_pipeline "${R50_224[@]}" --color-augment --input jpeg "${PIPELINE[@]}"
# One process per implementation and label dimension; sizes ascend, so each case's device peak is its own.
for impl in dense chunked; do
  for classes in 10 1000; do
    run "loss_${impl}_c${classes}" --loss-only "${LOSS[@]}" --classes "$classes" --loss-impl "$impl"
  done
done
if [[ $SIZES == tiny ]]; then
  AUDIT=(--model resnet10 --width 0.0625 --image-size 24 --queue-size 64 --head-dim 8 --num-classes 10)
else
  AUDIT=()  # the recipe's shape: ResNet-50, 224 px, per-device batch 2, 65536-key queue, teacher, 1000 classes
fi
if [[ collective_audit =~ $CASES ]]; then
  echo "== collective_audit: JAX_PLATFORMS=cpu $PY benchmarks/collective_audit.py ${AUDIT[*]}"
  [[ $DRY == 1 ]] || JAX_PLATFORMS=cpu timeout "$CASE_TIMEOUT" "$PY" benchmarks/collective_audit.py "${AUDIT[@]}" \
    --json "$OUT/collective_audit.json" > "$OUT/collective_audit.md" 2> "$OUT/collective_audit.log" \
    || echo "== FAILED: collective_audit" | tee -a "$OUT/failed.txt"
fi
[[ $DRY == 1 ]] || "$PY" benchmarks/summarize_suite.py "$OUT" "${SHARE[@]}" | tee "$OUT/summary.md" || true
echo "== done: results in $OUT/ (summary.md: the rows for BENCHMARKS.md section 5)"
