"""The only module that knows about devices: replication, sharding and the pmapped step.

Everything else works with plain per-example arrays; a global batch (B, ...) is laid out as
(num_devices, B / num_devices, ...) here and nowhere else.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.jax_utils
import jax
import jax.numpy as jnp
import numpy as np

AXIS = 'batch'


def initialize_distributed(enabled: bool) -> None:
  """Multi-host: connects this process to the others (coordinator from the environment)."""
  if enabled:
    jax.distributed.initialize()


def local_devices(num: int | None = None) -> list:
  """The first ``num`` local devices (all of them by default)."""
  devices = jax.local_devices()
  if num is not None:
    if not 1 <= num <= len(devices):
      raise ValueError(f'Asked for {num} devices; this host has {len(devices)}.')
    devices = devices[:num]
  return devices


def per_device_batch_size(global_batch_size: int, num_local_devices: int | None = None) -> int:
  """global batch / (processes x local devices), with a clear error if it does not divide."""
  n_local = num_local_devices or jax.local_device_count()
  n = n_local * jax.process_count()
  if global_batch_size % n:
    raise ValueError(f'Batch size {global_batch_size} is not divisible by the number of devices '
                     f'({n} = {jax.process_count()} hosts x {n_local} local devices); choose a '
                     f'multiple of {n}.')
  return global_batch_size // n


def shard(x: Any, num_devices: int) -> Any:
  """(B, ...) -> (num_devices, B / num_devices, ...) for every leaf."""
  return jax.tree.map(lambda a: a.reshape((num_devices, -1) + a.shape[1:]), x)


def unshard(x: Any) -> Any:
  """(num_devices, b, ...) -> (num_devices * b, ...) for every leaf."""
  return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), x)


def replicate(tree: Any, devices: Sequence | None = None) -> Any:
  return flax.jax_utils.replicate(tree, devices=devices)


def unreplicate(tree: Any) -> Any:
  return flax.jax_utils.unreplicate(tree)


def pmean(x: Any, axis_name: str | None) -> Any:
  """Mean over the device axis inside a pmapped function; identity outside one."""
  return x if axis_name is None else jax.lax.pmean(x, axis_name)


def device_index(axis_name: str | None) -> jax.Array:
  return jnp.zeros((), jnp.int32) if axis_name is None else jax.lax.axis_index(axis_name)


def pmap_step(step_fn: Callable, devices: Sequence | None = None, donate: bool = True) -> Callable:
  """pmaps ``step_fn(state, batch, rng, axis_name=...)`` over ``devices``.

  With ``donate`` the state (argument 0) is donated: its buffers are reused for the new state,
  halving memory (the caller must not touch the old state again, so not for evaluation).
  The rng is broadcast (the step folds in the example index itself), the batch is sharded.
  """
  return jax.pmap(functools.partial(step_fn, axis_name=AXIS), axis_name=AXIS,
                  in_axes=(0, 0, None), donate_argnums=(0,) if donate else (), devices=devices)


def host_local_slice(n: int) -> slice:
  """This host's share of n globally indexed items."""
  per_host = n // jax.process_count()
  start = jax.process_index() * per_host
  return slice(start, start + per_host)


def to_host(x: Any) -> Any:
  return jax.tree.map(np.asarray, jax.device_get(x))


def pmap_sampling(fn: Callable, devices: Sequence | None = None) -> Callable:
  """pmaps ``fn(params, rng)`` with replicated params and a distinct key on every device."""
  def per_device(params, rng):
    return fn(params, jax.random.fold_in(rng, jax.lax.axis_index(AXIS)))
  return jax.pmap(per_device, axis_name=AXIS, in_axes=(0, None), devices=devices)
