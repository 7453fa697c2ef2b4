"""Latent diffusion on the digits: the VP DDPM++ of ``configs/vp/digits_ddpmpp_continuous.py``
(same width, steps, batch and sampler) on the 8x8x2 latents of the autoencoder trained by
``configs/latent/digits_autoencoder.py`` in ``runs/digits_ae``:

  train.py --config=configs/latent/digits_ddpmpp.py --workdir=runs/digits_latent_ddpmpp
  sample.py --config=configs/latent/digits_ddpmpp.py --workdir=runs/digits_latent_ddpmpp

(``--config.data.latents=DIR`` for an autoencoder elsewhere). The training images are encoded
once into ``data.latent_cache``; samples are decoded before pictures and metrics. Pinned to the
setting its results were measured with (README, benchmarks/RESULTS.md): the paper's eps network
(no EDM preconditioning) and 1,200 steps, as the pixel digits configs were then.
"""
from configs.vp import digits_ddpmpp_continuous


def get_config():
  config = digits_ddpmpp_continuous.get_config()
  data = config.data
  data.image_size = 16                   # the autoencoder's input size
  data.latents = 'runs/digits_ae'
  data.latent_size = 8
  data.latent_channels = 2
  config.model.attn_resolutions = (4,)   # the 8x8 latents' lower resolution
  config.model.precond = 'paper'
  config.training.n_iters = 1200
  config.training.batch_size = 64   # as measured (the VP family config trains at 128)
  config.training.snapshot_freq = 1200
  return config
