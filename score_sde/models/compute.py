"""How a network computes: in which dtype (mixed precision), and what it keeps for the backward
pass (rematerialisation). Neither changes the parameter tree, so both may change between runs.

Mixed precision (``model.dtype = 'bfloat16'``): parameters, optimizer state, EMA and the loss stay
float32. A network casts its input to the compute dtype once, after the noise embedding (computed
in float32: sinusoids of labels up to 999 are meaningless in bf16), and its output back to float32
before any division by sigma or score conversion. In between, every layer computes in the dtype
of its input (``dtype=x.dtype`` on flax layers, parameters cast where they are used); norms keep
their statistics and attention its softmax in float32.

Rematerialisation (``model.remat = True``): every residual and attention block is wrapped in
``nn.remat``, so the backward pass recomputes the activations inside a block from its input
instead of keeping them: less memory, one more forward pass of compute.
"""
from __future__ import annotations

import functools
import itertools
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from score_sde.errors import ConfigError

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def compute_dtype(name: str):
  """The jnp dtype of ``model.dtype`` ``name``."""
  if name not in DTYPES:
    raise ConfigError(f'Unknown model.dtype {name!r}; valid: {list(DTYPES)}.')
  return DTYPES[name]


def from_config(config) -> dict:
  """The network fields ``dtype`` and ``remat`` of ``config.model`` (older configs: defaults)."""
  return dict(dtype=compute_dtype(config.model.get('dtype', 'float32')),
              remat=bool(config.model.get('remat', False)))


@functools.lru_cache(maxsize=None)
def _remat(cls: type, static_argnums: tuple[int, ...]) -> type:
  return nn.remat(cls, static_argnums=static_argnums)


def blocks(cls: type, remat: bool, static_argnums: Sequence[int] = ()) -> Callable[..., nn.Module]:
  """``make(**fields)``: a new ``cls`` block, or with ``remat`` an ``nn.remat(cls)`` one.

  ``nn.remat`` renames the class (``CheckpointResnetBlockDDPM``), so every block gets the name
  flax would give a plain ``cls`` (``ResnetBlockDDPM_0``, ``_1``, ...): the parameter tree, and
  so the paper's checkpoints, are the same either way. Call once per call of the parent's compact
  method, and make every ``cls`` block of that parent through it. ``static_argnums`` count
  ``self`` as 0 (a ``train`` flag passed positionally: its index).
  """
  target = _remat(cls, tuple(static_argnums)) if remat else cls
  count = itertools.count()
  return lambda **fields: target(name=f'{cls.__name__}_{next(count)}', **fields)
