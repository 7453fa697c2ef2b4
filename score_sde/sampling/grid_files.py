"""Optimised time grids on disk: a small JSON file, kept next to the checkpoint it was made for.

A grid file holds the decreasing times t_0 = T > ... > t_n = eps of one grid (``times``), its
scaled noise levels sigma(t_i) = s(t_i) / m(t_i) (``sigmas``), the SDE it was optimised on
(``sde``: its class and fields) and how (``optimised_for``: method, order, number of steps,
objective before and after). Any fixed-grid sampler reads it with ``time_schedule='optimised'``
and ``sampling.grid_path`` (``schedules.get_time_grid`` checks it against the sampler);
``grid_optimisation.save_grid`` writes it.
"""
from __future__ import annotations

import dataclasses
import json
import os

from score_sde import reporting
from score_sde.errors import ConfigError, DataError, MissingFileError

FORMAT = 'score_sde.time_grid.v1'


def describe_sde(sde) -> str:
  """'VESDE(sigma_min=0.01, sigma_max=3.0, N=1000)': the class and fields, for messages."""
  fields = dataclasses.asdict(sde) if dataclasses.is_dataclass(sde) else {}
  return f'{type(sde).__name__}({", ".join(f"{k}={v}" for k, v in fields.items())})'


def write_grid(path: str, times, sigmas, sde, optimised_for: dict) -> str:
  """Writes the grid (times and sigmas (n + 1,) each) made on ``sde`` to ``path`` (JSON)."""
  return reporting.write_json(path, {
      'format': FORMAT, 'num_points': len(times), 'times': [float(t) for t in times],
      'sigmas': [float(s) for s in sigmas], 'sde': describe_sde(sde),
      'optimised_for': optimised_for}, indent=1)


def read_grid(path: str | None) -> dict:
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
