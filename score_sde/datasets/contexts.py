"""Per-example contexts beside the images (``data.context``), batched and sharded like labels.

Each record gains ``'context'``: an (L, D) float32 array, so batches hold
``'context': [devices, b, L, D]`` for a context-conditional model (``model.name =
'unet_condition'``, (L, D) = (``model.context_length``, ``model.context_dim``)).

    data.context = None          no context
                 = 'captions'    the dataset's captions as word contexts (``captions.py``): the
                                 digits' captions made from labels and measured attributes, or a
                                 folder's ``captions.txt`` ("<relative path><TAB><caption>" per
                                 image); D = the vocabulary's size (digits: 14 words; a folder:
                                 the words of its captions file)
                 = '<file>.npz'  precomputed embeddings: one (N, L, D) array per split name
                                 ('train', 'test'; a folder has only 'train'), in the split's
                                 order (digits: ``digits.split_indices()``; a folder: sorted paths)
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import numpy as np

from score_sde.datasets import captions, embeddings
from score_sde.errors import ConfigError, DataError, MissingFileError

CAPTIONS_FILE = 'captions.txt'
# Models conditioned on a context: SD's UNet (cross-attention), unCLIP's decoder (an embedding),
# and, when model.context_dim is set, the MLP (unCLIP's prior), NCSN++ / DDPM++ (cross-attention
# after each attention block) and DiT (cross-attention in each block).
CONTEXT_MODELS = ('unet_condition', 'unclip_decoder', 'mlp', 'ncsnpp', 'dit')
CONTEXT_DIM_MODELS = ('mlp', 'ncsnpp', 'dit')   # take a context only with model.context_dim


def takes_context(config) -> bool:
  m = config.model
  return m.name in CONTEXT_MODELS and (m.name not in CONTEXT_DIM_MODELS
                                       or m.get('context_dim') is not None)
CAPTIONED = ('digits', 'folder')


@dataclasses.dataclass(frozen=True)
class ContextSource:
  """``source``'s records with ``'context'``: contexts[i] beside record i."""
  source: Any
  contexts: np.ndarray

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {'record': self.source[index], 'context': self.contexts[index]}


def _with_context(preprocess: Callable, item: dict[str, Any]) -> dict[str, Any]:
  return {**preprocess(item['record']), 'context': item['context']}


def check_config(config) -> None:
  """One-line ConfigErrors for ``data.context`` settings that cannot work (before any work)."""
  name, context = config.model.name, config.data.get('context')
  if context and not takes_context(config):
    raise ConfigError(f'data.context={context!r} has no effect: model {name!r} takes no context '
                      f"(models {list(CONTEXT_MODELS)} do; {list(CONTEXT_DIM_MODELS)} with "
                      'model.context_dim).')
  if context == 'captions' and config.data.dataset not in CAPTIONED:
    raise ConfigError(f"data.context='captions' is available for {list(CAPTIONED)}, not "
                      f'{config.data.dataset!r}; give an .npz of embeddings instead.')
  if context and context != 'captions' and not str(context).endswith('.npz'):
    raise ConfigError(f"data.context={context!r}: give 'captions' or an .npz of embeddings.")


def check_training_data(config) -> None:
  """A ConfigError, before any work, for training a cross-attention model on data without
  per-example contexts (sampling with ``--prompt`` needs none)."""
  if takes_context(config) and not config.data.get('context'):
    raise ConfigError(f"model.name={config.model.name!r} cross-attends to per-example contexts: set "
                      "data.context ('captions' or an .npz of embeddings) to train it.")


def _folder_captions(root: str) -> dict[str, str]:
  path = os.path.join(root, CAPTIONS_FILE)
  if not os.path.isfile(path):
    raise MissingFileError(f"data.context='captions' reads {path!r}: one '<relative image "
                           "path><TAB><caption>' line per image.")
  found = {}
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        name, sep, caption = line.rstrip('\n').partition('\t')
        if not sep:
          raise DataError(f'{path}:{number}: no TAB between the image path and its caption.')
        found[os.path.normpath(name)] = caption
  return found


def vocabulary(config) -> tuple[str, ...]:
  """The words of ``data.context='captions'``: the digits' fixed ones, or a folder's."""
  if config.data.dataset == 'digits':
    return captions.DIGITS_VOCABULARY
  return tuple(sorted({w for c in _folder_captions(config.data.path).values()
                       for w in captions.words(c)}))


def split_captions(config, split: str, image_source) -> list[str]:
  """The captions of ``split``'s examples, in its order."""
  if config.data.dataset == 'digits':
    from score_sde.datasets import digits
    made = captions.digits_captions()
    return [made[i] for i in digits.split_indices()[split]]
  found = _folder_captions(config.data.path)
  missing = [f for f in image_source.files if os.path.normpath(f) not in found]
  if missing:
    raise DataError(f'{len(missing)} images have no line in {CAPTIONS_FILE}, e.g. {missing[0]!r}.')
  return [found[os.path.normpath(f)] for f in image_source.files]


def _embeddings(path: str, split: str, size: int) -> np.ndarray:
  arrays = embeddings.read_split(path, split, f'data.context={path!r} does not exist: an .npz '
                                "with one (N, L, D) array per split ('train', 'test').")
  if arrays.ndim != 3 or len(arrays) != size:
    raise DataError(f'{path!r}[{split!r}] has shape {arrays.shape}; the split has {size} '
                    'examples: give (N, L, D) = '
                    f'({size}, model.context_length, model.context_dim).')
  return arrays


def split_contexts(config, split: str, image_source) -> np.ndarray:
  """(N, L, D) contexts of ``split``, checked against the model's (L, D)."""
  m, context = config.model, config.data.context
  if context == 'captions':
    found = captions.word_contexts(split_captions(config, split, image_source),
                                   vocabulary(config), int(m.context_length))
  else:
    found = _embeddings(context, split if config.data.dataset != 'folder' else 'train',
                        len(image_source))
  wanted = (int(m.context_length), None if m.context_dim is None else int(m.context_dim))
  if found.shape[1:] != wanted:
    raise ConfigError(f'data.context={context!r} gives {found.shape[1:]} contexts per example; '
                      f'set model.context_length={found.shape[1]}, '
                      f'model.context_dim={found.shape[2]} (now {wanted}).')
  return found


def attach(config, split: str, image_source, source, preprocess: Callable):
  """(source, preprocess) whose records also hold 'context' (``image_source``: the dataset's own
  source, which orders the examples; ``source``: the one read, e.g. the latents)."""
  contexts = split_contexts(config, split, image_source)
  return ContextSource(source, contexts), functools.partial(_with_context, preprocess)
