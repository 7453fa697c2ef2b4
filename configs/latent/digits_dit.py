"""Latent diffusion on the digits with a small DiT (patch 2 on the 8x8x2 latents: 16 tokens,
width 96, depth 6, 4 heads), otherwise as ``configs/latent/digits_ddpmpp.py``:

  train.py --config=configs/latent/digits_dit.py --workdir=runs/digits_latent_dit
"""
from configs.latent import digits_ddpmpp


def get_config():
  config = digits_ddpmpp.get_config()
  model = config.model
  model.name = 'dit'
  model.variant = None
  model.patch_size = 2
  model.hidden_size = 96
  model.depth = 6
  model.num_heads = 4
  config.optim.lr = 1e-3
  return config
