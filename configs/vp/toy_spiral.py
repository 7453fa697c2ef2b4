"""spiral with the VP SDE."""
from configs import default_toy


def get_config():
  config = default_toy.get_config()
  config.training.sde = 'vpsde'
  config.data.dataset = 'spiral'
  return config
