"""ImageNet 256x256 class-conditional latent diffusion with DiT-XL/2 on Stable Diffusion's
autoencoder (32x32x4 latents), the setting of Peebles & Xie 2023 (for accelerators).

Images: an ImageNet train folder with one sub-folder per class (``data.path``; 'folder' dataset,
centre-cropped and resized to 256). Autoencoder: convert stabilityai/sd-vae-ft-mse once
(``python -m score_sde.models.convert_autoencoder --src FOLDER --dst sd_vae.npz``). The training
set is encoded once into ``data.latent_cache`` (posterior means times 0.18215). DiT's recipe:
batch 256, AdamW 1e-4 without warm-up or decay, EMA 0.9999, 10% label dropout for classifier-free
guidance; its 1000-step linear betas are the VP SDE with beta 0.1 -> 20. Released DiT weights
load with ``python -m score_sde.models.convert_dit`` (learn_sigma: their variance channels are
kept but unused here).

  train.py --config=configs/latent/imagenet256_dit_xl2.py --workdir=runs/imagenet256_dit_xl2 \
      --config.data.path=/data/imagenet/train --config.data.latents=sd_vae.npz
"""
from configs.latent import cifar10_dit_b2


def get_config():
  config = cifar10_dit_b2.get_config()
  config.training.n_iters = 7000001
  data = config.data
  data.dataset = 'folder'
  data.image_size = 256
  data.num_classes = 1000
  data.latent_size = 32
  data.latent_channels = 4
  config.model.variant = 'DiT-XL/2'
  config.model.dtype = 'bfloat16'
  config.sampling.num_steps = 50
  config.sampling.guidance_scale = 0.5   # DiT's cfg 1.5 = (1 + w) with w = 0.5
  return config
