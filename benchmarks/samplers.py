"""NFE-versus-error of every sampler on the 8-mode Gaussian mixture, driven by its exact score.

Usage:  .venv/bin/python benchmarks/samplers.py [--num_samples=20000] [--quick] [--overhead_only]
        [--sde=vp,subvp,ve] [--match=SUBSTRING_OF_SAMPLER_LABEL]

Error metric (``score_sde.sampling.mixture_fit``): samples are assigned to the nearest mode;
``w_err`` is the largest per-mode weight error, ``s_err`` the largest |within-mode std / true
std - 1|, and ``z`` the largest of all these errors in units of the standard deviation they
have for the same number of exact samples. The "exact" rows are the noise floor: the same
metric for independent exact-sample sets of the same size. Then the loop overhead: wall time
per score evaluation of each sampler with a trivial score (s = -x) and with the mixture score,
beside the cost of the score evaluations alone.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import default_toy
from score_sde import sampling, sde_lib
from score_sde.datasets import toy
from score_sde.evaluation.mixture_fit import mixture_fit

GMM = toy.gaussian_mixture()   # 8 modes, radius 0.8, std 0.08
SDES = {
    'vp': sde_lib.VPSDE(),
    'subvp': sde_lib.SubVPSDE(),
    've': sde_lib.VESDE(sigma_min=0.01, sigma_max=3.0),
}


def sweeps(quick: bool):
  """(label, sampling fields, list of values for the step-count field) per sampler."""
  steps = lambda full, short: short if quick else full
  return [
      ('pc euler_maruyama', dict(method='pc', predictor='euler_maruyama', corrector='none'),
       'num_steps', steps([10, 30, 100, 300, 1000], [10, 100])),
      ('pc reverse_diffusion+langevin', dict(method='pc', predictor='reverse_diffusion',
                                             corrector='langevin'),
       'num_steps', steps([25, 50, 100, 300, 1000], [25, 100])),   # VP's chain needs N > 20
      ('ode dopri5 (rtol=atol)', dict(method='ode'), 'rtol', steps([1e-2, 1e-3, 1e-4, 1e-5], [1e-3])),
      ('ddim', dict(method='ddim'), 'num_steps', steps([5, 10, 20, 50, 100], [10])),
      ('dpm_solver++ 2M', dict(method='dpm_solver', order=2), 'num_steps',
       steps([5, 8, 10, 15, 20, 30, 50], [10])),
      ('dpm_solver++ 3M', dict(method='dpm_solver', order=3), 'num_steps',
       steps([5, 6, 8, 10, 12, 15, 20, 30, 50], [10])),
      ('dpm_solver++ 2M (edm rho=7)', dict(method='dpm_solver', order=2, time_schedule='edm'),
       'num_steps', steps([6, 8, 10, 12, 15], [10])),
      ('heun (edm rho=7)', dict(method='heun'), 'num_steps', steps([3, 4, 5, 6, 8, 10, 13, 18, 25], [6])),
  ]


def build(sde, n, fields):
  config = default_toy.get_config()
  config.sampling.num_steps = None
  for key, value in fields.items():
    setattr(config.sampling, key, value)
  if fields.get('method') == 'ode':
    config.sampling.atol = config.sampling.rtol
  return sampling.get_sampler(config, sde, (n, 2))


def run_jitted(sampler, score_fn, seed):
  fn = jax.jit(lambda rng: sampler(rng, score_fn))
  samples, nfe = fn(jax.random.PRNGKey(seed))
  return np.asarray(samples), int(nfe), fn


def fmt(fit):
  return f"z={fit['z']:6.2f}  w_err={fit['weight_err']:.4f}  s_err={fit['std_err']:.4f}"


def noise_floor(n, seeds=5):
  fits = [mixture_fit(GMM.sample(jax.random.PRNGKey(1000 + s), n), GMM) for s in range(seeds)]
  return {k: float(np.mean([f[k] for f in fits])) for k in fits[0]}


def accuracy(n, quick, sde_names, match):
  floor = noise_floor(n)
  print(f'\n### NFE vs error, {n} samples (exact-sample noise floor, mean of 5 sets: {fmt(floor)})')
  for sde_name in sde_names:
    sde = SDES[sde_name]
    print(f'\n{sde_name}  ({type(sde).__name__})')
    print(f"  {'sampler':32s} {'setting':>16s} {'NFE':>6s}   error")
    for label, fields, key, values in sweeps(quick):
      if match not in label:
        continue
      for value in values:
        samples, nfe, _ = run_jitted(build(sde, n, dict(fields, **{key: value})),
                                     GMM.score_fn(sde), seed=0)
        print(f'  {label:32s} {key + "=" + str(value):>16s} {nfe:6d}   {fmt(mixture_fit(samples, GMM))}')
    print(f"  {'exact samples (noise floor)':32s} {'':>16s} {'':>6s}   {fmt(floor)}")


def timed(fn, repeats=5):
  jax.block_until_ready(fn(jax.random.PRNGKey(0)))   # compile
  best = np.inf
  for r in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(jax.random.PRNGKey(r + 1)))
    best = min(best, time.perf_counter() - start)
  return best


def score_only_time(score_fn, n, nfe):
  """Wall time of ``nfe`` chained score evaluations on an (n, 2) batch in one scan."""
  def body(x, t):
    return x + 1e-3 * score_fn(x, jnp.full((n,), t)), None
  fn = jax.jit(lambda rng: jax.lax.scan(body, jax.random.normal(rng, (n, 2)),
                                        jnp.linspace(1.0, 1e-3, nfe))[0])
  return timed(fn)


def overhead(n):
  sde = SDES['ve']
  trivial = lambda x, t: -x
  print(f'\n### Loop overhead, VE, {n} samples (best of 5 runs, compile excluded)')
  print(f"  {'sampler':32s} {'NFE':>5s} {'trivial score':>15s} {'mixture score':>15s} "
        f"{'score calls alone':>18s} {'overhead/NFE':>13s}")
  cases = [('pc euler_maruyama', dict(method='pc', num_steps=200)),
           ('pc reverse_diffusion+langevin', dict(method='pc', predictor='reverse_diffusion',
                                                  corrector='langevin', num_steps=100)),
           ('ode dopri5 rtol=1e-5', dict(method='ode')),
           ('dpm_solver++ 3M', dict(method='dpm_solver', order=3, num_steps=200)),
           ('heun', dict(method='heun', num_steps=100))]
  for label, fields in cases:
    sampler = build(sde, n, fields)
    _, nfe, fn_gmm = run_jitted(sampler, GMM.score_fn(sde), 0)
    _, _, fn_trivial = run_jitted(sampler, trivial, 0)
    t_trivial, t_gmm = timed(fn_trivial), timed(fn_gmm)
    t_score = score_only_time(GMM.score_fn(sde), n, nfe)
    print(f'  {label:32s} {nfe:5d} {1e6 * t_trivial / nfe:12.1f} us {1e6 * t_gmm / nfe:12.1f} us '
          f'{1e6 * t_score / nfe:15.1f} us {1e6 * (t_gmm - t_score) / nfe:10.1f} us')


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--num_samples', type=int, default=20000)
  parser.add_argument('--quick', action='store_true', help='a few settings only (smoke run)')
  parser.add_argument('--sde', default='vp,subvp,ve', help='comma-separated subset of vp,subvp,ve')
  parser.add_argument('--match', default='', help='only samplers whose label contains this')
  parser.add_argument('--overhead_only', action='store_true', help='skip the NFE-vs-error sweep')
  args = parser.parse_args()
  print(f'## Samplers benchmark: {platform.machine()}, {os.cpu_count()} CPU cores, '
        f'JAX {jax.__version__} on {jax.devices()[0].platform}, float32')
  if not args.overhead_only:
    accuracy(args.num_samples, args.quick, args.sde.split(','), args.match)
  if not args.match:
    overhead(args.num_samples)


if __name__ == '__main__':
  main()
