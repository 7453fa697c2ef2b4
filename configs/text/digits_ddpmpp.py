"""The text-conditioned digits with the project's own DDPM++ at the digits' native 8x8 (the
small network of ``configs/vp/digits_ddpmpp_continuous.py``) instead of Stable Diffusion's UNet:
a cross-attention block to the caption's words (``layerspp.CrossAttnBlockpp``) after each
attention block (8x8 and the middle), 10% of captions dropped to the null context:

  train.py --config=configs/text/digits_ddpmpp.py --workdir=runs/digits_text_ddpmpp
  sample.py --workdir=runs/digits_text_ddpmpp --prompt='a thick seven' \\
      --config.sampling.guidance_scale=2
"""
from configs.vp import digits_ddpmpp_continuous


def get_config():
  config = digits_ddpmpp_continuous.get_config()
  model = config.model
  model.context_length, model.context_dim = 4, 14   # <= 4 words of the 14-word vocabulary
  config.data.context = 'captions'
  config.training.n_iters = 2000
  config.training.batch_size = 64   # as measured (the VP family config trains at 128)
  config.sampling.guidance_scale = 0.0
  return config
