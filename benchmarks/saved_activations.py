"""What the training loss keeps for its backward pass, per model option (model.dtype, model.remat).

Usage:
  .venv/bin/python benchmarks/saved_activations.py [--configs=tiny/ddpmpp,vp/cifar10_ddpmpp_...]
      [--batch=N]

For each config and each option set (float32; bfloat16; remat; bfloat16 + remat) it traces the
training loss (``losses.get_loss_fn``, train=True) and reports the residuals of ``jax.vjp``: the
arrays JAX keeps from the forward pass for the backward one (activations, and the parameters the
backward pass reads: compare with the parameters' own size, also printed). Tracing only, nothing is compiled, so full-size configs take seconds.

This is the memory rematerialisation saves before XLA schedules the program: an accelerator's XLA
honours it, while XLA:CPU's buffer assignment (``train_step.py``'s "XLA buffers") was measured
unchanged by ``jax.checkpoint``, even on a plain chain of matmuls.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from score_sde import losses, models, sde_lib  # noqa: E402
from score_sde.models import utils as mutils  # noqa: E402

OPTIONS = (('float32', {}), ('bfloat16', {'dtype': 'bfloat16'}), ('remat', {'remat': True}),
           ('bfloat16 remat', {'dtype': 'bfloat16', 'remat': True}))


def saved_bytes(config, batch: int) -> tuple[int, int, int]:
  """(bytes, count) of the vjp residuals of the training loss with respect to the parameters,
  and the parameters' bytes."""
  sde, model = sde_lib.get_sde(config), models.get_model(config)
  s, c = config.data.image_size, config.data.num_channels
  params = jax.eval_shape(lambda: mutils.init_params(jax.random.PRNGKey(0), model, (s, s, c)))
  x = jax.ShapeDtypeStruct((batch, s, s, c), jnp.float32)
  loss_fn = losses.get_loss_fn(sde, model, train=True, continuous=config.training.continuous)

  def residuals(params, x):
    _, vjp_fn = jax.vjp(lambda p: loss_fn(p, x, jax.random.PRNGKey(0), 0)[0], params)
    return vjp_fn
  leaves = jax.tree.leaves(jax.eval_shape(residuals, params, x))
  nbytes = lambda tree: sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))
  return nbytes(leaves), len(leaves), nbytes(params)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--configs', default='tiny/ddpmpp,tiny/ncsnpp,vp/cifar10_ddpmpp_continuous,'
                      've/cifar10_ncsnpp_continuous')
  parser.add_argument('--batch', type=int, default=8)
  args = parser.parse_args()
  print(f'# {datetime.datetime.now():%Y-%m-%d %H:%M}  JAX {jax.__version__}; batch {args.batch}; '
        'vjp residuals of the training loss')
  print('| config | options | saved for backward (MiB) | arrays | vs float32 | parameters (MiB) |')
  print('|---|---|---|---|---|---|')
  for name in args.configs.split(','):
    base = None
    for label, fields in OPTIONS:
      config = importlib.import_module('configs.' + name.replace('/', '.')).get_config()
      for key, value in fields.items():
        setattr(config.model, key, value)
      size, count, param_bytes = saved_bytes(config, args.batch)
      base = base or size
      print(f'| {name} | {label} | {size / 2**20:.1f} | {count} | {size / base:.2f} | '
            f'{param_bytes / 2**20:.1f} |', flush=True)


if __name__ == '__main__':
  main()
