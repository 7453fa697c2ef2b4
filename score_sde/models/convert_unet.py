"""diffusers ``UNet2DConditionModel`` weights -> ``unet_condition.UNet2DConditionModel`` params.

``load(folder)`` reads diffusers' ``config.json`` and ``diffusion_pytorch_model.safetensors``
(e.g. the ``unet/`` folder of a Stable Diffusion 1.x / 2.x repository, downloaded by the user;
nothing is fetched here) with only numpy and the ``safetensors`` package. A file that does not fit
the configured architecture fails in one line naming the missing and unexpected keys.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from score_sde.errors import ConfigError
from score_sde.models import torch_weights, unet_condition, weights_folder

WEIGHTS_FILE = 'diffusion_pytorch_model.safetensors'
CONFIG_FILE = 'config.json'
HOW_TO_GET = (f'put {WEIGHTS_FILE} and {CONFIG_FILE} of a diffusers UNet2DConditionModel (e.g. '
              'the unet/ folder of a Stable Diffusion 1.x repository) in one folder.')
# diffusers' names whose '_<digit>' is part of the name, not a list index.
_NAMED = {'time_embedding.linear.1.': 'time_embedding.linear_1.',
          'time_embedding.linear.2.': 'time_embedding.linear_2.'}
_FIELDS = ('in_channels', 'out_channels', 'block_out_channels', 'down_block_types',
           'up_block_types', 'layers_per_block', 'cross_attention_dim',
           'transformer_layers_per_block', 'norm_num_groups', 'norm_eps', 'use_linear_projection',
           'flip_sin_to_cos', 'freq_shift')
# Options of UNet2DConditionModel this module does not build, with the value it assumes.
_ASSUMED = {'act_fn': 'silu', 'mid_block_type': unet_condition.MID, 'class_embed_type': None,
            'addition_embed_type': None, 'encoder_hid_dim': None, 'center_input_sample': False,
            'dual_cross_attention': False, 'only_cross_attention': False,
            'time_embedding_type': 'positional', 'resnet_time_scale_shift': 'default',
            'num_class_embeds': None, 'conv_in_kernel': 3, 'conv_out_kernel': 3}


def fields_from_diffusers(config: Mapping[str, Any]) -> dict:
  """diffusers' ``config.json`` of a ``UNet2DConditionModel`` -> our module's fields."""
  unsupported = {k: config[k] for k, v in _ASSUMED.items() if config.get(k, v) != v}
  if unsupported:
    raise ConfigError(f'{CONFIG_FILE}: {unsupported} is not supported; the SD 1.x/2.x UNet '
                      f'assumes {dict((k, _ASSUMED[k]) for k in unsupported)}.')
  fields = {k: config[k] for k in _FIELDS if config.get(k) is not None}
  for key in ('block_out_channels', 'down_block_types', 'up_block_types'):
    if key in fields:
      fields[key] = tuple(fields[key])
  # diffusers' SD configs give the number of heads as attention_head_dim (a historic misnomer).
  heads = config.get('num_attention_heads') or config.get('attention_head_dim', 8)
  fields['num_heads'] = heads if isinstance(heads, int) else tuple(heads)
  for key in ('cross_attention_dim', 'transformer_layers_per_block'):
    if not isinstance(fields.get(key, 0), int):
      raise ConfigError(f'{CONFIG_FILE}: per-block {key} {fields[key]} is not supported.')
  return fields


def _renamed(state_dict: Mapping[str, np.ndarray], pairs) -> dict[str, np.ndarray]:
  renamed = {}
  for key, value in state_dict.items():
    for old, new in pairs:
      key = key.replace(old, new)
    renamed[key] = value
  return renamed


def to_diffusers_names(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """``torch_weights.params_to_state_dict`` output -> the names diffusers' files use."""
  return _renamed(state_dict, _NAMED.items())


def convert_state_dict(state_dict: Mapping[str, np.ndarray],
                       model: unet_condition.UNet2DConditionModel,
                       what: str = 'The state dict') -> dict:
  """A diffusers ``UNet2DConditionModel`` state dict (numpy) -> params of ``model``."""
  renamed = _renamed(state_dict, [(theirs, ours) for ours, theirs in _NAMED.items()])
  return torch_weights.state_dict_to_params(renamed, unet_condition.param_shapes(model), what)


def load(folder: str) -> tuple[unet_condition.UNet2DConditionModel, Any]:
  """(module, params) from diffusers' ``config.json`` + weights in ``folder``."""
  build = lambda config: unet_condition.UNet2DConditionModel(**fields_from_diffusers(config))
  return weights_folder.load(folder, CONFIG_FILE, WEIGHTS_FILE, HOW_TO_GET, build,
                             convert_state_dict)
