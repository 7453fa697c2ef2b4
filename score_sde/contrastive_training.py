"""Training the CLIP-style contrastive pair (``models/contrastive.py``) on captioned images:
``train.py --mode=train_contrastive`` -> ``<workdir>/contrastive``.

Each batch holds images and their captions as word contexts (the dataset's captions, whatever
``data.context`` says: a decoder config names the embeddings this writes); the loss is the
symmetric InfoNCE of ``contrastive.clip_loss`` over each device's share of the batch, gradients
averaged over devices. The loop, its checkpoints, signals and resumption are ``training.run``'s.
When training ends, ``export`` writes every split's image and caption embeddings
(``checkpointing/contrastive.py``) and the held-out metrics of ``evaluation/zero_shot.py``.
"""
from __future__ import annotations

import copy
import os
from typing import Sequence

import jax
import numpy as np

from score_sde import datasets, parallel, reporting, train_state, training
from score_sde.checkpointing import contrastive as ckpt_contrastive
from score_sde.datasets import captions, contexts, latents
from score_sde.errors import ConfigError
from score_sde.evaluation import zero_shot
from score_sde.models import contrastive

SPLITS = {'digits': ('train', 'test'), 'folder': ('train',)}


POSITIVE = ('embed_dim', 'context_length', 'text_width', 'text_layers', 'text_heads',
            'image_hidden', 'n_iters', 'batch_size', 'log_freq')


def check(config) -> None:
  """One-line ConfigErrors for ``config.contrastive`` values that cannot train."""
  c = config.contrastive
  for key in POSITIVE:
    if not isinstance(c[key], int) or c[key] < 1:
      raise ConfigError(f'contrastive.{key} must be a positive integer, not {c[key]!r}.')
  if not np.isfinite(c.lr) or c.lr <= 0:
    raise ConfigError(f'contrastive.lr must be a positive number, not {c.lr!r}.')
  if c.text_width % c.text_heads:
    raise ConfigError(f'contrastive.text_heads={c.text_heads} must divide '
                      f'contrastive.text_width={c.text_width}.')


def captions_config(config):
  """``config`` reading the dataset's captions as (contrastive.context_length, V) words."""
  if config.data.dataset not in SPLITS:
    raise ConfigError(f'A contrastive pair trains on captioned images: data.dataset in '
                      f'{sorted(SPLITS)}, not {config.data.dataset!r}.')
  config = copy.deepcopy(config)
  config.data.context = 'captions'
  config.data.latents = None
  config.model.context_length = int(config.contrastive.context_length)
  config.model.context_dim = len(contexts.vocabulary(config))
  return config


def get_contrastive_step_fn(pair: contrastive.ContrastivePair, optimizer, train: bool = True):
  """``step_fn(state, batch, rng, axis_name=None) -> (state, {'loss', 'logit_scale'})``;
  ``batch['image']`` (B, H, W, C), ``batch['context']`` (B, L, V) words."""
  def loss_fn(params, images, words):
    v, u, scale = pair.apply({'params': params}, images, words)
    return contrastive.clip_loss(v, u, scale), scale

  def step_fn(state, batch, rng, axis_name=None):
    del rng   # deterministic: no noise, no dropout
    (loss, scale), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch['image'], batch['context'])
    metrics = parallel.pmean({'loss': loss, 'logit_scale': scale}, axis_name)
    if not train:
      return state, metrics
    return train_state.apply_gradients(state, grads, optimizer, axis_name), metrics
  return step_fn


def train_contrastive(config, workdir: str,
                      devices: Sequence | None = None) -> train_state.TrainState:
  """Trains ``config.contrastive`` for ``contrastive.n_iters`` steps under
  ``<workdir>/contrastive`` (resuming from there), then writes the embeddings and metrics."""
  check(config)
  config = captions_config(config)
  parallel.initialize_distributed(config.training.distributed)
  devices = list(devices or jax.local_devices())
  mesh = parallel.make_mesh(devices if jax.process_count() == 1 else None)
  c = config.contrastive
  pair = contrastive.from_config(config)
  optimizer = contrastive.optimizer(c.lr)
  data = {split: datasets.get_dataset(config, split, num_local_devices=len(devices),
                                      batch_size=c.batch_size) for split in ('train', 'test')}
  rngs = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(config.seed), 13), 3)
  shapes = input_shapes(config)
  vocabulary = contexts.vocabulary(config)   # a folder's: read from its captions file once
  if parallel.is_main_process():
    ckpt_contrastive.write_spec(workdir, {k: c[k] for k in contrastive.FIELDS},
                                vocabulary, shapes[1], shapes[0])
  init = lambda rng: train_state.new_state(contrastive.init_params(rng, pair, *shapes),
                                           optimizer)
  job = training.Job(
      'contrastive', init, get_contrastive_step_fn(pair, optimizer), data['train'],
      training.Schedule(c.n_iters, c.log_freq, eval_freq=c.log_freq, snapshot_freq=c.n_iters,
                        snapshot_freq_for_preemption=c.n_iters, keep_snapshots=False),
      ckpt_contrastive.checkpoint_dir(workdir), rng=tuple(rngs),
      eval_step=get_contrastive_step_fn(pair, optimizer, train=False), eval_iter=data['test'],
      log_metrics=('loss', 'logit_scale'), batch_size=c.batch_size,
      batch_key='contrastive.batch_size')
  state = training.run(job, mesh)
  if parallel.is_main_process():
    export(config, contrastive.TrainedPair(pair, parallel.to_host(state.params),
                                           vocabulary, shapes[1], shapes[0]),
           workdir)
  return state


def input_shapes(config) -> tuple[tuple[int, int, int], int, int]:
  """((H, W, C) of the images, L words, V vocabulary words) the pair reads; ``config`` as
  ``captions_config`` makes it (model.context_dim = V)."""
  d = config.data
  return ((d.image_size, d.image_size, d.num_channels), int(config.contrastive.context_length),
          int(config.model.context_dim))


def split_examples(config, split: str):
  """(images in the model's range (N, H, W, C), labels (N,) or None, captions) of ``split`` in
  its order."""
  source, preprocess, _ = datasets.DATASETS[config.data.dataset](config, split)
  images, labels = latents.read_images(source, preprocess, 0, len(source))
  images = datasets.get_data_scaler(config)((images + 1) / 2).astype(np.float32)
  return images, labels, contexts.split_captions(config, split, source)


def digit_prompts() -> tuple[list[str], list[list[str]]]:
  """The zero-shot prompts 'a zero' .. 'a nine', and each digit's six caption forms ('a seven',
  'a thin seven', ..., 'a thick, slanted seven') for CLIP's prompt ensembling."""
  forms = [sorted({captions.describe(k, ink, slant) for ink in range(3) for slant in range(3)})
           for k in range(len(captions.DIGIT_WORDS))]
  return [f'a {w}' for w in captions.DIGIT_WORDS], forms


def evaluate(config, trained: contrastive.TrainedPair, split: str = 'test') -> dict[str, float]:
  """Retrieval accuracy of ``split`` and, for the digits, zero-shot accuracy with the prompts
  'a zero' .. 'a nine' and with CLIP's prompt ensembling (each class the normalised mean of the
  embeddings of its six caption forms), as ``evaluation/zero_shot.py`` defines them."""
  config = captions_config(config)
  images, labels, found = split_examples(config, split)
  return _metrics(config, trained, trained.encode_images(images),
                  trained.encode_text(found, 'Caption'), labels, found)


def _metrics(config, trained: contrastive.TrainedPair, v: np.ndarray, u: np.ndarray, labels,
             found) -> dict[str, float]:
  """``evaluate``'s metrics from a split's (N, D) image and caption embeddings ``v``, ``u``."""
  metrics = zero_shot.retrieval_accuracy(v, u, found)
  if config.data.dataset == 'digits':
    prompts, forms = digit_prompts()
    metrics['zero_shot_accuracy'] = zero_shot.zero_shot_accuracy(
        v, labels, trained.encode_text(prompts))
    per_form = trained.encode_text(sum(forms, [])).reshape(len(forms), len(forms[0]), -1)
    metrics['zero_shot_ensemble_accuracy'] = zero_shot.zero_shot_accuracy(
        v, labels, np.asarray(contrastive.normalize(per_form.mean(axis=1))))
  return metrics


def export(config, trained: contrastive.TrainedPair, workdir: str) -> dict[str, float]:
  """Writes ``{image,text}_embeddings.npz`` ((N, 1, D) per split) and ``metrics.json`` (the
  last split's metrics: the held-out one) under ``<workdir>/contrastive``; returns the metrics."""
  config = captions_config(config)
  arrays = {'image': {}, 'text': {}}
  for split in SPLITS[config.data.dataset]:
    images, labels, found = split_examples(config, split)
    v, u = trained.encode_images(images), trained.encode_text(found, 'Caption')
    arrays['image'][split], arrays['text'][split] = v[:, None], u[:, None]
  for side, per_split in arrays.items():
    reporting.write_npz(ckpt_contrastive.embeddings_path(workdir, side), **per_split)
  metrics = _metrics(config, trained, v, u, labels, found)   # the last split: the held-out one
  reporting.write_json(os.path.join(ckpt_contrastive.contrastive_dir(workdir), 'metrics.json'),
                       metrics)
  reporting.say(f'contrastive: {metrics}')
  return metrics
