"""Where the contrastive pair of ``train.py --mode=train_contrastive --workdir=W`` lives.

``W/contrastive/pair.json`` describes it (its ``config.contrastive`` fields, the caption
vocabulary, L words per caption, the image shape: what rebuilds and feeds it without the
training config); its orbax checkpoints are in ``W/contrastive/checkpoints``. When training
ends it writes the embeddings of every split's examples beside them,
``W/contrastive/image_embeddings.npz`` and ``W/contrastive/text_embeddings.npz`` (one (N, 1, D)
array per split, in the split's order: the ``.npz`` of embeddings that ``data.context`` and
``data.dataset='embeddings'`` read), and ``W/contrastive/metrics.json``.
"""
from __future__ import annotations

import os

from score_sde import reporting
from score_sde.errors import MissingFileError

SIDES = ('image', 'text')
SPEC = 'pair.json'


def contrastive_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'contrastive')


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(contrastive_dir(workdir), 'checkpoints')


def embeddings_path(workdir: str, side: str) -> str:
  """``W/contrastive/{image,text}_embeddings.npz``."""
  if side not in SIDES:
    raise ValueError(f'side must be one of {SIDES}, not {side!r}.')
  return os.path.join(contrastive_dir(workdir), f'{side}_embeddings.npz')


def write_spec(workdir: str, fields: dict, vocabulary, context_length: int,
               image_shape) -> str:
  """``W/contrastive/pair.json``: ``fields`` (``models.contrastive.FIELDS``) and the inputs."""
  return reporting.write_json(os.path.join(contrastive_dir(workdir), SPEC), {
      'fields': fields, 'vocabulary': list(vocabulary), 'context_length': int(context_length),
      'image_shape': [int(n) for n in image_shape]})


def load_pair(workdir: str):
  """The ``models.contrastive.TrainedPair`` trained in ``workdir`` (its latest checkpoint)."""
  import jax
  from score_sde import checkpointing, train_state
  from score_sde.models import contrastive
  spec_path = os.path.join(contrastive_dir(workdir), SPEC)
  if not os.path.isfile(spec_path) or not os.path.isdir(checkpoint_dir(workdir)):
    raise MissingFileError(f'No contrastive pair in {contrastive_dir(workdir)}; train one with '
                           f'train.py --mode=train_contrastive --workdir={workdir}.')
  spec = reporting.read_json(spec_path)
  pair = contrastive.from_fields(**spec['fields'])
  shapes = (tuple(spec['image_shape']), spec['context_length'], len(spec['vocabulary']))
  template = train_state.new_state(
      contrastive.init_params(jax.random.PRNGKey(0), pair, *shapes),
      contrastive.optimizer())
  ckpt = checkpointing.Checkpointer(checkpoint_dir(workdir), read_only=True)
  try:
    state, _ = ckpt.restore(template)
  finally:
    ckpt.close()
  return contrastive.TrainedPair(pair, state.params, tuple(spec['vocabulary']),
                                 spec['context_length'], shapes[0])
