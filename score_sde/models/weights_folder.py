"""A Hugging Face model folder (``config.json`` + one ``.safetensors`` file) -> (module, params).

The converters of transformers' / diffusers' networks (``convert_clip``, ``convert_unet``) differ
only in how the config builds the module and how the state dict maps to its parameters.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

from flax import linen as nn

from score_sde.errors import MissingFileError
from score_sde.models import torch_weights


def load(folder: str, config_file: str, weights_file: str, how_to_get: str,
         build: Callable[[Mapping[str, Any]], nn.Module],
         convert: Callable[..., Any]) -> tuple[nn.Module, Any]:
  """``build(config dict) -> module``; ``convert(state_dict, module, what=path) -> params``.
  A missing file is one line ending with ``how_to_get``."""
  config_path = os.path.join(folder, config_file)
  if not os.path.isfile(config_path):
    raise MissingFileError(f'{config_path!r} does not exist; {how_to_get}')
  with open(config_path) as f:
    model = build(json.load(f))
  weights = os.path.join(folder, weights_file)
  state = torch_weights.read_safetensors(weights, how_to_get)
  return model, convert(state, model, what=weights)
