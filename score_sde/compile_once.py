"""``compile_once(solve)``: a solve taking a ``score_fn`` compiled once per score_fn and reused.

Samplers and likelihoods are pure functions ``solve(rng, score_fn, *arrays)``. Called at top
level, as the README shows (no ``jax.jit`` around them), each call would re-trace and re-compile
the whole solve. The wrapper keeps one ``jax.jit`` per ``score_fn`` (functions are compared by
identity, bound methods by (object, function)), so repeated calls with the same score_fn and
array shapes reuse one executable; new shapes or dtypes compile once more, as ``jax.jit`` does.

The cache holds each score_fn only weakly: a score_fn closing over large parameters is not kept
alive by it, and its compiled executables go when it goes. A score_fn that cannot be weakly
referenced falls back to one ``jax.jit`` with the score_fn as a static argument (held strongly).

Inside a user's trace (``jit``, ``pmap``, ``vmap``, ``grad``), where score_fn is typically a
closure built afresh per trace, the solve runs inline: the outer transformation compiles it, and
caching per fresh closure would only grow the cache.
"""
from __future__ import annotations

import functools
import weakref
from typing import Callable

import jax


def _under_trace(*args) -> bool:
  """True inside a jit / pmap / vmap / grad trace (or when any argument is a tracer)."""
  if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(args)):
    return True
  try:   # private, but the only way to see an enclosing trace with no traced argument
    from jax._src import core
    return not core.trace_state_clean()
  except (ImportError, AttributeError):   # pragma: no cover - other JAX versions
    return False


def _weak_key(fn, callback):
  """A weak reference to ``fn`` usable as a dict key, or None if fn cannot be weakly held."""
  try:
    if hasattr(fn, '__self__') and hasattr(fn, '__func__'):   # bound methods are made per access
      return weakref.WeakMethod(fn, callback)
    return weakref.ref(fn, callback)
  except TypeError:
    return None


def compile_once(solve: Callable) -> Callable:
  """Wraps ``solve(rng, score_fn, *arrays)`` so it compiles once per score_fn (see module doc).

  The wrapper has the same signature; ``wrapper.cache_size()`` is the number of score_fns with a
  live compiled entry (for tests).
  """
  cache: dict = {}
  strong = jax.jit(solve, static_argnums=1)   # fallback for score_fns without weak references

  def _forget(key):
    cache.pop(key, None)

  @functools.wraps(solve)
  def wrapper(rng, score_fn, *arrays):
    if _under_trace(rng, arrays):
      return solve(rng, score_fn, *arrays)
    key = _weak_key(score_fn, _forget)
    if key is None:
      return strong(rng, score_fn, *arrays)
    jitted = cache.get(key)
    if jitted is None:
      # The compiled function dereferences the weak key at trace time (the caller holds
      # score_fn then); it never holds score_fn itself, so the entry dies with score_fn.
      jitted = jax.jit(lambda rng, *arrays: solve(rng, key(), *arrays))
      cache[key] = jitted
    return jitted(rng, *arrays)

  wrapper.cache_size = lambda: len(cache)
  return wrapper
