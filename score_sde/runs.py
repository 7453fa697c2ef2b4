"""A trained run on disk as another run uses it: its stored config, its EMA parameters, and the
check that it models the same thing (a distillation teacher, an autoguidance guide).

``stored_run_config`` reads the config a checkpoint was trained with; ``check_score_model``
raises one line for each way a run cannot serve as a score model of ``config``'s problem (no
such run, a few-step model, another SDE or SDE parameters, another data shape or range);
``restore`` restores its (EMA) parameters and builds its network.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp

from score_sde import checkpointing, consistency, datasets, models, sde_lib, stored_config
from score_sde import train_state
from score_sde.checkpointing import posthoc
from score_sde.errors import ConfigError, MissingFileError
from score_sde.sampling import grid_files


def stored_run_config(workdir: str, step: int | None = None):
  """The config ``workdir``'s checkpoint ``step`` (default: the latest) was trained with, else
  its ``config.json``."""
  directory = checkpointing.checkpoint_dir(workdir)
  if os.path.isdir(directory):
    ckpt = checkpointing.Checkpointer(directory, read_only=True)
    try:
      at = ckpt.latest_step() if step is None else step
      stored = ckpt.stored_config(at) if at is not None else None
    finally:
      ckpt.close()
    if stored is not None:
      return stored_config.with_schema_defaults(stored_config.config_from_dict(stored))
  return stored_config.load_json(workdir)


def check_score_model(path: str | None, config, key: str, role: str):
  """The stored config of the run at ``path`` (given as ``key``, e.g. 'training.teacher_workdir'),
  checked to be a score model of ``config``'s SDE and data; ``role`` names it in messages."""
  if path is None:
    raise ConfigError(f'Set {key} to the workdir of a trained score model of the same SDE and '
                      f'data (the {role}).')
  if not os.path.isdir(path):
    raise MissingFileError(f'{key} {path} does not exist: give the workdir of a trained score '
                           'model.')
  other = stored_run_config(path)
  if other.training.get('objective') in consistency.OBJECTIVES:
    raise ConfigError(f'The {role} {path} is a few-step model (training.objective='
                      f"{other.training.objective!r}); it must be a score model.")
  theirs, ours = (grid_files.describe_sde(sde_lib.get_sde(c)) for c in (other, config))
  if theirs != ours:
    raise ConfigError(f'The {role} {path} was trained with {theirs}; this run has {ours}: '
                      'they must share the SDE.')
  theirs, ours = (datasets.sample_shape(c) for c in (other, config))
  if theirs != ours:
    raise ConfigError(f'The {role} {path} was trained on data of shape {theirs}; this run has '
                      f'{ours}.')
  if bool(other.data.centered) != bool(config.data.centered):
    raise ConfigError(f'The {role} {path} has data.centered={other.data.centered}; this run '
                      f'has {config.data.centered}: the data ranges differ.')
  return other


def restore(workdir: str, config, step: int | None = None, ema: bool = True
            ) -> tuple[Any, Any, int]:
  """(network, parameters, step) of ``workdir``'s checkpoint ``step`` (default: the latest),
  trained with ``config`` (checked against the checkpoint's stored config): the EMA parameters
  (the post-hoc EMA of length ``sampling.ema_sigma_rel`` where that is set), or with
  ``ema=False`` the raw ones."""
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), read_only=True)
  try:
    model = models.get_model(config)
    template = jax.eval_shape(lambda: train_state.restore_template(config, model))
    state, _ = ckpt.restore(template, step, config=config)
  finally:
    ckpt.close()
  params = posthoc.chosen_ema_params(config, workdir, state) if ema else state.params
  return model, jax.tree.map(jnp.asarray, params), int(state.step)
