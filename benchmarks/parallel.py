"""Training-step throughput on 8 CPU devices: how the data-parallel step is built and fed.

  .venv/bin/python benchmarks/parallel.py [--which=toy,image] [--steps=200] [--repeats=3]

Implementations of one data-parallel train step (``losses.get_step_fn``, pmap semantics):
  pmap        ``jax.pmap`` (the design card's choice; host batches (devices, b, ...) in numpy)
  shard_map   ``jax.jit(jax.shard_map(...))`` on a one-axis mesh (``parallel.data_parallel_step``)
  jit_auto    ``jax.jit`` of the whole-batch step with NamedSharding in/out, XLA partitions it
and, for ``shard_map``, the hot-path options of ``training``: buffer donation, prefetching batches
to the devices from a thread (``parallel.Prefetcher``), ``n_jitted_steps`` (several steps per
device call, ``lax.scan``), and reading the loss every step (a host synchronisation) vs never.

Workloads: the toy config (MLP nf=128, 3 layers, batch 1024, spiral data from the real
``ToyIterator``) and a tiny image config (DDPM++ ``configs/tiny/ddpmpp.py``: nf=8, 8x8x3, batch 64,
synthetic in-memory batches). Each figure: steps/s over ``--steps`` steps after compiling, best
of ``--repeats`` (variants interleaved, so they see the same machine load).
"""
from __future__ import annotations

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import argparse  # noqa: E402
import functools  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import flax.jax_utils  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs.tiny import ddpmpp  # noqa: E402
from configs.vp import toy_spiral  # noqa: E402
from score_sde import datasets, losses, models, parallel, sde_lib, train_state  # noqa: E402


class RandomImages:
  """Endless synthetic batches in the datasets' device layout (no disk, no decoding)."""

  def __init__(self, batch, shape, n_dev):
    self._x = np.random.default_rng(0).uniform(-1, 1, (8, n_dev, batch // n_dev) + shape)
    self._x = self._x.astype(np.float32)
    self.step = 0

  def __next__(self):
    self.step += 1
    return {'image': self._x[self.step % 8]}

  def get_state(self):
    return {'step': self.step}


def workload(which):
  if which == 'toy':
    config = toy_spiral.get_config()
    data = lambda: datasets.get_dataset(config, 'train')  # noqa: E731
  else:
    config = ddpmpp.get_config()
    config.training.batch_size = 64
    shape = (config.data.image_size,) * 2 + (config.data.num_channels,)
    data = lambda: RandomImages(64, shape, 8)  # noqa: E731
  sde, model = sde_lib.get_sde(config), models.get_model(config)
  optimizer = train_state.get_optimizer(config.optim)
  state = train_state.init_train_state(config, model, optimizer, jax.random.PRNGKey(0))
  step_fn, _ = losses.get_step_fns(config, sde, model, optimizer)
  return state, step_fn, data


def build(variant, step_fn, mesh):
  kind, opts = variant
  donate = opts.get('donate', True)
  if kind == 'pmap':   # the pmap regime this project left for shard_map, kept for comparison
    return jax.pmap(functools.partial(step_fn, axis_name=parallel.AXIS), axis_name=parallel.AXIS,
                    in_axes=(0, 0, None), donate_argnums=(0,) if donate else ())
  if kind == 'jit_auto':
    rep, bat = NamedSharding(mesh, P()), NamedSharding(mesh, P(parallel.AXIS))
    return jax.jit(step_fn, in_shardings=(rep, bat, rep), out_shardings=(rep, rep),
                   donate_argnums=(0,) if donate else ())
  return parallel.data_parallel_step(step_fn, mesh, donate=donate,
                                     n_steps=opts.get('n_jitted', 1))


def run(variant, fn, state, data, steps, mesh):
  """Returns (first call seconds (compile, the first time), steps/s)."""
  kind, opts = variant
  rng = jax.random.PRNGKey(1)
  n = opts.get('n_jitted', 1)
  it = data()
  sync = opts.get('sync_every_step', False)
  if kind == 'pmap':
    st = flax.jax_utils.replicate(state)
    feed = lambda: next(it)  # noqa: E731
  elif kind == 'jit_auto':
    st = parallel.replicate_global(state, mesh)
    feed = lambda: parallel.put_batch(next(it), mesh)  # noqa: E731
  else:
    st = parallel.replicate_global(state, mesh)
    if opts.get('prefetch', True):
      pf = parallel.Prefetcher(it, mesh, [n] * (steps // n + 2))
      feed = lambda: next(pf)  # noqa: E731
    else:
      feed = lambda: parallel.put_batch(  # noqa: E731
          parallel.stack_batches([next(it) for _ in range(n)]) if n > 1 else next(it), mesh, n > 1)
  t0 = time.perf_counter()
  st, m = fn(st, feed(), rng)
  jax.block_until_ready(st)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps // n):
    st, m = fn(st, feed(), rng)
    if sync:
      float(np.asarray(m['loss']).reshape(-1)[0])
  jax.block_until_ready(st)
  return compile_s, (steps // n) * n / (time.perf_counter() - t0)


VARIANTS = {
    'pmap': ('pmap', {}),
    'shard_map': ('shard_map', {}),
    'jit_auto': ('jit_auto', {}),
    'shard_map, no donation': ('shard_map', {'donate': False}),
    'shard_map, no prefetch': ('shard_map', {'prefetch': False}),
    'shard_map, loss read every step': ('shard_map', {'sync_every_step': True}),
    'shard_map, n_jitted_steps=5': ('shard_map', {'n_jitted': 5}),
}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--which', default='toy,image')
  ap.add_argument('--steps', type=int, default=200)
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--variants', default=';'.join(VARIANTS), help='names separated by ;')
  args = ap.parse_args()
  mesh = parallel.make_mesh()
  print(f'# {datetime.date.today()}  {platform.processor() or platform.machine()}, '
        f'{os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}, JAX {jax.__version__}, '
        f'{jax.device_count()} CPU devices')
  names = args.variants.split(';')
  for which in args.which.split(','):
    state, step_fn, data = workload(which)
    fns = {v: build(VARIANTS[v], step_fn, mesh) for v in names}
    best = {v: (None, 0.0) for v in names}
    for _ in range(args.repeats):
      for v in names:
        c, r = run(VARIANTS[v], fns[v], state, data, args.steps, mesh)
        best[v] = (c if best[v][0] is None else best[v][0], max(r, best[v][1]))
    print(f'\n{which}: steps/s (best of {args.repeats}), first call incl. compile (s)')
    for v in names:
      print(f'| {which} | {v} | {best[v][1]:.1f} | {best[v][0]:.1f} |')
  print(f'# load avg after: {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
  main()
