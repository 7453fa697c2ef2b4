"""scikit-learn's bundled handwritten digits (``data.dataset = 'digits'``): real images, no download.

``sklearn.datasets.load_digits`` ships 1,797 grey 8x8 images (pixel values 0..16) of the digits
0-9 with their labels (the UCI optical-recognition test set, ~180 per class). Here they become
uint8 images (v * 255 / 16, rounded) upsampled to ``data.image_size`` (16 in the digits configs)
by PIL's bilinear interpolation (``image_ops.resize``), with one channel.

Splits are fixed: a stratified 15% ``'test'`` split (270 images, 26-28 per class) held out with
seed 0, and the other 1,527 images as ``'train'``. Both are the same for every run and host.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from score_sde.datasets import image_ops
from score_sde.errors import ConfigError, DataError

NATIVE_SIZE = 8
NUM_CLASSES = 10
TEST_FRACTION = 0.15
SPLIT_SEED = 0
SPLITS = ('train', 'test')


@functools.cache
def split_indices() -> dict[str, np.ndarray]:
  """The fixed stratified split (seed SPLIT_SEED): sorted indices into ``load_all()`` per split."""
  from sklearn.model_selection import train_test_split
  labels = load_all()[1]
  train, test = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION,
                                 stratify=labels, random_state=SPLIT_SEED)
  return {'train': np.sort(train), 'test': np.sort(test)}


@functools.cache
def load_all() -> tuple[np.ndarray, np.ndarray]:
  """All 1,797 images (n, 8, 8) uint8 in {0..255} and labels (n,) int32."""
  from sklearn.datasets import load_digits
  digits = load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
  return images, digits.target.astype(np.int32)


def load_split(split: str, image_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
  """(images (n, image_size, image_size, 1) uint8, labels (n,) int32) of ``split``."""
  if split not in SPLITS:
    raise DataError(f'The digits dataset has splits {list(SPLITS)}, not {split!r}.')
  if image_size < NATIVE_SIZE:
    raise ConfigError(f'data.image_size = {image_size} is below the digits\' native '
                      f'{NATIVE_SIZE} px; use {NATIVE_SIZE} or more (the configs use 16).')
  images, labels = load_all()
  index = split_indices()[split]
  resized = np.stack([image_ops.resize(im[..., None], image_size, image_size, 'bilinear')
                      for im in images[index]])
  return resized, labels[index]


@dataclasses.dataclass(frozen=True)
class DigitsSource:
  """Random access to ``{'image': (s, s, 1) uint8, 'label': int32}`` records of one split."""
  images: np.ndarray
  labels: np.ndarray
  num_classes: int = NUM_CLASSES

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {'image': self.images[index], 'label': self.labels[index]}


def get_source(config, split: str):
  """(random-access source, preprocess, has_label) for ``get_dataset``; 'test' is the held-out
  split. Checks the config's channel and class counts against the data."""
  data = config.data
  if data.num_channels != 1:
    raise ConfigError(f'The digits are grey: set data.num_channels = 1, not {data.num_channels}.')
  num_classes = data.get('num_classes')
  if num_classes is not None and num_classes != NUM_CLASSES:
    raise ConfigError(f'data.num_classes = {num_classes}, but the digits have {NUM_CLASSES} '
                      f'classes (labels 0-9).')
  images, labels = load_split(split, data.image_size)
  return DigitsSource(images, labels), _identity, True


def _identity(record: dict[str, Any]) -> dict[str, Any]:
  return record
