from ldm_jax.data.pipeline import Decoding, RandomAccessBatches, make_source, make_train_iterator
from ldm_jax.data.sources import DataError, digits_uint8

__all__ = [
  'DataError',
  'Decoding',
  'RandomAccessBatches',
  'digits_uint8',
  'make_source',
  'make_train_iterator',
]
