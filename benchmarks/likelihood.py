"""Likelihood wall time: diffrax inside one jitted graph vs the paper's scipy RK45 on the host.

The paper (yang-song/score_sde, likelihood.py) integrates the probability-flow ODE jointly with
the divergence by ``scipy.integrate.solve_ivp(method='RK45')`` on the flattened batch, calling a
jitted drift and a jitted divergence (a VJP of the drift, Hutchinson) at every evaluation and
moving the state between host and device each time. Here both methods run on the same inputs at
the same tolerances with the same closed-form score, and report time, NFE and how closely their
log-likelihoods agree:

  images   a batch of 32x32x3 images drawn from a diagonal Gaussian in [-1, 1], VP SDE, Rademacher
           Hutchinson (exact for a diagonal Jacobian, so both methods estimate the same number)
  mixture  the 8-mode 2-D Gaussian mixture, VP SDE, exact divergence (Jacobian trace)

Usage: python benchmarks/likelihood.py [--repeats 5] [--batch 64] [--mixture_batches 64,1024]
Compile time is excluded from the steady-state figures (reported apart); scipy's jitted
functions are also compiled before timing. The two methods alternate and each keeps its best run
(the machine may be shared).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy import integrate  # noqa: E402

from score_sde import likelihood, sde_lib  # noqa: E402
from score_sde.datasets import toy  # noqa: E402

EPS, RTOL, ATOL = 1e-5, 1e-5, 1e-5


def gaussian_images(batch: int, size: int, seed: int = 0):
  """Images x ~ N(mu, diag(s^2)) in the model's [-1, 1] space and their exact VP score_fn."""
  rng = np.random.default_rng(seed)
  shape = (size, size, 3)
  mu = jnp.asarray(rng.uniform(-0.4, 0.4, shape), jnp.float32)
  s = jnp.asarray(rng.uniform(0.1, 0.3, shape), jnp.float32)
  x = mu + s * jnp.asarray(rng.standard_normal((batch,) + shape), jnp.float32)
  sde = sde_lib.VPSDE()

  def score_fn(y, t):
    m, std = sde.marginal_prob(jnp.ones_like(y), t)
    var = m**2 * s**2 + sde_lib.batch_mul(std**2, jnp.ones_like(y))
    return -(y - m * mu) / var
  return sde, score_fn, x


def mixture(batch: int, seed: int = 0):
  sde = sde_lib.VPSDE()
  mix = toy.gaussian_mixture()
  return sde, mix.score_fn(sde), mix.sample(jax.random.PRNGKey(seed), batch)


def paper_likelihood(sde, score_fn, x, probe, exact: bool):
  """The paper's method: solve_ivp RK45 on the host, jitted drift and divergence on the device.

  Returns (logp (B,), nfe). Divergence: the paper's VJP form probe^T (d drift/dx)^T probe, or
  the exact trace (``likelihood.exact_divergence``) where ``exact``.
  """
  flow = sde.reverse(score_fn, probability_flow=True)
  shape, batch = x.shape, x.shape[0]
  drift_fn = jax.jit(lambda y, t: flow.sde(y, t)[0])

  def hutchinson(y, t, eps):
    grad = jax.grad(lambda v: jnp.sum(flow.sde(v, t)[0] * eps))(y)
    return jnp.sum((grad * eps).reshape(batch, -1), axis=-1)

  def trace(y, t, eps):
    del eps
    return likelihood.exact_divergence(lambda v: flow.sde(v, t)[0], y)[1]
  div_fn = jax.jit(trace if exact else hutchinson)

  def ode_func(t, state):
    y = jnp.asarray(state[:-batch].reshape(shape), jnp.float32)
    vec_t = jnp.full((batch,), t, jnp.float32)
    drift = np.asarray(drift_fn(y, vec_t), np.float64).reshape(-1)
    div = np.asarray(div_fn(y, vec_t, probe), np.float64)
    return np.concatenate([drift, div])

  init = np.concatenate([np.asarray(x, np.float64).reshape(-1), np.zeros(batch)])
  ode_func(EPS, init)    # compile both jitted functions before timing
  t0 = time.perf_counter()
  sol = integrate.solve_ivp(ode_func, (EPS, sde.T), init, rtol=RTOL, atol=ATOL, method='RK45')
  elapsed = time.perf_counter() - t0
  z = jnp.asarray(sol.y[:-batch, -1].reshape(shape), jnp.float32)
  logp = np.asarray(sde.prior_logp(z)) + sol.y[-batch:, -1]
  return logp, sol.nfev, elapsed


def ours(sde, score_fn, x, rng, hutchinson_type: str):
  """Returns a timed call of the jitted likelihood (compiled here) and the compile time."""
  fn = likelihood.get_likelihood_fn(sde, hutchinson_type=hutchinson_type, rtol=RTOL, atol=ATOL,
                                    eps=EPS)
  jitted = jax.jit(lambda r, y: fn(r, score_fn, y))
  t0 = time.perf_counter()
  jax.block_until_ready(jitted(rng, x))
  compile_s = time.perf_counter() - t0

  def timed():
    t0 = time.perf_counter()
    logp, _, nfe = jax.block_until_ready(jitted(rng, x))
    return np.asarray(logp), int(nfe), time.perf_counter() - t0
  return timed, compile_s


def run(name, sde, score_fn, x, hutchinson_type, repeats):
  """Alternates the two methods ``repeats`` times (so both see the same machine load) and keeps
  each one's fastest run, the least disturbed by other processes."""
  rng = jax.random.PRNGKey(1)
  # The same probe for both: likelihood_fn draws it from rng exactly like this.
  probe = (None if hutchinson_type == 'none'
           else jax.random.rademacher(rng, x.shape, dtype=x.dtype))
  timed, compile_s = ours(sde, score_fn, x, rng, hutchinson_type)
  ours_times, paper_times = [], []
  for _ in range(repeats):
    logp, nfe, t = timed()
    ours_times.append(t)
    paper_logp, paper_nfe, t = paper_likelihood(sde, score_fn, x, probe, hutchinson_type == 'none')
    paper_times.append(t)
  t_ours, t_paper = min(ours_times), min(paper_times)
  dim = math.prod(x.shape[1:])
  diff = np.abs(logp - paper_logp)
  return dict(name=name, shape=tuple(x.shape), t_ours=t_ours, compile_s=compile_s, nfe=nfe,
              t_paper=t_paper, paper_nfe=paper_nfe, speedup=t_paper / t_ours,
              max_abs_nats=float(diff.max()), max_abs_bpd=float(diff.max() / (dim * math.log(2))),
              mean_logp=float(logp.mean()))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--image_size', type=int, default=32)
  parser.add_argument('--mixture_batches', default='64,1024',
                      help='comma-separated batch sizes for the 2-D mixture')
  args = parser.parse_args()
  print(f'# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
        f'jax {jax.__version__} on {jax.devices()[0].platform}, load average '
        f'{os.getloadavg()[0]:.2f}; rtol = atol = {RTOL}, eps = {EPS}, best of {args.repeats}')
  rows = [run('images (Rademacher)', *gaussian_images(args.batch, args.image_size), 'rademacher',
              args.repeats),
          *(run('2-D mixture (exact trace)', *mixture(int(b)), 'none', args.repeats)
            for b in args.mixture_batches.split(','))]
  print('| workload | batch shape | diffrax, jitted (s) | NFE | scipy RK45 on host (s) | NFE '
        '| speed-up | max abs logp diff (nats) | same, bits/dim | compile (s) |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['name']} | {r['shape']} | {r['t_ours']:.3f} | {r['nfe']} | {r['t_paper']:.3f} "
          f"| {r['paper_nfe']} | {r['speedup']:.1f}x | {r['max_abs_nats']:.2e} "
          f"| {r['max_abs_bpd']:.2e} | {r['compile_s']:.1f} |")


if __name__ == '__main__':
  main()
