"""transformers ``CLIPTextModel`` weights -> ``text_encoder.CLIPTextModel`` params.

``load(folder)`` reads a folder holding transformers' ``config.json`` and ``model.safetensors``
(e.g. the ``text_encoder/`` folder of a Stable Diffusion 1.x repository, downloaded by the user;
nothing is fetched here) with only numpy and the ``safetensors`` package. A file that does not
fit the configured architecture fails in one line naming the missing and unexpected keys.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from score_sde.models import text_encoder, torch_weights, weights_folder

WEIGHTS_FILE = 'model.safetensors'
CONFIG_FILE = 'config.json'
HOW_TO_GET = (f'put {WEIGHTS_FILE} and {CONFIG_FILE} of a transformers CLIPTextModel (e.g. the '
              'text_encoder/ folder of a Stable Diffusion 1.x repository) in one folder.')
PREFIX = 'text_model.'
# Buffers some transformers versions saved with the weights; they are not parameters.
_BUFFERS = (PREFIX + 'embeddings.position_ids',)


def convert_state_dict(state_dict: Mapping[str, np.ndarray], model: text_encoder.CLIPTextModel,
                       what: str = 'The state dict') -> dict:
  """A ``CLIPTextModel`` state dict (numpy) -> params of ``model``; mismatches named. Keys may
  carry the ``text_model.`` prefix (the published files, transformers < 5) or not (transformers 5
  saves the text tower's modules at the top level)."""
  named = {k if k.startswith(PREFIX) else PREFIX + k: v for k, v in state_dict.items()}
  kept = {k: v for k, v in named.items() if k not in _BUFFERS}
  return torch_weights.state_dict_to_params(kept, text_encoder.param_shapes(model), what)


def load(folder: str) -> tuple[text_encoder.CLIPTextModel, Any]:
  """(module, params) from transformers' ``config.json`` + ``model.safetensors`` in ``folder``."""
  return weights_folder.load(folder, CONFIG_FILE, WEIGHTS_FILE, HOW_TO_GET,
                             text_encoder.from_hf_config, convert_state_dict)
