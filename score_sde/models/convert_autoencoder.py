"""diffusers ``AutoencoderKL`` weights -> this project's autoencoder (``models.autoencoder``).

    python -m score_sde.models.convert_autoencoder --src sd-vae-ft-mse/ --dst sd_vae.npz

``--src`` is a folder with diffusers' ``config.json`` and ``diffusion_pytorch_model.safetensors``
(e.g. the Hugging Face repository stabilityai/sd-vae-ft-mse, downloaded by the user; nothing is
fetched here), or the ``.safetensors`` file with its ``config.json`` beside it. Only numpy and the
``safetensors`` package are needed. The result is one ``.npz``: the parameters
(``params/encoder/conv_in/kernel``, ...) and the module's fields as JSON (``__config__``), read by
``load``. ``load`` also reads the diffusers folder directly.

The state dict may use the LDM code's attention names (``query``, ``key``, ``value``,
``proj_attn``, as in the published SD autoencoders) or diffusers' current ones (``to_q``, ...,
``to_out.0``); both map to the same parameters.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.errors import ConfigError, MissingFileError, ScoreSDEError
from score_sde.models import autoencoder, torch_weights

WEIGHTS_FILE = 'diffusion_pytorch_model.safetensors'
CONFIG_FILE = 'config.json'
HOW_TO_GET = (f'put {WEIGHTS_FILE} and {CONFIG_FILE} of a diffusers AutoencoderKL (e.g. the '
              'Hugging Face repository stabilityai/sd-vae-ft-mse) in one folder and run '
              '`python -m score_sde.models.convert_autoencoder --src FOLDER --dst vae.npz`.')
_DEPRECATED_ATTENTION = {'query': 'to_q', 'key': 'to_k', 'value': 'to_v', 'proj_attn': 'to_out.0'}
# diffusers config key -> AutoencoderKL field (the rest of its config is ignored).
_FIELDS = ('in_channels', 'out_channels', 'block_out_channels', 'layers_per_block',
           'latent_channels', 'norm_num_groups', 'scaling_factor', 'shift_factor',
           'use_quant_conv', 'use_post_quant_conv', 'mid_block_add_attention')


def fields_from_diffusers(config: Mapping[str, Any]) -> dict:
  """diffusers' ``config.json`` of an ``AutoencoderKL`` -> ``autoencoder.AutoencoderKL`` fields."""
  name = config.get('_class_name', 'AutoencoderKL')
  if name != 'AutoencoderKL':
    raise ConfigError(f'{CONFIG_FILE} describes a {name}; only AutoencoderKL converts.')
  for key, block in (('down_block_types', 'DownEncoderBlock2D'),
                     ('up_block_types', 'UpDecoderBlock2D')):
    if any(t != block for t in config.get(key, [block])):
      raise ConfigError(f'{CONFIG_FILE}: {key} {config[key]} is not all {block}.')
  if config.get('act_fn', 'silu') != 'silu':
    raise ConfigError(f'{CONFIG_FILE}: act_fn {config["act_fn"]!r} is not silu.')
  fields = {k: config[k] for k in _FIELDS if config.get(k) is not None}
  if 'block_out_channels' in fields:
    fields['block_out_channels'] = tuple(fields['block_out_channels'])
  return fields


def rename_deprecated(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The LDM attention names (``...attentions.0.query.weight``) -> diffusers' (``to_q``)."""
  renamed = {}
  for key, value in state_dict.items():
    *path, module, leaf = key.split('.')
    if len(path) >= 2 and path[-2] == 'attentions' and module in _DEPRECATED_ATTENTION:
      key = '.'.join(path + [_DEPRECATED_ATTENTION[module], leaf])
    renamed[key] = value
  return renamed


def param_shapes(model: autoencoder.AutoencoderKL, image_size: int = 64) -> Any:
  """The params tree of ``model`` as ShapeDtypeStructs (nothing is computed)."""
  size = max(image_size, model.downsampling)
  x = jnp.zeros((1, size, size, model.in_channels))
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))['params']


def convert_state_dict(state_dict: Mapping[str, np.ndarray], model: autoencoder.AutoencoderKL,
                       what: str = 'The state dict') -> dict:
  """A diffusers AutoencoderKL state dict (numpy) -> params of ``model``; mismatches named."""
  return torch_weights.state_dict_to_params(rename_deprecated(state_dict), param_shapes(model),
                                            what)


def _diffusers_paths(src: str) -> tuple[str, str]:
  if os.path.isdir(src):
    return os.path.join(src, WEIGHTS_FILE), os.path.join(src, CONFIG_FILE)
  return src, os.path.join(os.path.dirname(src) or '.', CONFIG_FILE)


def load_diffusers(src: str) -> tuple[autoencoder.AutoencoderKL, dict]:
  """(module, params) from a diffusers folder or ``.safetensors`` file (config.json beside it)."""
  weights, config_path = _diffusers_paths(src)
  if not os.path.exists(src):
    raise MissingFileError(f'{src!r} does not exist; {HOW_TO_GET}')
  if not os.path.isfile(config_path):
    raise MissingFileError(f'{config_path!r} does not exist: the weights need their '
                           f'{CONFIG_FILE}; {HOW_TO_GET}')
  with open(config_path) as f:
    model = autoencoder.AutoencoderKL(**fields_from_diffusers(json.load(f)))
  state_dict = torch_weights.read_safetensors(weights, HOW_TO_GET)
  return model, convert_state_dict(state_dict, model, repr(weights))


def save(dst: str, model: autoencoder.AutoencoderKL, params: Any) -> None:
  """One ``.npz`` with the params and the module's fields; written atomically."""
  torch_weights.save_npz(dst, {k: getattr(model, k) for k in _FIELDS}, params)


def load(path: str) -> tuple[autoencoder.AutoencoderKL, dict]:
  """(module, params) from a converted ``.npz`` or a diffusers folder / ``.safetensors`` file."""
  if not path.endswith('.npz'):
    return load_diffusers(path)
  fields, params = torch_weights.load_npz(path, HOW_TO_GET)
  model = autoencoder.AutoencoderKL(**fields)
  # Checked as a diffusers file is: a hand-edited or truncated .npz is named, not crashed on.
  return model, convert_state_dict(torch_weights.params_to_state_dict(params), model, repr(path))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--src', required=True,
                      help=f'a diffusers AutoencoderKL folder ({CONFIG_FILE} + {WEIGHTS_FILE})')
  parser.add_argument('--dst', required=True, help='the converted autoencoder (.npz)')
  args = parser.parse_args(argv)
  try:
    model, params = load_diffusers(args.src)
    save(args.dst, model, params)
  except ScoreSDEError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  n = sum(np.size(v) for v in jax.tree.leaves(params))
  print(f'Wrote {args.dst} ({n:,} parameters); set --config.data.latents={args.dst}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
