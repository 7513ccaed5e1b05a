"""The setting of MLPerf Training's Stable Diffusion benchmark: the SD 2 base model (865M UNet,
OpenCLIP ViT-H/14 text encoder and kl-f8 autoencoder, both frozen; epsilon prediction) trained at
512x512 (64x64 latents) from precomputed latents and text embeddings, bf16 compute, AdamW with
the benchmark reference's settings (base learning rate 1.25e-7 scaled by the global batch,
1,000 warm-up steps, weight decay 0.01), no EMA, global batch 256 (MaxDiffusion's v4.1 entry on
a v5p-16 slice, 8 chips). Parameters and Adam moments are replicated (data parallel: 14 GB in
float32 fits a v5p's 95 GB or an H100's 80 GB).

  python -m ldm_jax.cache_latents --config=configs/mlperf_sd2.py --out=gs://B/latents \
      --config.training.init_from=runs/sd2_base --config.data.path=DIR
  python -m ldm_jax.cache_text --config=configs/mlperf_sd2.py --out=gs://B/captions \
      --config.training.init_from=runs/sd2_base --config.data.path=DIR
  python train.py --config=configs/mlperf_sd2.py --workdir=gs://B/run \
      --config.training.init_from=runs/sd2_base --config.data.path=DIR \
      --config.data.latent_cache=gs://B/latents --config.data.text_cache=gs://B/captions
  python -m ldm_jax.eval.conditional --workdir=gs://B/run --source=tfds --name=coco_captions \
      --split=validation --num_samples=10000    # FID and CLIP score, the benchmark's metrics

The UNet trains from scratch, as the benchmark's does: ``training.init_parts='cond_stage'`` takes
only the text encoder from ``training.init_from`` (the caches' stamps hold its fingerprint); the
first stage comes from the same workdir.

Estimates without the hardware (XLA's cost model for TPUs; a roofline for GPUs), with both caches
so that the step is the UNet alone:

  python -m ldm_jax.aot --config=configs/mlperf_sd2.py --topology=v5p:2x2x1 \
      --config.data.latent_cache=x --config.data.text_cache=x --nosampling

(``x``: any path; the compile reads no data.) See BENCHMARKS.md for the figures.
"""

from ldm_jax.configs.released.stable_diffusion import sd_config


def get_config():
  c = sd_config(2, 512, 'eps')
  c.optimizer.update(
    dict(base_learning_rate=1.25e-7, scale_lr=True, warmup_steps=1000, weight_decay=0.01)
  )
  c.training.update(dict(batch_size=256, compute_dtype='bfloat16', use_ema=False, num_steps=10_000))
  c.training.init_parts = 'cond_stage'  # the UNet from scratch
  c.mesh.update(dict(data=-1, fsdp=1))
  c.data.update(dict(source='folder', image_size=512, random_flip=False))
  return c
