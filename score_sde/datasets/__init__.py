"""Data entry point: ``get_dataset(config, split)`` for every dataset, toy or image.

An iterator yields dicts of numpy arrays laid out for the devices,
``{'image': [num_local_devices, per_device_batch, ...]}`` (plus ``'label'``: [devices, b] int32
for labelled image datasets, ``'context'``: [devices, b, L, D] with ``data.context``), already scaled to the model's range (``get_data_scaler``), and is
resumable: ``get_state()`` returns a JSON-serialisable dict that ``set_state`` restores, so a
checkpoint can hold the data position.

Image datasets (``DATASETS``): TFDS ones read by ``tfds.data_source`` + grain (no TensorFlow at
run time; see ``tfds_images`` for preparing them) and ``'folder'`` (``data.path``; see
``folder``) and ``'digits'`` (scikit-learn's bundled 8x8 digits at 16x16, no download; see
``digits``). Training iterators shuffle, repeat forever and flip (``data.random_flip``); the
``'test'`` split is shuffled and repeated but never flipped, for the training loop's eval loss.

A finite evaluation pass (bits/dim over a whole split)::

  it = get_dataset(config, 'test', evaluation=True, num_repeats=config.eval.num_repeats,
                   uniform_dequantization=True)
  for batch in it:            # it.num_batches batches, in the split's order, no flips
    ...                       # batch['mask']: [devices, b] bool, False on the padding of the last
                              # batch; weight per-example results by it
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Iterator

import jax
import numpy as np

from score_sde import errors, parallel
from score_sde.datasets import contexts, digits, embeddings, folder, latents, pipeline, tfds_images, toy


def sample_shape(config) -> tuple[int, ...]:
  """Per-example shape of what the model learns: (H, W, C) for images, (h, w, c) for the latents
  of ``data.latents``, (D,) for low-dimensional data."""
  if config.data.image_size is None:
    return (config.data.dim,)
  data = latents.latent_view(config).data
  return (data.image_size, data.image_size, data.num_channels)


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


def to_uint8(config, samples) -> np.ndarray:
  """Model-space image samples -> uint8 pixels, as the paper: clip(round(x01 * 255)) with x01
  the inverse-scaled sample; a non-finite value becomes 0."""
  images = np.nan_to_num(np.asarray(get_data_inverse_scaler(config)(samples), np.float64))
  return np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)


class ToyIterator:
  """Endless batches of a 2-D toy distribution; batch i is a pure function of (seed, i).

  Its state is just the batch index, so resuming reproduces the uninterrupted sequence exactly.
  With ``num_classes`` (labelled toys) batches also hold ``'label'`` (the same points, labelled).
  """

  def __init__(self, name: str, global_batch_size: int, seed: int, num_local_devices: int,
               num_classes: int | None = None):
    self._labelled = num_classes is not None
    sampler = (toy.get_labelled_toy_sampler(name, num_classes) if self._labelled
               else toy.get_toy_sampler(name))
    self._sample = jax.jit(sampler, static_argnums=1)
    self._key = jax.random.PRNGKey(seed)
    self._global_batch_size = global_batch_size
    self._num_devices = num_local_devices
    self._host_slice = parallel.host_local_slice(global_batch_size)
    self.step = 0

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    out = self._sample(jax.random.fold_in(self._key, self.step), self._global_batch_size)
    self.step += 1
    x, y = out if self._labelled else (out, None)
    batch = {'image': np.asarray(x)[self._host_slice]}
    if y is not None:
      batch['label'] = np.asarray(y)[self._host_slice]
    return parallel.shard(batch, self._num_devices)

  def get_state(self) -> dict[str, Any]:
    return {'step': self.step}

  def set_state(self, state: dict[str, Any]) -> None:
    self.step = int(state['step'])


def _tfds_builder(name: str) -> Callable:
  return functools.partial(tfds_images.get_source, name)


def _folder_source(config, split: str):
  del split   # a folder has one split
  source = folder.scan_folder(config.data.path)
  if source.num_channels != config.data.num_channels:
    raise errors.ConfigError(
        f'Images under {config.data.path!r} have {source.num_channels} channel(s) (mode '
        f'{source.mode}) but data.num_channels = {config.data.num_channels}.')
  preprocess = functools.partial(folder.decode, mode=source.mode,
                                 image_size=config.data.image_size)
  return source, preprocess, source.labels is not None


# name -> builder(config, split) -> (random-access source, preprocess, has_label).
DATASETS: dict[str, Callable] = {
    **{name: _tfds_builder(name) for name in tfds_images.TFDS_DATASETS},
    'folder': _folder_source,
    'digits': digits.get_source,
    'embeddings': embeddings.get_source,   # vectors (unCLIP's prior), not images
}
VECTOR_DATASETS = ('embeddings',)


def valid_dataset_names() -> list[str]:
  return sorted(toy.TOY_DISTRIBUTIONS) + sorted(DATASETS)


def unknown_dataset_message(name: str) -> str:
  """The valid names, short: LSUN's categories listed only for an unknown 'lsun/...' name."""
  if str(name).startswith('lsun/'):
    return (f'Unknown LSUN category in data.dataset {name!r}; valid: '
            f'{", ".join(tfds_images.LSUN_CATEGORIES)}.')
  images = [n for n in sorted(DATASETS) if not n.startswith('lsun/')]
  return (f'Unknown dataset {name!r}; valid: {sorted(toy.TOY_DISTRIBUTIONS)} (2-D), '
          f'{images} (images; folder reads data.path) or lsun/<category>.')


def get_dataset(config, split: str = 'train', num_local_devices: int | None = None,
                batch_size: int | None = None, *, evaluation: bool = False, num_repeats: int = 1,
                uniform_dequantization: bool | None = None):
  """Iterator of device-laid-out batches for ``config.data.dataset``.

  Args:
    config: the run's config; reads ``config.data`` (and ``seed``, the batch sizes).
    split: 'train' | 'test' (the dataset's evaluation split, e.g. CelebA's 'validation') | any
      other TFDS split string, e.g. 'train[:1000]'.
    num_local_devices: devices of this host the batch is laid out for (default: all).
    batch_size: global (all hosts); default ``config.training.batch_size`` for 'train' and
      ``config.eval.batch_size`` otherwise.
    evaluation: image datasets only: a finite pass over the whole split, ``num_repeats`` times,
      unshuffled and unflipped, with a ``'mask'`` for the padded last batch (module docstring).
    num_repeats: passes over the split when ``evaluation`` (each with fresh dequantization noise).
    uniform_dequantization: overrides ``data.uniform_dequantization`` (e.g. True for bits/dim).

  Returns:
    An iterator with ``get_state()`` / ``set_state(state)``.
  """
  num_local_devices = num_local_devices or jax.local_device_count()
  if batch_size is None:
    batch_size = config.training.batch_size if split == 'train' else config.eval.batch_size
  parallel.per_device_batch_size(batch_size, num_local_devices)   # fails early if it doesn't divide
  name = config.data.dataset
  seed = config.seed if split == 'train' else config.seed + 1
  if name in toy.TOY_DISTRIBUTIONS:
    return ToyIterator(name, batch_size, seed, num_local_devices, config.data.get('num_classes'))
  if name not in DATASETS:
    raise errors.ConfigError(unknown_dataset_message(name))
  image_source, preprocess, _ = DATASETS[name](config, split)
  data = config.data
  source, pixels = image_source, not data.get('latents') and name not in VECTOR_DATASETS
  if data.get('latents'):   # the split encoded once by data.latents' autoencoder (latents.py)
    source, preprocess, _ = latents.get_source(config, split, (source, preprocess, _))
  if data.get('context'):   # captions or embeddings beside each example (datasets/contexts.py)
    source, preprocess = contexts.attach(config, split, image_source, source, preprocess)
  dequantize = (data.uniform_dequantization if uniform_dequantization is None
                else uniform_dequantization)
  opts = pipeline.PipelineOptions(
      global_batch_size=batch_size, num_local_devices=num_local_devices,
      image_shape=sample_shape(config), seed=seed,
      shuffle=not evaluation, num_epochs=num_repeats if evaluation else None,
      random_flip=bool(data.random_flip) and split == 'train' and not evaluation,
      uniform_dequantization=bool(dequantize), scaler=get_data_scaler(config),
      num_workers=data.get('num_workers', 2), prefetch=data.get('prefetch', 2), pixels=pixels)
  return pipeline.build(source, preprocess, opts)
