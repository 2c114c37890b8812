#!/usr/bin/env bash
# Every GPU check of issue 14 in one command, for a GPU machine without internet that already
# has PyTorch (and CUDA). About 3-4 minutes on an H200. Writes into one folder:
#
#   gpu_check.log              everything printed, in order (versions, pytest, both tables)
#   train_throughput-cuda.json 32 px b64, 64 px b64, 64 px b256: eager fp32, AMP, fast step
#   step_overhead-cuda.json    aten ops, host ms, kernel launches, GPU-busy ms per step
#   demo.json                  the `make demo` settings (1,500 steps) with the fast step, and
#                              300 eager steps of the same run for comparison
#
# Usage, from anywhere:
#
#   benchmarks/gpu_check.sh OUT_DIR [WHEELS_DIR]
#
# WHEELS_DIR (default: $SAGAN_EDU_WHEELS, else .whl/ in the repository root) holds wheels for
# what such machines often lack (mlxtend, tqdm, pytest and its pluggy/iniconfig, ...). Only the
# missing modules are installed from it, with pip --no-index --no-deps into
# a temporary folder; nothing is installed system-wide. sagan_edu itself is used from
# this checkout (PYTHONPATH), not installed.
#
# GPU_CHECK_DRY=1 runs the same stages on the CPU with tiny sizes: it checks the script itself
# (the gpu tests are then skipped, and the fast-step rows say "GPU only").
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="$(mkdir -p "${1:-${OUT:-gpu_check_out}}" && cd "${1:-${OUT:-gpu_check_out}}" && pwd)"
WHEELS="${2:-${SAGAN_EDU_WHEELS:-$ROOT/.whl}}"
PY="${PYTHON:-python}"
DRY="${GPU_CHECK_DRY:-0}"
LOG="$OUT_DIR/gpu_check.log"
SITE="$(mktemp -d)/site"
cd "$ROOT" || exit 1
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg
START=$(date +%s)

stage() { echo; echo "=== $* ($(($(date +%s) - START)) s since start, $(date -u +%H:%M:%S) UTC)"; }

{  # everything below goes to the screen and to $LOG (the tee at the end of the block)

# ---- 1. what is missing, from the carried wheels --------------------------------------------
stage "dependencies (wheels from $WHEELS)"
# module:distribution, in the order they must go in (pytest's own dependencies first)
for pair in numpy:numpy tqdm:tqdm PIL:pillow torchvision:torchvision mlxtend:mlxtend safetensors:safetensors \
            packaging:packaging pluggy:pluggy iniconfig:iniconfig pytest:pytest \
            pytest_timeout:pytest_timeout; do
  module="${pair%%:*}"; dist="${pair##*:}"
  if "$PY" -c "import $module" 2>/dev/null; then continue; fi
  wheel="$(ls "$WHEELS" 2>/dev/null | grep -i -E "^${dist//_/[-_]}-[0-9]" | head -n 1)"
  if [ -z "$wheel" ]; then
    echo "not available: $module (no ${dist}-*.whl in $WHEELS; pytest_timeout and safetensors are optional)"
    continue
  fi
  echo "installing $wheel"
  "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "$WHEELS/$wheel" \
    || echo "FAILED to install $wheel"
done
"$PY" - <<'EOF'
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU {p.name}, sm{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB, "
          f"cuDNN {torch.backends.cudnn.version()}")
else:
    print("no CUDA GPU visible")
EOF

if [ "$DRY" = "1" ]; then
  DEVICE=cpu
  THROUGHPUT_ARGS=(--img-sizes 32 --batch 4 --channels 8 --warmup 1 --steps 1 --repeats 1
                   --variants eager-fp32 amp+fast_step)
  OVERHEAD_ARGS=(--batch 1 --channels 8 --warmup 1 --steps 2)
  DEMO_STEPS=4; EAGER_DEMO_STEPS=2; DEMO_CHANNELS=8
else
  DEVICE=cuda
  THROUGHPUT_ARGS=(--warmup 5 --steps 30 --repeats 3)
  OVERHEAD_ARGS=(--batch 1 8 --warmup 6 --steps 30)
  DEMO_STEPS=1500; EAGER_DEMO_STEPS=300; DEMO_CHANNELS=32
fi

# ---- 2. the gpu tests -------------------------------------------------------------------------
stage "pytest -m gpu tests/test_gpu.py"
timeout 150 "$PY" -m pytest -m gpu tests/test_gpu.py -o addopts="-ra" -p no:cacheprovider -v -s \
  || echo "pytest exit status $?"

# ---- 3. throughput: the issue's table ---------------------------------------------------------
stage "train_throughput.py"
if [ "$DRY" = "1" ]; then
  timeout 300 "$PY" benchmarks/train_throughput.py --device cpu "${THROUGHPUT_ARGS[@]}" \
    --json "$OUT_DIR/train_throughput-$DEVICE.json" || echo "exit status $?"
else
  # 32 px and 64 px at batch 64, then 64 px at batch 256 (share of the bf16 peak).
  timeout 110 "$PY" benchmarks/train_throughput.py --device cuda --img-sizes 32 64 --batch 64 \
    --variants eager-fp32 amp amp+fast_step amp+channels_last+fast_step fast_step-fp32 \
    "${THROUGHPUT_ARGS[@]}" --json "$OUT_DIR/train_throughput-cuda.json" || echo "exit status $?"
  timeout 60 "$PY" benchmarks/train_throughput.py --device cuda --img-sizes 64 --batch 256 \
    --variants eager-fp32 amp+fast_step amp+channels_last+fast_step \
    "${THROUGHPUT_ARGS[@]}" --json "$OUT_DIR/train_throughput-cuda-b256.json" \
    || echo "exit status $?"
fi

# ---- 4. per-step overhead ---------------------------------------------------------------------
stage "step_overhead.py"
timeout 60 "$PY" benchmarks/step_overhead.py --device "$DEVICE" "${OVERHEAD_ARGS[@]}" \
  --json "$OUT_DIR/step_overhead-$DEVICE.json" || echo "exit status $?"

# ---- 5. the make demo settings ----------------------------------------------------------------
stage "make demo settings: $DEMO_STEPS fast steps, $EAGER_DEMO_STEPS eager steps"
timeout 60 "$PY" - "$DEVICE" "$DEMO_STEPS" "$EAGER_DEMO_STEPS" "$DEMO_CHANNELS" \
  "$OUT_DIR/demo.json" <<'EOF' || echo "exit status $?"
"""`make demo`: sagan-edu train --dataset mnist5k --steps 1500 --log-every 100 (defaults else)."""
import json, sys, tempfile, time
import torch
from sagan_edu.training import TrainConfig, Trainer

device, steps, eager_steps, channels, out = sys.argv[1:]
results = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
           "torch": torch.__version__, "config": "make demo: mnist5k, 1500 steps, log_every 100, "
           "checkpoint_every 500, TrainConfig defaults otherwise", "runs": []}
for fast_step, n in ((True, int(steps)), (False, int(eager_steps))):
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(dataset="mnist5k", steps=n, log_every=100, out_dir=tmp,
                             progress=False, device=device, fast_step=fast_step,
                             g_channels=int(channels), d_channels=int(channels))
        trainer = Trainer(config)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        history = trainer.fit()  # logs every 100 steps, checkpoints every 500 and at the end
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    run = {"fast_step": fast_step, "captured": trainer.captured_step is not None, "steps": n,
           "train_seconds": seconds, "ms_per_step": 1e3 * seconds / n,
           "final_loss_d": history["loss_d"][-1], "final_loss_g": history["loss_g"][-1]}
    results["runs"].append(run)
    print(json.dumps(run))
json.dump(results, open(out, "w"), indent=1)
EOF

stage "done"
ls -l "$OUT_DIR"
} 2>&1 | tee -a "$LOG"
