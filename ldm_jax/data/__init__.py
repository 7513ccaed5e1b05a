from ldm_jax.data.pipeline import RandomAccessBatches, make_source, make_train_iterator
from ldm_jax.data.sources import DataError, digits_uint8

__all__ = ['DataError', 'RandomAccessBatches', 'digits_uint8', 'make_source', 'make_train_iterator']
