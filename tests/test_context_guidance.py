"""Classifier-free guidance on context embeddings, exact on a conditional Gaussian mixture.

The context of an example is an (L, D) embedding sequence whose tokens point at a class (one-hot
in the first C coordinates, as a text encoder's states would encode a prompt); the all-zero
sequence is the null context (the empty prompt). The exact conditional score reads the class
from the context, so guidance through ``context_free_score_fn`` (per-example contexts, the
batched [context; null] pass) can be checked against the mixture's closed form.
"""
import jax
import jax.numpy as jnp
import numpy as np

from configs import default_toy
from score_sde import sampling, sde_lib
from score_sde.datasets import toy
from score_sde.evaluation.mixture_fit import mixture_fit
from score_sde.sampling import guidance

GMM = toy.gaussian_mixture()                 # 8 modes, std 0.08: class k mod 2 well apart
VE = sde_lib.VESDE(sigma_min=0.01, sigma_max=3.0, N=1000)
C, L, D = 2, 4, 3
NULL = jnp.zeros((L, D))


def embed(labels) -> jax.Array:
  """(B,) classes -> (B, L, D) contexts: each token one-hot at its class, a zero last coordinate."""
  return jnp.broadcast_to(jax.nn.one_hot(jnp.asarray(labels), D)[:, None], (len(labels), L, D))


def context_score(x, t, context):
  """Exact grad_x log p_t(x | context): the class the tokens point at, or p_t(x) for null."""
  is_null = jnp.all(context == 0, axis=(1, 2))
  labels = jnp.where(is_null, C, jnp.argmax(context.mean(axis=1)[:, :C], axis=-1))
  return GMM.class_score(x, t, labels, C, VE)


def test_guided_score_is_the_closed_form_per_example():
  labels = jnp.array([0, 1, 1, 0])
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 2))
  t = jnp.full((4,), 0.3)
  s_y, s = GMM.class_score(x, t, labels, C, VE), GMM.score(x, t, VE)
  guided = jax.jit(lambda w: guidance.context_free_score_fn(
      context_score, VE, embed(labels), NULL, w)(x, t))
  for w in (0.0, 1.5):
    np.testing.assert_allclose(guided(w), (1 + w) * s_y - w * s, rtol=1e-5, atol=1e-5)


def test_scale_zero_reproduces_p_x_given_context():
  """w = 0 (traced, so the batched [context; null] pass runs) samples p(x | context) for a batch
  holding both classes' contexts: each half fits its class's sub-mixture."""
  n = 4000
  config = default_toy.get_config()
  config.sampling.method, config.sampling.order = 'dpm_solver', 3
  config.sampling.num_steps = 20
  sampler = sampling.get_sampler(config, VE, (n, 2))
  labels = jnp.arange(n) % C

  @jax.jit
  def run(scale):
    score = guidance.context_free_score_fn(context_score, VE, embed(labels), NULL, scale)
    return sampler(jax.random.PRNGKey(1), score)[0]
  x = np.asarray(run(jnp.float32(0.0)))
  for label in range(C):
    fit = mixture_fit(x[np.asarray(labels) == label], GMM.class_mixture(label, C))
    assert fit['z'] < 4.5, (label, fit)
