"""Which sampler settings a method runs with: nothing carries over silently between methods.

A config's ``sampling.*`` values were chosen for its ``sampling.method`` (the digits configs set
``num_steps=25, order=2`` for DPM-Solver++(2M)). When a command or a notebook asks for another
method, those values are not that method's: PC with 25 steps instead of the SDE's 1000 is a
different, much worse sampler. The rule:

  * the config's own method runs with the config's settings, then the explicit ones;
  * another method runs with its own defaults (``DEFAULTS[method]``) for every setting it reads,
    then the explicit ones (``--config.sampling.*`` on the command line, keyword arguments of
    ``Run.sample``); the settings every method reads (``eps``, the batch size, guidance) keep
    the config's values.

``for_method`` applies it and says which config values it left out, so the entry points can
print one line about them.
"""
from __future__ import annotations

from typing import Any, Mapping

# Each method's defaults for the settings only some methods read (config_checks.SAMPLER_KEYS);
# they are the schema's (configs/base.py) values.
DEFAULTS: dict[str, dict[str, Any]] = {
    'pc': {'predictor': 'euler_maruyama', 'corrector': 'none', 'snr': 0.16, 'n_steps_each': 1,
           'noise_removal': True, 'num_steps': None, 'probability_flow': False,
           'time_schedule': None},
    'ode': {'rtol': 1e-5, 'atol': 1e-5, 'noise_removal': True, 'time_schedule': None},
    'dpm_solver': {'num_steps': None, 'order': 3, 'time_schedule': None, 'rho': 7.0},
    'ddim': {'num_steps': None, 'time_schedule': None, 'rho': 7.0},
    'heun': {'num_steps': None, 'time_schedule': None, 'rho': 7.0, 'S_churn': 0.0,
             'S_min': 0.0, 'S_max': float('inf'), 'S_noise': 1.0},
}


def for_method(config, method: str | None = None, explicit: Mapping[str, Any] | None = None,
               configured_method: str | None = None):
  """(config copy that samples with ``method``, {key: config value left out}).

  ``explicit``: settings given by the user (keys of ``sampling``), applied last;
  ``configured_method``: the method the config's settings were written for (default: the
  config's ``sampling.method``; the entry points pass the config file's, before overrides).
  """
  from score_sde.errors import ConfigError
  explicit = dict(explicit or {})
  configured = configured_method or config.sampling.method
  method = explicit.pop('method', None) or method or config.sampling.method
  if method not in DEFAULTS:
    raise ConfigError(f'Unknown sampling method {method!r}; valid: {sorted(DEFAULTS)}.')
  out = config.copy_and_resolve_references()
  s = out.sampling
  left_out = {}
  with s.unlocked():
    s.method = method
    if method != configured:
      for key, default in DEFAULTS[method].items():
        if key not in explicit and s[key] != default:
          left_out[key] = s[key]
          s[key] = default
    for key, value in explicit.items():
      if key not in s:
        raise ConfigError(f'Unknown sampling setting {key!r}; valid: {sorted(s.keys())}.')
      s[key] = value
  return out, left_out


def describe_left_out(left_out: Mapping[str, Any], configured: str, method: str,
                      prefix: str = '--config.sampling.') -> str:
  """One line naming the config values ``for_method`` did not carry to ``method``."""
  values = ', '.join(f'{k}={v!r}' for k, v in left_out.items())
  return (f'Note: the config sets {values} for {configured}; {method} runs with its own defaults '
          f'({", ".join(f"{k}={DEFAULTS[method][k]!r}" for k in left_out)}). Give {prefix}<key> '
          'to choose.')
