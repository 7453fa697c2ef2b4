"""Inpainting masks by name: ``--inpaint_mask=half|box|random:0.5|file.npy``.

A mask is 1 where a pixel is observed (kept) and 0 where the sampler fills it in, shape
(n, H, W, 1) so that it covers every channel.

  half          the left half observed, the right half filled in
  top           the top half observed, the bottom half filled in
  box           a centred square of half the side filled in, the rest observed
  random:p      each pixel missing with probability p (default 0.5), fixed by ``seed``
  <file>        a .npy / .npz / PNG mask (1 = keep), read by the caller
"""
from __future__ import annotations

import numpy as np

from score_sde.errors import ConfigError

BUILTIN = ('half', 'top', 'box', 'random')


def is_builtin(spec: str) -> bool:
  return spec.split(':', 1)[0] in BUILTIN


def builtin_mask(spec: str, num: int, height: int, width: int, seed: int = 0) -> np.ndarray:
  """The named mask for ``num`` images of ``height`` x ``width``: (num, H, W, 1) float32."""
  name, _, arg = spec.partition(':')
  mask = np.ones((num, height, width, 1), np.float32)
  if name == 'half':
    mask[:, :, width // 2:] = 0.0
  elif name == 'top':
    mask[:, height // 2:] = 0.0
  elif name == 'box':
    h0, w0 = height // 4, width // 4
    mask[:, h0:height - h0, w0:width - w0] = 0.0
  elif name == 'random':
    try:
      p = float(arg) if arg else 0.5
    except ValueError:
      p = -1.0
    if not 0.0 < p < 1.0:
      raise ConfigError(f'--inpaint_mask={spec}: the missing share p of random:p must be a number '
                        'in (0, 1), e.g. random:0.5.')
    missing = np.random.default_rng(seed).random((num, height, width, 1)) < p
    mask[missing] = 0.0
  else:
    raise ConfigError(f'Unknown built-in mask {spec!r}; valid: {list(BUILTIN)} (random:p with a '
                      'missing share p), or a .npy / .npz / PNG file.')
  if name != 'random' and arg:
    raise ConfigError(f'--inpaint_mask={spec}: {name!r} takes no argument.')
  return mask


def masked_for_display(images: np.ndarray, mask: np.ndarray, fill: float = 0.5) -> np.ndarray:
  """``images`` in [0, 1] with the pixels to be filled in shown as grey ``fill``."""
  return images * mask + fill * (1.0 - mask)
