"""TFDS image datasets read through ``tfds.data_source`` (random access, no TensorFlow at run time).

``tfds.data_source`` reads datasets prepared in the ``array_record`` format. Preparing one (the
download and the conversion) is TensorFlow's job and happens once, outside training:

    pip install 'score_sde[tf]'
    tfds build cifar10 --file_format=array_record --data_dir=DIR     # then data.data_dir = DIR

Reading never downloads anything (``download=False``); a dataset missing from the data dir raises
``DatasetNotPreparedError`` with the command above.

Preprocessing follows the paper (yang-song/score_sde): CIFAR-10 / SVHN / MNIST resized to
``data.image_size`` (a no-op at their native size), CelebA a central 140x140 crop then the
shorter side resized to ``image_size``, LSUN a centred square crop resized (bicubic) to
``image_size``, or at 128 the shorter side resized then centre-cropped.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import numpy as np

from score_sde import errors
from score_sde.datasets import image_ops

TF_EXTRA = "pip install 'score_sde[tf]'"


class DatasetNotPreparedError(errors.MissingFileError):
  """The dataset is not in the data dir in a format ``tfds.data_source`` can read."""


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
  """How to read one TFDS dataset: its splits, preprocessing and native channel count."""
  tfds_name: str
  train_split: str
  eval_split: str
  num_channels: int
  resize: Callable[[np.ndarray, int], np.ndarray]   # (H, W, C) uint8, image_size -> (s, s, C)
  label_key: str | None = 'label'
  prepare_note: str = ''   # what preparing it needs beyond the [tf] extra


def _resize_square(image: np.ndarray, size: int) -> np.ndarray:
  return image_ops.resize(image, size, size)


def _celeba_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
  return image_ops.resize_small(image_ops.central_crop(image, 140), size)


def _lsun_resize(image: np.ndarray, size: int) -> np.ndarray:
  if size == 128:   # the paper's special case for its 128x128 LSUN models
    return image_ops.resize_then_crop(image, size)
  return image_ops.crop_resize(image, size)


# The scene and object categories of TFDS's `lsun` builder.
LSUN_CATEGORIES = (
    'classroom', 'bedroom', 'bridge', 'church_outdoor', 'conference_room', 'dining_room',
    'kitchen', 'living_room', 'restaurant', 'tower', 'airplane', 'bicycle', 'bird', 'boat',
    'bottle', 'bus', 'car', 'cat', 'chair', 'cow', 'dining_table', 'dog', 'horse', 'motorbike',
    'person', 'potted_plant', 'sheep', 'sofa', 'train', 'tv-monitor')

_LSUN_NOTE = ("TFDS's LSUN builder also reads the LMDB archives through tensorflow-io "
              '(pip install tensorflow-io, matching your TensorFlow version).')

TFDS_DATASETS: dict[str, TfdsSpec] = {
    'cifar10': TfdsSpec('cifar10', 'train', 'test', 3, _resize_square),
    'svhn_cropped': TfdsSpec('svhn_cropped', 'train', 'test', 3, _resize_square),
    'mnist': TfdsSpec('mnist', 'train', 'test', 1, _resize_square),
    'fashion_mnist': TfdsSpec('fashion_mnist', 'train', 'test', 1, _resize_square),
    'celeb_a': TfdsSpec('celeb_a', 'train', 'validation', 3, _celeba_crop_resize, None),
    **{f'lsun/{c}': TfdsSpec(f'lsun/{c}', 'train', 'validation', 3, _lsun_resize, None,
                             _LSUN_NOTE) for c in LSUN_CATEGORIES},
}


def split_name(spec: TfdsSpec, split: str) -> str:
  """'train' and 'test' are aliases for the dataset's own splits; anything else goes to TFDS."""
  return {'train': spec.train_split, 'test': spec.eval_split}.get(split, split)


def _not_prepared_message(name: str, data_dir: str | None, reason: str) -> str:
  where = f'--data_dir={data_dir}' if data_dir else '(default data dir ~/tensorflow_datasets)'
  spec = TFDS_DATASETS.get(name)
  note = f' {spec.prepare_note}' if spec and spec.prepare_note else ''
  return (f'{reason} Prepare it once; TFDS needs TensorFlow to download and prepare datasets, '
          f'which the optional [tf] extra provides: {TF_EXTRA}; then '
          f'`tfds build {name} --file_format=array_record {where}`, and set data.data_dir to '
          f'that directory.{note} Nothing is downloaded at training time.')


def open_data_source(name: str, split: str, data_dir: str | None) -> Any:
  """``tfds.data_source(name, split)`` with errors that say how to prepare the data."""
  import tensorflow_datasets as tfds   # imported here: toy runs never pay for it
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except ImportError as e:
    if 'tensorflow' not in str(e).lower():
      raise
    raise errors.MissingDependencyError(
        f'Reading {name!r} needs TensorFlow ({e}); install the optional [tf] extra: '
        f'{TF_EXTRA}.') from e
  except Exception as e:   # TFDS raises several types here; diagnose from the files instead
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      raise DatasetNotPreparedError(_not_prepared_message(
          name, data_dir, f'Dataset {name!r} is not prepared at {builder.data_path}.')) from e
    formats = ([str(f) for f in builder.info.available_file_formats()]
               or [str(builder.info.file_format)])
    if not any('array_record' in f.lower() or 'parquet' in f.lower() for f in formats):
      raise DatasetNotPreparedError(_not_prepared_message(
          name, data_dir, f'Dataset {name!r} at {builder.data_path} is prepared as {formats}; '
          'random access (tfds.data_source) needs array_record.')) from e
    raise errors.DataError(f'Could not open split {split!r} of {name!r} at {builder.data_path}: '
                           f'{e}. Available splits: {sorted(builder.info.splits)}.') from e


def _decode_example(record: dict[str, Any], spec: TfdsSpec, image_size: int) -> dict[str, Any]:
  image = np.asarray(record['image'], np.uint8)
  if image.ndim == 2:
    image = image[..., None]
  out = {'image': spec.resize(image, image_size)}
  if spec.label_key is not None:
    out['label'] = np.int32(record[spec.label_key])
  return out


def get_source(name: str, config, split: str):
  """(random-access source, preprocess, has_label) for TFDS dataset ``name``.

  preprocess: record -> {'image': (image_size, image_size, C) uint8[, 'label': int32]}.
  """
  spec = TFDS_DATASETS[name]
  if config.data.num_channels != spec.num_channels:
    raise errors.ConfigError(
        f'{name!r} has {spec.num_channels} channel(s) but data.num_channels = '
        f'{config.data.num_channels}; set data.num_channels={spec.num_channels}.')
  source = open_data_source(spec.tfds_name, split_name(spec, split), config.data.data_dir)
  preprocess = functools.partial(_decode_example, spec=spec, image_size=config.data.image_size)
  return source, preprocess, spec.label_key is not None
