"""The teacher of consistency distillation (training.objective='cd'): a trained score model's
EMA score function, after checking that it fits the student's run.

``check(config)`` reads only the teacher's stored config (fast, before any work) and raises one
line for each way it cannot teach: no such run, a few-step model, another SDE (class or
parameters), another data shape or range. ``score_fn(config)`` then restores its EMA parameters.
"""
from __future__ import annotations

from typing import Any, Callable

from score_sde import runs, sde_lib
from score_sde.errors import ConfigError
from score_sde.models import utils as mutils

# Model keys that do not change what the parameters mean.
SAME_NETWORK_MAY_DIFFER = ('ema_rate', 'dtype', 'remat', 'dropout')


def check(config):
  """The teacher's config, checked against ``config`` (the student's); see the module docstring."""
  if config.training.get('teacher_workdir') is None:
    raise ConfigError("training.objective='cd' needs a teacher: set training.teacher_workdir to "
                      'a trained score model of the same SDE and data.')
  teacher = runs.check_score_model(config.training.teacher_workdir, config,
                                   'training.teacher_workdir', 'teacher')
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
  model, params, _ = runs.restore(config.training.teacher_workdir, teacher)
  return (mutils.get_score_fn(sde_lib.get_sde(teacher), model, params,
                              continuous=teacher.training.continuous), params)
