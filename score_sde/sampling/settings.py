"""Which sampler settings a method runs with: nothing carries over silently between methods.

A config's ``sampling.*`` values were chosen for its ``sampling.method`` (the digits configs set
``num_steps=25, order=2`` for DPM-Solver++(2M)). When a command or a notebook asks for another
method, those values are not that method's: PC with 25 steps instead of the SDE's 1000 is a
different, much worse sampler. The rule:

  * the config's own method runs with the config's settings, then the explicit ones;
  * another method runs with its own defaults (``METHODS[method].defaults``) for the settings
    the config's method also reads (those were chosen for it), then the explicit ones
    (``--config.sampling.*`` on the command line, keyword arguments of ``Run.sample``);
    settings the config's method does not read were set for another method and are kept
    (``default_toy``: ``method='ode'`` with ``num_steps=500`` for ``pc``), as are ``eps``, the
    batch size and guidance.

``for_method`` applies it and says which config values it left out, so the entry points can
print one line about them.
"""
from __future__ import annotations

from typing import Any, Mapping

from score_sde import sampling
from score_sde.errors import ConfigError


def for_method(config, method: str | None = None, explicit: Mapping[str, Any] | None = None,
               configured_method: str | None = None):
  """(config copy that samples with ``method``, {key: config value left out}).

  ``explicit``: settings given by the user (keys of ``sampling``), applied last;
  ``configured_method``: the method the config's settings were written for (default: the
  config's ``sampling.method``; the entry points pass the config file's, before overrides).
  """
  explicit = dict(explicit or {})
  configured = configured_method or config.sampling.method
  method = explicit.pop('method', None) or method or config.sampling.method
  defaults = sampling.get_method(method).defaults
  out = config.copy_and_resolve_references()
  s = out.sampling
  left_out = {}
  with s.unlocked():
    s.method = method
    if method != configured:
      chosen_for_configured = set(sampling.get_method(configured).keys)
      for key, default in defaults.items():
        if key in chosen_for_configured and key not in explicit and s[key] != default:
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
  defaults = sampling.get_method(method).defaults
  values = ', '.join(f'{k}={v!r}' for k, v in left_out.items())
  return (f'Note: the config sets {values} for {configured}; {method} runs with its own defaults '
          f'({", ".join(f"{k}={defaults[k]!r}" for k in left_out)}). Give {prefix}<key> '
          'to choose.')
