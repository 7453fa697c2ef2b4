"""The teacher of consistency distillation (training.objective='cd'): a trained score model's
EMA score function, after checking that it fits the student's run.

``check(config)`` reads only the teacher's stored config (fast, before any work) and raises one
line for each way it cannot teach: no such run, a few-step model, another SDE (class or
parameters), another data shape or range. ``score_fn(config)`` then restores its EMA parameters.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from score_sde import api, consistency, datasets, sde_lib
from score_sde.errors import ConfigError, MissingFileError
from score_sde.models import utils as mutils
from score_sde.sampling import grid_files

# Model keys that do not change what the parameters mean.
SAME_NETWORK_MAY_DIFFER = ('ema_rate', 'dtype', 'remat', 'dropout')


def check(config):
  """The teacher's config, checked against ``config`` (the student's); see the module docstring."""
  path = config.training.get('teacher_workdir')
  if path is None:
    raise ConfigError("training.objective='cd' needs a teacher: set training.teacher_workdir to "
                      'a trained score model of the same SDE and data.')
  if not os.path.isdir(path):
    raise MissingFileError(f'training.teacher_workdir {path} does not exist: give the workdir '
                           'of a trained score model.')
  teacher = api.stored_run_config(path)
  if teacher.training.get('objective') in consistency.OBJECTIVES:
    raise ConfigError(f'The teacher {path} is a few-step model (training.objective='
                      f"{teacher.training.objective!r}); distil from a score model.")
  theirs, ours = (grid_files.describe_sde(sde_lib.get_sde(c)) for c in (teacher, config))
  if theirs != ours:
    raise ConfigError(f'The teacher {path} was trained with {theirs}; this run has {ours}: '
                      'distil on the same SDE.')
  theirs, ours = (datasets.sample_shape(c) for c in (teacher, config))
  if theirs != ours:
    raise ConfigError(f'The teacher {path} was trained on data of shape {theirs}; this run has '
                      f'{ours}.')
  if bool(teacher.data.centered) != bool(config.data.centered):
    raise ConfigError(f'The teacher {path} has data.centered={teacher.data.centered}; this run '
                      f'has {config.data.centered}: the data ranges differ.')
  if config.training.get('teacher_init'):
    for key in sorted(set(config.model.keys()) - set(SAME_NETWORK_MAY_DIFFER)):
      if teacher.model.get(key) != config.model.get(key):
        raise ConfigError(f"training.teacher_init=True starts from the teacher's network, but "
                          f'model.{key} is {teacher.model.get(key)!r} there and '
                          f'{config.model.get(key)!r} here.')
  return teacher


def load(config) -> tuple[Callable, Any]:
  """(score_fn(x, t), EMA parameters) of the teacher (``check``ed first)."""
  teacher = check(config)
  run = api.load(config.training.teacher_workdir, config=teacher)
  return (mutils.get_score_fn(run.sde, run.model, run.params,
                              continuous=teacher.training.continuous), run.params)
