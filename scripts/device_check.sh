#!/usr/bin/env bash
# The accelerator checks, as one prepared run for a lent GPU (H100/H200; about 9 minutes).
#
#   bash scripts/device_check.sh fetch   # here (internet): the wheels the GPU image lacks -> .whl/
#   bash scripts/device_check.sh run     # there, through the device tool (carry .whl), e.g.
#       run(command="bash scripts/device_check.sh run", carry=[".whl"], timeout_s=600)
#   bash scripts/device_check.sh cpu     # here: the same steps at smoke sizes, checking the script
#
# The GPU image has python3 3.12 with JAX (CUDA), PyTorch (CUDA), flax, optax, orbax and
# transformers, and no network (.library/device/KINDS.md); 'fetch' downloads what else ldm_jax and
# the diffusers comparison import. 'run' installs them into /tmp/site and then:
#   1. tests/test_gpu.py: cuDNN's fused attention against the XLA path; bf16 against fp32 sampling;
#   2. benchmarks/run.py on configs/lsun_churches.py (bf16): the training step and DDIM sampling,
#      beside diffusers on the same GPU (--compare_diffusers), with memory and MFU;
#   3. benchmarks/run.py on SD 1 (configs/released/sd_v1.py, random weights): 512 px DDIM-50
#      latency at batch 1, memory, MFU;
#   4. the rows for BENCHMARKS.md (date, device, versions) -> $OUT/benchmarks_rows.md.
# Every step's output goes to $OUT (what the device tool brings back); a step that fails is
# reported and the next one still runs.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-run}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
WHEELS=(
  ml-collections==1.1.0 tensorboardX==2.6.4 ftfy==6.3.1 wcwidth==0.2.14 diffusers==0.42.1
  importlib-metadata==8.7.0 open-clip-torch==3.3.0 grain==0.2.15 array-record==0.8.1
  msgpack==1.1.2
)

if [ "$MODE" = fetch ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  for w in "${WHEELS[@]}"; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d .whl "$w" || echo "fetch: $w failed"
  done
  du -sh .whl
  exit 0
fi

STATUS=0
step() {  # step NAME COMMAND...: run, log to $OUT/NAME.log, keep going on failure
  local name=$1
  shift
  echo "== $(date +%T) $name: $*"
  if ! "$@" 2>&1 | tee "$OUT/$name.log"; then
    echo "== $name FAILED (see $OUT/$name.log)"
    STATUS=1
  fi
}

if [ "$MODE" = cpu ]; then  # the same steps, tiny, on this machine's venv
  PY=${PYTHON:-.venv/bin/python}
  SMOKE=(--smoke)
  SD_SIZE=(--smoke)
  export JAX_PLATFORMS=cpu
else
  PY=python3
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  SMOKE=()
  SD_SIZE=(--sample_batch_size=1)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
export PYTHONUNBUFFERED=1

step gpu_tests "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py
step churches "$PY" benchmarks/run.py --config=configs/lsun_churches.py --dtype=bfloat16 \
  --what=train,sample --sample_steps=50 --iters=10 --compare_diffusers "${SMOKE[@]}" \
  --out="$OUT/benchmarks.jsonl"
step sd1_512 "$PY" benchmarks/run.py --config=configs/released/sd_v1.py --dtype=bfloat16 \
  --what=sample --sample_steps=50 --sample_iters=2 "${SD_SIZE[@]}" \
  --config.cond_stage.tokenizer=pypi:open_clip_torch --out="$OUT/benchmarks.jsonl"
step rows "$PY" - "$OUT/benchmarks.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
keys = ('date', 'device', 'config', 'what', 'dtype', 'batch', 'step_time_s', 'call_time_s',
        'images_per_s', 'mfu', 'device_peak_memory_gb', 'speedup_vs_diffusers', 'framework', 'jax')
print('| ' + ' | '.join(keys) + ' |')
print('|' + '---|' * len(keys))
for r in rows:
  print('| ' + ' | '.join(str(r.get(k, '')) for k in keys) + ' |')
PYEOF
cp "$OUT/rows.log" "$OUT/benchmarks_rows.md" 2>/dev/null
echo "device_check: status $STATUS; results in $OUT"
exit $STATUS
