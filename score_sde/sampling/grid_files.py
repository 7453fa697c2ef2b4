"""Optimised time grids on disk: a small JSON file, kept next to the checkpoint it was made for.

A grid file holds the decreasing times t_0 = T > ... > t_n = eps of one grid (``times``), its
scaled noise levels sigma(t_i) = s(t_i) / m(t_i) (``sigmas``), the SDE it was optimised on
(``sde``: its class and fields) and how (``optimised_for``: method, order, number of steps,
objective before and after). Any fixed-grid sampler reads it with ``time_schedule='optimised'``
and ``sampling.grid_path``; ``load_grid`` refuses, in one line, a grid for another number of
points, another end time, or another noise schedule.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from score_sde.errors import ConfigError, DataError, MissingFileError
from score_sde.sampling import schedules

FORMAT = 'score_sde.time_grid.v1'


def _describe(sde) -> str:
  fields = dataclasses.asdict(sde) if dataclasses.is_dataclass(sde) else {}
  return f'{type(sde).__name__}({", ".join(f"{k}={v}" for k, v in fields.items())})'


def save_grid(path: str, times, sde, optimised_for: dict) -> str:
  """Writes the grid ``times`` (n + 1,) decreasing, optimised on ``sde``, to ``path`` (JSON)."""
  times = np.asarray(times, np.float64)
  record = {'format': FORMAT, 'num_points': int(times.shape[0]), 'times': times.tolist(),
            'sigmas': schedules.scaled_sigma(sde, times).tolist(), 'sde': _describe(sde),
            'optimised_for': optimised_for}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(record, f, indent=1)
  return path


def read_grid(path: str) -> dict:
  """The grid file's record (see the module docstring); a missing or foreign file is one line."""
  if not path:
    raise ConfigError("time_schedule='optimised' needs sampling.grid_path: the JSON file "
                      'written by score_sde.sampling.grid_optimisation.')
  if not os.path.isfile(path):
    raise MissingFileError(f'Optimised time grid {path!r} does not exist.')
  try:
    with open(path) as f:
      record = json.load(f)
  except (OSError, ValueError) as e:
    raise DataError(f'Optimised time grid {path!r} is not readable JSON: {e}.') from None
  if not isinstance(record, dict) or record.get('format') != FORMAT:
    raise DataError(f'{path!r} is not an optimised time grid (no format {FORMAT!r}).')
  return record


def load_grid(path: str, sde, num_points: int, eps: float) -> np.ndarray:
  """The times (``num_points``,) of the grid file at ``path``, checked against this sampler:
  the same number of points, the same end time eps and the same noise levels sigma(t) at its
  times (so a grid made for another SDE or schedule is refused)."""
  record = read_grid(path)
  times = np.asarray(record['times'], np.float64)
  made_for = record.get('optimised_for', {})
  if times.shape[0] != num_points:
    raise ConfigError(
        f'Optimised time grid {path!r} has {times.shape[0]} points (made for '
        f"{made_for.get('method', '?')} with {made_for.get('num_steps', '?')} steps); this "
        f'sampler needs {num_points}: optimise a grid for this number of steps.')
  if not np.isclose(times[-1], eps, rtol=1e-6, atol=0.0) or not np.isclose(times[0], sde.T):
    raise ConfigError(f'Optimised time grid {path!r} runs from t = {times[0]:g} to '
                      f'{times[-1]:g}; this sampler runs from {sde.T:g} to eps = {eps:g}.')
  sigmas = schedules.scaled_sigma(sde, times)
  if not np.allclose(sigmas, record['sigmas'], rtol=1e-4):
    raise ConfigError(f"Optimised time grid {path!r} was made for {record['sde']}, whose noise "
                      f'levels differ from this SDE\'s ({_describe(sde)}).')
  return times
