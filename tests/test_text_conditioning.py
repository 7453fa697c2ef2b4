"""Context conditioning end to end: the conditional UNet from the config, contexts through the
train step (with label-style dropout to the null context) and through the one draw loop with
classifier-free guidance against a null context."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import generation, losses, models, sde_lib, train_state
from score_sde.errors import ConfigError, DataError
from score_sde.models import unet_condition
from score_sde.models import utils as mutils
from tests.helpers import random_params, tiny_context_config, tiny_toy_config

B, L, D = 4, 4, 8
ONE = jax.devices()[:1]   # one device: one compilation's worth of CPU time


@pytest.fixture(scope='module')
def tiny():
  config = tiny_context_config()
  model = models.get_model(config)
  return config, model, random_params(unet_condition.param_shapes(model, L))


def _contexts(seed):
  return np.random.default_rng(seed).standard_normal((B, L, D)).astype(np.float32)


def test_the_config_builds_the_conditional_unet():
  config = tiny_context_config()
  model = models.get_model(config)
  assert isinstance(model, unet_condition.UNet2DConditionModel)
  assert (model.in_channels, model.block_out_channels, model.cross_attention_dim) == (1, (8, 16), 8)
  assert mutils.context_shape(model) == (L, D)
  assert mutils.context_shape(models.get_model(tiny_toy_config())) is None


def test_drop_context_replaces_whole_contexts_by_zeros_per_example():
  context = jnp.ones((1000, 2, 3))
  rng = jax.random.PRNGKey(0)
  dropped = losses.drop_context(rng, context, 0.25)
  per_example = np.asarray(dropped).reshape(1000, -1)
  assert set(np.unique(per_example.min(1))) == {0.0, 1.0}
  assert np.all(per_example.min(1) == per_example.max(1))   # whole contexts, not tokens
  assert abs((per_example[:, 0] == 0).mean() - 0.25) < 0.05
  # Keyed by the global example index: the second half of the batch on its own agrees.
  np.testing.assert_array_equal(losses.drop_context(rng, context[500:], 0.25, 500), dropped[500:])
  np.testing.assert_array_equal(losses.drop_context(rng, context, 0.0), context)


def test_the_step_reads_the_batch_context(tiny):
  """(The evaluation step: the same loss without the gradient's compilation, ~15 s here.)"""
  config, model, params = tiny
  sde = sde_lib.get_sde(config)
  optimizer = train_state.get_optimizer(config.optim, config.training.n_iters)
  _, step = losses.get_step_fns(config, sde, model, optimizer)
  state = train_state.new_state(params, optimizer)
  image = np.random.default_rng(1).standard_normal((B, 16, 16, 1)).astype(np.float32)
  step = jax.jit(step)
  rng = jax.random.PRNGKey(0)
  loss = [float(step(state, {'image': image, 'context': c}, rng)[1]['loss'])
          for c in (_contexts(2), _contexts(3), _contexts(2))]
  assert np.isfinite(loss[0]) and loss[0] != loss[1] and loss[0] == loss[2]
  with pytest.raises(ConfigError, match="yields no 'context'"):
    step(state, {'image': image}, rng)


def test_draw_guides_towards_the_context_and_minus_one_is_the_null_context(tiny):
  """w = -1 gives (1 + w) s(x, t, c) - w s(x, t, null) = s(x, t, null): whatever the context,
  the samples are the unconditional ones (the zero context), through the batched pass."""
  config, model, params = tiny
  sde = sde_lib.get_sde(config)
  null = np.zeros((1, L, D), np.float32)
  plain = generation.draw(generation.get_sample_fn(config, sde, model, ONE), params,
                          jax.random.PRNGKey(0), B)[0]
  config.sampling.guidance_scale = -1.0
  guided_fn = generation.get_sample_fn(config, sde, model, ONE,
                                       input_keys=('context', 'null_context'))
  drawn = [generation.draw(guided_fn, params, jax.random.PRNGKey(0), B,
                           {'context': _contexts(seed), 'null_context': null})
           for seed in (4, 5)]
  tol = 1e-5 * np.abs(plain).max()   # random weights: samples of size ~100, float32 sums
  np.testing.assert_allclose(drawn[0][0], plain, rtol=1e-4, atol=tol)
  np.testing.assert_allclose(drawn[1][0], plain, rtol=1e-4, atol=tol)
  assert drawn[0][1]['context'].shape == (B, L, D)
  assert not np.allclose(plain, generation.draw(guided_fn, params, jax.random.PRNGKey(1), B,
                                                {'context': _contexts(4), 'null_context': null})[0])


def test_contexts_a_model_cannot_take_are_one_line(tiny):
  config, model, _ = tiny
  with pytest.raises(DataError, match=r'shape \(4, 3\) per example; the model cross-attends to '
                                      r'\(4, 8\)'):
    generation.check_inputs(config, model, {'context': np.zeros((2, 4, 3))})
  toy = tiny_toy_config()
  with pytest.raises(ConfigError, match='this model takes no context'):
    generation.check_inputs(toy, models.get_model(toy), {'context': np.zeros((2, 4, 8))})


def test_scaled_linear_is_stable_diffusions_schedule():
  sde = sde_lib.VPSDE(beta_min=0.85, beta_max=12.0, N=1000, beta_schedule='scaled_linear')
  sd_betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64)**2   # SD's scheduler
  np.testing.assert_allclose(sde.discrete_betas, sd_betas, rtol=1e-5)
  t = jnp.array([0.1, 0.5, 0.9])
  np.testing.assert_allclose(jax.vmap(jax.grad(sde.integrated_beta))(t), sde.beta(t), rtol=1e-5)
  # The continuous m(t)^2 follows the chain's alpha_bar at t = i / N up to the chain's
  # O(sum beta_i^2 / 2) = 2% at the end, as the paper's linear VP follows DDPM's chain.
  i = np.array([99, 499, 999])
  np.testing.assert_allclose(np.exp(-sde.integrated_beta((i + 1) / 1000)),
                             np.cumprod(1 - sd_betas)[i], rtol=0.025)
