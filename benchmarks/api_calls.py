"""Per-call time of the README's calls: called plainly vs under the user's own ``jax.jit``.

Usage:  .venv/bin/python benchmarks/api_calls.py [--n=512] [--repeats=5]

Workload (issue #12): ``n`` two-dimensional points, the closed-form score of the 8-mode Gaussian
mixture under the VP SDE. For each sampler method and the exact-trace likelihood it prints
  first      the first plain call (trace + compile + run),
  called     the best of ``repeats`` later plain calls, ``sampler(rng, score_fn)`` as the README
             shows (the compile-once cache hit),
  jitted     the best of ``repeats`` calls of ``jax.jit(lambda rng: sampler(rng, score_fn))``,
  fresh      one plain call with a new score_fn object (a cache miss: what every call cost before
             the cache, re-trace and re-compile).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from configs import default_toy  # noqa: E402
from score_sde import likelihood, sampling, sde_lib  # noqa: E402
from score_sde.datasets import toy  # noqa: E402

GMM = toy.gaussian_mixture()
SDE = sde_lib.VPSDE()
CASES = [
    ('ode (dopri5, rtol=atol=1e-5)', dict(method='ode')),
    ('dpm_solver++ 2M, 20 steps', dict(method='dpm_solver', order=2, num_steps=20)),
    ('ddim, 20 steps', dict(method='ddim', num_steps=20)),
    ('pc euler_maruyama, 200 steps', dict(method='pc', num_steps=200)),
    ('heun (edm), 18 steps', dict(method='heun', num_steps=18)),
]


def _block(out):
  return jax.block_until_ready(out)


def _time(fn, repeats):
  best = float('inf')
  for seed in range(repeats):
    start = time.perf_counter()
    _block(fn(jax.random.PRNGKey(seed)))
    best = min(best, time.perf_counter() - start)
  return best


def measure(call, repeats):
  """call(rng, score_fn) -> outputs; returns (first, called, jitted, fresh) seconds."""
  exact = GMM.score_fn(SDE)
  score_fn = lambda x, t: exact(x, t)
  start = time.perf_counter()
  _block(call(jax.random.PRNGKey(0), score_fn))
  first = time.perf_counter() - start
  called = _time(lambda rng: call(rng, score_fn), repeats)
  jitted_fn = jax.jit(lambda rng: call(rng, score_fn))
  _block(jitted_fn(jax.random.PRNGKey(0)))
  jitted = _time(jitted_fn, repeats)
  start = time.perf_counter()
  _block(call(jax.random.PRNGKey(0), lambda x, t: exact(x, t)))
  fresh = time.perf_counter() - start
  return first, called, jitted, fresh


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--n', type=int, default=512)
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  x = GMM.sample(jax.random.PRNGKey(1), args.n)
  rows = []
  for label, fields in CASES:
    config = default_toy.get_config()
    config.sampling.update(fields)
    rows.append((label, measure(sampling.get_sampler(config, SDE, (args.n, 2)), args.repeats)))
  fn = likelihood.get_likelihood_fn(SDE, hutchinson_type='none')
  rows.append(('likelihood, exact trace, rtol=atol=1e-5',
               measure(lambda rng, s: fn(rng, s, x), args.repeats)))

  print(f'# {datetime.date.today()}  {platform.processor() or platform.machine()}, '
        f'{os.cpu_count()} CPUs, JAX {jax.__version__} on {jax.devices()[0].platform}, '
        f'load average {os.getloadavg()[0]:.1f}; n={args.n}, best of {args.repeats}')
  print('| call | first call (s) | called, later (s) | under jax.jit (s) | called/jitted '
        '| new score_fn each call (s) |')
  print('|---|---|---|---|---|---|')
  for label, (first, called, jitted, fresh) in rows:
    print(f'| {label} | {first:.2f} | {called:.4f} | {jitted:.4f} | {called / jitted:.2f} '
          f'| {fresh:.2f} |')


if __name__ == '__main__':
  main()
