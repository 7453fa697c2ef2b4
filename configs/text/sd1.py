"""Stable Diffusion 1.x from its published weights (downloaded by the user into ``sd/``: the
``unet/``, ``vae/``, ``text_encoder/`` and ``tokenizer/`` folders of a SD 1.x repository):

  sample.py --config=configs/text/sd1.py --workdir=runs/sd1 --unet_weights=sd/unet \\
      --prompt="a photograph of an astronaut riding a horse" --config.sampling.guidance_scale=6.5

512x512 images through the 64x64x4 latents of its autoencoder; the VP process with SD's
'scaled_linear' betas 0.00085..0.012 over 1000 steps; the eps network sees 999 t; CFG against the
empty prompt (guidance_scale w is diffusers' guidance_scale - 1); DPM-Solver++(2M), 25 steps.
"""
from configs.default_cifar10_configs import get_default_configs


def get_config():
  config = get_default_configs()
  config.training.sde = 'vpsde'
  config.training.continuous = True
  data = config.data
  data.dataset = 'folder'                # only for its image shape: sampling reads no data
  data.image_size, data.num_channels, data.centered = 512, 3, True
  data.latents, data.latent_size, data.latent_channels = 'sd/vae', 64, 4
  model = config.model
  model.name, model.unet_preset, model.precond = 'unet_condition', 'sd1', 'paper'
  model.beta_schedule, model.beta_min, model.beta_max, model.num_scales = (
      'scaled_linear', 0.85, 12.0, 1000)
  model.context_length = 77
  config.text.encoder, config.text.tokenizer = 'sd/text_encoder', 'sd/tokenizer'
  s = config.sampling
  s.method, s.order, s.num_steps, s.batch_size = 'dpm_solver', 2, 25, 8
  s.guidance_scale = 6.5
  config.eval.batch_size = 8
  config.training.snapshot_sampling = False
  return config
