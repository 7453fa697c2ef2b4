"""A tiny Stable-Diffusion-shaped text-to-image model for tests and smoke runs: the digits'
16x16x1 images through a tiny autoencoder's 8x8x2 latents, a UNet of 8- and 16-channel blocks
cross-attending to 8 tokens of 8-d text states, 2 DPM-Solver++ steps. The autoencoder (with
``--config.data.latent_size=8 --config.data.latent_channels=2``), text encoder and tokenizer
folders are given on the command line (``--config.data.latents``, ``--config.text.encoder``,
``--config.text.tokenizer``), the UNet by ``--unet_weights``.
"""
from configs.text import sd1


def get_config():
  config = sd1.get_config()
  data = config.data
  data.dataset, data.image_size, data.num_channels = 'digits', 16, 1
  data.latents = data.latent_size = data.latent_channels = None   # given with the autoencoder
  model = config.model
  model.unet_preset, model.unet_channels = 'tiny', (8, 16)
  model.context_dim, model.context_length = 8, 8
  config.text.encoder = config.text.tokenizer = None
  s = config.sampling
  s.num_steps, s.order, s.batch_size, s.guidance_scale = 2, 1, 8, 2.0
  config.eval.batch_size = 8
  return config
