"""Cross-attention to a context in NCSN++ / DDPM++ (``model.context_dim``): the paper's networks
are untouched without it; with it, a zero-initialised block after each attention block that
leaves the initial network the context-free one, and the captions' words through the train
step and classifier-free guidance (configs/text/digits_ddpmpp.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.text import digits_ddpmpp
from configs.vp import digits_ddpmpp_continuous
from score_sde import losses, models, sde_lib, train_state
from score_sde.datasets import captions, contexts
from score_sde.errors import ConfigError
from score_sde.models import layerspp
from score_sde.models import utils as mutils
from score_sde.sampling import guidance
from tests.helpers import assert_zero_output_is_context_free, random_params

B, L, V = 4, 4, len(captions.DIGITS_VOCABULARY)
CROSS = 'CrossAttnBlockpp'


def _words(seed):
  """(B, L, V) word contexts of B of the digits' own captions."""
  made = captions.digits_captions()
  picked = np.random.default_rng(seed).choice(len(made), B, replace=False)
  return captions.word_contexts([made[i] for i in picked], captions.DIGITS_VOCABULARY, L)


def _paths(tree):
  return {jax.tree_util.keystr(p): np.shape(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def _without_cross(params):
  return {**params, 'net': {k: v for k, v in params['net'].items() if not k.startswith(CROSS)}}


@pytest.fixture(scope='module')
def net():
  """The config's network with random weights everywhere (the paper's init zeroes the last
  convolution: its output would not show what the blocks do)."""
  config = digits_ddpmpp.get_config()
  model = models.get_model(config)
  shapes = jax.eval_shape(lambda: mutils.init_params(jax.random.PRNGKey(0), model, (8, 8, 1)))
  return config, model, random_params(shapes)


def test_without_context_dim_the_parameters_are_the_papers(net):
  config, model, params = net
  plain_config = digits_ddpmpp_continuous.get_config()
  plain = models.get_model(plain_config)
  assert mutils.context_shape(plain) is None and mutils.context_shape(model) == (L, V)
  plain_shapes = jax.eval_shape(
      lambda: mutils.init_params(jax.random.PRNGKey(0), plain, (8, 8, 1)))
  crosses = {k for k in params['net'] if k.startswith(CROSS)}
  assert crosses == {f'{CROSS}_{i}' for i in range(3)}   # at 8x8 down, middle, 8x8 up
  assert _paths(plain_shapes) == _paths(_without_cross(params))


def test_the_initial_network_is_the_context_free_one_and_then_reads_the_context(net):
  """The block's output projection (NIN_3) starts near zero; with it so (and random weights
  elsewhere) the network is the context-free one, with it random the output reads the words."""
  config, model, noisy = net
  block = layerspp.CrossAttnBlockpp(num_heads=2)
  h, words = jnp.ones((1, 4, 4, 8)), jnp.asarray(_words(0)[:1])
  init = block.init(jax.random.PRNGKey(0), h, words)['params']
  assert float(jnp.abs(init['NIN_3']['W']).max()) < 1e-4
  np.testing.assert_allclose(block.apply({'params': init}, h, words), h, atol=1e-5)
  plain = models.get_model(digits_ddpmpp_continuous.get_config())
  zero_out = lambda v: {**v, 'NIN_3': jax.tree.map(jnp.zeros_like, v['NIN_3'])}
  at_init = {**noisy, 'net': {k: zero_out(v) if k.startswith(CROSS) else v
                              for k, v in noisy['net'].items()}}
  x = jax.random.normal(jax.random.PRNGKey(1), (B, 8, 8, 1))
  sigma = jnp.full((B,), 0.7)
  out = jax.jit(lambda p, c: model.apply({'params': p}, x, sigma, context=c))
  assert_zero_output_is_context_free(out, at_init, noisy, [_words(2), _words(3)],
                                     plain.apply({'params': _without_cross(noisy)}, x, sigma))


def test_guidance_at_zero_is_the_conditional_score(net):
  config, model, params = net
  sde = sde_lib.get_sde(config)
  x = jax.random.normal(jax.random.PRNGKey(5), (B, 8, 8, 1))
  t = jnp.full((B,), 0.5)
  context = _words(6)
  conditional = guidance.model_context_score_fn(sde, model, params)(x, t, jnp.asarray(context))
  guided = guidance.context_free_score_fn(guidance.model_context_score_fn(sde, model, params),
                                          sde, context, np.zeros((L, V)), 0.0)(x, t)
  assert guided.shape == x.shape
  np.testing.assert_allclose(guided, conditional, rtol=1e-5, atol=1e-5)


def test_one_train_step_on_the_captions_moves_the_cross_attention(net):
  config, model, params = net
  sde = sde_lib.get_sde(config)
  optim = config.optim.copy_and_resolve_references()
  optim.warmup = 0   # the first step of the warm-up has learning rate 0
  optimizer = train_state.get_optimizer(optim, config.training.n_iters)
  step, _ = losses.get_step_fns(config, sde, model, optimizer)
  state = train_state.new_state(params, optimizer)
  image = np.random.default_rng(7).uniform(-1, 1, (B, 8, 8, 1)).astype(np.float32)
  new, metrics = jax.jit(step)(state, {'image': image, 'context': _words(8)},
                               jax.random.PRNGKey(0))
  assert np.isfinite(float(metrics['loss']))
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new.params['net'][f'{CROSS}_1'],
                       params['net'][f'{CROSS}_1'])
  assert min(jax.tree.leaves(moved)) > 0


def test_captions_need_the_context_dim():
  config = digits_ddpmpp.get_config()
  contexts.check_config(config)
  config.model.context_dim = None
  with pytest.raises(ConfigError, match="model 'ncsnpp' takes no context"):
    contexts.check_config(config)
