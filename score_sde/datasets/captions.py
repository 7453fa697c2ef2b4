"""Per-example text for datasets: captions of the digits, and captions as word contexts.

**Digits captions** are made from the label and two attributes measured on the native 8x8
image (pixel values v >= 0), each ranked within its class over all 1,797 images:

    ink   = sum v                                   thin: lowest third, thick: highest third
    slant = -cov(x, y) / var(y) of the ink (y down) slanted: highest third (top leans right)

    caption = 'a' + ', '.join(adjectives) + digit word     e.g. 'a thick, slanted seven'

**Word contexts** encode a caption as an (L, V) sequence: row i is the one-hot vector of its
i-th word in a fixed vocabulary of V words, rows past the caption are zero; so the empty
caption is the all-zero null context of classifier-free guidance (``losses.drop_context``).
The UNet's cross-attention key / value projections learn the word embeddings jointly with the
score; the keys carry no position, so a caption is read as a bag of words.
"""
from __future__ import annotations

import functools
import re
from typing import Sequence

import numpy as np

from score_sde.errors import DataError

DIGIT_WORDS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')
DIGITS_VOCABULARY = ('a', 'thin', 'thick', 'slanted') + DIGIT_WORDS
_WORD = re.compile(r"[a-z0-9']+")


def ink_and_slant(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(N, H, W) non-negative images -> (ink (N,), slant (N,)): total intensity, and the shear
  -cov(x, y) / var(y) of the intensity-weighted pixel positions (> 0: the top leans right)."""
  images = np.asarray(images, np.float64)
  h, w = images.shape[1:]
  y, x = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  ink = images.sum(axis=(1, 2))
  weights = images / np.maximum(ink, 1e-12)[:, None, None]
  mean = lambda f: (weights * f).sum(axis=(1, 2))
  my, mx = mean(y), mean(x)
  cov = mean(x * y) - mx * my
  var_y = np.maximum(mean(y * y) - my**2, 1e-12)
  return ink, -cov / var_y


def _thirds(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """(N,) in {0, 1, 2}: the within-class tercile of each value."""
  out = np.zeros(len(values), np.int32)
  for label in np.unique(labels):
    mine = labels == label
    low, high = np.quantile(values[mine], [1 / 3, 2 / 3])
    out[mine] = (values[mine] > low).astype(np.int32) + (values[mine] > high)
  return out


def describe(label: int, ink_third: int, slant_third: int) -> str:
  adjectives = [w for w, on in (('thin', ink_third == 0), ('thick', ink_third == 2),
                                ('slanted', slant_third == 2)) if on]
  return ' '.join(['a', ', '.join(adjectives), DIGIT_WORDS[label]] if adjectives
                  else ['a', DIGIT_WORDS[label]])


@functools.cache
def digits_captions() -> tuple[str, ...]:
  """The caption of each of the 1,797 digits, in ``digits.load_all()`` order."""
  from score_sde.datasets import digits
  images, labels = digits.load_all()
  ink, slant = ink_and_slant(images)
  return tuple(describe(int(y), int(i), int(s))
               for y, i, s in zip(labels, _thirds(ink, labels), _thirds(slant, labels)))


def words(caption: str) -> list[str]:
  return _WORD.findall(caption.lower())


def word_contexts(captions: Sequence[str], vocabulary: Sequence[str], length: int,
                  what: str = 'Caption') -> np.ndarray:
  """Captions -> (N, length, V) float32 one-hot word sequences (zero rows after the last word).
  A word outside ``vocabulary`` or more than ``length`` words is a one-line DataError."""
  index = {w: i for i, w in enumerate(vocabulary)}
  out = np.zeros((len(captions), length, len(vocabulary)), np.float32)
  for row, caption in enumerate(captions):
    found = words(caption)
    unknown = [w for w in found if w not in index]
    if unknown:
      raise DataError(f'{what} {caption!r}: {unknown[0]!r} is not in the vocabulary '
                      f'({", ".join(vocabulary)}).')
    if len(found) > length:
      raise DataError(f'{what} {caption!r} has {len(found)} words; the model reads {length} '
                      '(model.context_length).')
    out[row, np.arange(len(found)), [index[w] for w in found]] = 1.0
  return out
