"""Training throughput of one step (forward + backward + Adam + EMA), ours vs the paper's code.

Usage:
  .venv/bin/python benchmarks/train_step.py [--configs=tiny/ddpmpp,vp/cifar10_ddpmpp_continuous]
      [--batch=N] [--steps=K] [--paper=DIR] [--dtype=bfloat16] [--remat] [--no-paper]

For each config (a path under configs/ without .py) it builds our model, our loss
(``losses.get_step_fn``) and our optimizer (``train_state.get_optimizer``: clipping + Adam with the
paper's warm-up), jits the step with the state donated, and reports
  compile   seconds to lower and compile the step,
  step      best wall time of ``--steps`` steps (after one warm-up step), steps/s and images/s,
  GFLOP     model FLOPs per step from XLA's cost analysis of the compiled step,
  memory    XLA's buffer assignment (arguments + temporaries, ``memory_analysis()``), and on an
            accelerator the device's peak bytes in use (``memory_stats()``), else the process's
            peak RSS so far,
  MFU       on a GPU, achieved FLOP/s over the device's dense bf16 peak (``--peak_tflops``).

``--paper=DIR``: a checkout of yang-song/score_sde (default: extracted at run time from the bare
mirror ``--paper_git``). Its ``models/`` package is imported at run time with small shims for
current JAX/Flax (``flax.optim`` and ``jax.tree_map`` are gone; its root ``utils`` needs
TensorFlow), never copied here. The paper's model is built from the same config, its loss is its
own ``losses.get_sde_loss_fn``, and the optimizer and EMA are ours (optax; the paper used
``flax.optim.Adam`` with the same warm-up and clipping), so the two rows differ in model and loss
code only. ``ratio`` = ours images/s over the paper's.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from score_sde import losses, models, sde_lib, train_state  # noqa: E402

PAPER_GIT = '/work/.mirror/yang-song+score_sde/repo'


def load_config(name, batch, dtype=None, remat=None):
  config = importlib.import_module('configs.' + name.replace('/', '.')).get_config()
  config.training.batch_size = batch
  if dtype is not None:
    config.model.dtype = dtype
  if remat is not None:
    config.model.remat = remat
  return config


def _batch(config, batch):
  shape = (batch, config.data.image_size, config.data.image_size, config.data.num_channels)
  return {'image': jax.random.uniform(jax.random.PRNGKey(1), shape, minval=-1.0, maxval=1.0)}


def _peak_memory():
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return stats['peak_bytes_in_use'], 'device peak'
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, 'process peak RSS'


def measure(step, state, batch, rng, steps):
  """(compile s, best step s, GFLOP/step, XLA bytes, peak bytes, what peak is) of jit(step)."""
  jitted = jax.jit(step, donate_argnums=0)
  state = jax.tree.map(lambda a: jnp.array(a, copy=True), state)   # EMA starts as params: 2 buffers
  start = time.perf_counter()
  compiled = jitted.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float((cost or {}).get('flops', float('nan')))
  mem = compiled.memory_analysis()
  xla_bytes = (mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes
               - mem.alias_size_in_bytes) if mem is not None else float('nan')
  state, metrics = compiled(state, batch, rng)   # warm-up
  jax.block_until_ready(metrics)
  best = float('inf')
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch, rng)
    jax.block_until_ready(metrics)
    best = min(best, time.perf_counter() - start)
  peak, what = _peak_memory()
  return compile_s, best, flops / 1e9, xla_bytes, peak, what


def build_ours(config):
  """(step, state, number of parameters) of our training step for ``config``."""
  sde = sde_lib.get_sde(config)
  model = models.get_model(config)
  optimizer = train_state.get_optimizer(config.optim)
  state = train_state.init_train_state(config, model, optimizer, jax.random.PRNGKey(0))
  step, _ = losses.get_step_fns(config, sde, model, optimizer)
  return step, state, sum(x.size for x in jax.tree_util.tree_leaves(state.params))


def ours(config, batch, steps):
  step, state, n_params = build_ours(config)
  return measure(step, state, _batch(config, batch), jax.random.PRNGKey(2), steps), n_params


# ---------------------------------------------------------------------------------------------
# The paper's code, imported at run time.
# ---------------------------------------------------------------------------------------------

def paper_checkout(path, git_dir):
  """A directory holding the paper's ``models/``, ``sde_lib.py`` and ``losses.py``."""
  if path:
    return path
  out = tempfile.mkdtemp(prefix='score_sde_paper_')
  archive = subprocess.run(['git', f'--git-dir={git_dir}', 'archive', 'HEAD', 'models',
                            'sde_lib.py', 'losses.py'], check=True, capture_output=True).stdout
  subprocess.run(['tar', '-x', '-C', out], input=archive, check=True)
  return out


def import_paper(path):
  """(models.utils, sde_lib, losses) of the paper's code, with shims for current JAX / Flax."""
  import flax
  if not hasattr(flax, 'optim'):           # removed from Flax; only named in annotations here
    flax.optim = types.SimpleNamespace(Optimizer=object, Adam=None)
  for name, new in (('tree_map', jax.tree.map), ('tree_leaves', jax.tree.leaves)):
    if not hasattr(jax, name):
      setattr(jax, name, new)
  utils = types.ModuleType('utils')        # the paper's root utils.py needs TensorFlow
  utils.batch_mul = lambda a, b: jax.vmap(lambda a, b: a * b)(a, b)
  # Our package's names must not shadow the paper's top-level modules while it imports.
  saved = {k: sys.modules.pop(k) for k in list(sys.modules)
           if k in ('utils', 'sde_lib', 'losses', 'models') or k.startswith('models.')}
  sys.modules['utils'] = utils
  sys.path.insert(0, path)
  try:
    pmutils = importlib.import_module('models.utils')
    for name in ('ncsnpp', 'ddpm', 'ncsnv2'):
      importlib.import_module('models.' + name)
    psde_lib = importlib.import_module('sde_lib')
    plosses = importlib.import_module('losses')
  finally:
    sys.path.remove(path)
    for k in ['utils', 'sde_lib', 'losses', 'models'] + [k for k in sys.modules
                                                         if k.startswith('models.')]:
      sys.modules.pop(k, None)
    sys.modules.update(saved)
  return pmutils, psde_lib, plosses


def build_paper(config, paper_modules):
  """(step, state, number of parameters) of the paper's model and loss with our optimizer."""
  pmutils, psde_lib, plosses = paper_modules
  model = pmutils.get_model(config.model.name)(config=config)
  x = jnp.zeros((1, config.data.image_size, config.data.image_size, config.data.num_channels))
  variables = model.init({'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)},
                         x, jnp.zeros((1,), jnp.int32))
  params = variables['params']
  states = {k: v for k, v in variables.items() if k != 'params'}
  tc, mc = config.training, config.model
  sde = {'vpsde': lambda: psde_lib.VPSDE(mc.beta_min, mc.beta_max, mc.num_scales),
         'subvpsde': lambda: psde_lib.subVPSDE(mc.beta_min, mc.beta_max, mc.num_scales),
         'vesde': lambda: psde_lib.VESDE(mc.sigma_min, mc.sigma_max, mc.num_scales)}[tc.sde]()
  loss_fn = plosses.get_sde_loss_fn(sde, model, train=True, reduce_mean=tc.reduce_mean,
                                    continuous=True,
                                    likelihood_weighting=tc.likelihood_weighting)
  optimizer = train_state.get_optimizer(config.optim)
  state = {'step': jnp.zeros((), jnp.int32), 'params': params, 'ema': params,
           'opt': optimizer.init(params), 'states': states}

  def step(state, batch, rng):   # the paper's losses.get_step_fn, with optax for flax.optim
    rng = jax.random.fold_in(rng, state['step'])
    grad_fn = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)
    (loss, new_states), grads = grad_fn(rng, state['params'], state['states'], batch)
    updates, opt = optimizer.update(grads, state['opt'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    ema = jax.tree.map(lambda e, p: e * mc.ema_rate + p * (1.0 - mc.ema_rate), state['ema'],
                       params)
    return ({'step': state['step'] + 1, 'params': params, 'ema': ema, 'opt': opt,
             'states': new_states}, {'loss': loss})
  return step, state, sum(x.size for x in jax.tree_util.tree_leaves(params))


def paper(config, batch, steps, paper_modules):
  step, state, n_params = build_paper(config, paper_modules)
  return measure(step, state, _batch(config, batch), jax.random.PRNGKey(2), steps), n_params


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--configs', default='tiny/ddpmpp,tiny/ncsnpp,vp/cifar10_ddpmpp_continuous,'
                      've/cifar10_ncsnpp_continuous')
  parser.add_argument('--batch', type=int, default=None,
                      help='default: 8 for tiny configs; 4 on CPU / 128 on an accelerator else')
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--paper', default=None, help='a checkout of yang-song/score_sde')
  parser.add_argument('--paper_git', default=PAPER_GIT)
  parser.add_argument('--no-paper', dest='with_paper', action='store_false')
  parser.add_argument('--dtype', default=None, help='model.dtype, e.g. bfloat16')
  parser.add_argument('--remat', action='store_true', default=None)
  parser.add_argument('--peak_tflops', type=float, default=989.0,
                      help='dense bf16 peak of the GPU (H100 SXM: 989)')
  args = parser.parse_args()
  device = jax.devices()[0]
  on_cpu = device.platform == 'cpu'
  paper_modules = (import_paper(paper_checkout(args.paper, args.paper_git))
                   if args.with_paper else None)

  print(f'# {datetime.datetime.now():%Y-%m-%d %H:%M}  {platform.machine()}, {os.cpu_count()} '
        f'CPUs, JAX {jax.__version__} on {device.device_kind}, load average '
        f'{os.getloadavg()[0]:.1f}; best of {args.steps} steps after one warm-up')
  print('| config | code | batch | params | compile (s) | step (s) | steps/s | images/s | '
        'GFLOP/step | XLA buffers (MiB) | peak (MiB) | MFU | ours/paper |')
  print('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
  for name in args.configs.split(','):
    batch = args.batch or (8 if name.startswith('tiny') else (4 if on_cpu else 128))
    config = load_config(name, batch, args.dtype, args.remat)
    rows = [('ours' + (f' {args.dtype}' if args.dtype else '') + (' remat' if args.remat else ''),
             ours(config, batch, args.steps))]
    if paper_modules is not None:
      rows.append(('paper', paper(load_config(name, batch), batch, args.steps, paper_modules)))
    rates = []
    for code, ((compile_s, step_s, gflop, xla_bytes, peak, what), n_params) in rows:
      rates.append(batch / step_s)
      mfu = '' if on_cpu else f'{gflop / step_s / 1e3 / args.peak_tflops:.1%}'
      ratio = f'{rates[0] / rates[1]:.2f}' if len(rates) == 2 else ''
      print(f'| {name} | {code} | {batch} | {n_params / 1e6:.2f}M | {compile_s:.1f} | '
            f'{step_s:.3f} | {1 / step_s:.2f} | {batch / step_s:.1f} | {gflop:.1f} | '
            f'{xla_bytes / 2**20:.0f} | {peak / 2**20:.0f} ({what}) | {mfu} | {ratio} |',
            flush=True)


if __name__ == '__main__':
  main()
