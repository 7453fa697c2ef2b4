"""Vectors as a dataset (``data.dataset = 'embeddings'``): an ``.npz`` (``data.path``) with one
(N, D) or (N, 1, D) array per split, e.g. the image embeddings a contrastive pair exports
(``checkpointing/contrastive.py``): the data of unCLIP's diffusion prior.

Embeddings are unit vectors, whose coordinates have RMS 1 / sqrt(D); each record is the vector
scaled by sqrt(D), so that the data has the unit per-coordinate scale the SDEs' priors and
EDM's sigma_data assume (``models.contrastive.normalize`` maps a sample back onto the sphere).
``data.dim`` must be D and ``data.image_size`` None (the low-dimensional path); records carry
no label.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from score_sde.errors import ConfigError, DataError, MissingFileError


@dataclasses.dataclass(frozen=True)
class VectorSource:
  """Random access to ``{'image': (D,) float32}`` records."""
  vectors: np.ndarray

  def __len__(self) -> int:
    return len(self.vectors)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {'image': self.vectors[index]}


def read_split(path: str | None, split: str, missing: str) -> np.ndarray:
  """``split``'s float32 array in the ``.npz`` at ``path``; ``missing``: the one-line message
  when there is no such file."""
  if not path or not os.path.isfile(path):
    raise MissingFileError(missing)
  with np.load(path) as f:
    if split not in f.files:
      raise DataError(f'{path!r} has arrays {f.files}; the {split!r} split needs one.')
    return np.asarray(f[split], np.float32)


def load(path: str, split: str) -> np.ndarray:
  """The (N, D) float32 vectors of ``split`` in ``path``."""
  found = read_split(path, split, f"data.dataset='embeddings' reads data.path={path!r}: an .npz "
                     "with one (N, D) array per split ('train', 'test').")
  if found.ndim == 3 and found.shape[1] == 1:
    found = found[:, 0]
  if found.ndim != 2:
    raise DataError(f'{path!r}[{split!r}] has shape {found.shape}; give (N, D) vectors.')
  return found


def get_source(config, split: str):
  """(random-access source, preprocess, has_label) for ``get_dataset``."""
  data = config.data
  if data.image_size is not None:
    raise ConfigError("data.dataset='embeddings' holds vectors: set data.image_size=None and "
                      'data.dim to their dimension.')
  vectors = load(data.path, split)
  if vectors.shape[1] != data.dim:
    raise ConfigError(f'{data.path!r} holds {vectors.shape[1]}-d vectors; data.dim is '
                      f'{data.dim}.')
  return VectorSource((np.sqrt(vectors.shape[1]) * vectors).astype(np.float32)), _identity, False


def _identity(record: dict[str, Any]) -> dict[str, Any]:
  return record
