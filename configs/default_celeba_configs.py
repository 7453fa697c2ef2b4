"""Defaults for CelebA (64x64) experiments, as in the paper's `default_celeba_configs.py`."""
from configs import default_cifar10_configs


def get_default_configs():
  config = default_cifar10_configs.get_default_configs()
  config.sampling.snr = 0.17

  evaluate = config.eval
  evaluate.begin_ckpt = 1
  evaluate.end_ckpt = 26
  evaluate.enable_sampling = True

  data = config.data
  data.dataset = 'celeb_a'
  data.image_size = 64

  config.model.sigma_max = 90.0
  return config
