"""A persistent XLA compilation cache for the command-line tools (train.py, sample.py).

A second run of the same config (a resumed training, another sampling run) then loads its
compiled programs from disk instead of compiling them again. Directory: ``$SCORE_SDE_CACHE_DIR``
if set, else ``~/.cache/score_sde/jax``; ``SCORE_SDE_CACHE_DIR=0`` (or ``off``) turns it off.
JAX's own ``JAX_COMPILATION_CACHE_DIR``, when set, is left as it is.
"""
from __future__ import annotations

import os

import jax

DEFAULT_DIR = os.path.join('~', '.cache', 'score_sde', 'jax')
_OFF = ('', '0', 'off', 'false', 'none')


def enable(directory: str | None = None) -> str | None:
  """Turns the cache on (see the module doc); returns its directory, or None when off."""
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  if directory is None:
    directory = os.environ.get('SCORE_SDE_CACHE_DIR', DEFAULT_DIR)
  if directory.strip().lower() in _OFF:
    return None
  directory = os.path.expanduser(directory)
  jax.config.update('jax_compilation_cache_dir', directory)
  # Programs that compile in under ~0.5 s are cheaper to compile than to read back.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  return directory
