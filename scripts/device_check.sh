#!/usr/bin/env bash
# Checks that need a CUDA GPU, in one run (CI has no GPU): the compiled Pallas (Triton) kernels and a cuda
# bundle against the references (tests/gpu), then `bench render` (XLA and Pallas on the GPU) and
# `bench inference` (audio -> frames through a cuda bundle). Run from the repository root on a machine whose
# python has jax with CUDA, flax, optax, safetensors and pytest; no package index is needed (the project is
# installed with --no-deps into a temporary folder; pure-Python dependencies the machine lacks, such as
# ml-collections, can come as wheels in $WHEELS, default .whl/). Logs and JSON go to $OUT (default
# out/device_check).
set -uo pipefail
OUT=${OUT:-out/device_check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
SITE=$(mktemp -d)
if ! "$PY" -m pip install -q --no-deps --no-build-isolation --no-index --target "$SITE" . >"$OUT/install.log" 2>&1; then
  echo "device_check: installing the project into $SITE failed:"; tail -20 "$OUT/install.log"; exit 1
fi
WHEELS=${WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-deps --no-index --target "$SITE" "$WHEELS"/*.whl >>"$OUT/install.log" 2>&1 \
    || { echo "device_check: installing the wheels in $WHEELS failed"; tail -20 "$OUT/install.log"; exit 1; }
fi
# -P and importlib mode: import the installed package, not the source tree (kernels/ maps into it).
export PYTHONPATH="$SITE" JAX_PLATFORMS="${JAX_PLATFORMS:-cuda,cpu}" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -P -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"; } \
  2>&1 | tee "$OUT/env.txt"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, record the exit code
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
  return $rc
}

step gpu_tests "${GPU_TESTS_LIMIT:-300}" "$PY" -P -m pytest --import-mode=importlib -p no:cacheprovider -q -s -rA tests/gpu
grep -E "vs reference|vs xla|pallas - xla|cuda - cpu|passed|failed|Error" "$OUT/gpu_tests.log" | tail -40
step bench_render "${BENCH_RENDER_LIMIT:-240}" "$PY" -P -m avatar_jax.cli bench render --out "$OUT" \
  --config.bench.render_baseline='' --config.bench.render_dense=False
grep -E "^ *(256|512) |faster" "$OUT/bench_render.log"
step bench_inference "${BENCH_INFERENCE_LIMIT:-240}" "$PY" -P -m avatar_jax.cli bench inference \
  --config configs/tiny.py --out "$OUT"
tail -6 "$OUT/bench_inference.log"
cat "$OUT/summary.txt"
