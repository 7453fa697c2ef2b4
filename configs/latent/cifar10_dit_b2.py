"""CIFAR-10 latent diffusion with DiT-B/2 on Stable Diffusion's autoencoder (for accelerators).

The images are upsampled to 64x64 so that SD's 8x downsampling leaves 8x8x4 latents (16 tokens
at patch 2; at 32x32 only 4x4 would remain). Get the autoencoder once (no download at run time):
put ``config.json`` and ``diffusion_pytorch_model.safetensors`` of stabilityai/sd-vae-ft-mse in
a folder, then ``python -m score_sde.models.convert_autoencoder --src FOLDER --dst sd_vae.npz``.

  train.py --config=configs/latent/cifar10_dit_b2.py --workdir=runs/cifar10_dit_b2 \
      --config.data.latents=sd_vae.npz
"""
from configs import default_cifar10_configs


def get_config():
  config = default_cifar10_configs.get_default_configs()
  training = config.training
  training.sde = 'vpsde'
  training.continuous = True
  training.reduce_mean = True
  training.batch_size = 256
  training.n_iters = 400001
  data = config.data
  data.image_size = 64
  data.centered = True
  data.random_flip = False               # latents are cached once, unflipped
  data.num_classes = 10
  data.latents = 'sd_vae.npz'
  data.latent_size = 8
  data.latent_channels = 4
  model = config.model
  model.name = 'dit'
  model.variant = 'DiT-B/2'
  model.class_conditional = True
  model.dropout = 0.0
  model.ema_rate = 0.9999
  optim = config.optim
  optim.lr = 1e-4                        # DiT: AdamW 1e-4, no warm-up, no weight decay
  optim.warmup = 0
  optim.grad_clip = 0.0
  sampling = config.sampling
  sampling.method = 'dpm_solver'
  sampling.order = 2
  sampling.num_steps = 50
  return config
