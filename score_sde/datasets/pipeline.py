"""The grain pipeline shared by every image dataset, and its resumable iterator.

    source --(this host's shard)--> shuffle + repeat (training) | repeat num_repeats (evaluation)
           --> preprocess (decode, resize; uint8) --> batch (this host's share)
           --> random flip, dequantize, scale (float32) --> worker threads + prefetch
           --> device layout

Every random choice (order, flip, dequantization noise) is a function of (seed, position in the
stream), so the grain iterator's state (the index of the next batch) is all that resuming needs.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Iterator

import grain
import jax
import numpy as np
from absl import logging

from score_sde import parallel
from score_sde.errors import DataError


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
  """What the pipeline does; built from the config by ``get_dataset``."""
  global_batch_size: int
  num_local_devices: int
  image_shape: tuple[int, int, int]   # (H, W, C) of one example
  seed: int
  shuffle: bool                       # False: the split's order (evaluation)
  num_epochs: int | None              # None: repeat forever
  random_flip: bool
  uniform_dequantization: bool
  scaler: Callable[[np.ndarray], np.ndarray]
  num_workers: int = 2
  prefetch: int = 2                   # batches buffered ahead by the worker threads
  pixels: bool = True                 # False: float examples already in the model's range
                                      # (latents): no flip, dequantization or scaling


def _to_model_range(batch: dict[str, Any], rng: np.random.Generator, random_flip: bool,
                    uniform_dequantization: bool, scaler: Callable) -> dict[str, Any]:
  """uint8 pixels q in {0..255}, (b, H, W, C) -> scaler(x): x = q / 255, or (U + q) / 256 with
  U ~ U[0, 1) i.i.d. per pixel; with ``random_flip`` each image is mirrored (W axis) w.p. 1/2.

  Works on whole batches (one numpy call per operation, not per image): the per-example Python
  overhead, not the arithmetic, is what limits a 2-core machine.
  """
  q = batch['image']
  if random_flip:
    flip = rng.random(len(q)) < 0.5
    q = np.where(flip[:, None, None, None], q[:, :, ::-1], q)
  if uniform_dequantization:
    x = (rng.random(q.shape, dtype=np.float32) + q) / np.float32(256.0)
  else:
    x = q.astype(np.float32) / np.float32(255.0)
  return {**batch, 'image': scaler(x).astype(np.float32)}


def host_shard(ds: grain.MapDataset, drop_remainder: bool) -> grain.MapDataset:
  """This process's interleaved share of ``ds`` (grain's ShardByJaxProcess for the index/count)."""
  shard = grain.sharding.ShardByJaxProcess(drop_remainder=drop_remainder)
  if shard.shard_count == 1:
    return ds
  if drop_remainder:
    ds = ds[:len(ds) - len(ds) % shard.shard_count]
  return ds[shard.shard_index::shard.shard_count]


def build(source: Any, preprocess: Callable, opts: PipelineOptions) -> ImageIterator:
  """The batched, resumable iterator over ``source`` (random access: ``len`` and ``[i]``)."""
  host_batch = opts.global_batch_size // jax.process_count()
  ds = grain.MapDataset.source(source)
  if len(ds) == 0:
    raise DataError('The dataset split is empty.')
  ds = host_shard(ds, drop_remainder=opts.num_epochs is None)
  examples_per_host = math.ceil(len(source) / jax.process_count()) * (opts.num_epochs or 0)
  if opts.shuffle:
    ds = ds.shuffle(seed=opts.seed)     # a fresh permutation in every epoch
  ds = ds.repeat(opts.num_epochs)
  ds = ds.map(preprocess)
  ds = ds.batch(host_batch, drop_remainder=opts.num_epochs is None)
  if opts.pixels:
    ds = ds.random_map(functools.partial(
        _to_model_range, random_flip=opts.random_flip,
        uniform_dequantization=opts.uniform_dequantization, scaler=opts.scaler), seed=opts.seed)
  read = grain.ReadOptions(num_threads=opts.num_workers, prefetch_buffer_size=opts.prefetch)
  num_batches = None if opts.num_epochs is None else math.ceil(examples_per_host / host_batch)
  it = ImageIterator(ds.to_iter_dataset(read), opts, host_batch, num_batches)
  it.num_examples = len(source)   # the split's size (the start-up banner)
  return it


class ImageIterator:
  """Batches ``{'image': [devices, b, H, W, C] float32, 'label'?: [devices, b] int32}``.

  Infinite for training. Finite for evaluation (``num_batches`` batches, then StopIteration):
  there every batch also has ``'mask': [devices, b] bool``, False on the zero padding that fills
  the last batch (and, on multi-host runs, a whole batch on hosts with one example fewer), so
  that every host runs the same number of steps and each real example counts exactly once.
  """

  def __init__(self, dataset: grain.IterDataset, opts: PipelineOptions, host_batch: int,
               num_batches: int | None):
    self._it = iter(dataset)
    self._opts = opts
    self._host_batch = host_batch
    self.num_batches = num_batches
    self.num_examples: int | None = None
    self.step = 0

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self.num_batches is not None and self.step >= self.num_batches:
      raise StopIteration
    try:
      batch = next(self._it)
    except StopIteration:
      if self.num_batches is None:
        raise
      batch = None   # this host's shard ran out one batch before the others
    if self.num_batches is not None:
      batch = self._pad(batch)
    self.step += 1
    return parallel.shard(batch, self._opts.num_local_devices)

  def _pad(self, batch: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    n = 0 if batch is None else len(batch['image'])
    if batch is None:
      batch = {'image': np.zeros((0,) + self._opts.image_shape, np.float32)}
    padded = {k: np.concatenate([v, np.zeros((self._host_batch - n,) + v.shape[1:], v.dtype)])
              for k, v in batch.items()}
    padded['mask'] = np.arange(self._host_batch) < n
    return padded

  def _fingerprint(self) -> dict[str, Any]:
    o = self._opts
    return {'batch_size': o.global_batch_size, 'seed': o.seed, 'shuffle': o.shuffle,
            'num_epochs': o.num_epochs}

  def get_state(self) -> dict[str, Any]:
    """JSON-serialisable position: grain's state (next batch index) and the batch count."""
    return {'grain': self._it.get_state(), 'step': self.step, 'pipeline': self._fingerprint()}

  def set_state(self, state: dict[str, Any]) -> None:
    if state.get('pipeline', self._fingerprint()) != self._fingerprint():
      logging.warning('Restoring a data iterator saved with %s into one built with %s: the data '
                      'order will differ from an uninterrupted run.', state['pipeline'],
                      self._fingerprint())
    self._it.set_state(state['grain'])
    self.step = int(state['step'])
