"""Class guidance and inpainting on closed-form data, and on a trained class-conditional model.

Usage:  .venv/bin/python benchmarks/guidance.py [--num_samples=10000] [--quick]
        [--workdir=RUN --config=configs/vp/toy_gaussian_mixture_conditional.py]
        [--classifier_workdir=RUN]  [--picture=docs/guidance_toy.png]

1. Classifier-free guidance on exact scores: the 8-mode mixture with component k in class
   k mod 2 (``toy.gaussian_mixture``, std 0.08: classes far apart; std 0.25: classes overlap).
   Share of samples whose nearest mode belongs to the requested class, against the guidance
   scale w (and the same share for exact samples of p(x | y), the w = 0 target), and for w = 0
   the fit to p(x | y) (``mixture_fit`` z; exact-sample noise floor beside it).
2. Guidance interval: the share at w = 4 when guidance acts only for sigma in a range.
3. Inpainting (the paper's replacement method, ``controllable``) of a 2-D Gaussian with
   correlation rho, x_1 observed: mean and variance of x_2 against the exact conditional.
4. (--workdir) a trained class-conditional model: share of guided samples in the requested
   class against w, and of its unconditional samples; (--picture) a PNG of them.
5. (--workdir and --classifier_workdir) classifier guidance of that model's unconditional score
   with the classifier trained there: the same share against the classifier scale.
"""
from __future__ import annotations

import argparse
import importlib
import math
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import default_toy
from score_sde import sampling, sde_lib
from score_sde.sampling import controllable_generation as controllable
from score_sde.sampling import guidance
from score_sde.datasets import toy
from score_sde.evaluation.mixture_fit import mixture_fit

C = 2
SDES = {'vp': sde_lib.VPSDE(), 've': sde_lib.VESDE(sigma_min=0.01, sigma_max=3.0)}
SCALES = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]


def dpm_sampler(sde, n, num_steps):
  config = default_toy.get_config()
  config.sampling.method, config.sampling.order, config.sampling.num_steps = 'dpm_solver', 3, \
      num_steps
  return sampling.get_sampler(config, sde, (n, 2))


def share_in_class(x, gmm, labels):
  k = np.argmin(((np.asarray(x)[:, None] - np.asarray(gmm.means)[None]) ** 2).sum(-1), axis=1)
  return float(np.mean(k % C == np.asarray(labels)))


def exact_cfg(n, quick):
  print('### 1. Classifier-free guidance on exact scores (DPM-Solver++ 3M, 50 steps; label 0)\n')
  for std in (0.08, 0.25):
    gmm = toy.gaussian_mixture(std=std)
    exact = gmm.class_mixture(0, C).sample(jax.random.PRNGKey(99), n)
    # mixture_fit assigns samples to the nearest mode: meaningful for separated modes only.
    separated = std < 0.1
    floor = mixture_fit(gmm.class_mixture(0, C).sample(jax.random.PRNGKey(98), n),
                        gmm.class_mixture(0, C))['z']
    share = share_in_class(exact, gmm, np.zeros(n))
    print(f'mixture std {std}: exact samples of p(x | y=0): share in class {share:.4f}' +
          (f'; noise floor z = {floor:.2f}' if separated else '') + '\n')
    print('| SDE | ' + ' | '.join(f'w={w:g}' for w in SCALES) + (' | z at w=0 |' if separated
                                                                   else ' |'))
    print('|---|' + '---|' * (len(SCALES) + separated))
    for name, sde in SDES.items():
      sampler = dpm_sampler(sde, n, 50)
      labels = jnp.zeros((n,), jnp.int32)
      labelled = lambda x, t, y: gmm.class_score(x, t, y, C, sde)

      @jax.jit
      def run(w):
        return sampler(jax.random.PRNGKey(1), guidance.classifier_free_score_fn(
            labelled, sde, labels, C, w))[0]
      shares, z0 = [], None
      for w in SCALES:
        x = np.asarray(run(jnp.float32(w)))
        shares.append(share_in_class(x, gmm, labels))
        if w == 0:
          z0 = mixture_fit(x, gmm.class_mixture(0, C))['z']
      print(f'| {name} | ' + ' | '.join(f'{s:.4f}' for s in shares) +
            (f' | {z0:.2f} |' if separated else ' |'))
    print()


def interval(n):
  print('### 2. Guidance interval (mixture std 0.25, w = 4, VE; sigma = s(t) / m(t))\n')
  gmm, sde = toy.gaussian_mixture(std=0.25), SDES['ve']
  sampler = dpm_sampler(sde, n, 50)
  labels = jnp.zeros((n,), jnp.int32)
  labelled = lambda x, t, y: gmm.class_score(x, t, y, C, sde)
  print('| sigma interval | share in class |\n|---|---|')
  for lo, hi in [(0.0, math.inf), (0.0, 0.0), (0.0, 0.1), (0.1, 0.5), (0.5, math.inf),
                 (0.2, 1.0)]:
    fn = guidance.classifier_free_score_fn(labelled, sde, labels, C, 4.0, lo, hi)
    x = np.asarray(jax.jit(lambda r: sampler(r, fn)[0])(jax.random.PRNGKey(1)))
    print(f'| [{lo:g}, {hi:g}] | {share_in_class(x, gmm, labels):.4f} |')
  print()


def inpainting(n):
  print('### 3. Inpainting a 2-D Gaussian (unit variances, correlation rho; x_1 = 1 observed; '
        'PC Euler-Maruyama, 1000 steps)\n')
  print('| SDE | rho | exact mean of x_2 | inpainted | exact var | inpainted |\n'
        '|---|---|---|---|---|---|')
  for name, sde in [('vp', sde_lib.VPSDE()), ('subvp', sde_lib.SubVPSDE()),
                    ('ve', sde_lib.VESDE(sigma_min=0.01, sigma_max=5.0))]:
    for rho in (0.0, 0.3, 0.6, 0.9):
      cov = jnp.array([[1.0, rho], [rho, 1.0]])

      def score_fn(x, t):
        m, s = sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)
        cov_t = m[:, 0, None, None]**2 * cov + s[:, None, None]**2 * jnp.eye(2)
        return -jnp.linalg.solve(cov_t, x[..., None])[..., 0]
      inpaint = controllable.get_inpainter(sde, (n, 2))
      image = jnp.broadcast_to(jnp.array([1.0, 0.0]), (n, 2))
      x = np.asarray(jax.jit(lambda r: inpaint(r, score_fn, image, jnp.array([1.0, 0.0]))[0])(
          jax.random.PRNGKey(0)))[:, 1]
      print(f'| {name} | {rho} | {rho:.3f} | {x.mean():.3f} | {1 - rho**2:.3f} | {x.var():.3f} |')
  print()


def trained(args):
  """Guided samples of a trained class-conditional model, per requested class."""
  from score_sde import models
  sys.argv = sys.argv[:1]
  import sample as sample_cli   # restore_ema_params
  config = importlib.import_module(args.config.replace('/', '.').removesuffix('.py')).get_config()
  sde = sde_lib.get_sde(config)
  model = models.get_model(config)
  step, params = sample_cli.restore_ema_params(config, args.workdir)
  gmm = toy.gaussian_mixture()
  n = args.num_samples
  labels = jnp.arange(n) % C
  cfg = config.sampling
  sampler = sampling.get_sampler(config, sde, (n, 2))
  print(f'### 4. Trained class-conditional model ({args.config}, step {step}, sampler '
        f'{cfg.method}; labels 0 and 1 alternate)\n')
  labelled = guidance.model_labelled_score_fn(sde, model, params, config.training.continuous)

  @jax.jit
  def run(w):
    return sampler(jax.random.PRNGKey(3), guidance.classifier_free_score_fn(
        labelled, sde, labels, C, w))[0]
  print('| guidance | ' + ' | '.join(f'w={w:g}' for w in SCALES) + ' |')
  print('|---|' + '---|' * len(SCALES))
  results = {w: np.asarray(run(jnp.float32(w))) for w in SCALES}
  print('| classifier-free, share in class | ' + ' | '.join(
      f'{share_in_class(results[w], gmm, labels):.4f}' for w in SCALES) + ' |')
  uncond = np.asarray(sampler(jax.random.PRNGKey(3), labelled_null(labelled, n))[0])
  print(f'\nunconditional samples of the same network (null class): share in class '
        f'{share_in_class(uncond, gmm, labels):.4f} (0.5 = no class information)')
  if args.picture:
    picture(results, labels, args.picture)
  print()


def trained_classifier(args):
  """Classifier guidance of the same network's unconditional score (null class)."""
  from score_sde import checkpointing, models
  from score_sde.models import classifier as classifiers
  sys.argv = sys.argv[:1]
  import sample as sample_cli
  config = importlib.import_module(args.config.replace('/', '.').removesuffix('.py')).get_config()
  sde = sde_lib.get_sde(config)
  model = models.get_model(config)
  step, params = sample_cli.restore_ema_params(config, args.workdir)
  clf, clf_params = checkpointing.load_classifier(config, args.classifier_workdir)
  n = args.num_samples
  labels = jnp.arange(n) % C
  sampler = sampling.get_sampler(config, sde, (n, 2))
  gmm = toy.gaussian_mixture()
  print(f'### 5. Classifier guidance: the model above (null class) + the MLP classifier of '
        f'{args.classifier_workdir} (sampler {config.sampling.method})\n')

  @jax.jit
  def run(params, clf_params, scale):
    labelled = guidance.model_labelled_score_fn(sde, model, params, config.training.continuous)
    logit_fn = classifiers.get_logit_fn(sde, clf, clf_params)
    fn = guidance.classifier_guided_score_fn(labelled_null(labelled, n), logit_fn, labels, scale)
    return sampler(jax.random.PRNGKey(3), fn)[0]
  scales = (0.0, 1.0, 2.0, 4.0, 8.0)
  row = [share_in_class(np.asarray(run(params, clf_params, jnp.float32(s))), gmm, labels)
         for s in scales]
  print('| classifier scale | ' + ' | '.join(f'{s:g}' for s in scales) + ' |\n|---|'
        + '---|' * len(scales))
  print('| share in class | ' + ' | '.join(f'{r:.4f}' for r in row) + ' |\n')


def labelled_null(labelled, n):
  return lambda x, t: labelled(x, t, jnp.full((x.shape[0],), C, jnp.int32))


def picture(results, labels, path):
  from score_sde import plotting
  plt = plotting.plt
  shown = [0.0, 1.0, 4.0]
  fig, axes = plt.subplots(1, len(shown), figsize=(3.4 * len(shown), 3.6))
  for ax, w in zip(axes, shown):
    for y in range(C):
      pts = results[w][np.asarray(labels) == y][:1500]
      ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.5, color=f'C{y}', label=f'asked y = {y}')
    ax.set_xlim(-1.3, 1.3)
    ax.set_ylim(-1.3, 1.3)
    ax.set_aspect('equal')
    ax.set_title(f'guidance scale w = {w:g}')
  axes[0].legend(markerscale=8, loc='lower left', fontsize=7)
  fig.suptitle('class-conditional MLP on the labelled 8-mode mixture (classes alternate)')
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  print(f'Wrote {path}')


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--num_samples', type=int, default=10000)
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--workdir')
  parser.add_argument('--config', default='configs/vp/toy_gaussian_mixture_conditional.py')
  parser.add_argument('--classifier_workdir')
  parser.add_argument('--picture')
  parser.add_argument('--only', default='1,2,3,4,5')
  args = parser.parse_args()
  print(f'# guidance benchmark  ({platform.processor() or platform.machine()}, JAX '
        f'{jax.__version__}, {jax.devices()[0].platform}, {time.strftime("%Y-%m-%d %H:%M")})\n')
  parts = set(args.only.split(','))
  t0 = time.time()
  if '1' in parts:
    exact_cfg(args.num_samples, args.quick)
  if '2' in parts:
    interval(args.num_samples)
  if '3' in parts:
    inpainting(args.num_samples)
  if '4' in parts and args.workdir:
    trained(args)
  if '5' in parts and args.workdir and args.classifier_workdir:
    trained_classifier(args)
  print(f'total {time.time() - t0:.0f} s')


if __name__ == '__main__':
  main()
