"""Image score networks: exact parameter counts of the paper's models, tiny forward / backward
passes of every architecture, FIR resampling identities, one training step, clear errors."""
from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import losses, models, sde_lib, train_state
from score_sde.models import ncsnpp, ncsnv2
from score_sde.models import up_or_down_sampling as ups


def _config(name):
  return importlib.import_module('configs.' + name).get_config()


def _param_count(config) -> int:
  model = models.get_model(config)
  s, c = config.data.image_size, config.data.num_channels
  x = jax.ShapeDtypeStruct((1, s, s, c), jnp.float32)
  labels = jax.ShapeDtypeStruct((1,), jnp.float32)
  rngs = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}
  variables = jax.eval_shape(lambda x, l: model.init(rngs, x, l, train=False), x, labels)
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(variables['params']))


# Parameter counts of the paper code's models for these configs (params only).
@pytest.mark.parametrize('name, count', [
    ('vp.cifar10_ddpmpp_continuous', 61_804_419),
    ('vp.cifar10_ddpmpp_deep_continuous', 106_632_579),
    ('ve.cifar10_ncsnpp_continuous', 62_758_915),
    ('ve.cifar10_ncsnpp_deep_continuous', 107_587_075),
    ('ve.celebahq_256_ncsnpp_continuous', 65_574_549),
    ('vp.ddpm.cifar10_continuous', 35_218_947),
])
def test_paper_parameter_counts(name, count):
  assert _param_count(_config(name)) == count


# DDPM++ is covered by test_one_training_step (one compile instead of two).
TINY = ['ncsnpp', 'ncsnpp_skip', 'ddpm', 'ncsnv2']


def _random_params(model, shape, scale=0.05):
  """Random parameters shaped as model.init's, without running init (eager init is slow)."""
  x = jax.ShapeDtypeStruct((1,) + tuple(shape), jnp.float32)
  labels = jax.ShapeDtypeStruct((1,), jnp.float32)
  tree = jax.eval_shape(lambda x, l: model.init(jax.random.PRNGKey(0), x, l), x, labels)['params']
  rng = np.random.default_rng(1)     # numpy: one eager jax.random call per shape compiles each
  return jax.tree.map(lambda l: jnp.asarray(scale * rng.standard_normal(l.shape), jnp.float32),
                      tree)


def _labels(config, batch):
  """Labels as models.utils makes them: sigma(t) for Fourier NCSN++, indices otherwise."""
  if config.model.name == 'ncsnpp' and config.model.embedding_type == 'fourier':
    return jnp.linspace(0.1, 20.0, batch)
  return jnp.arange(batch) * 37 % config.model.num_scales


@pytest.mark.parametrize('name', TINY)
def test_tiny_forward_and_gradient(name):
  config = _config('tiny.' + name)
  model = models.get_model(config)
  s, c = config.data.image_size, config.data.num_channels
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, s, s, c))
  labels = _labels(config, 2)
  params = _random_params(model, (s, s, c))

  def loss(p):
    out = model.apply({'params': p}, x, labels, train=True,
                      rngs={'dropout': jax.random.PRNGKey(2)})
    return jnp.sum(out**2), out

  (value, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  assert out.shape == x.shape
  assert np.isfinite(np.asarray(out)).all()
  norms = {jax.tree_util.keystr(k): float(jnp.linalg.norm(g))
           for k, g in jax.tree_util.tree_leaves_with_path(grads)}
  assert np.isfinite(list(norms.values())).all()
  # Every parameter takes part, but the fixed random Fourier features.
  assert {k for k, v in norms.items() if v == 0} <= {"['GaussianFourierProjection_0']['W']"}


@pytest.mark.parametrize('depth, size', [('ncsnv2_128', 8), ('ncsnv2_256', 16)])
def test_ncsnv2_deeper_variants(depth, size):
  stages, refine_mult = ncsnv2.ARCHITECTURES[depth]
  model = ncsnv2.NCSNv2(stages=stages, refine_mult=refine_mult, nf=4, num_scales=10)
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  out, variables = jax.eval_shape(
      lambda x: model.init_with_output(jax.random.PRNGKey(0), x, jnp.array([3])), x)
  assert out.shape == x.shape
  # RefineBlocks of 4 nf, 2 nf, ..., nf channels: the coarsest RefineBlock's CRP convs.
  coarse = variables['params']['RefineBlock_0']['CRPBlock_0']['Conv_0']['kernel']
  assert coarse.shape == (3, 3, 4 * refine_mult[0], 4 * refine_mult[0])


def test_scale_by_sigma_divides_by_the_label_sigma():
  """Positional NCSN++ with scale_by_sigma: output / sigma_i, sigma_i the SMLD table's i-th."""
  kwargs = dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
                embedding_type='positional', sigma_min=0.01, sigma_max=50.0, num_scales=10)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 3))
  labels = jnp.array([0, 9])
  params = _random_params(ncsnpp.NCSNpp(**kwargs), (8, 8, 3))
  both = jax.jit(lambda p: [ncsnpp.NCSNpp(scale_by_sigma=flag, **kwargs).apply({'params': p}, x, labels)
                            for flag in (False, True)])
  plain, scaled = both(params)
  np.testing.assert_allclose(scaled[0], plain[0] / 50.0, rtol=1e-5)
  np.testing.assert_allclose(scaled[1], plain[1] / 0.01, rtol=1e-5)


def test_fir_resampling_identities():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
  # A box filter (1, 1) is nearest-neighbour upsampling and 2x2 average pooling.
  np.testing.assert_allclose(ups.upsample_2d(x, (1, 1)), ups.naive_upsample_2d(x), atol=1e-6)
  np.testing.assert_allclose(ups.downsample_2d(x, (1, 1)), ups.naive_downsample_2d(x), atol=1e-6)
  # The normalised (1, 3, 3, 1) filter keeps constants away from the borders.
  ones = jnp.ones((1, 8, 8, 1))
  np.testing.assert_allclose(ups.upsample_2d(ones, (1, 3, 3, 1))[:, 2:-2, 2:-2], 1.0, rtol=1e-6)
  np.testing.assert_allclose(ups.downsample_2d(ones, (1, 3, 3, 1))[:, 1:-1, 1:-1], 1.0, rtol=1e-6)
  # The fused conv-downsample with a centred delta kernel is the plain FIR downsampling.
  delta = jnp.zeros((3, 3, 3, 3)).at[1, 1].set(jnp.eye(3))
  np.testing.assert_allclose(ups.conv_downsample_2d(x, delta, (1, 3, 3, 1)),
                             ups.downsample_2d(x, (1, 3, 3, 1)), atol=1e-5)
  assert ups.upsample_conv_2d(x, delta, (1, 3, 3, 1)).shape == (2, 16, 16, 3)


@pytest.mark.parametrize('name', ['ddpmpp'])
def test_one_training_step(name):
  config = _config('tiny.' + name)
  config.optim.warmup = 0   # warm-up starts from lr = 0: the first step would not move
  sde = sde_lib.get_sde(config)
  model = models.get_model(config)
  optimizer = train_state.get_optimizer(config.optim)
  s = config.data.image_size
  params = _random_params(model, (s, s, 3))
  state = train_state.TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                            opt_state=optimizer.init(params))
  train_step, _ = losses.get_step_fns(config, sde, model, optimizer)
  batch = {'image': jax.random.uniform(jax.random.PRNGKey(1), (4, s, s, 3)) * 2 - 1}
  new_state, metrics = jax.jit(train_step)(state, batch, jax.random.PRNGKey(2))
  assert int(new_state.step) == 1 and np.isfinite(float(metrics['loss']))
  # Adam moves the parameters with a non-zero gradient: nearly all (the attention's query bias,
  # for one, shifts every logit of a query equally and gets none).
  moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()) > 1e-6,
                                 new_state.params, state.params)
  assert np.mean(jax.tree_util.tree_leaves(moved)) > 0.9


def _tiny_ncsnpp(**overrides):
  kwargs = dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0)
  kwargs.update(overrides)
  return ncsnpp.NCSNpp(**kwargs)


@pytest.mark.parametrize('overrides, shape, message', [
    ({}, (1, 9, 9, 3), 'divisible by 2'),
    ({}, (1, 8, 8, 1), 'built for 3 channels'),
    ({'resblock_type': 'resnet'}, (1, 8, 8, 3), "valid: \\['ddpm', 'biggan'\\]"),
    ({'embedding_type': 'learned'}, (1, 8, 8, 3), "valid: \\['fourier', 'positional'\\]"),
    ({'progressive': 'skip'}, (1, 8, 8, 3), 'output_skip'),
    ({'progressive_input': 'skip'}, (1, 8, 8, 3), 'input_skip'),
    ({'progressive_combine': 'max'}, (1, 8, 8, 3), "'cat', 'sum'"),
    ({'nonlinearity': 'gelu'}, (1, 8, 8, 3), 'swish'),
])
def test_ncsnpp_bad_input(overrides, shape, message):
  with pytest.raises(ValueError, match=message):
    _tiny_ncsnpp(**overrides).init(jax.random.PRNGKey(0), jnp.ones(shape), jnp.ones((1,)))


def test_other_bad_input():
  config = _config('tiny.ddpm')
  with pytest.raises(ValueError, match='divisible by 2'):
    models.get_model(config).init(jax.random.PRNGKey(0), jnp.ones((1, 7, 8, 3)), jnp.ones((1,)))
  config.model.name = 'ncsnv3'
  with pytest.raises(ValueError, match='ncsnv2_64'):
    models.get_model(config)
  with pytest.raises(ValueError, match='InstanceNorm\\+\\+'):
    ncsnv2.NCSNv2(nf=4, normalization='BatchNorm').init(
        jax.random.PRNGKey(0), jnp.ones((1, 8, 8, 3)), jnp.ones((1,)))
