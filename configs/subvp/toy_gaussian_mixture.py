"""gaussian mixture with the SUBVP SDE."""
from configs import default_toy


def get_config():
  config = default_toy.get_config()
  config.training.sde = 'subvpsde'
  config.data.dataset = 'gaussian_mixture'
  return config
