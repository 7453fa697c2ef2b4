"""Conditional UNet (diffusers' UNet2DConditionModel layout) and its converter; no torch here:
the comparison with diffusers is benchmarks/unet_condition_reference.py."""
import json

import flax
import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from score_sde.errors import ConfigError, DataError
from score_sde.models import convert_unet, torch_weights, unet_condition
from tests.helpers import assert_trees_equal

TINY_DIFFUSERS = dict(
    _class_name='UNet2DConditionModel', in_channels=4, out_channels=4,
    block_out_channels=[32, 64], down_block_types=['CrossAttnDownBlock2D', 'DownBlock2D'],
    up_block_types=['UpBlock2D', 'CrossAttnUpBlock2D'], layers_per_block=1,
    cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8, act_fn='silu')


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_tiny_round_trip_through_diffusers_names(tmp_path):
  model = unet_condition.UNet2DConditionModel(**convert_unet.fields_from_diffusers(TINY_DIFFUSERS))
  assert model == unet_condition.from_preset('tiny')
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: 0.2 * rng.standard_normal(s.shape).astype(np.float32),
                        unet_condition.param_shapes(model))
  state = convert_unet.to_diffusers_names(torch_weights.params_to_state_dict(params))
  assert state['down_blocks.0.attentions.0.proj_in.weight'].shape == (32, 32, 1, 1)
  assert state['time_embedding.linear_1.weight'].shape == (128, 32)
  assert state['up_blocks.1.attentions.1.transformer_blocks.0.ff.net.0.proj.weight'].shape == (
      256, 32)
  assert 'down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.bias' not in state
  save_file(state, str(tmp_path / convert_unet.WEIGHTS_FILE))
  (tmp_path / convert_unet.CONFIG_FILE).write_text(json.dumps(TINY_DIFFUSERS))
  loaded_model, loaded = convert_unet.load(str(tmp_path))
  assert loaded_model == model
  assert_trees_equal(loaded, params)


def test_a_file_of_another_architecture_names_its_keys():
  shapes = unet_condition.param_shapes(unet_condition.from_preset('tiny', layers_per_block=2))
  state = {torch_weights.torch_key(p): np.zeros(1) for p in flax.traverse_util.flatten_dict(shapes)}
  with pytest.raises(DataError, match=r'unet.safetensors does not fit .* unexpected '
                                      r'\(down_blocks.0.attentions.1'):
    convert_unet.convert_state_dict(state, unet_condition.from_preset('tiny'),
                                    what='unet.safetensors')


def test_unsupported_diffusers_options_are_one_line():
  with pytest.raises(ConfigError, match="class_embed_type.*timestep"):
    convert_unet.fields_from_diffusers({**TINY_DIFFUSERS, 'class_embed_type': 'timestep'})


@pytest.mark.parametrize('preset, count', [('sd1', 859_520_964)])
def test_stable_diffusion_parameter_count(preset, count):
  assert _count(unet_condition.param_shapes(unet_condition.from_preset(preset))) == count
