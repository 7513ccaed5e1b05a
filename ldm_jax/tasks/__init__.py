"""The conditioning tasks, one module each, registered in ``TASKS``. No other module switches on
the kind of condition: it asks ``get_task(config)``.

Adding a task: a module here with a ``Task`` subclass (see ``tasks.base``), one line in ``TASKS``,
and a config that sets ``config.task`` (CONTRIBUTING.md).
"""

from __future__ import annotations

from ldm_jax.tasks.base import Task, TaskInputError, check_divisible
from ldm_jax.tasks.class_conditional import ClassConditional
from ldm_jax.tasks.embeddings import GivenEmbeddings
from ldm_jax.tasks.inpainting import Inpainting
from ldm_jax.tasks.layout import LayoutToImage
from ldm_jax.tasks.sdxl import SDXLTextToImage
from ldm_jax.tasks.semantic import SemanticSynthesis
from ldm_jax.tasks.superres import SuperResolution
from ldm_jax.tasks.text import TextToImage
from ldm_jax.tasks.text_inpainting import TextInpainting
from ldm_jax.tasks.unconditional import Unconditional

TASKS: dict[str, type[Task]] = {
  t.name: t
  for t in (
    Unconditional,
    ClassConditional,
    TextToImage,
    SDXLTextToImage,
    LayoutToImage,
    SuperResolution,
    Inpainting,
    TextInpainting,
    SemanticSynthesis,
    GivenEmbeddings,
  )
}
# Every user input keyword of any task (sample.py flags, Pipeline.sample arguments).
TASK_ARGS = tuple(dict.fromkeys(a for t in TASKS.values() for a in t.input_args))
# Their help texts (sample.py's flags): the first task that takes an input gives it.
TASK_INPUT_HELP = {
  a: next(t.input_help[a] for t in TASKS.values() if a in t.input_help) for a in TASK_ARGS
}

__all__ = [
  'TASKS',
  'TASK_ARGS',
  'TASK_INPUT_HELP',
  'Task',
  'TaskInputError',
  'check_divisible',
  'get_task',
  'task_name',
]


def task_name(config) -> str:
  """config.task, or for configs written before it existed (saved and converted workdirs) the
  task their conditioning encoder implies."""
  if config.get('task'):
    return config.task
  cs = config.cond_stage
  if cs.kind == 'bert':
    return 'text' if cs.get('use_tokenizer', True) else 'layout'
  if cs.kind in ('clip', 'openclip'):
    return 'text'
  if cs.kind == 'sdxl':
    return 'sdxl'
  if cs.kind == 'identity':
    return 'embeddings' if cs.conditioning_key == 'crossattn' else 'superres'
  return {
    'none': 'unconditional',
    'class': 'class',
    'rescaler': 'semantic',
    'first_stage': 'inpainting',
  }.get(cs.kind, cs.kind)


def get_task(config) -> Task:
  """The task of an LDM config, its settings checked (ValueError naming the key and the fix)."""
  name = task_name(config)
  if name not in TASKS:
    raise ValueError(f'config.task = {name!r}; expected one of {list(TASKS)}')
  task = TASKS[name](config)
  _check(config, task)
  return task


def _check(config, task: Task) -> None:
  cs, key = config.cond_stage, task.conditioning_key
  if cs.kind not in task.encoder_kinds:
    raise ValueError(
      f'the {task.name} task is encoded by config.cond_stage.kind in '
      f'{list(task.encoder_kinds)}, got {cs.kind!r}'
    )
  task.validate()
  if config.data.get('buckets') and not task.any_shape:
    raise ValueError(
      f"config.data.buckets: the {task.name} task's conditions are made for square crops; "
      "buckets work for the unconditional, class and text tasks: set --config.data.buckets=''"
    )
  if config.data.get('text_cache') and not task.caches_text:
    raise ValueError(
      f'config.data.text_cache holds text-encoder outputs; the {task.name} task has no text: '
      "set --config.data.text_cache=''"
    )
  if key in ('crossattn', 'hybrid'):
    width = task.context_width
    if config.unet.context_dim != width or not config.unet.use_spatial_transformer:
      raise ValueError(
        f'{cs.kind} conditioning uses cross-attention: set config.unet.use_spatial_'
        f'transformer=True and config.unet.context_dim={width} (the width of '
        'the conditioning tokens)'
      )
  if key in ('concat', 'hybrid') and config.unet.in_channels <= config.first_stage.embed_dim:
    raise ValueError(
      f'{cs.kind} conditioning is concatenated to the latents: set '
      'config.unet.in_channels to the latent channels + the conditioning channels'
    )
  if cs.p_uncond > 0:
    if not task.guidable:
      raise ValueError(
        f'config.cond_stage.p_uncond={cs.p_uncond} (condition dropout for '
        f'classifier-free guidance) needs cross-attention conditioning; {cs.kind!r} '
        f'uses {key or "none"}: set config.cond_stage.p_uncond=0'
      )
    if type(task).null_condition is Task.null_condition or task.name == 'embeddings':
      raise ValueError(
        f'config.cond_stage.p_uncond: no null condition is defined for the '
        f'{task.name} task (class: null_label; text: the empty prompt; layout: no '
        'boxes)'
      )
  cached = config.data.cache_latents or config.data.get('latent_cache', '')
  if config.stage == 'ldm' and cached and task.needs_images:
    which = 'cache_latents' if config.data.cache_latents else 'latent_cache'
    raise ValueError(
      f'config.data.{which}: the {task.name} condition is made from the '
      'pixels or follows the crop and flip of each image, so this task trains from '
      f"images: set --config.data.cache_latents=False --config.data.latent_cache=''"
    )
