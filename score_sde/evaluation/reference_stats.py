"""Reference Inception statistics of a dataset split, computed once and cached as ``.npz``.

Conventions (those FID users ask for, as pytorch-fid / clean-fid on the raw images): every
image of the split once, in order (no dropped remainder, no flips), as uint8 [0, 255] pixels
(no dequantisation), at ``data.image_size``; the train split by default.

File format (``save_stats``): ``pool_3`` (N, 2048) float32 activations (KID needs them), ``mu``
(2048,) and ``sigma`` (2048, 2048) float64 (``metrics.feature_statistics``), and ``num_examples``.
``load_stats`` also reads pytorch-fid's ``mu``/``sigma`` files and the score_sde paper's
released ``cifar10_stats.npz``, which holds only ``pool_3`` (computed by TF-GAN's Inception
graph, whose resize differs slightly from pytorch-fid's: FIDs against it are comparable with the
paper's, those against statistics computed here with pytorch-fid's).
"""
from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections
import numpy as np

from score_sde import datasets, reporting
from score_sde.errors import ConfigError, DataError, MissingFileError
from score_sde.evaluation import inception, metrics

DEFAULT_SPLIT = 'train'


@dataclasses.dataclass(frozen=True)
class ReferenceStats:
  """mu (d,), sigma (d, d) float64; pool_3 (N, d) float32 when the file has activations."""
  mu: np.ndarray
  sigma: np.ndarray
  pool_3: np.ndarray | None
  num_examples: int | None


def from_features(pool_3) -> ReferenceStats:
  pool_3 = np.asarray(pool_3, np.float32)
  mu, sigma = metrics.feature_statistics(pool_3)
  return ReferenceStats(mu, sigma, pool_3, len(pool_3))


def load_stats(path: str) -> ReferenceStats:
  """Reference statistics from ``path``: this module's, pytorch-fid's or the paper's format."""
  if not os.path.isfile(path):
    raise MissingFileError(f'Reference statistics file {path!r} does not exist')
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except (OSError, ValueError) as e:
    raise DataError(f'Cannot read reference statistics {path!r} as .npz: {e}') from e
  pool_3 = arrays.get('pool_3')
  if pool_3 is not None and pool_3.ndim != 2:
    raise DataError(f'{path!r}: pool_3 must be (num_examples, 2048), got shape {pool_3.shape}')
  if 'mu' in arrays and 'sigma' in arrays:
    n = int(arrays['num_examples']) if 'num_examples' in arrays else (
        None if pool_3 is None else len(pool_3))
    return ReferenceStats(np.asarray(arrays['mu'], np.float64),
                          np.asarray(arrays['sigma'], np.float64), pool_3, n)
  if pool_3 is not None:
    return from_features(pool_3)
  raise DataError(f'{path!r} holds {sorted(arrays)}; reference statistics need mu and sigma '
                  '(pytorch-fid, this project) or pool_3 activations (the paper\'s '
                  'cifar10_stats.npz)')


def save_stats(path: str, stats: ReferenceStats) -> None:
  """Write ``stats`` to ``path`` atomically (a temporary file, then a rename)."""
  arrays = {'mu': stats.mu, 'sigma': stats.sigma, 'num_examples': np.int64(stats.num_examples)}
  if stats.pool_3 is not None:
    arrays['pool_3'] = stats.pool_3
  reporting.write_npz(path, **arrays)


def default_stats_path(config, split: str = DEFAULT_SPLIT) -> str:
  """``eval.stats_path`` if set, else next to the data: ``<data.path>_fid_<split>_<size>.npz``
  for image folders, ``<data_dir>/fid_stats/<dataset>_<split>_<size>.npz`` for TFDS."""
  if config.eval.get('stats_path'):
    return config.eval.stats_path
  data = config.data
  name = f'{split.replace("[", "_").replace("]", "").replace(":", "-")}_{data.image_size}'
  if data.dataset == 'folder':
    return f'{os.path.normpath(data.path)}_fid_{name}.npz'
  data_dir = data.data_dir or os.path.join(os.path.expanduser('~'), 'tensorflow_datasets')
  return os.path.join(data_dir, 'fid_stats', f'{data.dataset}_{name}.npz')


def dataset_features(config, feature_fn, split: str = DEFAULT_SPLIT,
                     batch_size: int | None = None) -> np.ndarray:
  """pool_3 (N, 2048) of every image of ``split`` once, by the conventions above.

  feature_fn: ``inception.get_feature_fn(variables)``; batch_size: default ``eval.batch_size``.
  """
  if jax.process_count() > 1:
    raise ConfigError('Reference statistics are computed on one host; run it once without '
                      'multi-host (the result is cached)')
  raw = ml_collections.ConfigDict(config.to_dict())
  raw.data.centered = False          # the pipeline then yields q / 255, i.e. the uint8 pixels
  raw.data.random_flip = False
  raw.data.latents = None            # a latent model is measured on the images, not the latents
  raw.data.latent_size = raw.data.latent_channels = None
  it = datasets.get_dataset(raw, split, num_local_devices=1,
                            batch_size=batch_size or config.eval.batch_size, evaluation=True,
                            uniform_dequantization=False)
  pools = []
  for batch in it:
    images = batch['image'].reshape((-1,) + batch['image'].shape[2:])
    mask = batch['mask'].reshape(-1)
    pools.append(feature_fn(images)['pool_3'][mask])
  return np.concatenate(pools)


def get_reference_stats(config, split: str = DEFAULT_SPLIT, feature_fn=None) -> ReferenceStats:
  """The cached statistics at ``default_stats_path``, computed and cached first if absent.

  feature_fn: default the network with ``eval.inception_weights``. A cached file is trusted as
  it is (its name holds the dataset, split and size); delete it to recompute.
  """
  path = default_stats_path(config, split)
  if os.path.isfile(path):
    return load_stats(path)
  if feature_fn is None:
    feature_fn = inception.get_feature_fn(
        inception.load_variables(config.eval.get('inception_weights')), outputs=('pool_3',))
  stats = from_features(dataset_features(config, feature_fn, split))
  save_stats(path, stats)
  return stats
