"""A text-conditioned digits model: the digits (16x16 grey) with their made captions ('a thick,
slanted seven'; ``datasets/captions.py``) as word contexts, a small Stable-Diffusion UNet
(blocks of 16 and 32 channels, cross-attention at 16x16 and in the middle) learning the word
embeddings in its cross-attention, 10% of captions dropped to the null context; VP, EDM
preconditioning as the other digits configs:

  train.py --config=configs/text/digits.py --workdir=runs/digits_text
  sample.py --workdir=runs/digits_text --prompt='a thick seven' --prompt='a thin, slanted one' \\
      --config.sampling.guidance_scale=2
"""
from configs.vp import digits_ddpmpp_continuous


def get_config():
  config = digits_ddpmpp_continuous.get_config()
  model = config.model
  model.name, model.unet_preset, model.unet_channels = 'unet_condition', 'tiny', (16, 32)
  model.context_length, model.context_dim = 4, 14   # <= 4 words of the 14-word vocabulary
  config.data.context = 'captions'
  config.data.image_size = 16
  config.training.n_iters = 2000
  config.training.batch_size = 64   # as measured (the VP family config trains at 128)
  config.sampling.guidance_scale = 0.0
  return config
