"""Pure numpy/PIL image operations on uint8 arrays of shape (H, W, C).

They follow the paper's preprocessing (yang-song/score_sde ``datasets.py``), with PIL instead of
``tf.image``: PIL's resampling filters widen their support when downsampling, i.e. they are
antialiased like ``tf.image.resize(..., antialias=True)``. Results are rounded back to uint8, so
that every pixel stays an integer in {0, ..., 255} and uniform dequantization stays exact.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

_FILTERS = {'bilinear': Image.Resampling.BILINEAR, 'bicubic': Image.Resampling.BICUBIC}


def resize(image: np.ndarray, height: int, width: int, method: str = 'bilinear') -> np.ndarray:
  """(H, W, C) uint8 -> (height, width, C) uint8; a no-op when the size already matches."""
  if image.shape[:2] == (height, width):
    return image
  channels = image.shape[-1]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((width, height), _FILTERS[method]))
  return out.reshape(height, width, channels)


def central_crop(image: np.ndarray, size: int) -> np.ndarray:
  """The centred (size, size) window of an (H, W, C) image with H, W >= size."""
  top = (image.shape[0] - size) // 2
  left = (image.shape[1] - size) // 2
  return image[top:top + size, left:left + size]


def resize_small(image: np.ndarray, resolution: int) -> np.ndarray:
  """Resizes (bilinear) so that the shorter side is ``resolution``, keeping the aspect ratio."""
  h, w = image.shape[:2]
  ratio = resolution / min(h, w)
  return resize(image, max(resolution, round(h * ratio)), max(resolution, round(w * ratio)))


def crop_resize(image: np.ndarray, resolution: int) -> np.ndarray:
  """Centred square crop of side min(H, W), then a bicubic resize to (resolution, resolution)."""
  crop = central_crop(image, min(image.shape[:2]))
  return resize(crop, resolution, resolution, 'bicubic')


def resize_then_crop(image: np.ndarray, resolution: int) -> np.ndarray:
  """Shorter side to ``resolution``, then the centred (resolution, resolution) crop."""
  return central_crop(resize_small(image, resolution), resolution)
