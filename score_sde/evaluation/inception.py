"""The FID Inception-v3 in Flax: the 2015-12-05 TF graph that FID, KID and IS are defined with.

This is the network pytorch-fid, torch-fidelity, clean-fid and TF-GAN use (not torchvision's
ImageNet Inception-v3): torchvision's layer layout with the FID-specific blocks, i.e. average
pools that ignore the zero padding in the A, C and first E blocks (TF's pooling), a max pool in
the last E block (Mixed_7c), and 1008 output classes. Inputs follow pytorch-fid: images in
[0, 1] are resized to 299 x 299 bilinearly (half-pixel centres, no antialiasing, as
``F.interpolate(..., align_corners=False)``) and mapped to [-1, 1]. Outputs: ``pool_3``, the
2048-d average-pooled features FID and KID use, ``logits`` (1008, with the bias) and
``logits_unbiased`` (pool_3 @ W without the bias, which the original Inception Score used).

Weights come from a local ``.npz`` written once by ``convert_inception`` from pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth``; nothing is downloaded. Layout: NHWC, parameter names
mirror torchvision's (``Mixed_6b/branch7x7_2/conv/kernel``), so the conversion is a renaming.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from score_sde.errors import DataError, MissingFileError

INPUT_SIZE = 299
NUM_CLASSES = 1008
FEATURE_DIM = 2048
WEIGHTS_FILE = 'pt_inception-2015-12-05-6726825d.pth'
WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
               + WEIGHTS_FILE)
CONVERT_COMMAND = ('python -m score_sde.evaluation.convert_inception --src '
                   f'{WEIGHTS_FILE} --dst inception_fid.npz')
HOW_TO_GET_WEIGHTS = (
    f"Download pytorch-fid's FID Inception weights {WEIGHTS_URL} once and convert them with "
    f"`{CONVERT_COMMAND}` (needs torch), then set eval.inception_weights to the .npz.")


class BasicConv2d(nn.Module):
  """conv (no bias) -> batch norm (eps 1e-3, running statistics) -> ReLU."""
  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                padding=((ph, ph), (pw, pw)), use_bias=False, precision=self.precision,
                name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name='bn')(x)
    return nn.relu(x)


def _avg_pool_3x3(x):
  # TF's average pool divides by the number of real (unpadded) pixels.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_stride2(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')


class InceptionA(nn.Module):
  """Mixed_5b/c/d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (FID: pool ignores padding)."""
  pool_features: int
  conv: Callable = BasicConv2d

  @nn.compact
  def __call__(self, x):
    c = self.conv
    b1 = c(64, (1, 1), name='branch1x1')(x)
    b5 = c(48, (1, 1), name='branch5x5_1')(x)
    b5 = c(64, (5, 5), padding=(2, 2), name='branch5x5_2')(b5)
    b3 = c(64, (1, 1), name='branch3x3dbl_1')(x)
    b3 = c(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(b3)
    b3 = c(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(b3)
    bp = c(self.pool_features, (1, 1), name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a (35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""
  conv: Callable = BasicConv2d

  @nn.compact
  def __call__(self, x):
    c = self.conv
    b3 = c(384, (3, 3), strides=2, name='branch3x3')(x)
    bd = c(64, (1, 1), name='branch3x3dbl_1')(x)
    bd = c(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = c(96, (3, 3), strides=2, name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b..e: 1x1 | factorised 7x7 | twice-factorised 7x7 | avgpool-1x1 (FID pool)."""
  channels_7x7: int
  conv: Callable = BasicConv2d

  @nn.compact
  def __call__(self, x):
    c, c7 = self.conv, self.channels_7x7
    b1 = c(192, (1, 1), name='branch1x1')(x)
    b7 = c(c7, (1, 1), name='branch7x7_1')(x)
    b7 = c(c7, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
    b7 = c(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)
    bd = c(c7, (1, 1), name='branch7x7dbl_1')(x)
    bd = c(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd)
    bd = c(c7, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd)
    bd = c(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd)
    bd = c(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd)
    bp = c(192, (1, 1), name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a (17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""
  conv: Callable = BasicConv2d

  @nn.compact
  def __call__(self, x):
    c = self.conv
    b3 = c(192, (1, 1), name='branch3x3_1')(x)
    b3 = c(320, (3, 3), strides=2, name='branch3x3_2')(b3)
    b7 = c(192, (1, 1), name='branch7x7x3_1')(x)
    b7 = c(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = c(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = c(192, (3, 3), strides=2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b/c: 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1.

  The FID graph pools with an unpadded-average in Mixed_7b and a max in Mixed_7c (``max_pool``).
  """
  max_pool: bool = False
  conv: Callable = BasicConv2d

  @nn.compact
  def __call__(self, x):
    c = self.conv
    b1 = c(320, (1, 1), name='branch1x1')(x)
    b3 = c(384, (1, 1), name='branch3x3_1')(x)
    b3 = jnp.concatenate([c(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3),
                          c(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3)], axis=-1)
    bd = c(448, (1, 1), name='branch3x3dbl_1')(x)
    bd = c(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([c(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd),
                          c(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd)], axis=-1)
    if self.max_pool:
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3(x)
    bp = c(192, (1, 1), name='branch_pool')(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """x: (B, 299, 299, 3) in [-1, 1] -> {'pool_3': (B, 2048), 'logits': (B, 1008),
  'logits_unbiased': (B, 1008)}. ``precision``: of every conv and the classifier; HIGHEST by
  default so accelerators do not round to TF32 and features stay comparable with published
  statistics."""
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    c = functools.partial(BasicConv2d, precision=self.precision)
    x = c(32, (3, 3), strides=2, name='Conv2d_1a_3x3')(x)
    x = c(32, (3, 3), name='Conv2d_2a_3x3')(x)
    x = c(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3')(x)
    x = _max_pool_3x3_stride2(x)
    x = c(80, (1, 1), name='Conv2d_3b_1x1')(x)
    x = c(192, (3, 3), name='Conv2d_4a_3x3')(x)
    x = _max_pool_3x3_stride2(x)
    for name, pool_features in (('Mixed_5b', 32), ('Mixed_5c', 64), ('Mixed_5d', 64)):
      x = InceptionA(pool_features, conv=c, name=name)(x)
    x = InceptionB(conv=c, name='Mixed_6a')(x)
    for name, c7 in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160), ('Mixed_6e', 192)):
      x = InceptionC(c7, conv=c, name=name)(x)
    x = InceptionD(conv=c, name='Mixed_7a')(x)
    x = InceptionE(conv=c, name='Mixed_7b')(x)
    x = InceptionE(max_pool=True, conv=c, name='Mixed_7c')(x)
    pool_3 = x.mean(axis=(1, 2))
    fc = nn.Dense(NUM_CLASSES, precision=self.precision, name='fc')
    logits = fc(pool_3)
    unbiased = jnp.dot(pool_3, fc.variables['params']['kernel'], precision=self.precision)
    return {'pool_3': pool_3, 'logits': logits, 'logits_unbiased': unbiased}


def preprocess(images: jax.Array) -> jax.Array:
  """(B, H, W, C) uint8 in [0, 255] or float in [0, 1], C in {1, 3} -> (B, 299, 299, 3) in
  [-1, 1]: x / 255 for uint8, grey repeated to RGB, bilinear resize as pytorch-fid's."""
  x = images.astype(jnp.float32)
  if images.dtype == jnp.uint8:
    x = x / 255.0
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3), method='bilinear',
                       antialias=False)
  return 2.0 * x - 1.0


def inception_outputs(variables, images: jax.Array, precision=jax.lax.Precision.HIGHEST):
  """Pure: images (see ``preprocess``) -> the network's outputs; pmap/jit it as you need."""
  return FIDInceptionV3(precision=precision).apply(variables, preprocess(images))


MIN_INIT_SIZE = 75   # the smallest input whose feature map survives to Mixed_7c (1 x 1)


@functools.lru_cache(maxsize=1)
def abstract_variables() -> Any:
  """Shapes/dtypes of the network's variables ({'params', 'batch_stats'}), without computing."""
  x = jax.ShapeDtypeStruct((1, MIN_INIT_SIZE, MIN_INIT_SIZE, 3), jnp.float32)
  return jax.eval_shape(FIDInceptionV3().init, jax.random.PRNGKey(0), x)


def init_variables(rng) -> Any:
  """Random variables with the network's structure (tests and the reference check)."""
  x = jnp.zeros((1, MIN_INIT_SIZE, MIN_INIT_SIZE, 3))
  return jax.jit(FIDInceptionV3().init)(rng, x)


def check_images(images) -> None:
  """``DataError`` unless images are (B, H, W, 1|3), uint8 or float in [0, 1], finite, B >= 1."""
  shape, dtype = np.shape(images), np.dtype(images.dtype)
  if len(shape) != 4 or shape[-1] not in (1, 3) or min(shape) < 1:
    raise DataError(f'Inception input must be images (batch, height, width, 1 or 3), got shape '
                    f'{tuple(shape)}')
  if dtype == np.uint8:
    return
  if not np.issubdtype(dtype, np.floating):
    raise DataError(f'Inception input must be uint8 in [0, 255] or float in [0, 1], got dtype '
                    f'{dtype}')
  xp = np if isinstance(images, np.ndarray) else jnp
  lo, hi = float(xp.min(images)), float(xp.max(images))
  if not (np.isfinite(lo) and np.isfinite(hi)):
    raise DataError('Inception input contains non-finite values')
  if lo < 0.0 or hi > 1.0:
    raise DataError(f'Float Inception input must lie in [0, 1], got values in [{lo:.4g}, '
                    f'{hi:.4g}]; map model samples to [0, 1] (inverse scaler) and clip first')


def load_variables(path: str | None) -> Any:
  """The converted weights at ``path`` (``convert_inception``'s .npz) as {'params', 'batch_stats'}.

  MissingFileError if the file is absent, DataError if it is not this network's weights (the
  first missing, unexpected or mis-shaped entry is named); both say how to make the file.
  """
  if not path:
    raise MissingFileError(f'eval.inception_weights is not set. {HOW_TO_GET_WEIGHTS}')
  if not os.path.isfile(path):
    raise MissingFileError(f'Inception weights file {path!r} does not exist. {HOW_TO_GET_WEIGHTS}')
  if path.endswith(('.pth', '.pt')):
    raise DataError(f'{path!r} is a torch file; convert it first: `{CONVERT_COMMAND}`')
  try:
    with np.load(path, allow_pickle=False) as f:
      flat = {tuple(k.split('/')): np.asarray(f[k]) for k in f.files}
  except (OSError, ValueError) as e:
    raise DataError(f'Cannot read Inception weights {path!r} as .npz ({e}). '
                    f'{HOW_TO_GET_WEIGHTS}') from e
  check_variable_shapes(flat, repr(path))
  return traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()})


def check_variable_shapes(flat: dict[tuple[str, ...], np.ndarray], path: str,
                          names: dict[tuple[str, ...], str] | None = None) -> None:
  """DataError naming the first difference between ``flat`` and the network's variables.

  names: how to call an entry of ``flat`` in the message (default 'params/Mixed_5b/...').
  """
  name = lambda key: (names or {}).get(key, '/'.join(key))
  expected = traverse_util.flatten_dict(abstract_variables())
  for key in sorted(expected):
    if key not in flat:
      raise DataError(f'{path} is not the FID Inception weights: {"/".join(key)} is missing. '
                      f'{HOW_TO_GET_WEIGHTS}')
    if flat[key].shape != expected[key].shape:
      raise DataError(f'{path}: {name(key)} has shape {flat[key].shape}, expected '
                      f'{expected[key].shape} (FID Inception). {HOW_TO_GET_WEIGHTS}')
  extra = sorted(set(flat) - set(expected))
  if extra:
    raise DataError(f'{path} has an entry the FID Inception lacks: {name(extra[0])}. '
                    f'{HOW_TO_GET_WEIGHTS}')


def get_feature_fn(variables, outputs: Sequence[str] = ('pool_3', 'logits_unbiased')):
  """``features(images) -> {name: (B, dim) float32 numpy}`` for the requested outputs.

  images: (B, H, W, 1|3) uint8 [0, 255] or float [0, 1], validated on the host (``check_images``).
  The network is jitted once and compiles once per input shape and dtype.
  """
  unknown = sorted(set(outputs) - {'pool_3', 'logits', 'logits_unbiased'})
  if unknown:
    raise DataError(f'Unknown Inception outputs {unknown}; valid: pool_3, logits, logits_unbiased')
  wanted = tuple(outputs)

  @jax.jit
  def run(variables, images):
    out = inception_outputs(variables, images)
    return {k: out[k] for k in wanted}

  def features(images):
    images = images if hasattr(images, 'dtype') else np.asarray(images)
    check_images(images)
    return jax.tree.map(np.asarray, run(variables, images))
  return features
