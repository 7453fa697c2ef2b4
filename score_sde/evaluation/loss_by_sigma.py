"""The denoising loss by noise level, next to the best possible and a trivial denoiser.

Every SDE here has the marginal x(t) = m(t) y + s(t) z (y a training example, z ~ N(0, I)),
i.e. x~ = x / m = y + sigma z with sigma = s / m. A score model s_theta is a denoiser

    D_theta(x~; sigma) = (x + s^2 s_theta(x, t)) / m        (Tweedie),

and its DSM loss at t is, in the unit used here (x0-prediction MSE per dimension),

    L(sigma) = E_{y, z} |D_theta(y + sigma z; sigma) - y|^2 / d        (d = data dimensions),

the same number for every SDE family (the eps loss |s s_theta + z|^2 / d is L / sigma^2).
Two references at the same sigma:

  * the empirical optimum: for a finite training set {y_i} (N points) the data distribution is a
    mixture of points, so the minimiser of L is the posterior mean in closed form,
        D*(x~; sigma) = sum_i w_i y_i,   w = softmax_i(-|x~ - y_i|^2 / (2 sigma^2)),
    and L*(sigma) is the loss no network can beat on this data (it tends to 0 as sigma -> 0: D*
    memorises the training set);
  * the best linear (Gaussian) denoiser: the Wiener filter D_lin(x~) = mu + C (C + sigma^2 I)^-1
    (x~ - mu) with the data's mean mu and covariance C (eigenvalues lambda_k); its loss is, for
    any distribution with that covariance, exactly
        L_lin(sigma) = (1/d) sum_k sigma^2 lambda_k / (lambda_k + sigma^2),
    which tends to the data mean's loss tr(C) / d at large sigma.

``loss_by_sigma`` evaluates L, L* and L_lin on log-spaced sigma buckets (``bucket_edges``, the
same for every SDE; a bucket outside the SDE's range [sigma(eps), sigma(T)] is reported as NaN),
drawing log-uniform sigma within each bucket and the same (y, z, sigma) for all three columns.
"""
from __future__ import annotations

import functools
import math
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import sde_lib

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]

# Noise levels spanned by the project's SDEs: EDM's sigma_min to beyond VP's sigma(T) ~ 150.
SIGMA_MIN, SIGMA_MAX, NUM_BUCKETS = 0.002, 200.0, 10


def bucket_edges(sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                 num_buckets: int = NUM_BUCKETS) -> np.ndarray:
  """(num_buckets + 1,) log-spaced bucket edges in sigma."""
  return np.geomspace(sigma_min, sigma_max, num_buckets + 1)


def bucket_names(edges: np.ndarray) -> list[str]:
  """Short names of the buckets, e.g. '0.002-0.0063' (TensorBoard tags, table rows)."""
  return [f'{lo:.2g}-{hi:.2g}' for lo, hi in zip(edges[:-1], edges[1:])]


def _scale_and_std(sde, t):
  mean, std = sde.marginal_prob(jnp.ones((t.shape[0], 1), jnp.float32), t)
  return mean[:, 0], std


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=('iters',))
def time_of_sigma(sde, sigma: jax.Array, eps: float = 1e-5, iters: int = 50) -> jax.Array:
  """The time t in [eps, T] with sigma(t) = s(t) / m(t) = sigma (``sde.sigma_of_t``; clipped to
  the range), by bisection on the increasing sigma(t): any SDE, no closed-form inverse needed.
  sigma: (B,) -> t: (B,)."""
  lo = jnp.full(sigma.shape, eps, jnp.float32)
  hi = jnp.full(sigma.shape, sde.T, jnp.float32)

  def bisect(_, bounds):
    lo, hi = bounds
    mid = (lo + hi) / 2
    above = sde.sigma_of_t(mid) > sigma
    return jnp.where(above, lo, mid), jnp.where(above, mid, hi)
  lo, hi = jax.lax.fori_loop(0, iters, bisect, (lo, hi))
  return (lo + hi) / 2


def sigma_range(sde, eps: float = 1e-5) -> tuple[float, float]:
  """[sigma(eps), sigma(T)]: the noise levels the SDE trains and samples."""
  ends = sde.sigma_of_t(jnp.asarray([eps, sde.T], jnp.float32))
  return float(ends[0]), float(ends[1])


@jax.jit
def optimal_denoiser(x_tilde: jax.Array, sigma: jax.Array, data: jax.Array) -> jax.Array:
  """D*(x~; sigma) = sum_i softmax_i(-|x~ - y_i|^2 / (2 sigma^2)) y_i.

  x_tilde: (B, ...), sigma: (B,), data: (N, ...) the training set -> (B, ...)."""
  x = x_tilde.reshape(x_tilde.shape[0], -1)
  y = data.reshape(data.shape[0], -1)
  sq = (jnp.sum(x**2, 1)[:, None] - 2.0 * x @ y.T + jnp.sum(y**2, 1)[None, :])
  w = jax.nn.softmax(-sq / (2.0 * sigma[:, None]**2), axis=1)
  return (w @ y).reshape(x_tilde.shape)


def linear_denoiser_loss(sigma: np.ndarray, data: np.ndarray) -> np.ndarray:
  """L_lin(sigma) of the Wiener filter (module docstring), per dimension. sigma: (K,) -> (K,)."""
  y = np.asarray(data, np.float64).reshape(len(data), -1)
  lam = np.clip(np.linalg.eigvalsh(np.cov(y, rowvar=False, bias=True)), 0.0, None)
  s2 = np.asarray(sigma, np.float64)[:, None]**2
  return np.sum(s2 * lam / (lam + s2), axis=1) / y.shape[1]


def linear_denoiser(x_tilde: np.ndarray, sigma: np.ndarray, data: np.ndarray) -> np.ndarray:
  """D_lin(x~; sigma) = mu + C (C + sigma^2 I)^-1 (x~ - mu); (B, ...), (B,), (N, ...)."""
  y = np.asarray(data, np.float64).reshape(len(data), -1)
  mu = y.mean(0)
  lam, vec = np.linalg.eigh(np.cov(y, rowvar=False, bias=True))
  lam = np.clip(lam, 0.0, None)
  r = (np.asarray(x_tilde, np.float64).reshape(len(x_tilde), -1) - mu) @ vec
  gain = lam[None, :] / (lam[None, :] + np.asarray(sigma, np.float64)[:, None]**2)
  return (mu + (gain * r) @ vec.T).reshape(np.shape(x_tilde))


def _denoised(score_fn: ScoreFn, sde, x_tilde, t):
  """D_theta(x~; sigma(t)) = (x + s^2 score(x, t)) / m with x = m x~."""
  m, s = _scale_and_std(sde, t)
  x = sde_lib.batch_mul(m, x_tilde)
  return sde_lib.batch_mul(1.0 / m, x + sde_lib.batch_mul(s**2, score_fn(x, t)))


def _mse(a, b) -> np.ndarray:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.mean((a - b).reshape(len(a), -1)**2, axis=1)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _noisy_examples(sde, key, data, log_lo, log_hi, batch: int, eps, inside):
  """(y, t, sigma, x~) for ``batch`` examples: y from data, ln sigma ~ U(log_lo, log_hi),
  x~ = y + sigma z; inside the SDE's range sigma is the exact sigma(t) of t = time_of_sigma."""
  ki, ks, kz = jax.random.split(key, 3)
  y = data[jax.random.randint(ki, (batch,), 0, data.shape[0])]
  sigma = jnp.exp(jax.random.uniform(ks, (batch,), minval=log_lo, maxval=log_hi))
  t = time_of_sigma(sde, sigma, eps)
  sigma = jnp.where(inside, sde.sigma_of_t(t), sigma)
  return y, t, sigma, y + sde_lib.batch_mul(sigma, jax.random.normal(kz, y.shape))


def loss_by_sigma(rng, score_fn: ScoreFn, sde, data: np.ndarray, *,
                  edges: np.ndarray | None = None, num_examples: int = 256,
                  batch_size: int = 128, eps: float = 1e-5) -> dict[str, np.ndarray]:
  """The model's loss L, the empirical optimum's L* and the linear denoiser's L_lin per bucket.

  ``score_fn(x, t)``: the model's score ((B, ...), (B,) -> (B, ...)); ``data``: the training set
  (N, ...) in the model's range; per bucket ``num_examples`` (y, z, sigma) triples, y drawn
  from ``data``, sigma log-uniform within the bucket and inside ``sigma_range(sde, eps)``.
  Returns {'edges': (K + 1,), 'model', 'optimum', 'linear', 'mean': (K,) each}; 'model' is NaN
  where a bucket lies outside the SDE's range; 'mean' is the data mean's loss tr(C) / d.
  """
  edges = bucket_edges() if edges is None else np.asarray(edges, np.float64)
  data = np.asarray(data, np.float32)
  lo_sde, hi_sde = sigma_range(sde, eps)
  out = {k: np.full(len(edges) - 1, np.nan) for k in ('model', 'optimum', 'linear')}
  data_j = jnp.asarray(data)
  for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
    # The references need no SDE: outside its range they are drawn over the whole bucket.
    inside = max(lo, lo_sde) < min(hi, hi_sde)
    if inside:
      lo, hi = max(lo, lo_sde), min(hi, hi_sde)
    key = jax.random.fold_in(rng, k)
    model, optimum, linear = [], [], []
    for start in range(0, num_examples, batch_size):
      b = min(batch_size, num_examples - start)
      y, t, sigma, x_tilde = _noisy_examples(sde, jax.random.fold_in(key, start), data_j,
                                             math.log(lo), math.log(hi), b, eps, inside)
      if inside:
        model.append(_mse(_denoised(score_fn, sde, x_tilde, t), y))
      optimum.append(_mse(optimal_denoiser(x_tilde, sigma, data_j), y))
      linear.append(_mse(linear_denoiser(x_tilde, sigma, data), y))
    out['model'][k] = np.mean(np.concatenate(model)) if inside else np.nan
    out['optimum'][k] = np.mean(np.concatenate(optimum))
    out['linear'][k] = np.mean(np.concatenate(linear))
  flat = data.reshape(len(data), -1).astype(np.float64)
  out['mean'] = np.full(len(edges) - 1, np.mean(np.var(flat, axis=0)))
  out['edges'] = edges
  return out


def markdown_table(result: dict[str, np.ndarray], title: str = 'model') -> str:
  """The result as a Markdown table: per sigma bucket L, L*, L_lin, the excess L - L* and
  L / L_lin (above 1: worse than the best linear denoiser, which needs no network)."""
  rows = [f'| sigma bucket | {title} | empirical optimum | linear (Wiener) | excess over optimum '
          f'| {title} / linear |', '|---|---|---|---|---|---|']
  for name, m, o, lin in zip(bucket_names(result['edges']), result['model'], result['optimum'],
                             result['linear']):
    cells = ('-', '-') if np.isnan(m) else (f'{m - o:.3g}', f'{m / lin:.2f}')
    rows.append(f'| {name} | {m:.3g} | {o:.3g} | {lin:.3g} | {cells[0]} | {cells[1]} |'
                .replace('| nan |', '| - |'))
  return '\n'.join(rows)


def scalars(result: dict[str, np.ndarray], prefix: str = 'eval/loss_sigma_') -> dict[str, float]:
  """TensorBoard scalars: ``<prefix><bucket>`` (model) and ``<prefix><bucket>_excess`` (L - L*)
  for every bucket inside the SDE's range."""
  out = {}
  for name, m, o in zip(bucket_names(result['edges']), result['model'], result['optimum']):
    if not np.isnan(m):
      out[prefix + name] = float(m)
      out[prefix + name + '_excess'] = float(m - o)
  return out


def to_report(result: dict[str, np.ndarray]) -> dict[str, dict[str, float | None]]:
  """JSON-ready {bucket: {'model', 'optimum', 'linear'}} (None where the SDE has no such sigma)."""
  def value(v):
    return None if np.isnan(v) else float(v)
  return {name: {'model': value(m), 'optimum': value(o), 'linear': value(lin)}
          for name, m, o, lin in zip(bucket_names(result['edges']), result['model'],
                                     result['optimum'], result['linear'])}


def plot(results: dict[str, dict[str, np.ndarray]], path: str) -> str:
  """Saves a log-log plot of L(sigma) per run, with the empirical optimum and the linear
  denoiser of the first run (the same data: the same references), as a PNG."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for name, r in results.items():
    ax.plot(np.sqrt(r['edges'][:-1] * r['edges'][1:]), r['model'], marker='o', label=name)
  if results:
    r = next(iter(results.values()))
    centres = np.sqrt(r['edges'][:-1] * r['edges'][1:])
    ax.plot(centres, r['optimum'], 'k--', label='empirical optimum')
    ax.plot(centres, r['linear'], 'k:', label='linear (Wiener) denoiser')
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.set_xlabel('sigma = s(t) / m(t)')
  ax.set_ylabel('x0 MSE per dimension')
  ax.legend(fontsize=8)
  ax.grid(True, which='both', alpha=0.3)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def reference_set(batches, size: int, example_shape: tuple[int, ...]) -> np.ndarray:
  """Up to ``size`` distinct training examples (n, *example_shape) from an iterator of batches
  ({'image': (..., *example_shape)}, leading device / batch axes flattened): the finite set
  whose empirical optimum is reported. A dataset with fewer than ``size`` examples is seen
  whole once its shuffled epochs have been cycled through; for an endless one (the 2-D toys)
  the optimum is that of these ``size`` points."""
  seen, total = [], 0
  for batch in batches:
    seen.append(np.asarray(batch['image'], np.float32).reshape((-1,) + tuple(example_shape)))
    total += len(seen[-1])
    if total >= size:
      break
  x = np.concatenate(seen)
  _, first = np.unique(x.reshape(len(x), -1), axis=0, return_index=True)
  return x[np.sort(first)][:size]


def for_config(config, sde, model) -> Callable[[object, jax.Array], dict[str, np.ndarray]]:
  """``evaluate(params, rng) -> loss_by_sigma(...)`` for a model built from ``config``: the
  reference set (``eval.loss_by_sigma_reference`` distinct training examples) is drawn once,
  from its own pass over the train split (the training stream is not touched);
  ``eval.loss_by_sigma_examples`` (y, z, sigma) triples per bucket."""
  from score_sde import datasets
  from score_sde.models import utils as mutils
  ev = config.eval
  batches = datasets.get_dataset(config, 'train', num_local_devices=1)
  reference = reference_set(batches, ev.loss_by_sigma_reference, datasets.sample_shape(config))

  def evaluate(params, rng):
    score_fn = jax.jit(mutils.get_score_fn(sde, model, params,
                                           continuous=config.training.continuous))
    return loss_by_sigma(rng, score_fn, sde, reference, num_examples=ev.loss_by_sigma_examples,
                         batch_size=config.eval.batch_size)
  return evaluate
