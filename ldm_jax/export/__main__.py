"""``python -m ldm_jax.export --workdir=DIR --out=model.ckpt|model.safetensors`` (the CompVis
state dict, ldm_jax/export/compvis.py), ``--format=diffusers --out=FOLDER`` (a diffusers
folder, ldm_jax/export/diffusers.py), or for a LoRA run ``--format=lora-diffusers|lora-kohya
--out=FILE.safetensors`` (its adapters, ldm_jax/export/lora.py)."""

from __future__ import annotations


def main(argv) -> None:
  import json

  from absl import flags

  from ldm_jax import storage
  from ldm_jax.errors import UserError
  from ldm_jax.export.compvis import export_workdir
  from ldm_jax.export.diffusers import export_diffusers

  FLAGS = flags.FLAGS
  del argv
  fmt = FLAGS.format
  if fmt not in ('compvis', 'diffusers', 'lora-diffusers', 'lora-kohya'):
    raise UserError(
      f"--format={fmt!r}: 'compvis' (a .ckpt/.safetensors), 'diffusers' (a folder), or a LoRA "
      "run's adapters as 'lora-diffusers' or 'lora-kohya' (a .safetensors)"
    )
  if fmt == 'diffusers' and FLAGS.out.endswith(('.ckpt', '.safetensors')):
    raise UserError(f'--format=diffusers writes a folder: --out={FLAGS.out!r} names a file')
  # before reading the checkpoint: where the output goes must be writable
  storage.check_writable_dir(
    FLAGS.out if fmt == 'diffusers' else storage.parent(FLAGS.out), '--out'
  )
  if fmt.startswith('lora-'):
    from ldm_jax.export.lora import export_lora

    report = export_lora(FLAGS.workdir, FLAGS.out, fmt, FLAGS.step)
  elif fmt == 'compvis':
    report = export_workdir(FLAGS.workdir, FLAGS.out, FLAGS.step)
  else:
    report = export_diffusers(FLAGS.workdir, FLAGS.out, FLAGS.step)
  print(json.dumps(report, indent=2))


def run() -> None:
  from absl import flags

  from ldm_jax.runtime import run_cli

  flags.DEFINE_string('workdir', None, 'A workdir (train.py or python -m ldm_jax.convert).')
  flags.DEFINE_string(
    'out', None, 'compvis: model.ckpt (torch format) or model.safetensors; diffusers: a folder.'
  )
  flags.DEFINE_string(
    'format', 'compvis', "'compvis', 'diffusers', or (LoRA runs) 'lora-diffusers', 'lora-kohya'."
  )
  flags.DEFINE_integer('step', None, 'The checkpoint step (default: the newest readable one).')
  flags.mark_flags_as_required(['workdir', 'out'])
  run_cli(main)


if __name__ == '__main__':
  run()
