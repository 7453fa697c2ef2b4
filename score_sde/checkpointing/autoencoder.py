"""Where an autoencoder lives: what ``data.latents`` may name, and the export of one trained here.

``train.py --mode=train_autoencoder --workdir=W`` keeps its orbax checkpoints in
``W/autoencoder/checkpoints`` and, when done, writes ``W/autoencoder/autoencoder.npz`` (the
converted-autoencoder format of ``models.convert_autoencoder``: parameters, fields, scale factor).
``load_autoencoder`` reads that export from a workdir, a converted ``.npz``, or a diffusers folder /
``.safetensors`` file.
"""
from __future__ import annotations

import os

from score_sde.errors import MissingFileError
from score_sde.models import autoencoder, convert_autoencoder

EXPORT = 'autoencoder.npz'


def autoencoder_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'autoencoder')


def export_path(workdir: str) -> str:
  return os.path.join(autoencoder_dir(workdir), EXPORT)


def load_autoencoder(path: str) -> tuple[autoencoder.AutoencoderKL, dict]:
  """(module, params) of what ``data.latents`` names (see the module docstring)."""
  if os.path.isfile(export_path(path)):
    return convert_autoencoder.load(export_path(path))
  if os.path.isdir(autoencoder_dir(path)):
    raise MissingFileError(f'{path!r} holds autoencoder checkpoints but no {EXPORT} yet: run '
                           f'train.py --mode=train_autoencoder --workdir={path} to the end.')
  if os.path.isdir(path) and not os.path.isfile(
      os.path.join(path, convert_autoencoder.CONFIG_FILE)):
    raise MissingFileError(f'{path!r} holds no autoencoder: train one there (train.py '
                           f'--mode=train_autoencoder --workdir={path}) or '
                           f'{convert_autoencoder.HOW_TO_GET[0].lower()}'
                           f'{convert_autoencoder.HOW_TO_GET[1:]}')
  return convert_autoencoder.load(path)
