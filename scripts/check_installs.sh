#!/usr/bin/env bash
# Does `pip install` resolve on each platform and for each accelerator extra? uv resolves for a
# target platform, evaluating the environment markers (the TensorFlow choice) for that platform,
# which `pip --platform` does not. Needs PyPI; downloads metadata only, installs nothing.
# Run by hand: `pip install uv && bash scripts/check_installs.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
pip wheel -q --no-deps . -w "$out" >/dev/null
wheel=$(ls "$out"/ldm_jax-*.whl)
check() {  # uv's target platform, extra
  local spec="ldm_jax @ file://$wheel"
  [ -n "$2" ] && spec="ldm_jax[$2] @ file://$wheel"
  echo "$spec" >"$out/req.in"
  if uv pip compile -q --python-version 3.11 --python-platform "$1" "$out/req.in" \
      -o "$out/req.txt" 2>"$out/log"; then
    echo "ok      $1 ${2:-(plain)}: $(grep -E '^(jax|jaxlib|libtpu|jax-cuda1[23]-plugin|tensorflow|tensorflow-cpu)==' "$out/req.txt" | tr '\n' ' ')"
  else
    echo "FAILED  $1 ${2:-(plain)}: $(tail -3 "$out/log" | tr '\n' ' ')"
  fi
}
check x86_64-manylinux_2_28 ''
check aarch64-manylinux_2_28 ''
check aarch64-apple-darwin ''
check x86_64-manylinux_2_35 tpu  # TPU VMs: Ubuntu 22.04 (glibc 2.35); libtpu needs 2.31+
check x86_64-manylinux_2_28 cuda12
check x86_64-manylinux_2_28 cuda13
check aarch64-manylinux_2_28 cuda12
check x86_64-manylinux_2_35 aot
