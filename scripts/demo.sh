#!/usr/bin/env bash
# Quick start 1: set up, train both LDM stages on the embedded digits, sample with classifier-free
# guidance and judge the samples with a classifier trained on real digits. CPU is enough.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q -e .
# Two host devices: the data-parallel step then uses both cores of a small CPU machine.
export XLA_FLAGS="${XLA_FLAGS:---xla_force_host_platform_device_count=2}"
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$PWD/.jax_cache}"
RUN=${RUN:-runs/digits}
python train.py --config=configs/digits_autoencoder.py --workdir="$RUN/autoencoder"
# Reconstruction quality on the 297 held-out digits (PSNR, SSIM, LPIPS).
python -m ldm_jax.eval.reconstruction --workdir="$RUN/autoencoder" | tr -d '\n' | sed 's/  */ /g'; echo
python train.py --config=configs/digits_ldm.py --workdir="$RUN/ldm" \
  --config.first_stage.checkpoint="$RUN/autoencoder"
python sample.py --workdir="$RUN/ldm" --num_samples=100 --class_label=all --guidance_scale=3 \
  --batch_size=100 --outdir="$RUN/samples"
python -m ldm_jax.eval.digits --samples="$RUN/samples/samples.npz"
# The same without guidance (scale 1): classifier-free guidance should raise the class accuracy.
python sample.py --workdir="$RUN/ldm" --num_samples=100 --class_label=all --guidance_scale=1 \
  --batch_size=100 --outdir="$RUN/samples_unguided"
python -m ldm_jax.eval.digits --samples="$RUN/samples_unguided/samples.npz"
echo "Sample grid: $RUN/samples/grid.png (one column per class 0..9)"
