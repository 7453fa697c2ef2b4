"""model.dtype (bf16 compute, float32 parameters) and model.remat (rematerialised blocks): the
parameter tree never changes, remat changes nothing numerically, bf16 computes every convolution
in bf16 and stays within bf16 rounding of float32."""
from __future__ import annotations

import importlib

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde.checkpointing import identity
from score_sde import config_checks, models
from score_sde.errors import ConfigError
from test_models import _random_params

TINY = ['ddpmpp', 'ncsnpp', 'ncsnpp_skip', 'ddpm', 'ncsnv2']


def _config(name, **model_fields):
  config = importlib.import_module('configs.tiny.' + name).get_config()
  for key, value in model_fields.items():
    setattr(config.model, key, value)
  return config


def _inputs(config, batch=1):
  s, c = config.data.image_size, config.data.num_channels
  return jax.ShapeDtypeStruct((batch, s, s, c), jnp.float32), jax.ShapeDtypeStruct((batch,),
                                                                                   jnp.float32)


def _convolutions(jaxpr):
  """Every conv_general_dilated equation of a jaxpr, including those in sub-jaxprs (remat)."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'conv_general_dilated':
      yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          yield from _convolutions(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          yield from _convolutions(sub)


@pytest.mark.parametrize('name', TINY)
def test_options_keep_the_parameter_tree_and_bf16_convolves_in_bf16(name):
  """bf16 + remat vs the default: identical parameter names, shapes and float32 dtypes; the
  output is float32 and every convolution of the network (all traced, in init) takes bf16."""
  rng = jax.random.PRNGKey(0)
  default = models.get_model(_config(name))
  params = jax.eval_shape(lambda x, l: default.init(rng, x, l), *_inputs(_config(name)))['params']
  config = _config(name, dtype='bfloat16', remat=True)
  model = models.get_model(config)
  jaxpr, (out, variables) = jax.make_jaxpr(
      lambda x, l: model.init_with_output(rng, x, l), return_shape=True)(*_inputs(config))
  assert jax.tree.map(lambda p: (p.shape, p.dtype), variables['params']) == \
      jax.tree.map(lambda p: (p.shape, p.dtype), params)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  assert out.dtype == jnp.float32
  convs = list(_convolutions(jaxpr.jaxpr))
  assert len(convs) > 10
  assert {v.aval.dtype for eqn in convs for v in eqn.invars} == {jnp.dtype(jnp.bfloat16)}


@pytest.fixture(scope='module')
def ddpmpp_runs():
  """DDPM++ at one resolution (tiny/ddpmpp with ch_mult (1,), num_res_blocks 0: three residual
  blocks and an attention block, a fifth of the compile time), trained with dropout on a
  regression loss, for three option sets: name -> ((loss, network output), gradients), at the
  same random parameters and keys."""
  small = dict(ch_mult=(1,), num_res_blocks=0, attn_resolutions=(8,))
  base = _config('ddpmpp', **small)
  x = jax.random.uniform(jax.random.PRNGKey(2), (4, 8, 8, 3))
  labels = jnp.array([1.0, 250.0, 600.0, 999.0])
  # Random parameters: init zero-initialises output layers, which would hide differences.
  params = _random_params(models.get_model(base), (8, 8, 3), scale=0.1)
  runs = {}
  for name, fields in (('f32', {}), ('remat', {'remat': True}), ('bf16', {'dtype': 'bfloat16'})):
    model = models.get_model(_config('ddpmpp', **small, **fields))

    def loss_fn(params, model=model):
      out = model.apply({'params': params}, x, labels, train=True,
                        rngs={'dropout': jax.random.PRNGKey(3)})
      return jnp.mean((out - x)**2), out
    step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    runs[name] = jax.device_get(step(params))   # compiled unoptimised: tests/conftest.py
  return runs


def test_remat_gives_the_same_loss_and_gradients(ddpmpp_runs):
  (loss, out), grads = ddpmpp_runs['f32']
  (loss_r, out_r), grads_r = ddpmpp_runs['remat']
  np.testing.assert_allclose(out_r, out, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
  scale = max(np.abs(g).max() for g in jax.tree.leaves(grads))
  for g_r, g in zip(jax.tree.leaves(grads_r), jax.tree.leaves(grads)):
    np.testing.assert_allclose(g_r, g, rtol=1e-5, atol=1e-6 * scale)


def test_bf16_stays_within_bf16_rounding_of_float32(ddpmpp_runs):
  (loss, out), grads = ddpmpp_runs['f32']
  (loss_b, out_b), grads_b = ddpmpp_runs['bf16']
  assert out_b.dtype == loss_b.dtype == jnp.float32
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads_b))
  rel = np.linalg.norm(out_b - out) / np.linalg.norm(out)
  assert 1e-4 < rel < 5e-2   # bf16 keeps 8 significant bits (2^-8 = 4e-3): changed, yet close
  np.testing.assert_allclose(loss_b, loss, rtol=5e-2)
  flat, flat_b = (np.concatenate([g.ravel() for g in jax.tree.leaves(t)])
                  for t in (grads, grads_b))
  assert np.linalg.norm(flat_b - flat) / np.linalg.norm(flat) < 0.1


@pytest.mark.parametrize('value, check', [('float16', models.get_model),
                                          ('fp8', config_checks.check)])
def test_unknown_dtype_names_the_choices(value, check):
  with pytest.raises(ConfigError, match=f"model.dtype '{value}'.*float32.*bfloat16"):
    check(_config('ddpmpp', dtype=value))


def test_options_may_differ_on_resume():
  diffs = identity.config_differences(
      identity.config_to_dict(_config('ddpmpp')),
      identity.config_to_dict(_config('ddpmpp', dtype='bfloat16', remat=True)))
  assert diffs == []


def test_mlp_bf16_and_no_remat():
  config = importlib.import_module('configs.vp.toy_spiral').get_config()
  config.model.dtype = 'bfloat16'
  model = models.get_model(config)
  x, labels = jnp.ones((3, 2)), jnp.array([1.0, 500.0, 999.0])
  out, variables = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0), x, labels))
  assert out.dtype == jnp.float32
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables['params']))
  config.model.remat = True
  with pytest.raises(ConfigError, match="model.remat.*'mlp'"):
    models.get_model(config)
