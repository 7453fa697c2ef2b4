"""Loading checkpoints written by the paper's code (yang-song/score_sde, Flax version).

Those files (`checkpoint_<n>` under `<workdir>/checkpoints`) are
`flax.serialization.msgpack_serialize` of the state dict of its training `State`:

    {'step': int, 'optimizer': {'target': params, 'state': {'step': ..., 'param_states': ...}},
     'lr': float, 'model_state': {}, 'ema_rate': float, 'params_ema': params, 'rng': key}

where `params` is the Linen parameter tree of the model (without the outer 'params' key). Our
NCSN++ / DDPM / NCSNv2 build the same trees for the same config, so the arrays drop in as they are.
"""
from __future__ import annotations

import os
import re
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from score_sde import datasets, models
from score_sde.errors import DataError, MissingFileError
from score_sde.models import utils as mutils


class PaperCheckpoint(NamedTuple):
  """Arrays of a paper checkpoint: `params` (the optimizer's target) and `ema_params`."""
  params: Any
  ema_params: Any
  step: int


def _resolve(path: str) -> str:
  """A file as it is; a directory -> its highest-numbered `checkpoint_<n>` file."""
  if not os.path.isdir(path):
    if not os.path.exists(path):
      raise MissingFileError(f'No paper checkpoint at {path!r}.')
    return path
  numbered = [(int(m.group(1)), f) for f in os.listdir(path)
              if (m := re.fullmatch(r'checkpoint_(\d+)', f))]
  if not numbered:
    raise MissingFileError(f'No checkpoint_<n> file in directory {path!r}.')
  return os.path.join(path, max(numbered)[1])


def expected_param_shapes(config) -> dict[str, tuple[int, ...]]:
  """'/'-joined parameter path -> shape of the model that `config` builds (no real init)."""
  model = models.get_model(config)
  shape = datasets.sample_shape(config)
  params = jax.eval_shape(lambda: mutils.init_params(jax.random.PRNGKey(0), model, shape))
  return _flat_shapes(params)


def _flat_shapes(tree) -> dict[str, tuple[int, ...]]:
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))
  return {'/'.join(k): tuple(np.shape(v)) for k, v in flat.items()}


def check_param_tree(params, expected: dict[str, tuple[int, ...]], what: str) -> None:
  """Raise ValueError naming the first path where `params` and `expected` differ."""
  got = _flat_shapes(params)
  for key in sorted(set(got) | set(expected)):
    if key not in got:
      raise DataError(f'{what}: parameter {key!r} {expected[key]} of the configured model is '
                      f'missing from the checkpoint (does the config match the checkpoint?).')
    if key not in expected:
      raise DataError(f'{what}: checkpoint parameter {key!r} {got[key]} does not exist in the '
                      f'configured model (does the config match the checkpoint?).')
    if got[key] != expected[key]:
      raise DataError(f'{what}: parameter {key!r} has shape {got[key]} in the checkpoint but '
                      f'{expected[key]} in the configured model.')


def load_paper_checkpoint(path: str, config) -> PaperCheckpoint:
  """Read a paper-format checkpoint file (or the latest in a directory) for `config`'s model.

  Returns PaperCheckpoint(params, ema_params, step), nested dicts of float32 jnp arrays shaped
  exactly as `models.get_model(config).init(...)['params']`; pass `ema_params` to
  `models.utils.get_score_fn` to sample. Raises ValueError naming the first parameter path
  whose name or shape differs from the configured model.
  """
  path = _resolve(path)
  with open(path, 'rb') as f:
    data = f.read()
  try:
    state = flax.serialization.msgpack_restore(data)
  except Exception as e:  # noqa: BLE001  msgpack raises several types for a file of another kind
    raise DataError(f'{path!r} is not a paper-format checkpoint: msgpack cannot read it '
                    f'({type(e).__name__}: {str(e)[:200]}).') from e
  if not isinstance(state, dict):
    raise DataError(f'{path!r} is not a paper-format checkpoint: it holds a '
                    f'{type(state).__name__}, not a State.')
  missing = [k for k in ('optimizer', 'params_ema') if k not in state]
  if missing or 'target' not in state.get('optimizer', {}):
    raise DataError(f'{path!r} is not a paper-format checkpoint: expected a State with '
                    f"'optimizer' (with 'target') and 'params_ema'; got keys {sorted(state)}.")
  expected = expected_param_shapes(config)
  params, ema_params = state['optimizer']['target'], state['params_ema']
  check_param_tree(params, expected, f'{path} (optimizer.target)')
  check_param_tree(ema_params, expected, f'{path} (params_ema)')
  to_jnp = lambda t: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), t)
  return PaperCheckpoint(to_jnp(params), to_jnp(ema_params), int(np.asarray(state.get('step', 0))))
