"""NCSN++ (cont., small) on the digits with the VE SDE."""
from configs import default_digits


def get_config():
  config = default_digits.get_default_configs()
  config.training.sde = 'vesde'
  config.model.scale_by_sigma = True
  config.training.reduce_mean = False
  return config
