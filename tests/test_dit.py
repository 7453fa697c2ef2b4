"""DiT: facebookresearch/DiT's parameter layout and the converter, the fixed position embedding in
closed form, adaLN-Zero at initialisation, input checks, and DiT-XL/2 pinned by its size.

That the network computes DiT's function is checked outside CI (it needs torch and timm):
``benchmarks/dit_reference.py``, results in ``benchmarks/RESULTS.md``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from safetensors.numpy import save_file

from score_sde.errors import ConfigError, DataError
from score_sde.models import convert_dit, dit, torch_weights

# facebookresearch/DiT DiT_XL_2(input_size=32) (ImageNet 256, 32x32x4 latents, learn_sigma, 1000
# classes + null): sum(p.numel() for p in model.parameters()) = 675,129,632 (torch 2.13, timm
# 1.0), which counts the fixed pos_embed (256 tokens x 1152); we compute that table instead.
XL2_NUM_PARAMS = 675_129_632
XL2_POS_EMBED = 256 * 1152

TINY = dict(patch_size=2, in_channels=3, hidden_size=16, depth=2, num_heads=2, num_classes=5,
            learn_sigma=True)


def _init(model, size=8):
  x = jnp.zeros((1, size, size, model.in_channels))
  return model.init(jax.random.PRNGKey(0), x, jnp.zeros((1,)),
                    class_labels=jnp.zeros((1,), jnp.int32))['params']


@pytest.fixture(scope='module')
def tiny_state():
  """TINY's random weights as a DiT state dict (with its fixed pos_embed for an 8x8 input)."""
  model = dit.DiT(**TINY)
  rng = np.random.default_rng(0)
  state = {k: rng.standard_normal(v.shape).astype(np.float32)
           for k, v in torch_weights.params_to_state_dict(
               jax.tree.map(lambda s: np.zeros(s.shape), convert_dit.param_shapes(model))).items()}
  state['pos_embed'] = dit.pos_embed_2d(16, 4, 4)[None]
  return model, state


def test_dit_layout_and_converter_round_trip(tiny_state, tmp_path):
  model, state = tiny_state
  shapes = {'x_embedder.proj.weight': (16, 3, 2, 2), 't_embedder.mlp.0.weight': (16, 256),
            't_embedder.mlp.2.bias': (16,), 'y_embedder.embedding_table.weight': (6, 16),
            'blocks.1.attn.qkv.weight': (48, 16), 'blocks.0.attn.proj.weight': (16, 16),
            'blocks.0.mlp.fc1.weight': (64, 16), 'blocks.1.mlp.fc2.weight': (16, 64),
            'blocks.1.adaLN_modulation.1.weight': (96, 16),
            'final_layer.adaLN_modulation.1.weight': (32, 16),
            'final_layer.linear.weight': (2 * 2 * 6, 16)}
  for key, shape in shapes.items():
    assert state[key].shape == shape, key
  save_file(state, str(tmp_path / 'dit.safetensors'))
  loaded, params = convert_dit.load(str(tmp_path / 'dit.safetensors'), num_heads=2)
  assert loaded == model                                   # architecture read from the shapes
  back = torch_weights.params_to_state_dict(params)
  assert back.keys() == set(state) - {'pos_embed'}
  assert all(np.array_equal(back[k], state[k]) for k in back)
  convert_dit.save(str(tmp_path / 'dit.npz'), loaded, params)
  again, params2 = convert_dit.load(str(tmp_path / 'dit.npz'))
  assert again == model and jax.tree.all(jax.tree.map(np.array_equal, params, params2))


def test_wrong_architecture_and_pos_embed_named(tiny_state):
  model, state = tiny_state
  bad = {k.replace('blocks.1.mlp.fc2', 'blocks.1.mlp.fc3'): v for k, v in state.items()}
  with pytest.raises(DataError) as e:
    convert_dit.convert_state_dict(bad, model, 'dit.pt')
  msg = str(e.value)
  assert '\n' not in msg and msg.startswith('dit.pt does not fit')
  assert '2 missing (blocks.1.mlp.fc2.bias, blocks.1.mlp.fc2.weight)' in msg
  assert '2 unexpected (blocks.1.mlp.fc3.bias, blocks.1.mlp.fc3.weight)' in msg
  shuffled = dict(state, pos_embed=state['pos_embed'][:, ::-1])
  with pytest.raises(DataError, match='pos_embed is not the 2-D sin-cos table of a 4x4 grid'):
    convert_dit.convert_state_dict(shuffled, model)


def test_pos_embed_closed_form():
  d, rows, cols = 8, 3, 5
  table = dit.pos_embed_2d(d, rows, cols)
  assert table.shape == (rows * cols, d)
  for r, c in ((0, 0), (1, 4), (2, 3)):
    w = np.array([1.0, 1e-2])                     # 10000^(-2k / (d/2)), k = 0, 1
    expected = np.concatenate([np.sin(c * w), np.cos(c * w), np.sin(r * w), np.cos(r * w)])
    np.testing.assert_allclose(table[r * cols + c], expected, rtol=1e-6, atol=1e-7)


def test_adaln_zero_init_and_patch_checks():
  model = dit.DiT(**{**TINY, 'learn_sigma': False, 'num_classes': None})
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 12, 3))  # non-square: pos from the input
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x, jnp.ones((2,)))['params']
  out = jax.jit(lambda p, x: model.apply({'params': p}, x, jnp.full((2,), 500.0)))(params, x)
  assert out.shape == x.shape and not np.any(out)  # adaLN-Zero: the output starts at 0
  with pytest.raises(DataError, match='^DiT patch size 2 does not divide the input size 7x8'):
    jax.eval_shape(model.apply, {'params': params}, jnp.zeros((1, 7, 8, 3)), jnp.ones((1,)))
  config = ml_collections.ConfigDict(dict(
      model=dict(variant='DiT-S/4', class_conditional=False),
      data=dict(image_size=18, num_channels=3, num_classes=None, centered=True)))
  with pytest.raises(ConfigError, match='^DiT patch size 4 does not divide the input size 18'):
    dit.from_config(config)
  config.model.variant = 'DiT-S/3'
  with pytest.raises(ConfigError, match="Unknown model.variant 'DiT-S/3'; valid: .*'DiT-XL/8'"):
    dit.from_config(config)


def test_xl2_parameter_count():
  model = dit.VARIANTS['DiT-XL/2'](in_channels=4, num_classes=1000, learn_sigma=True)
  shapes = jax.eval_shape(lambda: _init(model, 32))
  assert sum(np.prod(s.shape) for s in jax.tree.leaves(shapes)) + XL2_POS_EMBED == XL2_NUM_PARAMS
