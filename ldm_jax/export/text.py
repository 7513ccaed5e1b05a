"""Text encoders and tokenizers as transformers folders (``config.json`` + ``model.safetensors``;
``tokenizer.json`` with the vocabulary files the slow tokenizers read), for the diffusers export
(``export/diffusers.py``, ``export/sdxl.py``)."""

from __future__ import annotations

import json

import numpy as np

from ldm_jax import storage
from ldm_jax.export.compvis import save_safetensors, torch_tensors

_SAFETENSORS_META = {'format': 'pt'}  # transformers refuses safetensors files without it


def clip_text_config(cs, layers: int) -> dict:
  width = cs.embed_dim
  return dict(
    architectures=['CLIPTextModel'],
    model_type='clip_text_model',
    hidden_size=width,
    intermediate_size=4 * width,
    num_hidden_layers=layers,
    num_attention_heads=cs.n_head or width // 64,
    hidden_act=cs.act,
    max_position_embeddings=cs.max_seq_len,
    vocab_size=cs.vocab_size,
    projection_dim=cs.projection_dim or width,
    layer_norm_eps=1e-5,
    pad_token_id=1,
    bos_token_id=49406,
    eos_token_id=49407,
    torch_dtype='float32',
  )


def clip_text_tensors(cond_params, layers: int) -> dict:
  """transformers' CLIPTextModel tensors (``text_model.*``) of the CLIP/OpenCLIP cond stage's
  parameters, without the layers past ``layers`` and without OpenCLIP's projection and logit
  scale."""
  out = {}
  for k, v in torch_tensors(cond_params, '').items():
    if 'text_model.' not in k:  # OpenCLIP's text_projection, logit_scale
      continue
    name = k[k.index('text_model.') :]
    parts = name.split('.')  # text_model.encoder.layers.<i>....
    if parts[2] == 'layers' and int(parts[3]) >= layers:
      continue
    out[name] = v
  return out


def write_model(folder: str, config: dict, tensors: dict, weights: str) -> None:
  data = save_safetensors(
    {k: np.asarray(v, np.float32) for k, v in tensors.items()}, _SAFETENSORS_META
  )
  storage.write_bytes(storage.join(folder, weights), data)
  storage.write_text(storage.join(folder, 'config.json'), json.dumps(config, indent=2) + '\n')


def write_tokenizer(folder: str, cs) -> str:
  """The cond stage's tokenizer as a transformers folder (tokenizer.json plus the vocabulary files
  the slow tokenizers read); returns its class name."""
  import os
  import tempfile

  from ldm_jax.tasks import tokenizer as tok_lib

  if cs.kind == 'bert':
    backend, cls, pad = tok_lib.load_bert_tokenizer(cs.tokenizer), 'BertTokenizer', None
  else:
    clip = tok_lib.load_clip_tokenizer(cs.tokenizer, cs.pad_token_id)
    backend, cls = clip.backend, 'CLIPTokenizer'
    pad = backend.convert_ids_to_tokens(int(cs.pad_token_id))  # '<|endoftext|>' SD 1, '!' SD 2
  with tempfile.TemporaryDirectory() as tmp:
    backend.save_pretrained(tmp)
    _vocabulary_files(tmp)
    path = os.path.join(tmp, 'tokenizer_config.json')
    with open(path) as f:
      tc = json.load(f)
    tc.update(model_max_length=cs.max_seq_len, tokenizer_class=cls)
    if pad is not None:
      tc['pad_token'] = pad
    with open(path, 'w') as f:
      json.dump(tc, f, indent=2)
    storage.copytree(tmp, folder)
  return cls


def _vocabulary_files(folder: str) -> None:
  """vocab.json + merges.txt (BPE) or vocab.txt (WordPiece) from the tokenizer.json in ``folder``:
  the files transformers 4's slow tokenizers (and ldm_jax's importer) read."""
  import os

  with open(os.path.join(folder, 'tokenizer.json'), encoding='utf-8') as f:
    model = json.load(f)['model']
  vocab = model['vocab']
  if model['type'] == 'BPE':
    with open(os.path.join(folder, 'vocab.json'), 'w', encoding='utf-8') as f:
      json.dump(vocab, f, ensure_ascii=False)
    merges = [m if isinstance(m, str) else ' '.join(m) for m in model['merges']]
    with open(os.path.join(folder, 'merges.txt'), 'w', encoding='utf-8') as f:
      f.write('#version: 0.2\n' + '\n'.join(merges) + '\n')
  else:
    with open(os.path.join(folder, 'vocab.txt'), 'w', encoding='utf-8') as f:
      f.write(''.join(t + '\n' for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])))
