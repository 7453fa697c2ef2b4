"""A run's identity: its config minus the keys a run may change between invocations.

``MAY_DIFFER``: run length, log / eval / snapshot frequencies, ``sampling.*``, ``eval.*``,
data-loading knobs, the compute dtype and remat (none changes parameters). Checkpoints store the
config (``checkpointing``) and refuse to resume or sample with a different identity;
``<workdir>/config.json`` is its readable record.
"""
from __future__ import annotations

import json
import os
from typing import Any

from score_sde import errors, reporting

# Keys a resumed run or sample.py may change; entries ending in '.' are whole sections.
MAY_DIFFER = (
    'training.n_iters', 'training.log_freq', 'training.eval_freq', 'training.snapshot_freq',
    'training.snapshot_freq_for_preemption', 'training.snapshot_sampling',
    'training.distributed', 'training.posthoc_ema_snapshot_freq', 'sampling.', 'eval.',
    'data.num_workers', 'data.prefetch', 'data.data_dir', 'data.path', 'data.latent_cache',
    'model.dtype', 'model.remat', 'autoencoder.n_iters', 'autoencoder.log_freq',
    'autoencoder.eval_freq', 'autoencoder.snapshot_freq')


def config_to_dict(config) -> dict:
  """A ConfigDict (or dict) as plain JSON data: lists for tuples, None for placeholders."""
  if isinstance(config, dict):
    return json.loads(json.dumps(config))
  return json.loads(config.to_json_best_effort())


def _flatten(tree: dict, prefix: str = '') -> dict[str, Any]:
  flat = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      flat.update(_flatten(v, f'{prefix}{k}.'))
    else:
      flat[f'{prefix}{k}'] = v
  return flat


def _may_differ(key: str, may_differ: tuple[str, ...]) -> bool:
  return any(key == m or (m.endswith('.') and key.startswith(m)) for m in may_differ)


def config_differences(stored: dict, current: dict, may_differ: tuple[str, ...] = MAY_DIFFER
                       ) -> list[tuple[str, Any, Any]]:
  """(key, stored value, current value) for every identity key that differs. Keys on one side
  only (a newer or older schema) are not compared."""
  a, b = _flatten(stored), _flatten(current)
  return [(k, a[k], b[k]) for k in sorted(set(a) & set(b))
          if a[k] != b[k] and not _may_differ(k, may_differ)]


def format_differences(diffs: list[tuple[str, Any, Any]], limit: int = 4) -> str:
  shown = '; '.join(f'{k} = {old!r} there, {new!r} here' for k, old, new in diffs[:limit])
  return shown + (f' (and {len(diffs) - limit} more)' if len(diffs) > limit else '')


def write_config_json(config, workdir: str, has_checkpoint: bool = True) -> None:
  """Writes ``<workdir>/config.json``, the readable record of the run's config.

  An existing file that differs only in keys a run may change (``MAY_DIFFER``) is
  updated; one of another run is never overwritten while that run has a checkpoint
  (``errors.ConfigError``). Without one, nothing was trained under the old file.
  """
  path = os.path.join(workdir, 'config.json')
  current = config_to_dict(config)
  if os.path.exists(path):
    try:
      with open(path) as f:
        old = json.load(f)
    except (OSError, ValueError):
      old = None
    if old == current:
      return
    if old is not None and has_checkpoint:
      diffs = config_differences(old, current)
      if diffs:
        raise errors.ConfigError(
            f'{path} records another run: {format_differences(diffs)}. Use that '
            f'config, or another --workdir.')
  reporting.write_json(path, current)
