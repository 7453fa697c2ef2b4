"""Data entry point: ``get_dataset(config, split)`` for every dataset, toy or image.

An iterator yields dicts of numpy arrays laid out for the devices,
``{'image': [num_local_devices, per_device_batch, ...]}``, already scaled to the model's range
(``get_data_scaler``), and is resumable: ``get_state()`` returns a JSON-serialisable dict that
``set_state`` restores, so a checkpoint can hold the data position.
"""
from __future__ import annotations

from typing import Any, Iterator

import jax
import numpy as np

from score_sde import parallel
from score_sde.datasets import toy


def get_data_scaler(config):
  """[0, 1] data -> the model's range: [-1, 1] if ``data.centered`` else unchanged."""
  if config.data.centered:
    return lambda x: x * 2.0 - 1.0
  return lambda x: x


def get_data_inverse_scaler(config):
  """Inverse of ``get_data_scaler``: the model's range -> [0, 1]."""
  if config.data.centered:
    return lambda x: (x + 1.0) / 2.0
  return lambda x: x


class ToyIterator:
  """Endless batches of a 2-D toy distribution; batch i is a pure function of (seed, i).

  Its state is just the batch index, so resuming reproduces the uninterrupted sequence exactly.
  """

  def __init__(self, name: str, global_batch_size: int, seed: int, num_local_devices: int):
    self._sample = jax.jit(toy.get_toy_sampler(name), static_argnums=1)
    self._key = jax.random.PRNGKey(seed)
    self._global_batch_size = global_batch_size
    self._num_devices = num_local_devices
    self._host_slice = parallel.host_local_slice(global_batch_size)
    self.step = 0

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    x = self._sample(jax.random.fold_in(self._key, self.step), self._global_batch_size)
    self.step += 1
    x = np.asarray(x)[self._host_slice]
    return {'image': parallel.shard(x, self._num_devices)}

  def get_state(self) -> dict[str, Any]:
    return {'step': self.step}

  def set_state(self, state: dict[str, Any]) -> None:
    self.step = int(state['step'])


def get_dataset(config, split: str = 'train', num_local_devices: int | None = None,
                batch_size: int | None = None):
  """Iterator of device-laid-out batches for ``config.data.dataset``.

  ``batch_size`` is global (all hosts); default ``config.training.batch_size`` for 'train' and
  ``config.eval.batch_size`` otherwise.
  """
  num_local_devices = num_local_devices or jax.local_device_count()
  if batch_size is None:
    batch_size = config.training.batch_size if split == 'train' else config.eval.batch_size
  parallel.per_device_batch_size(batch_size, num_local_devices)   # fails early if it doesn't divide
  name = config.data.dataset
  if name in toy.TOY_DISTRIBUTIONS:
    seed = config.seed if split == 'train' else config.seed + 1
    return ToyIterator(name, batch_size, seed, num_local_devices)
  raise ValueError(f'Unknown dataset {name!r}; valid: {sorted(toy.TOY_DISTRIBUTIONS)}.')
