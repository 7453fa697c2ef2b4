"""The KL autoencoder on the digits, 16x16x1 images -> 8x8x2 latents, sized for a 2-core CPU:

  train.py --mode=train_autoencoder --config=configs/latent/digits_autoencoder.py \
      --workdir=runs/digits_ae

Two resolutions (16 and 32 channels, one ResNet block each, attention in the 8x8 mid block;
165,583 parameters), L1 reconstruction + 1e-5 KL, 1,000 steps of batch 64. The export
(``runs/digits_ae/autoencoder/autoencoder.npz``) carries the scale factor 1 / std of the training
latents; ``configs/latent/digits_ddpmpp.py`` trains a diffusion model on those latents.
"""
from configs import default_digits


def get_config():
  config = default_digits.get_default_configs()
  config.data.image_size = 16            # the 16 px data its results were measured on
  a = config.autoencoder
  a.block_out_channels = (16, 32)
  a.layers_per_block = 1
  a.latent_channels = 2
  a.norm_num_groups = 8
  a.kl_weight = 1e-5
  a.recon_loss = 'l1'
  a.batch_size = 64
  a.n_iters = 1000
  a.lr = 1e-3
  a.log_freq = 100
  a.eval_freq = 500
  a.snapshot_freq = 500
  return config
