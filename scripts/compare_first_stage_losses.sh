#!/usr/bin/env bash
# The paper's first-stage loss (L1 + LPIPS + PatchGAN + KL) against L1 + KL only: the same demo
# autoencoder (configs/digits_autoencoder_gan.py), data, seed, learning rate and number of steps;
# then PSNR / SSIM / LPIPS on the 297 held-out digits, with the EMA weights and with the raw ones.
#   bash scripts/compare_first_stage_losses.sh [STEPS] [extra train.py flags]   (in the repo's venv)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-300}
shift || true
OUT=runs/compare_first_stage
export XLA_FLAGS=${XLA_FLAGS:---xla_force_host_platform_device_count=2}
python train.py --config=configs/digits_autoencoder_gan.py --workdir=$OUT/l1_kl \
  --config.first_stage_loss.perceptual_weight=0 --config.first_stage_loss.use_discriminator=False \
  --config.training.num_steps=$STEPS "$@"
python train.py --config=configs/digits_autoencoder_gan.py --workdir=$OUT/lpips_gan \
  --config.training.num_steps=$STEPS "$@"
for run in l1_kl lpips_gan; do
  python -m ldm_jax.eval.reconstruction --workdir=$OUT/$run --out=$OUT/$run.ema.json > /dev/null
  python -m ldm_jax.eval.reconstruction --workdir=$OUT/$run --noema --out=$OUT/$run.raw.json > /dev/null
done
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
for weights in ('ema', 'raw'):
  for run in ('l1_kl', 'lpips_gan'):
    r = json.load(open(f'{out}/{run}.{weights}.json'))
    print(f"{run:10s} {weights} step {r['step']}  held-out digits n={r['num_images']}  "
          f"PSNR {r['psnr']:.2f}±{r['psnr_std']:.2f}  SSIM {r['ssim']:.4f}  "
          f"LPIPS {r['lpips']:.4f}±{r['lpips_std']:.4f}")
PY
